"""The README's promise to a user, as checks: exit 0 with a complete, self-consistent output set, or exit 2
with one line on stderr and nothing written; never a traceback, another exit code, or a hang.

`call` runs `gpuclust ARGS` in-process (fast enough for hundreds of Hypothesis examples) with its own
stdout/stderr capture and a wall-clock guard; `snapshot` records a folder tree so a test can say that a
refused command left it exactly as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import signal
import sys
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

# Every output folder also holds gpuclust's marker (.gpuclust.json), which says it may replace the folder.
MARKER = ".gpuclust.json"
RUN_OUTPUTS = {"assignments.parquet", "clusters.json", "map.parquet", "manifest.json", MARKER}
ASSIGN_OUTPUTS = {"assignments.parquet", "manifest.json", MARKER}
SYNTH_OUTPUTS = {"events.parquet", "items.parquet", "truth.parquet", MARKER}
CALL_TIMEOUT_S = 60


class Hang(BaseException):
    """Raised in the command when it runs past its wall-clock guard (BaseException: `except Exception`
    in the code under test must not swallow it)."""


@dataclass
class Result:
    args: list[str]
    code: int | None
    stdout: str
    stderr: str
    escaped: str | None = None  # an exception that got out of main(): what a user sees as a traceback
    warnings: list[str] = field(default_factory=list)
    exception: BaseException | None = field(default=None, repr=False)

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    def __repr__(self) -> str:
        return (f"Result(code={self.code}, stderr={self.stderr[-600:]!r}, escaped={self.escaped!r}, "
                f"args={self.args})")


def call(*args, timeout_s: float = CALL_TIMEOUT_S) -> Result:
    """Run `gpuclust ARGS` in this process, as `main()` runs it from the console script."""
    from gpuclust.cli.app import main

    argv = ["gpuclust", *map(str, args)]
    out, err = io.StringIO(), io.StringIO()
    saved_argv = sys.argv
    code: int | None = 0
    escaped = exception = None

    def on_alarm(signum, frame):
        raise Hang(f"gpuclust {' '.join(argv[1:])} ran past {timeout_s} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    sys.argv = argv
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err):
            warnings.simplefilter("always")
            try:
                main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) or exc.code is None else 1
                if code is None:
                    code = 0
            except Hang:
                raise
            except BaseException as exc:  # noqa: BLE001 - anything else reaches the user as a traceback
                code, exception = 1, exc
                escaped = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                err.write("Traceback (most recent call last):\n" + "".join(traceback.format_tb(exc.__traceback__)[-3:])
                          + escaped + "\n")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        sys.argv = saved_argv
    return Result(argv[1:], code, out.getvalue(), err.getvalue(), escaped,
                  [f"{w.category.__name__}: {w.message}" for w in caught], exception)


# --- folder trees --------------------------------------------------------------------------------------

def snapshot(root: Path) -> dict[str, str]:
    """Every path under `root` (itself included) and what it is: a file's SHA-256, 'dir', or 'link'."""
    root = Path(root)
    if not root.exists() and not root.is_symlink():
        return {}
    tree = {".": _kind(root)}
    if root.is_dir() and not root.is_symlink():
        for path in sorted(root.rglob("*")):
            tree[path.relative_to(root).as_posix()] = _kind(path)
    return tree


def _kind(path: Path) -> str:
    if path.is_symlink():
        return "link"
    if path.is_dir():
        return "dir"
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_changes(before: dict[str, str], after: dict[str, str]) -> dict[str, list[str]]:
    return {
        "added": sorted(set(after) - set(before)),
        "removed": sorted(set(before) - set(after)),
        "changed": sorted(p for p in set(before) & set(after) if before[p] != after[p]),
    }


# --- the contract --------------------------------------------------------------------------------------

def assert_no_traceback(result: Result) -> None:
    if result.exception is not None:
        # Chained, so that Hypothesis tells bugs apart by where the escaped exception was raised.
        raise AssertionError(f"an exception escaped main(): {result.escaped}") from result.exception
    assert "Traceback" not in result.stderr, f"traceback on stderr: {result.stderr[-400:]!r}"


def assert_exit_0_or_2(result: Result) -> None:
    assert result.code in (0, 2), f"exit code {result.code} (only 0 and 2 are promised): {result.stderr[-400:]!r}"


def assert_refusal_is_one_line(result: Result) -> None:
    lines = result.stderr_lines
    assert len(lines) == 1, f"a refusal must be one line on stderr, got {len(lines)}: {result.stderr[-600:]!r}"


def assert_untouched(before: dict[str, str], after: dict[str, str], what: str) -> None:
    changes = tree_changes(before, after)
    assert not any(changes.values()), f"{what} changed by a refused command: {changes}"


def check_contract(result: Result, watched: Path, before: dict[str, str]) -> bool:
    """The promise for any command: exit 0 (True: the caller checks the outputs) or a clean refusal.

    `watched` is the folder holding the example's inputs and outputs; a refusal must leave it exactly as
    `before` (a snapshot taken before the command ran)."""
    assert_no_traceback(result)
    assert_exit_0_or_2(result)
    if result.code == 2:
        assert_refusal_is_one_line(result)
        assert_untouched(before, snapshot(watched), str(watched))
        return False
    return True


def unchanged_inputs(before: dict[str, str], after: dict[str, str], outputs: set[str]) -> None:
    """Files the user had (anything not under an output name) are intact after a successful command."""
    def is_output(path: str) -> bool:
        return any(path == o or path.startswith(o + "/") for o in outputs)

    lost = [p for p, kind in before.items() if not is_output(p) and after.get(p) != kind and p != "."]
    assert not lost, f"user files changed or removed: {lost}"


