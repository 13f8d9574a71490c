"""The segment service: a FastAPI app over one saved model (needs the `serve` extra: FastAPI, uvicorn).

    POST /v1/assign          events of one or many users -> per user: cluster, label, distance, anomaly score
    POST /v1/recommend       the same, plus the top-N items of the user's segment it has not seen
    GET  /v1/clusters        the cluster profiles (privacy rules applied where the model is private)
    POST /v1/admin/reload    load the model folder again; a broken one is refused, the old one keeps serving
    GET  /healthz            the model being served (no token needed: for load balancers)
    GET  /metrics            Prometheus text: requests, errors, latency, batch sizes, cluster shares, drift

With a token, every /v1 path and /metrics needs `Authorization: Bearer TOKEN` (compared in constant
time) and answers 401 without it. Every bad request is a 4xx with a one-line JSON reason
(`{"error": "..."}`); nothing a client sends produces a 500 or a stack trace in a response. User ids
in requests are pseudonymised on arrival where the model was fitted so (raw ids are only echoed back
to the caller that sent them) and are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException

from gpuclust.errors import UsageError
from gpuclust.privacy import Pseudonymiser
from gpuclust.quality.drift import Thresholds, placed_counts
from gpuclust.serve.batcher import MicroBatcher
from gpuclust.serve.events import EventColumns, RequestError, read_body
from gpuclust.serve.fastpath import Placement, Prepared
from gpuclust.serve.metrics import Metrics
from gpuclust.serve.state import MAX_RECOMMEND, ModelState, load_state

PROTECTED = ("/v1/", "/metrics")


@dataclass
class ServeSettings:
    model_dir: Path
    device: str | None = None
    token: str | None = None
    pseudonymiser: Pseudonymiser | None = None
    max_body_bytes: int = 8 * 2**20
    max_users: int = 1000
    max_events: int = 200_000
    batching: bool = True
    max_batch_users: int = 1024
    batch_wait_ms: float = 0.0
    thresholds: Thresholds | None = None


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
        self.state = state or load_state(settings.model_dir, settings.device, settings.pseudonymiser)
        self.metrics = Metrics(settings.thresholds)
        self.batcher = MicroBatcher(self._compute, settings.max_batch_users, settings.batch_wait_ms / 1000)
        self._reload_lock: asyncio.Lock | None = None

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

    async def reload(self) -> ModelState:
        """Load the model folder again and swap it in whole; a model that fails is refused (409)."""
        async with self._reload_lock:
            old = self.state
            loop = asyncio.get_running_loop()
            try:
                new = await loop.run_in_executor(None, load_state, self.settings.model_dir, self.settings.device,
                                                 self.settings.pseudonymiser)
            except UsageError as exc:
                self.metrics.reloads["refused"] += 1
                raise RequestError(f"reload refused, still serving model {old.model_id}: {_line(str(exc))}",
                                   409) from None
            self.state = new  # one assignment: requests that started keep the state they hold
            self.metrics.reloads["ok"] += 1
            self.metrics.model_reset()
            return new

    async def reload_logged(self, why: str) -> None:
        try:
            new = await self.reload()
            _log(f"{why}: now serving model {new.model_id}")
        except RequestError as exc:
            _log(f"{why}: {exc}")

    # --- the work -----------------------------------------------------------------------------------

    async def place(self, body: Any) -> tuple[ModelState, Prepared, Placement]:
        state = self.state  # the model this request finishes on, whatever reloads meanwhile
        events = read_body(body, self.settings.max_events)
        prepared = state.assigner.prepare(events, state.pseudonymiser)
        if len(prepared.user_ids) > self.settings.max_users:
            raise RequestError(f"{len(prepared.user_ids):,} users in one request; at most "
                               f"{self.settings.max_users:,} are accepted", 413)
        work = Work(prepared, events)
        if self.settings.batching and state.fast:
            placement = await self.batcher.submit(state, work)
        else:
            placement = self._compute(state, [work])[0]
        return state, prepared, placement

    def _compute(self, state: ModelState, works: list[Work]) -> list[Placement]:
        if state.fast:
            placements = state.assigner.place([w.prepared for w in works])
        else:
            placements = [state.assigner.predict_request(w.events, w.prepared) for w in works]
        self.metrics.observe_batch(sum(w.prepared.n_placed for w in works), len(works))
        if state is self.state:
            for work, placed in zip(works, placements, strict=True):
                counts = placed_counts(placed.cluster, placed.distance, placed.anomaly_score, state.k)
                self.metrics.assigned = self.metrics.assigned.add(counts).add(work.prepared.counts)
                self.metrics.unplaced += len(work.prepared.dropped)
        return placements


def answer(state: ModelState, prepared: Prepared, placed: Placement, n: int | None = None) -> dict[str, Any]:
    """The response body: per placed user its cluster and scores (and items), then who was not placed."""
    users = []
    if n is not None:  # each user's events found once per request, not by a scan per user
        order = np.argsort(prepared.position, kind="stable")
        by_position = prepared.position[order]
        starts = np.searchsorted(by_position, prepared.placed, side="left")
        ends = np.searchsorted(by_position, prepared.placed, side="right")
    for row, position in enumerate(prepared.placed.tolist()):
        cluster = int(placed.cluster[row])
        entry = {"user_id": prepared.user_ids[position], "cluster": cluster, "label": state.labels.get(cluster),
                 "distance": round(float(placed.distance[row]), 6),
                 "anomaly_score": round(float(placed.anomaly_score[row]), 4)}
        if n is not None:
            seen = set(prepared.item[order[starts[row]:ends[row]]].tolist())
            entry["items"] = state.recommend(cluster, seen, n)
        users.append(entry)
    unplaced = [{"user_id": prepared.user_ids[p], "reason": why} for p, why in sorted(prepared.dropped.items())]
    out = {"model_id": state.model_id, "users": users, "unplaced": unplaced}
    if n is not None:
        out["blend_weight"] = state.estimator.segments_.blend_weight
    return out


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

    def error(status: int, reason: str) -> JSONResponse:
        return JSONResponse({"error": _line(reason)}, status_code=status)

    def ok(body: dict[str, Any]) -> Response:
        return Response(json.dumps(body, separators=(",", ":"), allow_nan=False), media_type="application/json")

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
        _log("internal error: " + "".join(traceback.format_exception_only(type(exc), exc)).strip())
        return error(500, "internal error; the server log has the details")

    async def placed(request: Request, n: int | None = None) -> Response:
        try:
            body = await _read_json(request, settings.max_body_bytes)
            if n is not None:
                n = _top_n(body)
            state, prepared, placement = await service.place(body)
            return ok(answer(state, prepared, placement, n))
        except RequestError as exc:
            return error(exc.status, str(exc))
        except UsageError as exc:
            return error(422, str(exc))

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

    return Guard(app, service, settings.token, settings.max_body_bytes)


class Guard:
    """Pure ASGI wrapper: bearer token, body size by Content-Length, and the per-request counters."""

    def __init__(self, app: Any, service: Service, token: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.service = service
        self.metrics = service.metrics
        self.token = token.encode() if token else None
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope.get("path", "")
        code = [500]

        async def sending(message) -> None:
            if message["type"] == "http.response.start":
                code[0] = message["status"]
            await send(message)

        try:
            refusal = self._refuse(scope, path)
            if refusal is not None:
                await _send_error(sending, *refusal)
            else:
                await self.app(scope, receive, sending)
        finally:
            self.metrics.observe_request(path, code[0], time.perf_counter() - started)

    def _refuse(self, scope, path: str) -> tuple[int, str, list] | None:
        headers = dict(scope.get("headers") or ())
        if self.token is not None and path.startswith(PROTECTED):
            given = headers.get(b"authorization", b"")
            scheme, _, credential = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(credential.strip(), self.token):
                return 401, "missing or wrong bearer token (Authorization: Bearer TOKEN)", \
                    [(b"www-authenticate", b'Bearer realm="gpuclust"')]
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return 400, "Content-Length is not a number", []
            if int(length) > self.max_body_bytes:
                return 413, f"the body has {int(length):,} bytes; at most {self.max_body_bytes:,} are accepted", []
        return None


async def _send_error(send, status: int, reason: str, headers: list) -> None:
    body = json.dumps({"error": reason}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


async def _read_json(request, limit: int) -> Any:
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if kind not in ("application/json", ""):
        raise RequestError(f"the body must be application/json, got {kind[:60]}", 415)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise RequestError(f"the body is larger than {limit:,} bytes", 413)
    if not body:
        raise RequestError("the body is empty; send a JSON object with 'events' or 'columns'", 400)
    try:
        return json.loads(body, parse_constant=_no_constant)
    except RecursionError:
        raise RequestError("the body is nested too deeply", 400) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(f"the body is not valid JSON ({_line(str(exc))[:120]})", 400) from None


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _top_n(body: Any) -> int:
    n = body.get("n", 10) if isinstance(body, dict) else 10
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_RECOMMEND:
        raise RequestError(f"'n' must be an integer from 1 to {MAX_RECOMMEND}, got {n!r}"[:200])
    return n


def _line(text: str) -> str:
    return " ".join(str(text).split())


def _log(message: str) -> None:
    print(f"gpuclust serve: {_line(message)}", file=sys.stderr, flush=True)

