"""The `gpuclust` command: thin Typer commands that build a config and call the library."""

from __future__ import annotations

import json
import os
import signal
import sys
from contextlib import suppress
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from gpuclust import accelerators
from gpuclust.backend import DEVICE_CHOICES, resolve_backend
from gpuclust.cli.console import console, progress, progress_mode, shown, visible
from gpuclust.cli.describe import Seconds as DescribeSeconds
from gpuclust.cli.describe import Tokens as DescribeTokens
from gpuclust.cli.help import (
    CLUSTERING,
    COLUMNS,
    DEVICE,
    FEATURES,
    INPUT,
    LEARNED,
    OUTPUT,
    PREPROCESS,
    PRIVACY,
    TEXT,
    arrange,
    hide_flag_types,
    hoist_debug,
)
from gpuclust.cli.options import CheckKey, build_config, parse_pairs, split_list
from gpuclust.cli.quiet import quiet_warnings
from gpuclust.errors import Interrupted, UsageError, listed, write_failure
from gpuclust.io.writers import json_text

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Cluster recommender-system users by what they do, on the GPU or the CPU.")

DEMO_DIR = Path("gpuclust-demo")
hide_flag_types()


@app.callback()
def _root(ctx: typer.Context,
          debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks and library warnings (before "
                                              "or after the command: gpuclust run --debug ...).")] = False,
          ) -> None:
    # Click exits the resource with the command's exception, if any: warnings then give way to the error line.
    ctx.with_resource(quiet_warnings(debug))


Device = Annotated[str, typer.Option(help=f"Where to run: {', '.join(DEVICE_CHOICES)}.")]
Scheduler = Annotated[str | None, typer.Option(help="Run on Dask: 'local' (a LocalCluster; LocalCUDACluster on GPUs) "
                                               "or a running scheduler's address, tcp://host:8786.")]
Workers = Annotated[int | None, typer.Option(help="Workers of --scheduler local (default: one per core; per GPU); "
                                             "workers x threads at most 4 per core.")]
Threads = Annotated[int | None, typer.Option(help="Threads per worker of --scheduler local (default 1).")]
MemoryLimit = Annotated[str | None, typer.Option(help="Memory per worker of --scheduler local, e.g. 10GiB, "
                                                 "at least 256MiB (default: 90% of the machine's, shared).")]
Partitions = Annotated[int | None, typer.Option(help="User partitions after the shuffle, at most 32 per "
                                                "worker thread and 4096 (default: from the rows).")]
Json = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
KeyFile = Annotated[Path | None, typer.Option(
    "--pseudonymise", metavar="KEY_FILE",
    help="Replace user ids by a keyed HMAC-SHA256 as they are read (key: >= 16 bytes in this file).")]
SignKey = Annotated[Path | None, typer.Option(
    "--model-key", metavar="KEY_FILE",
    help="Sign the saved model with this key (>= 16 bytes), so that loaders given the key refuse unsigned ones.")]


@app.command()
def info(json_out: Json = False) -> None:
    """Show which accelerators are usable here, their versions, the GPU, and why anything is not."""
    found = accelerators.all_accelerators()
    gpu = accelerators.gpu_summary()
    backend = resolve_backend("auto")
    if json_out:
        print(json.dumps({"accelerators": [vars(a) for a in found], "gpu": gpu,
                          "auto_backend": backend.describe()}, indent=2))
        return
    table = Table(title="gpuclust accelerators")
    for col in ("library", "usable", "version", "why not"):
        table.add_column(col)
    for a in found:
        table.add_row(a.name, "[green]yes[/]" if a.usable else "[red]no[/]", a.version or "-", shown(a.reason or ""))
    Console().print(table)
    if gpu:
        Console().print(f"GPU: {gpu['name']} x{gpu['count']}, {gpu['memory_total_gib']} GiB "
                        f"({gpu['memory_free_gib']} GiB free), compute {gpu['compute_capability']}")
    else:
        Console().print("GPU: none usable")
    Console().print(f"--device auto runs on: {backend.device} ({backend.describe()['frame']} frames)")


