"""Audiences: a finished run's segments as files a CRM or an ad platform takes.

One file per cluster (OUT/segments/segment-N.csv|parquet) or one file with a segment column
(OUT/audiences.csv|parquet), and OUT/export.json saying what was exported and what was withheld. Each row:
user_id (the pseudonym where the run pseudonymised ids), segment, segment_name, score, distance,
anomaly_score. `score` is how typical of its segment a user is: the share of the segment's users at
least as far from its centre (1 = the most central user, near 0 = its edge), so `min_score` 0.2 drops the
fifth of each segment furthest out. A segment of fewer users than the run's privacy.min_group_size (after
the score filter) is withheld, as are clusters whose figures the run already withheld: small audiences
single people out. The folder is written as one unit, under the output-safety rules of `io.outputs`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gpuclust.errors import UsageError, listed
from gpuclust.io.outputs import OutputDir, overlaps
from gpuclust.io.writers import SPREADSHEET_GUARD, write_csv, write_json
from gpuclust.privacy import MIN_GROUP_SIZE, small_clusters

FORMATS = ("csv", "parquet")
SEGMENTS = "segments"
INDEX = "export.json"
LAYOUT = {INDEX: None, "audiences.csv": None, "audiences.parquet": None,
          SEGMENTS: re.compile(r"segment-\d+\.(csv|parquet)")}
COLUMNS = ("user_id", "segment", "segment_name", "score", "distance", "anomaly_score")
ASSIGNMENTS = ("user_id", "cluster", "distance", "anomaly_score")  # what an export reads of assignments.parquet
SCORE = ("share of the segment's users at least as far from its centre: 1 = the most central user, near 0 = "
         "its edge")


def export_audiences(run: str | Path, out: str | Path | None = None, fmt: str = "csv",
                     clusters: Sequence[int] | None = None, min_score: float | None = None,
                     single_file: bool = False) -> dict[str, Any]:
    """Write the audiences of the finished run `run` into `out` (default: RUN-audiences beside it);
    return what export.json says. Every input is checked before anything is written."""
    import pandas as pd

    from gpuclust.report.html import load_run

    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if min_score is not None and not (isinstance(min_score, int | float) and 0 <= min_score <= 1):
        raise UsageError(f"--min-score must be a number from 0 to 1 (the share of a segment's users at least as far "
                         f"from its centre), got {min_score!r}")
    finished = load_run(run, columns=ASSIGNMENTS)
    target = Path(os.path.abspath(out if out is not None else finished.run_dir.parent / f"{finished.run_dir.name}-audiences"))
    if overlaps(target, finished.run_dir):
        raise UsageError(f"--out {target} is inside the run folder {finished.run_dir}: give a folder of its own, e.g. "
                         f"{finished.run_dir.parent / (finished.run_dir.name + '-audiences')}")
    profiles = {int(p["cluster"]): p for p in finished.clusters if int(p["cluster"]) >= 0}
    wanted = sorted(profiles) if clusters is None else sorted(set(int(c) for c in clusters))
    unknown = [c for c in wanted if c not in profiles]
    if unknown:
        noise = " (-1 is noise: users no cluster took, never an audience)" if any(c < 0 for c in unknown) else ""
        raise UsageError(f"--clusters {', '.join(map(str, unknown))}: the run has no such cluster{noise}; it has "
                         f"{listed(sorted(profiles), 20)}")
    table = _assignments(finished.assignments, finished.assignments_path)
    min_group = _min_group_size(finished.manifest)
    table = table[table["segment"].isin(wanted)]
    if min_score is not None:
        table = table[table["score"] >= min_score]
    counts = table["segment"].value_counts()
    small = small_clusters(finished.clusters)
    withheld = [c for c in wanted if c in small or int(counts.get(c, 0)) < min_group]
    kept = [c for c in wanted if c not in withheld]
    if not kept:
        raise UsageError(f"no segment of {', '.join(map(str, wanted))} keeps {min_group} users or more"
                         + (f" at --min-score {min_score}" if min_score is not None else "")
                         + ": nothing to export (smaller audiences are withheld, privacy.min_group_size)")
    names = {c: str(profiles[c].get("name") or profiles[c].get("label") or f"cluster {c}") for c in kept}
    table = table[table["segment"].isin(kept)].copy()
    table["segment_name"] = table["segment"].map(names)
    table = table.sort_values(["segment", "score"], ascending=[True, False], kind="stable")[list(COLUMNS)]
    index = {
        "run_id": finished.manifest.get("run_id"), "run": str(finished.run_dir), "format": fmt,
        "columns": list(COLUMNS), "score": SCORE, "min_score": min_score,
        "pseudonymised": bool((finished.manifest.get("privacy") or {}).get("pseudonymised")),
        "min_group_size": min_group,
        # CSV has no types: how to read user_id back ('007' is text, and a reader's guess makes it 7)
        "user_id_type": "integer" if pd.api.types.is_integer_dtype(table["user_id"]) else "text",
        "segments": [], "withheld": {"clusters": withheld, "why": f"fewer than {min_group} users "
                                                                  "(privacy.min_group_size)"} if withheld else None,
    }
    escaped: dict[str, int] = {}  # CSV cells a spreadsheet would have run as formulas, per column (`write_csv`)
    with OutputDir(target, "export", LAYOUT) as staging:
        if single_file:
            _write(table, staging / f"audiences.{fmt}", fmt, escaped)
        else:
            (staging / SEGMENTS).mkdir()
            for c, rows in table.groupby("segment", sort=True):  # one pass; the table is in segment order
                _write(rows, staging / f"{SEGMENTS}/segment-{c}.{fmt}", fmt, escaped)
        if escaped:
            index["spreadsheet_escaped"] = {"cells": escaped, "why": SPREADSHEET_GUARD}
        for c in kept:
            name = f"audiences.{fmt}" if single_file else f"{SEGMENTS}/segment-{c}.{fmt}"
            index["segments"].append({"segment": c, "name": names[c], "users": int(counts[c]), "file": name})
        write_json(staging / INDEX, index)
    return {**index, "out": str(target)}


def _write(frame: Any, path: Path, fmt: str, escaped: dict[str, int]) -> None:
    """One audience file; a CSV's escaped cells are added to `escaped`."""
    if fmt == "csv":
        for column, n in write_csv(frame, path).items():
            escaped[column] = escaped.get(column, 0) + n
    else:
        frame.to_parquet(path, index=False)


def _assignments(frame: Any, path: Path):
    """user_id, segment, distance, anomaly_score and score of the run's clustered users (noise left out), from
    the assignments `load_run` read (`path`: where from, for the error)."""
    missing = [c for c in ASSIGNMENTS if c not in frame.columns]
    if missing:
        raise UsageError(f"{path} lacks the column(s) {listed(missing)} (an export needs {listed(ASSIGNMENTS)}); "
                         "re-run `gpuclust run`")
    frame = frame[list(ASSIGNMENTS)].rename(columns={"cluster": "segment"})
    frame = frame[frame["segment"] >= 0].copy()
    frame["score"] = frame.groupby("segment")["distance"].rank(method="max", ascending=False, pct=True)
    return frame


def _min_group_size(manifest: dict) -> int:
    value = ((manifest.get("config") or {}).get("privacy") or {}).get("min_group_size", MIN_GROUP_SIZE)
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else MIN_GROUP_SIZE
