"""`gpuclust recommend --run DIR`: a fitted run's recommendations; a thin wrapper over the estimator.

--segments: the campaign view, per cluster the items to promote to it (`recommend.campaign`, saved in
the model's profiles and in clusters.json). --events FILE: each user's list (user_id, rank, item_id,
score, source) as CSV on stdout. Both read the run's verified model and write nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from gpuclust.cli.options import CheckKey
from gpuclust.errors import UsageError
from gpuclust.io.writers import json_text


def recommend(
    run: Annotated[Path, typer.Option("--run", help="Output directory of a finished `gpuclust run`.")],
    segments: Annotated[bool, typer.Option("--segments", help="Per cluster, the items to promote to it.")] = False,
    events: Annotated[Path | None, typer.Option(help="Events of the users to recommend to (Parquet, CSV, JSON "
                                                "Lines): their lists go to stdout as CSV.")] = None,
    adapter: Annotated[str | None, typer.Option(help="Raw-log adapter of --events, e.g. online-retail.")] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="Items per user, or per cluster with --segments.")] = 10,
    device: Annotated[str | None, typer.Option(help="Where to run: auto, cpu or cuda.")] = None,
    pseudonymise: Annotated[Path | None, typer.Option(
        "--pseudonymise", metavar="KEY_FILE", help="The key the model was fitted with, if it was: --events are "
                                                   "then pseudonymised as they are read, as at fit time.")] = None,
    model_key: CheckKey = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")] = False,
) -> None:
    """Recommend with a fitted run's model: the campaign view (--segments) or users' lists (--events)."""
    from gpuclust.estimator import UserClusterer
    from gpuclust.privacy import Pseudonymiser

    if segments == (events is not None):
        raise UsageError("give exactly one of --segments (items to promote per cluster) or --events FILE "
                         "(each user's list)")
    if top_k < 1:
        raise UsageError(f"--top-k must be a positive number of items, got {top_k}")
    key = Pseudonymiser.from_file(pseudonymise) if pseudonymise is not None else None  # read once, before the model
    model = UserClusterer.load(run / "model", device=device, pseudonymise=key, model_key=model_key)
    if segments:
        _campaigns(model, top_k, json_out)
        return
    import pandas as pd

    from gpuclust.frames import host_frame
    from gpuclust.io.inputs import read_inputs

    inputs = read_inputs(model.backend_.frame, model.config_.columns, events, adapter=adapter)
    table: pd.DataFrame = host_frame(model.recommend(inputs.events, top_k))  # pandas: the contract reads the type
    if json_out:
        print(table.to_json(orient="records"))
        return
    from gpuclust.io.writers import spreadsheet_warning, write_csv

    escaped = write_csv(table, sys.stdout)  # the CSV is opened in spreadsheets: no id runs there
    if escaped:
        print(spreadsheet_warning(escaped), file=sys.stderr)


def _campaigns(model, top_k: int, json_out: bool) -> None:
    from gpuclust.frames import host_frame

    titles = {}
    vocabulary = host_frame(model.vocabulary_)
    if "title" in vocabulary.columns:
        titles = dict(zip(vocabulary["item_id"].tolist(), vocabulary["title"].tolist(), strict=True))
    rows = [{"cluster": p["cluster"], "label": p.get("label"), "size": p.get("size"),
             "promote": [{**q, "title": titles.get(q["item_id"])} for q in (p.get("promote") or [])[:top_k]]}
            for p in model.profiles_ if "promote" in p]
    withheld = [p for p in model.profiles_ if p.get("suppressed") and not p.get("noise")]
    if not rows:
        raise UsageError(f"the model of {model.manifest_.get('run_id')} has no campaign view: {_no_campaigns(model)}")
    if withheld:  # as export says it: a cluster left out is named, not silently missing
        print(f"withheld clusters {', '.join(str(p['cluster']) for p in withheld)}: {withheld[0]['suppressed']}",
              file=sys.stderr)
    if json_out:
        print(json_text(rows), end="")
        return
    print("| cluster | label | size | item to promote | lift | owned by |")
    print("|---:|---|---:|---|---:|---:|")
    for row in rows:
        for q in row["promote"]:
            item = _cell(f"{q['item_id']} {q['title'] or ''}".strip())
            print(f"| {row['cluster']} | {_cell(row['label'] or '')} | {row['size'] or ''} | {item} | x{q['lift']:.2f} | "
                  f"{100 * q['owned_share']:.0f}% |")


def _cell(text: str) -> str:
    """A Markdown table cell of catalogue text: one line, its pipes escaped (a title `a|b` or one with a line
    break split the row into columns and rows of its own), control characters shown as escapes."""
    from gpuclust.cli.console import visible

    return visible(" ".join(text.split())).replace("|", "\\|")


def _no_campaigns(model) -> str:
    """Why a model has no items to promote: no personal model to score them, or privacy withholding every
    cluster's figures (the model has a personal part, but no cluster may be shown)."""
    if getattr(model, "personal_", None) is None:
        return ("it was fitted without a personal model (recommend.personal = 'none', a log where no user has two "
                "distinct items, or a fit on a Dask cluster)")
    return (f"privacy withholds every cluster's figures ({model.profiles_[0].get('suppressed')}); lower "
            "privacy.min_group_size and fit again to see them")
