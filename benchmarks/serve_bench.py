"""Latency and throughput of `gpuclust serve`, on loopback only, bounded in requests and seconds.

    python benchmarks/serve_bench.py --users 100000 --events-per-user 50 --items 20000 --k 20

Fits (or reuses, --model DIR) a behaviour + TF-IDF model, starts `gpuclust serve` on 127.0.0.1 with
and without micro-batching, and measures from a separate client process:

- single-user POST /v1/assign, one client at a time: p50 / p99 latency;
- single-user requests from --clients concurrent clients (closed loop, keep-alive): p50 / p99 and users/s;
- batched requests of --batch-users users from 4 clients: users/s and p50 / p99 per request;
- for reference, `UserClusterer.predict` on one user in-process.

The client is a small asyncio HTTP/1.1 keep-alive client (no per-request client overhead to speak
of), in its own process, so the server's figures are not the client's. Every phase stops at
--requests requests or --seconds seconds, whichever comes first. Results go to
benchmarks/results/serve-cpu.{json,md} (or --out), with the load average before and after each phase.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python benchmarks/x.py` from anywhere: the benchmarks package is importable
RESULTS = ROOT / "benchmarks" / "results"
HOST = "127.0.0.1"  # loopback only


# --- the client ------------------------------------------------------------------------------------

async def _one(reader, writer, request: bytes) -> tuple[float, int]:
    start = time.perf_counter()
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return time.perf_counter() - start, status


async def _client(port: int, requests: list[bytes], deadline: float, budget: list[int], out: list) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    i = 0
    try:
        while budget[0] > 0 and time.perf_counter() < deadline:
            budget[0] -= 1
            out.append(await _one(reader, writer, requests[i % len(requests)]))
            i += 1
    finally:
        writer.close()


def load(port: int, bodies: list[bytes], clients: int, max_requests: int, seconds: float, token: str | None,
         path: str = "/v1/assign") -> dict:
    """Closed-loop load: `clients` connections, each sending the next body as soon as it has an answer."""
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    requests = [(f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n{auth}"
                 f"Content-Length: {len(b)}\r\n\r\n").encode() + b for b in bodies]
    results: list = []
    budget = [max_requests]

    async def run() -> float:
        start = time.perf_counter()
        deadline = start + seconds
        await asyncio.gather(*(_client(port, requests[c::clients] or requests, deadline, budget, results)
                               for c in range(clients)))
        return time.perf_counter() - start

    wall = asyncio.run(run())
    latency = np.asarray([r[0] for r in results])
    bad = sum(1 for r in results if r[1] != 200)
    return {"requests": len(results), "errors": bad, "seconds": round(wall, 3),
            "requests_per_s": round(len(results) / wall, 1),
            "p50_ms": round(float(np.percentile(latency, 50)) * 1000, 2),
            "p99_ms": round(float(np.percentile(latency, 99)) * 1000, 2),
            "max_ms": round(float(latency.max()) * 1000, 2)}


# --- the server and the data ---------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(model: Path, batching: bool) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    cmd = [sys.executable, "-c", "from gpuclust.cli.entry import main; main()", "serve", "--model", str(model),
           "--host", HOST, "--port", str(port), "--device", "cpu", "--max-users", "2000"]
    if not batching:
        cmd.append("--no-batching")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=1) as s:
                s.sendall(f"GET /healthz HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
                if b"200 OK" in s.recv(200):
                    return proc, port
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"the server did not start: {proc.stderr.read().decode()[-2000:]}")


def prepare(args, work: Path) -> tuple[Path, Path]:
    from gpuclust.config import PipelineConfig
    from gpuclust.run import run_files
    from gpuclust.synth import SynthSpec, write

    data = work / "data"
    if not (data / "events.parquet").exists():
        write(SynthSpec(n_users=args.users, n_items=args.items, n_groups=args.k, seed=0,
                        events_per_user=args.events_per_user), data)
    model = Path(args.model) if args.model else work / "run" / "model"
    if not model.exists():
        config = PipelineConfig(device="cpu", seed=0)
        config.cluster.k = args.k
        started = time.perf_counter()
        run_files(config, data / "events.parquet", work / "run", items=data / "items.parquet")
        print(f"fitted {args.users:,} users in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return data, model


def bodies(data: Path, n_users: int, per_request: int, seed: int = 1) -> list[bytes]:
    import pandas as pd

    events = pd.read_parquet(data / "events.parquet")
    users = np.random.default_rng(seed).choice(events["user_id"].unique(), n_users, replace=False)
    chosen = events[events["user_id"].isin(users)].sort_values("user_id")
    out = []
    groups = [g for _, g in chosen.groupby("user_id")]
    for start in range(0, len(groups), per_request):
        part = pd.concat(groups[start:start + per_request])
        out.append(json.dumps({"columns": {
            "user_id": part["user_id"].tolist(), "item_id": part["item_id"].tolist(),
            "event_type": part["event_type"].astype(str).tolist(),
            "timestamp": part["timestamp"].astype("datetime64[ms]").astype("int64").tolist(),
            "value": part["value"].astype(float).round(2).tolist()}}).encode())
    return out


def predict_reference(model: Path, data: Path, n: int = 20) -> dict:
    import pandas as pd

    from gpuclust import UserClusterer

    est = UserClusterer.load(model, device="cpu")
    events = pd.read_parquet(data / "events.parquet")
    users = events["user_id"].unique()[:n]
    times = []
    for u in users:
        one = events[events["user_id"] == u]
        start = time.perf_counter()
        est.predict(one)
        times.append(time.perf_counter() - start)
    return {"users": n, "p50_ms": round(float(np.median(times)) * 1000, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--events-per-user", type=float, default=50.0)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--model", help="reuse this saved model (and --work's data) instead of fitting")
    parser.add_argument("--work", help="folder for the data and the model (default: a temporary one)")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--batch-users", type=int, default=100)
    parser.add_argument("--requests", type=int, default=4000, help="at most this many requests per phase")
    parser.add_argument("--seconds", type=float, default=20.0, help="at most this long per phase")
    parser.add_argument("--out", default=str(RESULTS / "serve-cpu"))
    args = parser.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="gpuclust-serve-bench-"))
    data, model = prepare(args, work)
    single = bodies(data, 1000, 1)
    batched = bodies(data, 40 * args.batch_users, args.batch_users, seed=2)
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
              "data": {"users": args.users, "events_per_user": args.events_per_user, "items": args.items,
                       "k": args.k, "features": "behaviour,tfidf"},
              "predict_one_user_in_process": predict_reference(model, data), "phases": []}
    for batching in (True, False):
        proc, port = start_server(model, batching)
        try:
            load(port, single[:50], 1, 50, 10, None)  # warm-up
            for name, body, clients, per in (("single user, 1 client", single, 1, 1),
                                             (f"single user, {args.clients} clients", single, args.clients, 1),
                                             (f"{args.batch_users} users per request, 4 clients", batched, 4,
                                              args.batch_users)):
                before = os.getloadavg()[0]
                measured = load(port, body, clients, args.requests if per == 1 else args.requests // 20,
                                args.seconds, None)
                measured.update(phase=name, batching=batching, users_per_s=round(measured["requests_per_s"] * per, 1),
                                load_before=round(before, 2), load_after=round(os.getloadavg()[0], 2))
                result["phases"].append(measured)
                print(json.dumps(measured), file=sys.stderr)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    from benchmarks.method import write_results

    write_results(args.out, result, markdown(result, args))


def markdown(result: dict, args) -> str:
    lines = [f"# gpuclust serve, {result['machine']['cpus']} CPUs, loopback",
             "",
             f"Model: behaviour + TF-IDF, k={args.k}, {args.users:,} synthetic users, {args.items:,} items. "
             f"`predict()` of one user in-process: {result['predict_one_user_in_process']['p50_ms']} ms (median).",
             "",
             "| micro-batching | phase | requests | users/s | p50 ms | p99 ms | errors | load before/after |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for p in result["phases"]:
        lines.append(f"| {'on' if p['batching'] else 'off'} | {p['phase']} | {p['requests']:,} | {p['users_per_s']:,} "
                     f"| {p['p50_ms']} | {p['p99_ms']} | {p['errors']} | {p['load_before']} / {p['load_after']} |")
    lines += ["", "`python benchmarks/serve_bench.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None and k not in ("out", "work"))
        + "`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
