"""File in, files out: what `gpuclust run` does, usable without the CLI.

Outputs are staged beside the output folder and swapped into place only after every stage has
succeeded (`io.outputs`), so a failed or interrupted run leaves nothing behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gpuclust
from gpuclust.backend import resolve_backend
from gpuclust.config import DaskConfig, PipelineConfig
from gpuclust.errors import UsageError
from gpuclust.estimator import UserClusterer
from gpuclust.frames import column_array, host_frame
from gpuclust.io.inputs import read_inputs
from gpuclust.io.outputs import OutputDir
from gpuclust.io.run_folder import ASSIGN_LAYOUT, RUN_LAYOUT, write_run
from gpuclust.io.writers import write_json, write_parquet
from gpuclust.manifest import StageRecorder, machine, now_iso, versions
from gpuclust.privacy import as_pseudonymiser, check_key
from gpuclust.progress import tell
from gpuclust.signing import as_model_key


def check_describable(config: PipelineConfig) -> None:
    """Refuse describing a run on a Dask cluster: the CLI asks before it loads the language model (seconds,
    and memory) so the refusal is immediate; `run_files` asks again for library callers."""
    if config.dask.scheduler is not None:
        raise UsageError("--describe does not run on a Dask cluster yet; run without --scheduler (and without "
                         "[dask] scheduler in the config), then describe the finished run with `gpuclust describe "
                         "--run OUT --model MODEL`")


def run_files(config: PipelineConfig, events: str | Path, out: str | Path, items: str | Path | None = None,
              truth: str | Path | None = None, adapter: str | None = None,
              on_stage: Callable[[str], None] | None = None, pseudonymise: Any = None,
              model_key: Any = None, item_vectors: str | Path | None = None,
              describer: Any = None) -> UserClusterer:
    """Read the inputs, fit, and write assignments, cluster profiles, the model and the manifest.

    The output folder is checked before anything is read, and replaced as one unit at the end. With
    `config.dask.scheduler` the work runs on a Dask cluster (`gpuclust.distributed.run`). With
    `pseudonymise` (a key file, read once, or a `privacy.Pseudonymiser`) user ids are pseudonymised as
    the estimator receives them, before any stage or file sees them. `item_vectors`: the file `gpuclust
    embed` wrote, used by the text feature instead of encoding the catalogue again. A `describer`
    (`explain.describe.Describer`) names and describes the clusters in words."""
    config.validate()
    if describer is not None:
        check_describable(config)
    item_vectors = _vectors_path(item_vectors)
    if config.dask.scheduler is not None:
        from gpuclust.distributed.run import run_distributed

        if pseudonymise is not None:  # before anything is read: raw ids must never reach an output
            raise UsageError("--pseudonymise does not run on a Dask cluster yet; run without --scheduler (and "
                             "without [dask] scheduler in the config), or drop the key")

        return run_distributed(config, events, out, items, truth, adapter, on_stage, RUN_LAYOUT,
                               as_model_key(model_key), item_vectors=item_vectors)
    with OutputDir(out, "run", RUN_LAYOUT) as staging:
        started = time.perf_counter()
        backend = resolve_backend(config.device)
        reading = StageRecorder(backend, on_stage)
        with reading.stage("read"):
            inputs = read_inputs(backend.frame, config.columns, events, items, truth, adapter)
        model = UserClusterer(config=config, progress=on_stage, pseudonymise=as_pseudonymiser(pseudonymise),
                              item_vectors=item_vectors, describer=describer).fit(
            inputs.events, inputs.items, inputs.truth)
        manifest = model.manifest_
        manifest["inputs"] = inputs.sources
        manifest["rows"]["steps"] = [s.to_dict() for s in inputs.steps] + manifest["rows"]["steps"]
        manifest["timings"]["stages"] = {**reading.stages, **manifest["timings"]["stages"]}
        manifest["timings"]["total_seconds"] = round(time.perf_counter() - started, 4)
        tell(on_stage, "write")
        write_run(model, staging, model_key=as_model_key(model_key))
    return model


def _vectors_path(item_vectors: str | Path | None) -> str | None:
    """The item vectors file, checked before anything is read (a path string: it travels to Dask workers)."""
    if item_vectors is None:
        return None
    from gpuclust.errors import require_file

    require_file(Path(item_vectors), "an item vectors file (.parquet or .npy from `gpuclust embed`) for --item-vectors")
    return str(item_vectors)


def write_outputs(model: UserClusterer, out: str | Path, model_key: Any = None) -> Path:
    """A fitted model's output set (and the saved model, OUT/model), replacing `out` as one unit."""
    with OutputDir(out, "run", RUN_LAYOUT) as staging:
        write_run(model, staging, model_key=as_model_key(model_key))
    return Path(out)


