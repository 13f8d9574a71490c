"""The segment service: a FastAPI app over one saved model (needs the `serve` extra: FastAPI, uvicorn).

    POST /v1/assign          events of one or many users -> per user: cluster, label, distance, anomaly score
    POST /v1/recommend       the same, plus the top-N items of the user's segment it has not seen
    GET  /v1/clusters        the cluster profiles (privacy rules applied where the model is private)
    POST /v1/admin/reload    load the model folder again; a broken one is refused, the old one keeps serving
                             (only with an admin token: `admin_token`, `--admin-token-file`)
    GET  /healthz            the model being served (no token needed: for load balancers)
    GET  /metrics            Prometheus text: requests, errors, latency, batch sizes, cluster shares, drift

With a token, every /v1 path and /metrics needs `Authorization: Bearer TOKEN` (compared in constant
time) and answers 401 without it. Admin paths (/v1/admin/*) need their own token: a caller who may
place users may not make the server reload, and without an admin token they answer 403 (SIGHUP, which
needs the server's own user, still reloads). Every bad request is a 4xx with a one-line JSON reason
(`{"error": "..."}`); nothing a client sends produces a 500 or a stack trace, in a response or in
the log. User ids in requests are pseudonymised on arrival where the model was fitted so (raw ids
are only echoed back to the caller that sent them) and are never logged; refusals never show the
server's paths.

Parsing, placing and writing a large answer run in worker threads, so /healthz answers while big
requests run; a body must arrive within `read_timeout_s` (408 otherwise), so a slow client cannot
hold a request, or the shutdown, for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import math
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from gpuclust.errors import UsageError, listed
from gpuclust.privacy import Pseudonymiser
from gpuclust.quality.drift import Thresholds, placed_counts
from gpuclust.serve.batcher import MAX_WAIT_S, MicroBatcher, ShuttingDown
from gpuclust.serve.events import EventColumns, RequestError, read_body
from gpuclust.serve.fastpath import Placement, Prepared
from gpuclust.serve.metrics import Metrics
from gpuclust.serve.state import MAX_RECOMMEND, ModelState, load_state

PROTECTED = ("/v1/", "/metrics")
ADMIN = "/v1/admin"
CLIENT_CLOSED = 499  # nginx's code for a client that hung up before its answer: not a server error
INLINE_BYTES = 64 * 1024  # smaller bodies are parsed on the loop (a thread hop would cost more than the work)
INLINE_ROWS = 2_000  # smaller answers (users x items) are written on the loop
T = TypeVar("T")


@dataclass
class ServeSettings:
    model_dir: Path
    device: str | None = None
    token: str | None = None
    admin_token: str | None = None  # /v1/admin/* need it; without one they answer 403
    pseudonymiser: Pseudonymiser | None = None
    model_key: Any = None  # a signing.ModelKey: models not signed with it are refused, at start and reload
    max_body_bytes: int = 8 * 2**20
    max_users: int = 1000
    max_events: int = 200_000
    batching: bool = True
    max_batch_users: int = 1024
    batch_wait_ms: float = 0.0
    thresholds: Thresholds | None = None
    read_timeout_s: float = 30.0  # a request's headers, and then its body, must arrive within this
    shutdown_timeout_s: float = 5.0  # after SIGTERM, requests still open this long are cancelled

    def __post_init__(self) -> None:
        """Refuse settings that would make a wait unbounded or a limit meaningless (NaN passes `< 0`)."""
        if not (isinstance(self.batch_wait_ms, int | float) and 0 <= self.batch_wait_ms <= MAX_WAIT_S * 1000):
            raise UsageError(f"--batch-wait-ms must be from 0 to {MAX_WAIT_S * 1000:g} ms, got {self.batch_wait_ms}")
        for name in ("read_timeout_s", "shutdown_timeout_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 < value <= 3600):
                raise UsageError(f"{name} must be above 0 and at most 3600 seconds, got {value}")
        for name in ("max_body_bytes", "max_users", "max_events", "max_batch_users"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{name} must be a positive integer, got {value!r}")


@dataclass
class Work:
    """One request on its way through the model."""

    prepared: Prepared
    events: EventColumns  # for models without a fast path

    @property
    def users(self) -> int:
        return max(self.prepared.n_placed, 1)


def read_token(path: str | Path) -> str:
    """A bearer token from a file (surrounding whitespace stripped); at least 16 characters."""
    from gpuclust.errors import require_file

    path = Path(path)
    require_file(path, "a token file (--token-file)")
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the token file {path}: {exc}") from None
    if len(token) < 16 or any(c.isspace() for c in token):
        raise UsageError(f"the token in {path} must be at least 16 characters without spaces; make one with "
                         "`python -c 'import secrets; print(secrets.token_urlsafe(32))' > TOKEN_FILE`")
    return token


class Service:
    """The model state, the batcher and the counters behind the routes."""

    def __init__(self, settings: ServeSettings, state: ModelState | None = None) -> None:
        self.settings = settings
        self.state = state or load_state(settings.model_dir, settings.device, settings.pseudonymiser,
                                           settings.model_key)
        self.metrics = Metrics(settings.thresholds)
        self.batcher = MicroBatcher(self._compute, settings.max_batch_users, settings.batch_wait_ms / 1000,
                                    record=self._record)
        self._reload_lock: asyncio.Lock | None = None
        self._limiter: anyio.CapacityLimiter | None = None
        self._serial: anyio.CapacityLimiter | None = None  # predict() is not known to be thread-safe

    # --- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        self._reload_lock = asyncio.Lock()
        if self.settings.batching:
            self.batcher.start()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError, AttributeError):
            # Only where the loop runs in the main thread (the CLI); a test's loop runs elsewhere.
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGHUP, lambda: asyncio.ensure_future(self.reload_logged("SIGHUP")))

    async def stop(self) -> None:
        await self.batcher.stop()

    async def reload(self, why: str = "POST /v1/admin/reload") -> ModelState:
        """Load the model folder again and swap it in whole; a model that fails is refused (409).

        The server's log gets the whole reason; the caller gets it without the server's paths."""
        if self._reload_lock is None:
            self._reload_lock = asyncio.Lock()
        async with self._reload_lock:
            old = self.state
            try:
                new = await self.off_loop(load_state, self.settings.model_dir, self.settings.device,
                                          self.settings.pseudonymiser, self.settings.model_key)
            except Exception as exc:  # noqa: BLE001 - any model that fails to load is refused, never a 500
                self.metrics.reloads["refused"] += 1
                reason = str(exc) if isinstance(exc, UsageError) else f"{type(exc).__name__}: {exc}"
                _log(f"{why}: reload refused, still serving model {old.model_id}: {reason}"[:2000])
                raise RequestError(f"reload refused, still serving model {old.model_id}: "
                                   f"{_without_paths(reason, self.settings.model_dir)}"[:500], 409) from None
            self.state = new  # one assignment: requests that started keep the state they hold
            self.metrics.reloads["ok"] += 1
            self.metrics.model_reset()
            return new

    async def reload_logged(self, why: str) -> None:
        with contextlib.suppress(RequestError):  # reload() logged the refusal with its whole reason
            new = await self.reload(why)
            _log(f"{why}: now serving model {new.model_id}")

    async def off_loop(self, fn: Callable[..., T], *args: Any, serial: bool = False) -> T:
        """`fn(*args)` in a worker thread, at most one per core at a time (one at all with `serial`):
        the loop stays free."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(max(2, os.cpu_count() or 1))
            self._serial = anyio.CapacityLimiter(1)
        limiter = self._serial if serial else self._limiter
        return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=limiter)

    # --- the work -----------------------------------------------------------------------------------

    async def place(self, body: Any) -> tuple[ModelState, Prepared, Placement]:
        state = self.state  # the model this request finishes on, whatever reloads meanwhile
        if _events_in(body) > INLINE_ROWS:
            work = await self.off_loop(self._prepare, state, body)
        else:
            work = self._prepare(state, body)
        if self.settings.batching and state.fast:
            placement = await self.batcher.submit(state, work)
        else:
            placement = (await self.off_loop(self._compute, state, [work], serial=not state.fast))[0]
            self._record(state, [work], [placement])
        return state, work.prepared, placement

    def _prepare(self, state: ModelState, body: Any) -> Work:
        events = read_body(body, self.settings.max_events)
        prepared = state.assigner.prepare(events, state.pseudonymiser)
        if len(prepared.user_ids) > self.settings.max_users:
            raise RequestError(f"{len(prepared.user_ids):,} users in one request; at most "
                               f"{self.settings.max_users:,} are accepted", 413)
        return Work(prepared, events)

    def _compute(self, state: ModelState, works: list[Work]) -> list[Placement]:
        """The pass through the model: pure, so it can run in a worker thread."""
        if state.fast:
            return state.assigner.place([w.prepared for w in works])
        return [state.assigner.predict_request(w.events, w.prepared) for w in works]

    def _record(self, state: ModelState, works: list[Work], placements: list[Placement]) -> None:
        """The counters of one pass; on the loop only, so the metrics need no lock."""
        self.metrics.observe_batch(sum(w.prepared.n_placed for w in works), len(works))
        if state is self.state:
            for work, placed in zip(works, placements, strict=True):
                fine = np.isfinite(placed.distance) & np.isfinite(placed.anomaly_score)
                counts = placed_counts(placed.cluster[fine], placed.distance[fine], placed.anomaly_score[fine],
                                       state.k)
                self.metrics.assigned = self.metrics.assigned.add(counts).add(work.prepared.counts)
                self.metrics.unplaced += len(work.prepared.dropped) + int((~fine).sum())