@app.command()
def synth(
    out: Annotated[Path, typer.Option(help="Directory for events.parquet, items.parquet, truth.parquet.")],
    users: Annotated[int, typer.Option(help="Number of users.")] = 5000,
    items: Annotated[int, typer.Option(help="Number of items.")] = 2000,
    groups: Annotated[int, typer.Option(help="Number of planted user groups (personas).")] = 8,
    events_per_user: Annotated[float, typer.Option(help="Mean events per user.")] = 40.0,
    noise_share: Annotated[float, typer.Option(help="Share of users without a persona (group -1).")] = 0.05,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    sequential: Annotated[bool, typer.Option(help="Personas in pairs that differ only in the order they browse "
                                             "their categories (a bag of items cannot tell them apart).")] = False,
    files: Annotated[int, typer.Option(help="Events as a Parquet dataset of this many files, "
                                       "OUT/events/part.N.parquet (for --scheduler runs).")] = 1,
    new_users: Annotated[int, typer.Option(help="Also write OUT/new_events.parquet: the events of this many "
                                           "further users of the same shop, for assign, drift and serve.")] = 0,
    json_out: Json = False,
) -> None:
    """Generate a realistic synthetic behaviour log with planted user groups (known truth)."""
    from gpuclust.synth import SynthSpec

    spec = SynthSpec(n_users=users, n_items=items, n_groups=groups, seed=seed,
                     events_per_user=events_per_user, noise_share=noise_share, sequential=sequential).validate()
    summary = _synth(spec, out, quiet=json_out, files=files, new_users=new_users)
    if json_out:
        print(json_text(summary), end="")
    else:
        console.print(f"wrote {summary['n_events']:,} events of {summary['n_users']:,} users to {_path(out)}")


def _synth(spec, out: Path, quiet: bool, files: int = 1, new_users: int = 0) -> dict:
    from gpuclust.synth import write

    if progress_mode(quiet) != "rich":  # GPUCLUST_PROGRESS as everywhere; by default a bar in a terminal only
        return write(spec, out, files=files, new_users=new_users)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("generating users", total=spec.n_users)
        return write(spec, out, progress=lambda done, total: bar.update(task, completed=done), files=files,
                     new_users=new_users)


# Where each option of `run` appears in its --help, and the config setting whose default it shows.
RUN_HELP = {
    "events": (INPUT, None), "items": (INPUT, None), "truth": (INPUT, None), "config": (INPUT, None),
    "adapter": (INPUT, None), "item_vectors": (TEXT, None), "text_cache": (TEXT, None),
    "user_col": (COLUMNS, "columns.user_id"), "item_col": (COLUMNS, "columns.item_id"),
    "event_col": (COLUMNS, "columns.event_type"), "time_col": (COLUMNS, "columns.timestamp"),
    "value_col": (COLUMNS, "columns.value"), "item_key_col": (COLUMNS, "columns.item_item_id"),
    "category_col": (COLUMNS, "columns.category"), "text_cols": (COLUMNS, "columns.text"),
    "event_weights": (PREPROCESS, "preprocess.event_weights"),
    "min_user_events": (PREPROCESS, "preprocess.min_user_events"),
    "min_item_events": (PREPROCESS, "preprocess.min_item_events"),
    "sample_users": (PREPROCESS, None), "sample_replace": (PREPROCESS, "preprocess.sample_replace"),
    "features": (FEATURES, "features.features"), "feature_weights": (FEATURES, "features.weights"),
    "normalise": (FEATURES, "features.normalise"), "tfidf_components": (FEATURES, "features.tfidf_components"),
    "model": (TEXT, "features.text.model"), "text_mode": (TEXT, "features.text.mode"),
    "text_template": (TEXT, None), "precision": (TEXT, "features.text.precision"), "half_life_days": (TEXT, None),
    "sequence_cell": (LEARNED, "features.sequence.cell"), "sequence_pooling": (LEARNED, "features.sequence.pooling"),
    "sequence_dim": (LEARNED, None), "sequence_epochs": (LEARNED, None),
    "item_init": (LEARNED, "features.sequence.item_init"), "autoencoder": (LEARNED, "features.autoencoder.kind"),
    "autoencoder_dim": (LEARNED, None), "autoencoder_epochs": (LEARNED, None),
    "k": (CLUSTERING, "cluster.k"), "algorithm": (CLUSTERING, "cluster.algorithm"),
    "objective": (CLUSTERING, "cluster.objective"), "balance": (CLUSTERING, "cluster.balance"),
    "eps": (CLUSTERING, "cluster.eps"), "min_samples": (CLUSTERING, None),
    "min_cluster_size": (CLUSTERING, "cluster.min_cluster_size"), "engine": (CLUSTERING, "cluster.engine"),
    "reduce": (CLUSTERING, "reduce.method"), "reduce_components": (CLUSTERING, "reduce.n_components"),
    "reduce_engine": (CLUSTERING, "reduce.engine"), "seed": (CLUSTERING, "seed"),
    "silhouette_sample": (CLUSTERING, "assess.silhouette_sample"),
    "out": (OUTPUT, None), "anomalies": (OUTPUT, "assess.anomalies"), "blend_weight": (OUTPUT, None),
    "json_out": (OUTPUT, None), "describe": (OUTPUT, None), "describe_tokens": (OUTPUT, None),
    "describe_seconds": (OUTPUT, None),
    "device": (DEVICE, "device"), "scheduler": (DEVICE, None), "workers": (DEVICE, None),
    "threads_per_worker": (DEVICE, None), "memory_limit": (DEVICE, None), "partitions": (DEVICE, None),
    "pseudonymise": (PRIVACY, None), "model_key": (PRIVACY, None),
    "min_group_size": (PRIVACY, "privacy.min_group_size"),
}


