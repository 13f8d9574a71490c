"""`gpuclust evaluate`: leave-last-out HR@K / NDCG@K of cluster popularity; a thin wrapper over the library.

One k and no --compare: global, cluster and blended popularity for the configured pipeline (the first
form). --compare and/or several k (or --k auto): every representation at every k against global
popularity and the plain TF-IDF -> SVD -> KMeans recipe, with standard errors (`recommend.compare`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gpuclust.backend import DEVICE_CHOICES
from gpuclust.cli.help import CLUSTERING, DEVICE, FEATURES, INPUT, OUTPUT, PREPROCESS, PRIVACY, arrange
from gpuclust.errors import UsageError

EVALUATE_HELP = {
    "events": (INPUT, None), "items": (INPUT, None), "adapter": (INPUT, None), "config": (INPUT, None),
    "event_weights": (PREPROCESS, "preprocess.event_weights"),
    "features": (FEATURES, "features.features"), "compare": (FEATURES, None),
    "k": (CLUSTERING, "cluster.k"), "objective": (CLUSTERING, "cluster.objective"),
    "algorithm": (CLUSTERING, "cluster.algorithm"), "seed": (CLUSTERING, "seed"),
    "top_k": (OUTPUT, None), "out": (OUTPUT, None), "plot": (OUTPUT, None), "json_out": (OUTPUT, None),
    "device": (DEVICE, "device"), "pseudonymise": (PRIVACY, None),
}


@arrange(EVALUATE_HELP)
def evaluate(
    events: Annotated[Path, typer.Option(help="Events file: Parquet, CSV, TSV or JSON (Lines or one array), each also .gz.")],
    items: Annotated[Path | None, typer.Option(help="Items file: item_id plus title, category, price.")] = None,
    adapter: Annotated[str | None, typer.Option(help="Raw-log adapter, e.g. online-retail.")] = None,
    k: Annotated[str | None, typer.Option("--k", help="Clusters: a number, a list 8,20,40, a range 4-16, or auto "
                                          "(each representation chooses, by --objective).")] = None,
    compare: Annotated[str | None, typer.Option(help="Feature sets to compare, e.g. tfidf,text,sequence,autoencoder,"
                                                "behaviour+tfidf ('+' joins features into one set).")] = None,
    objective: Annotated[str | None, typer.Option(help="With --k auto or a range of k: choose k by separation "
                                                  "(silhouette) or recommend (validation HR@10 on the training "
                                                  "part's own holdout) within it.")] = None,
    event_weights: Annotated[str | None, typer.Option(help="e.g. view=1,click=2,cart=3,purchase=5 (as gpuclust run)."
                                                      )] = None,
    algorithm: Annotated[str | None, typer.Option(help="Clustering algorithm of every representation, e.g. kmeans "
                                                  "or predictive.")] = None,
    top_k: Annotated[str, typer.Option("--top-k", help="Length of each recommendation list; a comma list "
                                       "such as 10,20 reports each (the blend is tuned on the first).")] = "10",
    out: Annotated[Path | None, typer.Option(help="Write the full result as JSON to this file.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG of HR@K against k per representation.")] = None,
    device: Annotated[str | None, typer.Option(help=f"Where to run: {', '.join(DEVICE_CHOICES)}.")] = None,
    features: Annotated[str | None, typer.Option(help="Comma list of: behaviour, tfidf, text, sequence, "
                                                 "autoencoder.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed for the pipeline and the split's tie-breaks.")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML config; flags override its values.")] = None,
    pseudonymise: Annotated[Path | None, typer.Option(
        "--pseudonymise", metavar="KEY_FILE",
        help="Replace user ids by a keyed HMAC-SHA256 as they are read (key: >= 16 bytes in this file).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")] = False,
) -> None:
    """Hold out each user's last item, cluster the rest, and measure how well cluster popularity recommends it."""
    from gpuclust.cli.options import build_config, parse_pairs, split_list
    from gpuclust.io.outputs import check_file_target
    from gpuclust.privacy import Pseudonymiser

    k_values = parse_cluster_k(k)
    # Several k with --objective: choose one within them (as --k auto does within its range), not score each.
    choose = objective is not None and isinstance(k_values, tuple) and len(k_values) > 1
    many = compare is not None or k_values == "auto" or (k_values is not None and len(k_values) > 1)
    if plot is not None and not many:
        raise UsageError("--plot draws HR against k per representation: give --compare or several --k values")
    cluster = {"k": k_values[0] if isinstance(k_values, tuple) and len(k_values) == 1 else None,
               "algorithm": algorithm, "objective": objective, "k_values": k_values if choose else None}
    chosen = split_list(features)
    if compare is not None and chosen is None:  # every compared feature is live: its settings take effect
        from gpuclust.recommend.compare import feature_sets

        chosen = tuple(dict.fromkeys(name for names in feature_sets(compare).values() for name in names))
    cfg = build_config(config, {"": {"device": device, "seed": seed}, "cluster": cluster,
                                "features": {"features": chosen},
                                "preprocess": {"event_weights": parse_pairs(event_weights, "--event-weights")}},
                       k="auto" if k_values == "auto" else None)
    inputs = {"--events": events, "--items": items, "--config": config, "--pseudonymise": pseudonymise}
    if out is not None:  # before the work: never over a file gpuclust did not write, nor over an input
        check_file_target(out, "--out", inputs, kind="evaluate", suffixes=(".json",))
    if plot is not None:
        check_file_target(plot, "--plot", {**inputs, "--out": out}, kind="evaluate-plot", suffixes=(".png",))
    key = Pseudonymiser.from_file(pseudonymise) if pseudonymise is not None else None
    from gpuclust.cli.console import progress

    if many:
        from gpuclust.recommend.compare import compare_files, markdown_tables
        from gpuclust.recommend.compare import plot as draw

        sets = compare if compare is not None else "+".join(cfg.features.features)
        with progress(json_out) as on_update:
            result = compare_files(cfg, events, items=items, adapter=adapter, contenders=sets,
                                   k_values="auto" if k_values == "auto" or choose else
                                   k_values if k_values is not None else (cfg.cluster.k,),
                                   top_k=parse_top_k(top_k), seed=cfg.seed, progress=on_update,
                                   pseudonymise=key)
        if plot is not None:
            draw(result, plot)
        users = result["users"]
        _finish(result, out, json_out, markdown_tables(result),
                f"{users['evaluated']:,} users evaluated of {users['eligible']:,} eligible; "
                f"{result['timings']['total']:.1f} s on {result['device']}" + (f"; plot in {plot}" if plot else ""))
        return
    from gpuclust.recommend.evaluation import evaluate_files, markdown_table

    with progress(json_out) as on_step:
        result = evaluate_files(cfg, events, items=items, adapter=adapter, k_values=parse_top_k(top_k),
                                seed=cfg.seed, pseudonymise=key, progress=on_step)
    users, validation = result["users"], result["validation"]
    served = next((r for r in result["rows"] if r["method"].startswith("served")), None)
    key = f"HR@{result['k_values'][0]}"
    _finish(result, out, json_out, markdown_table(result),
            (f"default recommender (served): {key} {served[key]:.4f}; " if served else "") +
            f"{users['evaluated']:,} users evaluated of {users['eligible']:,} eligible; k={result['clusters']}; "
            f"blend weight {validation['chosen_weight']:.1f} tuned on {validation['users']:,} validation users; "
            f"{result['timings']['total']:.1f} s on {result['device']}")