def strict_json(path: Path):
    """Parse JSON as a strict reader would: NaN and Infinity are not JSON."""
    def refuse(name):
        raise AssertionError(f"{path.name} holds {name}, which is not JSON")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def _finite(values, what: str) -> None:
    array = np.asarray(values, dtype=float)
    assert np.isfinite(array).all(), f"{what} holds NaN or infinity: {array[~np.isfinite(array)][:5]}"


def check_run_outputs(out: Path, before: dict[str, str] | None = None) -> dict:
    """A complete, self-consistent `gpuclust run` output set in `out`; returns its manifest."""
    names = {p.name for p in out.iterdir()}
    preexisting = {p.split("/")[0] for p in (before or {}) if p != "."}
    assert names >= RUN_OUTPUTS, f"missing outputs: {RUN_OUTPUTS - names}"
    leftovers = names - RUN_OUTPUTS - {"model"} - preexisting
    assert not leftovers, f"unexpected files left in {out}: {sorted(leftovers)}"
    manifest = strict_json(out / "manifest.json")
    clusters_doc = strict_json(out / "clusters.json")
    assigned = pd.read_parquet(out / "assignments.parquet")
    assert list(assigned.columns) == ["user_id", "cluster", "distance", "anomaly_score"], list(assigned.columns)
    users = manifest["rows"]["users"]
    assert len(assigned) == users, f"assignments has {len(assigned)} users, the manifest says {users}"
    assert users >= 1
    assert not assigned["user_id"].isna().any(), "a null user id in assignments"
    assert assigned["user_id"].is_unique, "a user appears twice in assignments"
    assert not assigned["cluster"].isna().any(), "a user without a cluster"
    _finite(assigned["distance"], "assignments.distance")
    assert (assigned["distance"] >= 0).all(), "a negative distance"
    _finite(assigned["anomaly_score"], "assignments.anomaly_score")
    profiles = clusters_doc["clusters"]
    sizes = {int(p["cluster"]): int(p["size"]) for p in profiles}
    assert sum(sizes.values()) == users, f"cluster sizes sum to {sum(sizes.values())}, not {users} users"
    counted = {int(c): int(n) for c, n in assigned["cluster"].value_counts().items()}
    assert sizes == counted, f"clusters.json sizes {sizes} disagree with assignments {counted}"
    found = len([c for c in sizes if c >= 0])
    assert manifest["cluster"]["k"] == found, f"manifest k={manifest['cluster']['k']}, clusters.json has {found}"
    user_map = pd.read_parquet(out / "map.parquet")
    assert {"user_id", "x", "y", "cluster"} <= set(user_map.columns), list(user_map.columns)
    _finite(user_map[["x", "y"]].to_numpy(), "map.parquet x/y")
    joined = user_map.merge(assigned, on="user_id", how="left", suffixes=("_map", ""))
    assert not joined["cluster"].isna().any(), "map.parquet has users that assignments lacks"
    assert (joined["cluster_map"] == joined["cluster"]).all(), "map.parquet and assignments disagree on clusters"
    if manifest.get("model") == "model":
        check_model_belongs_to(out / "model", manifest)
    else:
        assert str(manifest.get("model", "")).startswith("not saved"), manifest.get("model")
        assert "model" not in names - preexisting, "a model folder beside a manifest that says none was saved"
    return manifest


def check_model_belongs_to(model: Path, manifest: dict) -> None:
    """The saved model is complete and was written by the same run as the manifest beside it."""
    assert (model / "model.json").is_file(), f"{model} has no model.json"
    meta = strict_json(model / "model.json")
    listed = {}
    for line in (model / "checksums.sha256").read_text().splitlines():
        digest, name = line.split("  ", 1)
        listed[name] = digest
        assert hashlib.sha256((model / name).read_bytes()).hexdigest() == digest, f"{name} fails its checksum"
    assert set(listed) | {"checksums.sha256"} == {p.name for p in model.iterdir()}, "files the checksums miss"
    assert meta["run_id"] == manifest["run_id"], "the model and the manifest come from different runs"
    assert meta["config"] == manifest["config"], "the model's config differs from the manifest's: mixed runs"
    assert meta["clusterer"]["k"] == manifest["cluster"]["k"], (
        f"model k={meta['clusterer']['k']} but manifest k={manifest['cluster']['k']}: they disagree")


def check_assign_outputs(out: Path, model_k: int) -> None:
    names = {p.name for p in out.iterdir()}
    assert names == ASSIGN_OUTPUTS, f"assign wrote {sorted(names)}"
    manifest = strict_json(out / "manifest.json")
    assigned = pd.read_parquet(out / "assignments.parquet")
    assert len(assigned) == manifest["rows"]["users"] >= 1
    assert assigned["user_id"].is_unique and not assigned["user_id"].isna().any()
    assert assigned["cluster"].between(0, model_k - 1).all(), "a cluster id the model does not have"
    _finite(assigned["distance"], "assignments.distance")
    sizes = {int(c): int(n) for c, n in manifest["cluster_sizes"].items()}
    assert sum(sizes.values()) == len(assigned)


def check_synth_outputs(out: Path, users: int, items: int) -> None:
    truth = pd.read_parquet(out / "truth.parquet")
    events = pd.read_parquet(out / "events.parquet")
    catalogue = pd.read_parquet(out / "items.parquet")
    assert len(truth) == users and truth["user_id"].is_unique
    assert len(catalogue) == items
    assert events["user_id"].isin(truth["user_id"]).all(), "events of users not in truth.parquet"
    assert events["item_id"].isin(catalogue["item_id"]).all(), "events on items not in items.parquet"
    for column in events.columns:
        if events[column].dtype.kind == "f":
            _finite(events[column], f"events.{column}")