@app.command()
@arrange(RUN_HELP)
def run(
    events: Annotated[Path, typer.Option(help="Events file: Parquet, CSV, TSV or JSON (Lines or one array), each also .gz.")],
    out: Annotated[Path, typer.Option(help="Output directory: assignments.parquet (with --scheduler a "
                                            "partitioned dataset, assignments/part.N.parquet), "
                                            "clusters.json, model/, manifest.json.")],
    items: Annotated[Path | None, typer.Option(help="Items file: item_id plus title, category, price.")] = None,
    truth: Annotated[Path | None, typer.Option(help="Known groups (user_id, group) for ARI/NMI.")] = None,
    k: Annotated[str | None, typer.Option(help="Clusters: a number, auto (sweep 2-12; up to ~sqrt(users) with "
                                          "--objective recommend; a TOML k_values is kept), or a range 4-16 / "
                                          "4:16:2.")] = None,
    algorithm: Annotated[str | None, typer.Option(help="kmeans, dbscan, hdbscan, agglomerative, or predictive "
                                                  "(prototypes trained so that a cluster predicts its users' next "
                                                  "items).")] = None,
    objective: Annotated[str | None, typer.Option(help="How --k auto chooses k: separation (silhouette) or "
                                                  "recommend (validation HR@10 on a leave-last-out holdout).")] = None,
    balance: Annotated[float | None, typer.Option(help="--algorithm predictive: weight of the term that keeps "
                                                  "clusters from collapsing.")] = None,
    eps: Annotated[float | None, typer.Option(help="DBSCAN neighbourhood radius.")] = None,
    min_samples: Annotated[int | None, typer.Option(help="DBSCAN/HDBSCAN core-point neighbours.")] = None,
    min_cluster_size: Annotated[int | None, typer.Option(help="HDBSCAN smallest cluster.")] = None,
    reduce: Annotated[str | None, typer.Option(help="Reduce before clustering: none, pca or umap.")] = None,
    reduce_components: Annotated[int | None, typer.Option(help="Dimensions kept by --reduce.")] = None,
    reduce_engine: Annotated[str | None, typer.Option(help="Engine of --reduce: auto, cuml, torch, sklearn (pca); "
                                                      "auto, cuml, umap-learn (umap).")] = None,
    anomalies: Annotated[int | None, typer.Option(help="List the N most anomalous users (with why).")] = None,
    features: Annotated[str | None, typer.Option(help="Comma list of: behaviour, tfidf, text, sequence, "
                                                 "autoencoder.")] = None,
    sequence_cell: Annotated[str | None, typer.Option(help="Sequence encoder: gru, lstm or transformer.")] = None,
    sequence_pooling: Annotated[str | None, typer.Option(help="Sequence user vector: last (state after the last "
                                                         "event) or mean.")] = None,
    sequence_dim: Annotated[int | None, typer.Option(help="Sequence embedding size (default: by catalogue).")] = None,
    sequence_epochs: Annotated[int | None, typer.Option(help="Sequence training epochs at most.")] = None,
    item_init: Annotated[str | None, typer.Option(help="Sequence item embeddings: random or text (from the text "
                                                  "encoder's item vectors).")] = None,
    autoencoder: Annotated[str | None, typer.Option(help="Autoencoder kind: dae or vae.")] = None,
    autoencoder_dim: Annotated[int | None, typer.Option(help="Autoencoder bottleneck size.")] = None,
    autoencoder_epochs: Annotated[int | None, typer.Option(help="Autoencoder training epochs at most.")] = None,
    engine: Annotated[str | None, typer.Option(help="Clustering engine: auto, or for kmeans cuml, torch, faiss, "
                                               "sklearn; dbscan/hdbscan cuml, sklearn.")] = None,
    device: Device = None,  # type: ignore[assignment]
    seed: Annotated[int | None, typer.Option(help="Random seed for every stage.")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML config; flags override its values.")] = None,
    adapter: Annotated[str | None, typer.Option(help="Raw-log adapter, e.g. online-retail.")] = None,
    user_col: Annotated[str | None, typer.Option(help="Events column holding the user id.")] = None,
    item_col: Annotated[str | None, typer.Option(help="Events column holding the item id.")] = None,
    event_col: Annotated[str | None, typer.Option(help="Events column holding the event type.")] = None,
    time_col: Annotated[str | None, typer.Option(help="Events column holding the timestamp.")] = None,
    value_col: Annotated[str | None, typer.Option(help="Events column holding the money value.")] = None,
    item_key_col: Annotated[str | None, typer.Option(help="Items column holding the item id.")] = None,
    category_col: Annotated[str | None, typer.Option(help="Items column holding the category.")] = None,
    text_cols: Annotated[str | None, typer.Option(help="Comma list of items text columns.")] = None,
    item_vectors: Annotated[Path | None, typer.Option(
        help="Item vectors `gpuclust embed` wrote (.parquet, or .npy beside its .ids.json): the text feature "
             "uses them instead of encoding the catalogue.")] = None,
    text_cache: Annotated[Path | None, typer.Option(
        help="Folder of encoded item texts to reuse: a rerun encodes only texts it has not seen with the same "
             "model and settings.")] = None,
    event_weights: Annotated[str | None, typer.Option(help="e.g. view=1,click=2,cart=3,purchase=5")] = None,
    feature_weights: Annotated[str | None, typer.Option(help="e.g. behaviour=1,tfidf=1,text=1")] = None,
    normalise: Annotated[str | None, typer.Option(help="standard, minmax, log1p, quantile or none.")] = None,
    min_user_events: Annotated[int | None, typer.Option(help="Drop users with fewer events.")] = None,
    min_item_events: Annotated[int | None, typer.Option(help="Drop items with fewer events.")] = None,
    sample_users: Annotated[int | None, typer.Option(help="Cluster a sample of this many users.")] = None,
    sample_replace: Annotated[bool | None, typer.Option(help="Sample users with replacement.")] = None,
    tfidf_components: Annotated[int | None, typer.Option(help="SVD components per TF-IDF vocabulary.")] = None,
    silhouette_sample: Annotated[int | None, typer.Option(help="Rows used for the silhouette score.")] = None,
    model: Annotated[str | None, typer.Option(help="Text encoder: 'default' (offline MiniLM), HF id or path.")] = None,
    text_mode: Annotated[str | None, typer.Option(help="Text feature mode: item (fast) or user.")] = None,
    text_template: Annotated[str | None, typer.Option(help="Item text, e.g. '{title} | {category}'.")] = None,
    precision: Annotated[str | None, typer.Option(help="Encoder precision: auto, fp32, bf16, fp16 (GPU), int8 (CPU).")] = None,
    half_life_days: Annotated[float | None, typer.Option(help="Time decay of interactions for text pooling.")] = None,
    scheduler: Scheduler = None,  # type: ignore[assignment]
    workers: Workers = None,  # type: ignore[assignment]
    threads_per_worker: Threads = None,  # type: ignore[assignment]
    memory_limit: MemoryLimit = None,  # type: ignore[assignment]
    partitions: Partitions = None,  # type: ignore[assignment]
    blend_weight: Annotated[float | None, typer.Option(help="Weight of cluster popularity in the model's "
                                                       "recommendations (0..1; default: tuned at fit time).")] = None,
    pseudonymise: KeyFile = None,
    model_key: SignKey = None,
    min_group_size: Annotated[int | None, typer.Option(help="The smallest group shown: `export` withholds smaller "
                                                       "audiences of any run; with --pseudonymise the run also "
                                                       "withholds smaller clusters' figures (default 10).")] = None,
    describe: Annotated[str | None, typer.Option(help="Name and describe each cluster with this local Hugging Face "
                                                 "causal or seq2seq LM (a folder, or a name in the cache; never "
                                                 "downloaded).")] = None,
    describe_tokens: DescribeTokens = None,
    describe_seconds: DescribeSeconds = None,
    json_out: Json = False,
) -> None:
    """Cluster the users of an event log; write assignments, cluster profiles and a manifest."""
    from gpuclust.cli.describe import describer_for
    from gpuclust.privacy import Pseudonymiser
    from gpuclust.run import check_describable, run_files
    from gpuclust.signing import ModelKey

    cfg = build_config(config, {
        "": {"device": device, "seed": seed},
        "columns": {"user_id": user_col, "item_id": item_col, "event_type": event_col, "timestamp": time_col,
                    "value": value_col, "item_item_id": item_key_col, "category": category_col,
                    "text": split_list(text_cols)},
        "preprocess": {"event_weights": parse_pairs(event_weights, "--event-weights"),
                       "min_user_events": min_user_events, "min_item_events": min_item_events,
                       "sample_users": sample_users, "sample_replace": sample_replace},
        "features": {"features": split_list(features), "normalise": normalise,
                     "tfidf_components": tfidf_components},
        "features.text": {"model": model, "mode": text_mode, "template": text_template, "precision": precision,
                          "half_life_days": half_life_days,
                          "cache_dir": None if text_cache is None else str(text_cache)},
        "features.sequence": {"cell": sequence_cell, "pooling": sequence_pooling, "dim": sequence_dim,
                              "epochs": sequence_epochs, "item_init": item_init},
        "features.autoencoder": {"kind": autoencoder, "dim": autoencoder_dim, "epochs": autoencoder_epochs},
        "reduce": {"method": reduce, "engine": reduce_engine, "n_components": reduce_components},
        "cluster": {"engine": engine, "algorithm": algorithm, "eps": eps, "min_samples": min_samples,
                    "min_cluster_size": min_cluster_size, "objective": objective, "balance": balance},
        "assess": {"silhouette_sample": silhouette_sample, "anomalies": anomalies},
        "dask": {"scheduler": scheduler, "workers": workers, "threads_per_worker": threads_per_worker,
                 "memory_limit": memory_limit, "partitions": partitions},
        "recommend": {"blend_weight": blend_weight},
        "privacy": {"min_group_size": min_group_size},
    }, k=k, feature_weights=feature_weights)
    if describe is not None:  # before the language model, or anything else, is loaded
        check_describable(cfg)
    key = Pseudonymiser.from_file(pseudonymise) if pseudonymise is not None else None  # read once, before the work
    signer = ModelKey.from_file(model_key) if model_key is not None else None
    if item_vectors is not None and "text" not in cfg.features.features:
        if features is not None:
            raise UsageError(f"--item-vectors feeds the text feature, and --features {features} has no text: add "
                             "it (e.g. --features behaviour,tfidf,text) or drop --item-vectors")
        cfg.features.features = (*cfg.features.features, "text")
    if describe is None and (describe_tokens is not None or describe_seconds is not None):
        raise UsageError("--describe-tokens and --describe-seconds have no effect without --describe MODEL; drop "
                         "them or add that")
    describer = None if describe is None else describer_for(describe, cfg.device, describe_tokens, describe_seconds)
    with progress(json_out) as on_stage:
        model = run_files(cfg, events, out, items=items, truth=truth, adapter=adapter, on_stage=on_stage,
                          pseudonymise=key, model_key=signer, item_vectors=item_vectors, describer=describer)
    report(model, out, json_out, show_anomalies=anomalies or 0)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Where to write the data and the results.")] = DEMO_DIR,
    users: Annotated[int, typer.Option(help="Synthetic users.")] = 5000,
    groups: Annotated[int, typer.Option(help="Planted groups, and k.")] = 8,
    device: Device = "auto",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    json_out: Json = False,
) -> None:
    """Generate synthetic users with planted groups, cluster them, show what was found and write its report."""
    from gpuclust.config import PipelineConfig
    from gpuclust.io.outputs import check_folder_of_sets
    from gpuclust.report import build_report
    from gpuclust.run import run_files
    from gpuclust.synth import SynthSpec

    spec = SynthSpec(n_users=users, n_groups=groups, seed=seed).validate()
    check_folder_of_sets(out, ("data", "run"))  # a user's own folder is never mixed into or swept
    data_dir = out / "data"
    _synth(spec, data_dir, quiet=json_out)
    cfg = PipelineConfig(device=device, seed=seed)
    cfg.cluster.k = groups
    with progress(json_out) as on_stage:
        model = run_files(cfg, data_dir / "events.parquet", out / "run", items=data_dir / "items.parquet",
                          truth=data_dir / "truth.parquet", on_stage=on_stage)
        on_stage("report")
        page = build_report(out / "run")  # what an analyst opens first: OUT/run/report.html
    report(model, out / "run", json_out)
    if not json_out:
        print(f"report: {page}")


