"""`gpuclust serve`: a saved model behind HTTP (FastAPI on uvicorn); a thin wrapper over gpuclust.serve."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated

import typer

from gpuclust.backend import DEVICE_CHOICES
from gpuclust.errors import UsageError


def serve(
    model: Annotated[Path, typer.Option(help="A saved model: the OUT/model folder of `gpuclust run`.")],
    host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    token_file: Annotated[Path | None, typer.Option(help="File holding a bearer token: /v1 and /metrics then "
                                                    "need `Authorization: Bearer TOKEN`.")] = None,
    admin_token_file: Annotated[Path | None, typer.Option(
        help="File holding another token, for POST /v1/admin/reload (without one: reload by SIGHUP only).")] = None,
    pseudonymise: Annotated[Path | None, typer.Option(
        "--pseudonymise", metavar="KEY_FILE", help="The key the model was fitted with, if it was.")] = None,
    model_key: Annotated[Path | None, typer.Option(
        "--model-key", metavar="KEY_FILE", help="Refuse a model not signed with this key (`run --model-key`), at "
                                                "start and on every reload.")] = None,
    device: Annotated[str | None, typer.Option(help=f"Where to place users: {', '.join(DEVICE_CHOICES)} "
                                               "(default: the GPU when the model and the machine have one).")] = None,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body, MiB.")] = 8.0,
    max_users: Annotated[int, typer.Option(help="Most users in one request.")] = 1000,
    max_events: Annotated[int, typer.Option(help="Most events in one request.")] = 200_000,
    batching: Annotated[bool, typer.Option(help="Place concurrent requests in one pass (micro-batching).")] = True,
    max_batch_users: Annotated[int, typer.Option(help="Most users in one micro-batch.")] = 1024,
    batch_wait_ms: Annotated[float, typer.Option(help="Wait this long for company before a pass (0: only "
                                                 "requests already queued share it; at most 1000).")] = 0.0,
    read_timeout: Annotated[float, typer.Option(help="Seconds a client has to send a request's headers, and "
                                                "then its body (408 after).")] = 30.0,
    access_log: Annotated[bool, typer.Option(help="Log each request line (never bodies or user ids).")] = False,
) -> None:
    """Serve a saved model over HTTP: /v1/assign, /v1/recommend, /v1/clusters, /healthz, /metrics.

    The model is loaded once; SIGHUP (or POST /v1/admin/reload with --admin-token-file) loads the
    folder again and swaps it in whole (a broken model is refused and the old one keeps serving)."""
    try:
        import uvicorn  # noqa: F401 - only to say what is missing before anything else
    except ImportError:
        raise UsageError("gpuclust serve needs FastAPI and uvicorn: pip install -e '.[serve]' in the gpuclust folder") from None
    from gpuclust.privacy import Pseudonymiser
    from gpuclust.serve import server
    from gpuclust.serve.app import ServeSettings, create_app, read_token
    from gpuclust.signing import ModelKey

    _check_options(port, max_body_mb, batch_wait_ms, read_timeout,
                   {"--max-users": max_users, "--max-events": max_events, "--max-batch-users": max_batch_users})
    token = read_token(token_file) if token_file else None
    admin_token = read_token(admin_token_file) if admin_token_file else None
    if admin_token is not None and admin_token == token:
        raise UsageError("--admin-token-file must hold another token than --token-file: every client has that one")
    settings = ServeSettings(
        model_dir=model, device=device, token=token, admin_token=admin_token,
        pseudonymiser=Pseudonymiser.from_file(pseudonymise) if pseudonymise else None,
        model_key=ModelKey.from_file(model_key) if model_key else None,
        max_body_bytes=int(max_body_mb * 2**20), max_users=max_users, max_events=max_events, batching=batching,
        max_batch_users=max_batch_users, batch_wait_ms=batch_wait_ms, read_timeout_s=read_timeout)
    app = create_app(settings)  # loads, verifies and tries the model: a bad one stops here with one line
    sock = server.listen(host, port)  # a bad host or a port in use: one line, before the URL is printed
    state = app.service.state
    how = "fast path" if state.fast else state.assigner.fallback
    shown = f"[{host}]" if ":" in host else host
    print(f"gpuclust serve: model {state.model_id} ({state.k} clusters, {state.estimator.backend_.device}, {how}, "
          f"micro-batching {'on' if batching else 'off'}) on http://{shown}:{port}"
          + ("" if settings.token else " without a token")
          + ("" if settings.admin_token else "; reload by SIGHUP only"), file=sys.stderr, flush=True)
    server.run(app, sock, read_timeout_s=settings.read_timeout_s, shutdown_timeout_s=settings.shutdown_timeout_s,
               access_log=access_log)


MAX_BODY_MB = 1024.0


def _check_options(port: int, max_body_mb: float, batch_wait_ms: float, read_timeout: float,
                   counts: dict[str, int]) -> None:
    """Every number before anything starts: NaN and infinity pass `<= 0` checks and then hang or crash."""
    if not 1 <= port <= 65535:
        raise UsageError(f"--port must be from 1 to 65535, got {port}")
    for name, value in counts.items():
        if value < 1:
            raise UsageError(f"{name} must be a positive integer, got {value}")
    if not (math.isfinite(max_body_mb) and 0 < max_body_mb <= MAX_BODY_MB):
        raise UsageError(f"--max-body-mb must be above 0 and at most {MAX_BODY_MB:g} (MiB), got {max_body_mb}")
    if not (math.isfinite(batch_wait_ms) and 0 <= batch_wait_ms <= 1000):
        raise UsageError(f"--batch-wait-ms must be from 0 to 1000 (ms), got {batch_wait_ms}")
    if not (math.isfinite(read_timeout) and 0 < read_timeout <= 3600):
        raise UsageError(f"--read-timeout must be above 0 and at most 3600 (seconds), got {read_timeout}")