def describe_files(run: str | Path, describer: Any, device: str | None = None, model_key: Any = None) -> UserClusterer:
    """Name and describe the clusters of a finished run with `describer`: clusters.json, the saved model and
    the manifest are rewritten as one set (the assignments and map as they were), then its report, if it
    has one. Exemplar users' histories are not in a run folder, so these prompts go without them."""
    import shutil

    from gpuclust.report.html import ASSIGNMENT_PARTS, build_report, load_run
    from gpuclust.signing import SIGNATURE

    finished = load_run(run)  # a finished run, or one line saying what is missing
    folder = finished.run_dir / "model"
    if not folder.is_dir():
        raise UsageError(f"{finished.run_dir} has no saved model ({finished.manifest.get('model', 'model/ missing')}); "
                         "`gpuclust describe` rewrites it with the names: re-run `gpuclust run` with a savable model")
    key = as_model_key(model_key)
    if (folder / SIGNATURE).is_file() and key is None:
        raise UsageError(f"the model in {finished.run_dir} is signed: give its key (--model-key KEY_FILE) so that "
                         "the described model is signed again")
    fitted = UserClusterer.load(folder, device=device, model_key=key)
    parts = finished.run_dir / ASSIGNMENT_PARTS
    reported = (finished.run_dir / "report.html").is_file()
    with OutputDir(finished.run_dir, "run", RUN_LAYOUT) as staging:
        profiles, record = describer.describe(fitted.profiles_, None)
        fitted.profiles_ = profiles
        fitted.manifest_ = {**finished.manifest, "describe": {**record, "described_at": now_iso(),
                                                              "histories": "none: a finished run keeps no events"}}
        if parts.is_dir():  # a Dask run's partitioned assignments, as they were
            shutil.copytree(parts, staging / ASSIGNMENT_PARTS)
        write_run(fitted, staging, assignments_file=not parts.is_dir(), model_key=key)
    if reported:
        build_report(finished.run_dir)
    return fitted


def assign_files(model: str | Path, events: str | Path, out: str | Path, device: str | None = None,
                 adapter: str | None = None, scheduler: str | None = None, dask: DaskConfig | None = None,
                 pseudonymise: Any = None, model_key: Any = None) -> tuple[UserClusterer, dict[str, Any]]:
    """Place the users of `events` in a saved model's clusters; writes OUT/assignments.parquet and
    OUT/manifest.json as one unit. With `scheduler` the users are placed on a Dask cluster and the
    assignments are a partitioned dataset (OUT/assignments/part.N.parquet). A model fitted on
    pseudonymised ids needs its key (`pseudonymise`)."""
    if scheduler is not None:
        from gpuclust.distributed.run import assign_distributed

        if pseudonymise is not None:
            raise UsageError("--pseudonymise does not run on a Dask cluster yet; place the users without --scheduler")
        dask = dask or DaskConfig()
        probe = PipelineConfig(dask=dask)
        probe.dask.scheduler = scheduler
        probe.validate()
        return assign_distributed(model, events, out, device, adapter, scheduler, probe.dask, ASSIGN_LAYOUT,
                                  as_model_key(model_key))
    started = time.perf_counter()
    with OutputDir(out, "assign", ASSIGN_LAYOUT) as staging:
        fitted = UserClusterer.load(model, device=device, pseudonymise=pseudonymise, model_key=model_key)
        check_key(fitted.privacy_, fitted.pseudonymiser_, f"model {model}")
        backend = fitted.backend_
        inputs = read_inputs(backend.frame, fitted.config_.columns, events, adapter=adapter)
        labels, data = fitted.place(inputs.events)
        sizes = host_frame(labels["cluster"].value_counts().sort_index().to_frame())
        manifest = {
            "gpuclust": gpuclust.__version__,
            "created": now_iso(),
            "model": str(model),
            "model_run_id": fitted.manifest_.get("run_id"),
            "inputs": inputs.sources,
            "device": machine(backend),
            "versions": versions(),
            "rows": {"steps": [s.to_dict() for s in inputs.steps + data.steps], "users": len(labels)},
            "cluster_sizes": {int(k): int(v) for k, v in sizes.iloc[:, 0].items()},
            "privacy": fitted.privacy_,
            "seconds": round(time.perf_counter() - started, 4),
        }
        write_parquet(staging / "assignments.parquet", labels)
        write_json(staging / "manifest.json", manifest)
    return fitted, manifest


def drift_files(model: str | Path, events: str | Path, device: str | None = None, adapter: str | None = None,
                pseudonymise: Any = None, thresholds: Any = None, model_key: Any = None) -> dict[str, Any]:
    """Place the users of `events` with a saved model and compare them with the users it was fitted on
    (`quality.drift`): one row per measure, and whether any crossed its threshold."""
    from gpuclust.quality import drift

    started = time.perf_counter()
    fitted = UserClusterer.load(model, device=device, pseudonymise=pseudonymise, model_key=model_key)
    check_key(fitted.privacy_, fitted.pseudonymiser_, f"model {model}")
    inputs = read_inputs(fitted.backend_.frame, fitted.config_.columns, events, adapter=adapter)
    k = int(fitted.n_clusters_)
    try:
        labels, data = fitted.place(inputs.events)
    except UsageError:  # nothing placeable: total drift is an alert (exit 1), a broken file stays exit 2
        now = drift.unplaceable_counts(inputs.events, list(fitted.config_.preprocess.event_weights),
                                       fitted.vocabulary_)
        if now is None:
            raise
        now.cluster_users = [0] * k
    else:
        columns = [column_array(labels[name], fitted.backend_) for name in ("cluster", "distance", "anomaly_score")]
        now = drift.placed_counts(*columns, k).add(drift.event_counts(data))  # counted where the columns are
    thresholds = thresholds or drift.Thresholds()
    rows = drift.compare(fitted.drift_baseline_, now, thresholds)
    return {
        "gpuclust": gpuclust.__version__,
        "created": now_iso(),
        "model": str(model),
        "model_run_id": fitted.manifest_.get("run_id"),
        "inputs": inputs.sources,
        "fit_users": fitted.drift_baseline_["users"],
        "users": now.users,
        "events": now.events,
        "thresholds": vars(thresholds),
        "rows": rows,
        "alert": any(r["alert"] for r in rows),
        "privacy": fitted.privacy_,
        "seconds": round(time.perf_counter() - started, 4),
    }