@app.command()
def assign(
    model: Annotated[Path, typer.Option(help="A saved model: the OUT/model folder of `gpuclust run`.")],
    events: Annotated[Path, typer.Option(help="Events of the users to place.")],
    out: Annotated[Path, typer.Option(help="Output directory for assignments.parquet (with --scheduler: "
                                            "assignments/part.N.parquet) and manifest.json.")],
    device: Annotated[str | None, typer.Option(help=f"Where to run: {', '.join(DEVICE_CHOICES)}.")] = None,
    adapter: Annotated[str | None, typer.Option(help="Raw-log adapter, e.g. online-retail.")] = None,
    scheduler: Scheduler = None,  # type: ignore[assignment]
    workers: Workers = None,  # type: ignore[assignment]
    threads_per_worker: Threads = None,  # type: ignore[assignment]
    memory_limit: MemoryLimit = None,  # type: ignore[assignment]
    partitions: Partitions = None,  # type: ignore[assignment]
    pseudonymise: KeyFile = None,
    model_key: CheckKey = None,
    json_out: Json = False,
) -> None:
    """Place new users in the clusters of a saved model, with the featurisers it learned."""
    from gpuclust.config import DaskConfig
    from gpuclust.run import assign_files

    if scheduler is None and any(v is not None for v in (workers, threads_per_worker, memory_limit, partitions)):
        raise UsageError("--workers, --threads-per-worker, --memory-limit and --partitions have no effect without "
                         "--scheduler; drop them or add that")
    dask = DaskConfig(None, workers, threads_per_worker, memory_limit, partitions)
    _, manifest = assign_files(model, events, out, device=device, adapter=adapter, scheduler=scheduler, dask=dask,
                                 pseudonymise=pseudonymise, model_key=model_key)
    if json_out:
        print(json_text(manifest), end="")
        return
    sizes = ", ".join(f"{c}: {n:,}" for c, n in manifest["cluster_sizes"].items())
    Console().print(f"placed {manifest['rows']['users']:,} users ({sizes}) in {manifest['seconds']:.1f} s; "
                    f"outputs in {_path(out)}")


