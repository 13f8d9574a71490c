"""`gpuclust serve`: a saved model behind HTTP (FastAPI on uvicorn); a thin wrapper over gpuclust.serve."""

from __future__ import annotations

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
    pseudonymise: Annotated[Path | None, typer.Option(
        "--pseudonymise", metavar="KEY_FILE", help="The key the model was fitted with, if it was.")] = None,
    device: Annotated[str | None, typer.Option(help=f"Where to place users: {', '.join(DEVICE_CHOICES)} "
                                               "(default: the GPU when the model and the machine have one).")] = None,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body, MiB.")] = 8.0,
    max_users: Annotated[int, typer.Option(help="Most users in one request.")] = 1000,
    max_events: Annotated[int, typer.Option(help="Most events in one request.")] = 200_000,
    batching: Annotated[bool, typer.Option(help="Place concurrent requests in one pass (micro-batching).")] = True,
    max_batch_users: Annotated[int, typer.Option(help="Most users in one micro-batch.")] = 1024,
    batch_wait_ms: Annotated[float, typer.Option(help="Wait this long for company before a pass (0: only "
                                                 "requests already queued share it).")] = 0.0,
    access_log: Annotated[bool, typer.Option(help="Log each request line (never bodies or user ids).")] = False,
) -> None:
    """Serve a saved model over HTTP: /v1/assign, /v1/recommend, /v1/clusters, /healthz, /metrics.

    The model is loaded once; SIGHUP or POST /v1/admin/reload loads the folder again and swaps it in
    whole (a broken model is refused and the old one keeps serving)."""
    try:
        import uvicorn
    except ImportError:
        raise UsageError("gpuclust serve needs FastAPI and uvicorn: pip install 'gpuclust[serve]'") from None
    from gpuclust.privacy import Pseudonymiser
    from gpuclust.serve.app import ServeSettings, create_app, read_token

    for name, value in (("--max-users", max_users), ("--max-events", max_events),
                        ("--max-batch-users", max_batch_users), ("--port", port)):
        if value < (0 if name == "--port" else 1):
            raise UsageError(f"{name} must be positive, got {value}")
    if max_body_mb <= 0 or batch_wait_ms < 0:
        raise UsageError("--max-body-mb must be positive and --batch-wait-ms at least 0")
    settings = ServeSettings(
        model_dir=model, device=device, token=read_token(token_file) if token_file else None,
        pseudonymiser=Pseudonymiser.from_file(pseudonymise) if pseudonymise else None,
        max_body_bytes=int(max_body_mb * 2**20), max_users=max_users, max_events=max_events, batching=batching,
        max_batch_users=max_batch_users, batch_wait_ms=batch_wait_ms)
    app = create_app(settings)  # loads, verifies and tries the model: a bad one stops here with one line
    state = app.service.state
    how = "fast path" if state.fast else state.assigner.fallback
    print(f"gpuclust serve: model {state.model_id} ({state.k} clusters, {state.estimator.backend_.device}, {how}, "
          f"micro-batching {'on' if batching else 'off'}) on http://{host}:{port}"
          + ("" if settings.token else " without a token"), file=sys.stderr, flush=True)
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=access_log,
                                  lifespan="on", server_header=False, date_header=False)).run()