def answer(state: ModelState, prepared: Prepared, placed: Placement, n: int | None = None) -> dict[str, Any]:
    """The response body: per placed user its cluster and scores (and items), then who was not placed."""
    users = []
    unplaced = dict(prepared.dropped)
    personal = None
    if n is not None:  # each user's events found once per request, not by a scan per user
        order = np.argsort(prepared.position, kind="stable")
        by_position = prepared.position[order]
        starts = np.searchsorted(by_position, prepared.placed, side="left")
        ends = np.searchsorted(by_position, prepared.placed, side="right")
        if getattr(state.estimator, "personal_", None) is not None:
            personal = personal_lists(state, prepared, placed, order, starts, ends, n)
    for row, position in enumerate(prepared.placed.tolist()):
        cluster = int(placed.cluster[row])
        if not (math.isfinite(placed.distance[row]) and math.isfinite(placed.anomaly_score[row])):
            unplaced[position] = NOT_FINITE  # a valid answer for the others, never a 500 on NaN
            continue
        entry = {"user_id": prepared.user_ids[position], "cluster": cluster, "label": state.labels.get(cluster),
                 "distance": round(float(placed.distance[row]), 6),
                 "anomaly_score": round(float(placed.anomaly_score[row]), 4)}
        if n is not None:
            if personal is not None:
                entry["items"] = personal[row]
            else:
                entry["items"] = state.recommend(cluster, set(prepared.item[order[starts[row]:ends[row]]].tolist()), n)
        users.append(entry)
    out = {"model_id": state.model_id, "users": users,
           "unplaced": [{"user_id": prepared.user_ids[p], "reason": why} for p, why in sorted(unplaced.items())]}
    if n is not None:
        out["blend_weight"] = state.estimator.segments_.blend_weight
    return out