def report(model, out: Path, json_out: bool, show_anomalies: int = 0) -> None:
    """The clusters found, as a table (or JSON), and where the outputs went."""
    manifest = model.manifest_
    if json_out:
        print(json_text({"out": str(out), "metrics": manifest["metrics"], "cluster": manifest["cluster"],
                         "timings": manifest["timings"], "rows": manifest["rows"],
                         "clusters": model.profiles_, "anomalies": model.anomalies_[:show_anomalies]}), end="")
        return
    # Noise is not a cluster: the count is the clusters', as in the manifest and the report; noise is said apart.
    noise = sum(p["size"] for p in model.profiles_ if p.get("noise") and not p.get("suppressed"))
    found = sum(1 for p in model.profiles_ if not p.get("noise"))
    table = Table(title=f"{found} clusters of {manifest['rows']['users']:,} users"
                        + (f", {noise:,} of them noise (in no cluster)" if noise else ""))
    # Categories say more per character than item titles; titles stand in where there are none.
    has_categories = any(p["top_categories"] for p in model.profiles_)
    what = "top categories" if has_categories else "top items"
    for col in ("cluster", "users", "share", "name", what, "stands out by"):
        table.add_column(col, overflow="fold")
    for p in model.profiles_:
        if has_categories:
            top = ", ".join(str(c.get("category")) for c in p["top_categories"][:3])
        else:
            top = "; ".join(_item_label(i) for i in p["top_items"][:2])
        if p.get("suppressed"):
            table.add_row(str(p["cluster"]), "-", "-", f"withheld: {p['suppressed']}", "-", "-")
            continue
        table.add_row("noise" if p.get("noise") else str(p["cluster"]), f"{p['size']:,}", f"{p['share']:.1%}",
                      shown(p.get("name") or p.get("label") or "-"), shown(top or "-"), _standout(p))
    out_console = Console()
    out_console.print(table)
    sweep = manifest["cluster"].get("k_sweep")
    if sweep:
        out_console.print(f"k = {sweep['best_k']} chosen from {[r['k'] for r in sweep['curve']]}: {sweep['rule']}")
    if show_anomalies:
        outliers = Table(title=f"top {min(show_anomalies, len(model.anomalies_))} anomalous users")
        for col in ("user_id", "cluster", "score", "why"):
            outliers.add_column(col, overflow="fold")
        for a in model.anomalies_[:show_anomalies]:
            outliers.add_row(shown(a["user_id"]), str(a["cluster"]), f"{a['score']:.1f}", shown(a["why"]))
        out_console.print(outliers)
    if (manifest.get("describe") or {}).get("model"):
        from gpuclust.cli.describe import summary_line

        out_console.print(shown(summary_line(manifest["describe"])))  # names a model path
    m = manifest["metrics"]
    line = (f"silhouette {m['silhouette']:.3f} (sample {m['silhouette_sample']:,}), "
            f"Davies-Bouldin {m['davies_bouldin']:.3f}, Calinski-Harabasz {m['calinski_harabasz']:.1f}")
    if "ari" in m:
        line += f", ARI {m['ari']:.3f}, NMI {m['nmi']:.3f}"
    out_console.print(line)
    t = manifest["timings"]
    out_console.print(f"{manifest['device']['backend']['device']} / engine {manifest['cluster']['engine']}: "
                      f"{t['total_seconds']:.1f} s, peak RSS {t['peak_rss_mib']:.0f} MiB; outputs in {_path(out)}")


