"""`gpuclust drift`: how new users differ from those a saved model was fitted on; exit 1 on an alert (cron)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from gpuclust.backend import DEVICE_CHOICES
from gpuclust.cli.options import CheckKey
from gpuclust.quality.drift import Thresholds

_T = Thresholds()


def drift(
    model: Annotated[Path, typer.Option(help="A saved model: the OUT/model folder of `gpuclust run`.")],
    events: Annotated[Path, typer.Option(help="New events: Parquet, CSV, TSV or JSON (Lines or one array), each also .gz.")],
    fail_above: Annotated[float, typer.Option(help="Alert when a population stability index (cluster shares, "
                                              "event-type mix) is above this.")] = _T.psi,
    max_distance_change: Annotated[float, typer.Option(help="Alert when the mean distance to the own centre "
                                                       "moves by more than this share.")] = _T.distance_change,
    max_anomaly_increase: Annotated[float, typer.Option(help="Alert when the share of anomalous users rises by "
                                                        "more than this.")] = _T.anomaly_increase,
    max_unknown_items: Annotated[float, typer.Option(help="Alert above this share of events on unknown "
                                                     "items.")] = _T.unknown_items,
    max_unknown_event_types: Annotated[float, typer.Option(help="Alert above this share of events of unknown "
                                                           "types.")] = _T.unknown_event_types,
    out: Annotated[Path | None, typer.Option(help="Also write the result as JSON to this file.")] = None,
    device: Annotated[str | None, typer.Option(help=f"Where to run: {', '.join(DEVICE_CHOICES)}.")] = None,
    adapter: Annotated[str | None, typer.Option(help="Raw-log adapter, e.g. online-retail.")] = None,
    pseudonymise: Annotated[Path | None, typer.Option(
        "--pseudonymise", metavar="KEY_FILE", help="The key the model was fitted with, if it was.")] = None,
    model_key: CheckKey = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")] = False,
) -> None:
    """Compare new users with the fit: cluster-share PSI, distance, anomalies, unknown items and event types.

    Exit code 0: every measure within its threshold; 1: at least one crossed (for cron alerts); 2: bad input."""
    from rich.console import Console
    from rich.table import Table

    from gpuclust.io.outputs import FILE_MARK, check_file_target, file_mark
    from gpuclust.io.writers import json_text, write_json
    from gpuclust.privacy import Pseudonymiser
    from gpuclust.run import drift_files

    if out is not None:
        check_file_target(out, "--out", {"--model": model, "--events": events, "--pseudonymise": pseudonymise,
                                 "--model-key": model_key},
                          kind="drift", suffixes=(".json",))
    key = Pseudonymiser.from_file(pseudonymise) if pseudonymise is not None else None
    thresholds = Thresholds(fail_above, max_distance_change, max_anomaly_increase, max_unknown_items,
                            max_unknown_event_types)
    result = drift_files(model, events, device=device, adapter=adapter, pseudonymise=key, thresholds=thresholds,
                         model_key=model_key)
    if out is not None:
        write_json(out, {FILE_MARK: file_mark("drift"), **result})
    if json_out:
        print(json_text(result), end="")  # strict JSON: a measure nobody could be placed for is null
    else:
        table = Table(title=f"drift of {result['users']:,} users against the {result['fit_users']:,} of the fit")
        for col in ("measure", "value", "threshold", "status"):
            table.add_column(col, justify="left" if col == "measure" else "right")
        for row in result["rows"]:
            signed = "change" in row["metric"] or "increase" in row["metric"]
            value = "n/a" if row["value"] != row["value"] else f"{row['value']:{'+' if signed else ''}.4f}"
            table.add_row(row["metric"], value, f"{row['threshold']:g}", "[red]ALERT[/]" if row["alert"] else "ok")
        Console().print(table)
    if result["alert"]:
        sys.exit(1)