def personal_lists(state: ModelState, prepared: Prepared, placed: Placement, order: np.ndarray, starts: np.ndarray,
                   ends: np.ndarray, n: int) -> list[list[dict[str, Any]]]:
    """Every placed user's list from the model's own recommender in one pass (`recommend_indices`, what
    `UserClusterer.recommend` uses): personal where the user has enough known items, else the segment's."""
    from gpuclust.backend import to_host
    from gpuclust.recommend.personal import PERSONAL, SEGMENT, binary_matrix

    est = state.estimator
    rows = [np.full(ends[r] - starts[r], r, dtype=np.int64) for r in range(len(prepared.placed))]
    items = [prepared.item[order[starts[r]:ends[r]]] for r in range(len(prepared.placed))]
    row, item = (np.concatenate(rows), np.concatenate(items)) if rows else (np.zeros(0, np.int64),) * 2
    known = item >= 0
    seen = binary_matrix(row[known], item[known], len(prepared.placed), len(est.vocabulary_), est.backend_)
    clusters = np.asarray(placed.cluster, dtype=np.int64)
    picked, scores, mine = (to_host(a) for a in est.recommend_indices(seen, clusters, n))
    return [[{**state._item(int(i), float(s)), "source": PERSONAL if mine[r] else SEGMENT}
             for i, s in zip(picked[r], scores[r], strict=True) if np.isfinite(s)] for r in range(len(picked))]