def _path(path: Path | str) -> str:
    """A path inside a line of rich markup, as it is: `runs/[old]/a` printed as `runs//a`, and a folder
    `[/v2]` ended the command in MarkupError after its outputs were written."""
    return escape(visible(path))


def _item_label(item: dict, width: int = 28) -> str:
    label = str(item.get("title") or item.get("item_id"))
    return label if len(label) <= width else label[: width - 1] + "…"


def _standout(profile: dict) -> str:
    """The two behaviour statistics furthest from the population mean (by ratio)."""
    from gpuclust.explain.naming import lifts_ranked

    return ", ".join(f"{name} x{v:.2f}" for name, v in lifts_ranked(profile)[:2]) or "-"


def _register_commands() -> None:
    """Commands that live in their own modules."""
    from gpuclust.cli.describe import describe
    from gpuclust.cli.drift import drift
    from gpuclust.cli.embed import embed
    from gpuclust.cli.evaluate import evaluate as evaluate_command
    from gpuclust.cli.export import export
    from gpuclust.cli.recommend import recommend
    from gpuclust.cli.report import report as report_command
    from gpuclust.cli.serve import serve

    app.command()(embed)
    app.command()(drift)
    app.command()(serve)
    app.command(name="report")(report_command)
    app.command(name="evaluate")(evaluate_command)
    app.command()(recommend)
    app.command()(describe)
    app.command()(export)
    from gpuclust.cli.bench import bench, size
    app.command()(bench), app.command()(size)


