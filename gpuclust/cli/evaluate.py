"""`gpuclust evaluate`: leave-last-out HR@K / NDCG@K of cluster popularity; a thin wrapper over the library."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from gpuclust.backend import DEVICE_CHOICES
from gpuclust.errors import UsageError


def evaluate(
    events: Annotated[Path, typer.Option(help="Events file: Parquet, CSV (.gz) or JSON Lines.")],
    items: Annotated[Path | None, typer.Option(help="Items file: item_id plus title, category, price.")] = None,
    adapter: Annotated[str | None, typer.Option(help="Raw-log adapter, e.g. online-retail.")] = None,
    k: Annotated[int | None, typer.Option("--k", help="Number of clusters.")] = None,
    top_k: Annotated[str, typer.Option("--top-k", help="Length of each recommendation list; a comma list "
                                       "such as 10,20 reports each (the blend is tuned on the first).")] = "10",
    out: Annotated[Path | None, typer.Option(help="Write the full result as JSON to this file.")] = None,
    device: Annotated[str | None, typer.Option(help=f"Where to run: {', '.join(DEVICE_CHOICES)}.")] = None,
    features: Annotated[str | None, typer.Option(help="Comma list of: behaviour, tfidf, text.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed for the pipeline and the split's tie-breaks.")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML config; flags override its values.")] = None,
    pseudonymise: Annotated[Path | None, typer.Option(
        "--pseudonymise", metavar="KEY_FILE",
        help="Replace user ids by a keyed HMAC-SHA256 as they are read (key: >= 16 bytes in this file).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")] = False,
) -> None:
    """Hold out each user's last item, cluster the rest, and compare cluster, global and blended popularity."""
    from gpuclust import __version__
    from gpuclust.cli.options import build_config, split_list
    from gpuclust.io.outputs import check_file_target
    from gpuclust.io.writers import write_json
    from gpuclust.privacy import Pseudonymiser
    from gpuclust.recommend.evaluation import evaluate_files, markdown_table

    cfg = build_config(config, {"": {"device": device, "seed": seed}, "cluster": {"k": k},
                                "features": {"features": split_list(features)}})
    if out is not None:
        check_file_target(out)  # before the work: never over a file gpuclust did not write
    key = Pseudonymiser.from_file(pseudonymise) if pseudonymise is not None else None
    result = evaluate_files(cfg, events, items=items, adapter=adapter, k_values=parse_top_k(top_k),
                            seed=cfg.seed, pseudonymise=key)
    if out is not None:
        write_json(out, {"gpuclust": __version__, **result})
    if json_out:
        print(json.dumps(result, indent=2, default=str))
        return
    print(markdown_table(result))
    users = result["users"]
    print(f"\n{users['evaluated']:,} users evaluated of {users['eligible']:,} eligible; k={result['clusters']}; "
          f"blend weight {result['validation']['chosen_weight']:.1f} tuned on {result['validation']['users']:,} "
          f"validation users; {result['timings']['total']:.1f} s on {result['device']}"
          + (f"; full result in {out}" if out else ""))


def parse_top_k(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise UsageError(f"--top-k {text!r} is not a list of integers; write e.g. 10 or 10,20") from None
    if not values or min(values) < 1:
        raise UsageError(f"--top-k {text!r} needs positive integers, e.g. 10 or 10,20")
    return values
