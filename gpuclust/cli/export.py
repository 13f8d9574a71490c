"""`gpuclust export --run DIR --format csv|parquet`: a finished run's segments as audience files; a thin
wrapper over `gpuclust.io.audiences.export_audiences`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from gpuclust.errors import UsageError
from gpuclust.io.writers import json_text, spreadsheet_warning


def export(
    run: Annotated[Path, typer.Option("--run", help="Output directory of a finished `gpuclust run`.")],
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet.")] = "csv",
    clusters: Annotated[str | None, typer.Option(help="Comma list of clusters to export, e.g. 3,7 (default: all).")] = None,
    min_score: Annotated[float | None, typer.Option(help="Keep users at least this typical of their segment (0-1: "
                                                    "the share of its users at least as far from its centre).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: RUN-audiences beside the run).")] = None,
    single_file: Annotated[bool, typer.Option("--single-file", help="One file with a segment column instead of "
                                              "one file per segment.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")] = False,
) -> None:
    """Write each segment's users (ids or pseudonyms, score, distance, anomaly score) for a CRM or an ad platform."""
    from gpuclust.io.audiences import export_audiences

    wanted = None
    if clusters is not None:
        try:
            wanted = [int(part) for part in clusters.split(",") if part.strip()]
        except ValueError:
            raise UsageError(f"--clusters {clusters!r}: give cluster numbers separated by commas, e.g. 3,7") from None
        if not wanted:
            raise UsageError("--clusters is empty: give cluster numbers separated by commas, e.g. 3,7")
    record = export_audiences(run, out, fmt.lower(), wanted, min_score, single_file)
    if json_out:
        print(json_text(record), end="")
    else:
        users = sum(s["users"] for s in record["segments"])
        print(f"exported {users:,} users in {len(record['segments'])} segments to {record['out']}")
    if record.get("spreadsheet_escaped"):
        print(spreadsheet_warning(record["spreadsheet_escaped"]["cells"]), file=sys.stderr)
    if record["withheld"]:
        print(f"withheld clusters {', '.join(map(str, record['withheld']['clusters']))}: {record['withheld']['why']}",
              file=sys.stderr)