_register_commands()


def main() -> None:
    """Entry point. Bad input or usage: one line, exit 2. Ctrl-C or SIGTERM: one line, no partial output
    left behind (only what was committed before the stop, named), exit 130 (143). Anything else is a bug
    and keeps its traceback."""
    debug = "--debug" in sys.argv
    signal.signal(signal.SIGTERM, _terminate)
    try:
        code = app(args=hoist_debug(sys.argv[1:]), standalone_mode=False)
    except UsageError as exc:
        if debug:
            raise
        _fail(str(exc))
    except KeyboardInterrupt as exc:
        _interrupted(getattr(exc, "signum", signal.SIGINT))
    except typer.Abort:
        _interrupted(signal.SIGINT)
    except _CLICK_ERRORS as exc:
        _usage_error(exc)
    except OSError as exc:  # a full disk, ulimit -f or a too-long name where no writer named its path
        failure = write_failure(exc, "a file", exc.filename)
        if failure is None or debug:
            raise
        _fail(str(failure))
    if code == 130:  # typer turns KeyboardInterrupt into Exit(130) and returns the code
        _interrupted(_last_signal[0])
    sys.exit(code if isinstance(code, int) else 0)


_last_signal = [signal.SIGINT]


def _terminate(signum: int, _frame: object) -> None:
    _last_signal[0] = signum
    raise Interrupted(signum)