def _finish(result: dict, out: Path | None, json_out: bool, table: str, summary: str) -> None:
    """The one way a result leaves: the JSON file (if asked), then JSON or the table and a summary line."""
    from gpuclust import __version__
    from gpuclust.io.outputs import FILE_MARK, file_mark
    from gpuclust.io.writers import json_text, write_json

    if out is not None:
        write_json(out, {"gpuclust": __version__, FILE_MARK: file_mark("evaluate"), **result})
    if json_out:
        print(json_text(result), end="")
        return
    print(table)
    print(f"\n{summary}" + (f"; full result in {out}" if out else ""))


def parse_cluster_k(text: str | None) -> tuple[int, ...] | str | None:
    """--k: None, "auto", "20", "8,20,40", "4-16" or "4:16:2"."""
    from gpuclust.cluster.sweep import parse_k

    if text is None:
        return None
    raw = text.strip().lower()
    if raw == "auto":
        return "auto"
    if "," in raw:
        try:
            values = tuple(sorted({int(p) for p in raw.split(",") if p.strip()}))
        except ValueError:
            raise UsageError(f"--k {text!r} is not a list of integers; write e.g. 8,20,40") from None
        if not values or values[0] < 1:
            raise UsageError(f"--k {text!r} needs positive integers, e.g. 8,20,40")
        return values
    fixed, values = parse_k(raw)
    return (fixed,) if fixed is not None else tuple(values)


def parse_top_k(text: str) -> tuple[int, ...]:
    """--top-k: "10" or "10,20", each cut-off once in the order given (the first is the headline's), as --k
    takes each k once: "10,10" printed and wrote every HR@10 and NDCG@10 column twice."""
    try:
        values = tuple(dict.fromkeys(int(p) for p in text.split(",") if p.strip()))
    except ValueError:
        raise UsageError(f"--top-k {text!r} is not a list of integers; write e.g. 10 or 10,20") from None
    if not values or min(values) < 1:
        raise UsageError(f"--top-k {text!r} needs positive integers, e.g. 10 or 10,20")
    return values