NOT_FINITE = "its features are not finite numbers (values too large for the model)"


def create_app(settings: ServeSettings, state: ModelState | None = None):
    """The FastAPI app; the model is loaded here, once (or `state` is used as given)."""
    service = Service(settings, state)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        await service.start()
        yield
        await service.stop()

    app = FastAPI(title="gpuclust segment service", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.service = service

    def error(status: int, reason: str) -> Response:
        return Response(_error_body(reason), status_code=status, media_type="application/json",
                        headers={"connection": "close"} if status in (408, CLIENT_CLOSED) else None)

    def ok(body: dict[str, Any]) -> Response:
        return Response(_dumps(body), media_type="application/json")

    @app.exception_handler(HTTPException)
    async def _http(_request, exc: HTTPException):
        reasons = {404: "no such endpoint: see the README for /v1/assign, /v1/recommend, /v1/clusters, /healthz, "
                        "/metrics", 405: "method not allowed on this endpoint"}
        return error(exc.status_code, reasons.get(exc.status_code, str(exc.detail)))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        return error(422, f"invalid request: {first.get('msg', 'see the README')}")

    @app.exception_handler(Exception)
    async def _bug(_request, exc: Exception):
        _log_bug(exc)
        return error(500, "internal error; the server log has the details")

    async def placed(request: Request, n: int | None = None) -> Response:
        try:
            raw = await _read_body(request, settings.max_body_bytes, settings.read_timeout_s)
            body = await service.off_loop(_decode, raw) if len(raw) > INLINE_BYTES else _decode(raw)
            _only_read_fields(body, request.url.path, recommends=n is not None)
            if n is not None:
                n = _top_n(body)
            state, prepared, placement = await service.place(body)
            if prepared.n_placed * (n or 1) > INLINE_ROWS:
                text = await service.off_loop(lambda: _dumps(answer(state, prepared, placement, n)))
            else:
                text = _dumps(answer(state, prepared, placement, n))
            return Response(text, media_type="application/json")
        except RequestError as exc:
            return error(exc.status, str(exc))
        except UsageError as exc:
            return error(422, str(exc))
        except ShuttingDown as exc:
            return error(503, str(exc))

    # Plain Starlette routes (no dependency injection to solve per request): the hot path stays short.
    async def assign(request: Request):
        return await placed(request)

    async def recommend(request: Request):
        return await placed(request, n=10)

    async def clusters(_request: Request):
        state = service.state
        est = state.estimator
        return ok({"model_id": state.model_id, "clusters": est.profiles_, "population": est.population_,
                   "blend_weight": est.segments_.blend_weight, "privacy": est.privacy_})

    async def reload(_request: Request):
        try:
            new = await service.reload()
        except RequestError as exc:
            return error(exc.status, str(exc))
        return ok({"status": "reloaded", **new.describe()})

    async def healthz(_request: Request):
        return ok({"status": "ok", **service.state.describe()})

    async def metrics(_request: Request):
        return PlainTextResponse(service.metrics.render(service.state), media_type="text/plain; version=0.0.4")

    for path, endpoint, method in (("/v1/assign", assign, "POST"), ("/v1/recommend", recommend, "POST"),
                                   ("/v1/clusters", clusters, "GET"), ("/v1/admin/reload", reload, "POST"),
                                   ("/healthz", healthz, "GET"), ("/metrics", metrics, "GET")):
        app.add_route(path, endpoint, methods=[method])

    return Guard(app, service, settings.token, settings.max_body_bytes, settings.admin_token)


class Guard:
    """Pure ASGI wrapper: bearer tokens, body size by Content-Length, the per-request counters, and
    the last line of defence: an exception that escapes the app is one log line, never a traceback."""

    def __init__(self, app: Any, service: Service, token: str | None, max_body_bytes: int,
                 admin_token: str | None = None) -> None:
        self.app = app
        self.service = service
        self.metrics = service.metrics
        self.token = token.encode() if token else None
        self.admin_token = admin_token.encode() if admin_token else None
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope.get("path", "")
        code = [500]

        started_response = [False]

        async def sending(message) -> None:
            if message["type"] == "http.response.start":
                code[0] = message["status"]
                started_response[0] = True
            await send(message)

        try:
            refusal = self._refuse(scope, path)
            if refusal is not None:
                await _send_error(sending, *refusal)
            else:
                await self.app(scope, receive, sending)
        except ClientDisconnect:
            code[0] = CLIENT_CLOSED
        except asyncio.CancelledError:
            # Only the server cancels a request task: at shutdown, for a request still open after the
            # graceful timeout (a client holding half a body). It ends here, answered 503 where it
            # can be, instead of as a logged traceback; the shutdown goes on.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            if not started_response[0]:
                with contextlib.suppress(Exception):
                    await _send_error(sending, 503, "the service is shutting down; send the request again", [])
        except Exception as exc:  # noqa: BLE001 - already answered 500 by the app's handler and logged in one line
            if not started_response[0]:
                _log_bug(exc)
                with contextlib.suppress(Exception):
                    await _send_error(sending, 500, "internal error; the server log has the details", [])
        finally:
            self.metrics.observe_request(path, code[0], time.perf_counter() - started)

    def _refuse(self, scope, path: str) -> tuple[int, str, list] | None:
        headers = dict(scope.get("headers") or ())
        admin = path.startswith(ADMIN)
        if path.startswith(PROTECTED):
            wanted = self.admin_token if admin and self.admin_token is not None else self.token
            if wanted is not None and not _bearer_is(headers, wanted):
                return 401, "missing or wrong bearer token (Authorization: Bearer TOKEN)", \
                    [(b"www-authenticate", b'Bearer realm="gpuclust"')]
            if admin and self.admin_token is None:
                return 403, ("admin routes are off: start the service with --admin-token-file to reload over HTTP, "
                             "or send it SIGHUP"), []
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return 400, "Content-Length is not a number", []
            if len(length) > 18:  # int() of more than 4,300 digits raises; no body is that long anyway
                return 413, f"the body has {len(length)}-digit bytes; at most {self.max_body_bytes:,} are accepted", []
            if int(length) > self.max_body_bytes:
                return 413, f"the body has {int(length):,} bytes; at most {self.max_body_bytes:,} are accepted", []
        return None


def _bearer_is(headers: dict[bytes, bytes], token: bytes) -> bool:
    scheme, _, credential = headers.get(b"authorization", b"").partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(credential.strip(), token)


async def _send_error(send, status: int, reason: str, headers: list) -> None:
    body = _error_body(reason)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


async def _read_body(request, limit: int, timeout_s: float) -> bytes:
    """The request's body, within `limit` bytes and `timeout_s` seconds; a client that hangs up is
    answered 499 (nobody reads it) and counted so, not as a server error."""
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if kind not in ("application/json", ""):
        raise RequestError(f"the body must be application/json, got {kind[:60]}", 415)
    body = bytearray()
    try:
        with anyio.fail_after(timeout_s):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise RequestError(f"the body is larger than {limit:,} bytes", 413)
    except TimeoutError:
        raise RequestError(f"the body did not arrive within {timeout_s:g} s", 408) from None
    except ClientDisconnect:
        raise RequestError("the client closed the connection before its body arrived", CLIENT_CLOSED) from None
    if not body:
        raise RequestError("the body is empty; send a JSON object with 'events' or 'columns'", 400)
    return bytes(body)


def _decode(body: bytes) -> Any:
    """JSON from bytes (UTF-8, -16 or -32; a UTF-8 byte-order mark is allowed); numbers stay finite."""
    try:
        return json.loads(body, parse_constant=_no_constant)
    except RecursionError:
        raise RequestError("the body is nested too deeply", 400) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(f"the body is not valid JSON ({_line(str(exc))[:120]})", 400) from None


def _events_in(body: Any) -> int:
    """How many events a decoded body claims, cheaply (0 when it is not the expected shape)."""
    if not isinstance(body, dict):
        return 0
    if isinstance(body.get("events"), list):
        return len(body["events"])
    columns = body.get("columns")
    users = columns.get("user_id") if isinstance(columns, dict) else None
    return len(users) if isinstance(users, list) else 0


def _dumps(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"), allow_nan=False)


def _error_body(reason: str) -> bytes:
    """`{"error": "one line"}`, ASCII-escaped: a reason quoting odd client text (a lone surrogate) still encodes."""
    return json.dumps({"error": _line(reason)}).encode()


def _without_paths(text: str, model_dir: Path) -> str:
    """`text` with the model folder's path, in each spelling the loader may use, replaced by "the model
    folder": a caller learns what is wrong, not where the server keeps its files."""
    spellings = {str(model_dir), str(model_dir.absolute())}
    with contextlib.suppress(OSError, RuntimeError):
        spellings.add(str(model_dir.resolve()))
    for spelling in sorted(spellings, key=len, reverse=True):
        if spelling not in ("", "."):
            text = text.replace(spelling, "<model folder>")
    return _line(text)


def _log_bug(exc: BaseException) -> None:
    """An unexpected exception as one log line: its type, message and where it was raised."""
    where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    at = f" at {Path(where[0].filename).name}:{where[0].lineno} in {where[0].name}" if where else ""
    _log("internal error: " + "".join(traceback.format_exception_only(type(exc), exc)).strip()[:500] + at)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _only_read_fields(body: Any, path: str, recommends: bool) -> None:
    """A body's top-level fields are the ones this endpoint reads: one it would ignore is refused, because
    the caller meant something by it ('top_k': 3 answered 10 items, 'n' on /v1/assign no items, and
    'columns' beside 'events' was dropped). Fields inside an event may carry anything."""
    if not isinstance(body, dict):
        return  # read_body names what the body should be
    known = ("events", "columns", "n") if recommends else ("events", "columns")
    unknown = [name for name in body if name not in known]
    if unknown:
        reads = "events or columns" + (", and n (the length of each list)" if recommends else
                                       " (items and n are /v1/recommend's)")
        raise RequestError(f"unknown field{'s' if len(unknown) > 1 else ''} {listed(map(repr, unknown))[:200]} in the "
                           f"body: {path} reads {reads}")
    if "events" in body and "columns" in body:
        raise RequestError("the body has both 'events' and 'columns'; give 'events' or 'columns', not both")


def _top_n(body: Any) -> int:
    n = body.get("n", 10) if isinstance(body, dict) else 10
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_RECOMMEND:
        raise RequestError(f"'n' must be an integer from 1 to {MAX_RECOMMEND}, got {n!r}"[:200])
    return n


def _line(text: str) -> str:
    return " ".join(str(text).split())


def _log(message: str) -> None:
    print(f"gpuclust serve: {_line(message)}", file=sys.stderr, flush=True)