def _interrupted(signum: int) -> NoReturn:
    """The one line, then the exit code now: everything was undone on the way here (output staging,
    clusters), and a Ctrl-C caught this early (during imports) could otherwise end the interpreter as a
    death by signal (-2) after the line was printed."""
    console.print(stop_line(signum), highlight=False, soft_wrap=True)
    exit_now(128 + int(signum))


def stop_line(signum: int) -> str:
    """What a stop leaves: nothing, or the outputs put in place before it (a Ctrl-C while the summary prints,
    after the run's set was committed, must not claim that nothing was written)."""
    name = "terminated" if signum == signal.SIGTERM else "interrupted"
    outputs = sys.modules.get("gpuclust.io.outputs")  # not imported yet: nothing can have been written
    done = outputs.written() if outputs is not None else ()
    if not done:
        return f"{name}: stopped; nothing was written"
    return (f"{name}: stopped; {listed(map(str, done))} {'was' if len(done) == 1 else 'were'} written in full "
            "before the stop, nothing after")


def exit_now(code: int) -> NoReturn:
    """Exit with `code` whatever Python would make of a caught Ctrl-C at shutdown, after the exit
    handlers (multiprocessing's ends daemonic children, logging flushes)."""
    import atexit

    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    os._exit(code)


def _fail(message: str) -> NoReturn:
    console.print(f"[red]error:[/] {escape(visible(' '.join(message.split())))}", highlight=False, soft_wrap=True)
    sys.exit(2)


def _click_error_types() -> tuple[type[Exception], ...]:
    """typer >= 0.29 bundles its own copy of click; usage errors may come from either."""
    import click

    found: list[type[Exception]] = [click.ClickException]
    with suppress(ImportError):
        from typer._click.exceptions import ClickException

        found.append(ClickException)
    return tuple(found)


_CLICK_ERRORS = _click_error_types()


def _usage_error(exc: Exception) -> NoReturn:
    if type(exc).__name__ == "NoArgsIsHelpError":  # a bare command: its help is the answer
        exc.show()
        sys.exit(2)
    ctx = getattr(exc, "ctx", None)
    where = f"; see '{ctx.command_path} --help'" if ctx is not None else ""
    _fail(f"{exc.format_message().rstrip('.')}{where}")


def quiet_teardown() -> None:
    """The command is over (its outputs are in place, or it was stopped): a Ctrl-C or SIGTERM during the
    interpreter's teardown, where Python restores the default handlers, must not turn a finished run
    into a death by signal (exit -2 or -15)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


if __name__ == "__main__":  # `python -m gpuclust.cli.app`, as the console script runs it (`cli.entry`)
    try:
        main()
    finally:
        quiet_teardown()
