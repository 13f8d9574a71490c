"""Small hand-made logs for unit tests (the synthetic generator covers realistic sizes)."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd


def quick_fit(events, items=None, truth=None, **kwargs):
    """A 3-cluster behaviour fit on the CPU (a clusterer object brings its own k): the misuse tests' fit."""
    from gpuclust import UserClusterer

    k = {} if "clusterer" in kwargs and not isinstance(kwargs["clusterer"], str) else {"n_clusters": 3}
    return UserClusterer(**{**k, "features": ["behaviour"], "device": "cpu", **kwargs}).fit(events, items, truth)


def blob_events(n_users: int = 300, n_groups: int = 3, events_per_user: int = 20, seed: int = 0):
    """Users whose groups touch disjoint item ranges: any sane pipeline separates them exactly."""
    rng = np.random.default_rng(seed)
    n_items = 30 * n_groups
    groups = rng.integers(0, n_groups, n_users)
    users = np.repeat(np.arange(n_users), events_per_user)
    items = groups[users] * 30 + rng.integers(0, 30, len(users))
    kinds = rng.choice(["view", "click", "cart", "purchase"], len(users), p=[0.6, 0.2, 0.1, 0.1])
    start = pd.Timestamp("2026-01-01")
    times = start + pd.to_timedelta(rng.integers(0, 30 * 86400, len(users)), unit="s")
    events = pd.DataFrame({
        "user_id": users + 100, "item_id": items, "event_type": kinds, "timestamp": times,
        "value": np.where(kinds == "purchase", 10.0, 0.0).astype("float32"),
    })
    catalogue = pd.DataFrame({
        "item_id": np.arange(n_items),
        "title": [f"product {i}" for i in range(n_items)],
        "category": [f"cat{i // 10}" for i in range(n_items)],
        "price": np.linspace(1, 50, n_items).astype("float32"),
    })
    truth = pd.DataFrame({"user_id": np.arange(n_users) + 100, "group": groups})
    return events, catalogue, truth



def log_with_a_tiny_group():
    """Three big groups (blob_events) and one of 5 users (ids 1000-1004, truth group 3) on items nobody
    else touches: a cluster that privacy's minimum group size withholds. (events, items, truth)."""
    events, items, truth = blob_events(n_users=240, n_groups=3, events_per_user=15, seed=3)
    rng = np.random.default_rng(4)
    tiny_users = np.repeat(np.arange(1000, 1005), 15)
    tiny = pd.DataFrame({"user_id": tiny_users, "item_id": 200 + rng.integers(0, 10, len(tiny_users)),
                         "event_type": "purchase", "timestamp": pd.Timestamp("2026-01-20"),
                         "value": np.float32(99.0)})
    tiny["timestamp"] += pd.to_timedelta(rng.integers(0, 86400 * 5, len(tiny)), unit="s")
    events = pd.concat([events, tiny], ignore_index=True)
    items = pd.concat([items, pd.DataFrame({"item_id": np.arange(200, 210), "title": [f"rare {i}" for i in range(10)],
                                            "category": "rare", "price": np.float32(99.0)})], ignore_index=True)
    truth = pd.concat([truth, pd.DataFrame({"user_id": np.arange(1000, 1005), "group": 3})], ignore_index=True)
    return events, items, truth


def cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """Run `gpuclust ARGS` in-process; returns (exit code, stdout, stderr)."""
    code = _main(monkeypatch, args)
    out = capsys.readouterr()
    return code, out.out, out.err


def cli_ok(*args) -> None:
    """Run `gpuclust ARGS` in-process where no `monkeypatch` fixture reaches (a module-scoped fixture that
    makes a run for its tests); it must succeed."""
    import pytest

    mp = pytest.MonkeyPatch()
    try:
        code = _main(mp, args)
    finally:
        mp.undo()
    assert code in (0, None), code


def log_runs(root, events, items, k: int, runs: dict[str, tuple] | None = None):
    """`events` and `items` as Parquet in `root`, and a finished CPU run of them in `root/NAME` for each
    NAME: extra flags of `runs` (default one plain run, `root/run`); returns `root`. For the module
    fixtures whose tests read finished runs."""
    events.to_parquet(root / "events.parquet")
    items.to_parquet(root / "items.parquet")
    for name, extra in (runs or {"run": ()}).items():
        cli_ok("run", "--events", root / "events.parquet", "--items", root / "items.parquet", "--k", k, "--device",
               "cpu", "--json", "--out", root / name, *extra)
    return root


def _main(monkeypatch, args) -> int | str | None:
    import signal

    from gpuclust.cli.app import main

    monkeypatch.setattr(sys, "argv", ["gpuclust", *map(str, args)])
    handler = signal.getsignal(signal.SIGTERM)  # main() installs its own; the test process keeps pytest's
    try:
        main()
        return 0
    except SystemExit as exc:
        return exc.code
    finally:
        signal.signal(signal.SIGTERM, handler)
