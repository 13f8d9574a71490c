"""File in, files out: what `gpuclust run` does, usable without the CLI.

Outputs are staged beside the output folder and swapped into place only after every stage has
succeeded (`io.outputs`), so a failed or interrupted run leaves nothing behind.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import gpuclust
from gpuclust.backend import resolve_backend
from gpuclust.config import PipelineConfig
from gpuclust.errors import UsageError
from gpuclust.frames import host_frame
from gpuclust.io.adapters import get_adapter
from gpuclust.io.outputs import MARKER, OutputDir
from gpuclust.io.readers import read_events, read_items, read_table, read_truth
from gpuclust.io.writers import write_json, write_parquet
from gpuclust.manifest import StageRecorder, machine, now_iso, versions
from gpuclust.model import LAYOUT as MODEL_LAYOUT
from gpuclust.pipeline import Pipeline, StageCallback
from gpuclust.report.html import IMAGES

# What a run folder may hold: its outputs, the saved model and, once `gpuclust report` ran, the report.
RUN_LAYOUT = {
    "assignments.parquet": None, "clusters.json": None, "map.parquet": None, "manifest.json": None,
    "model": frozenset(MODEL_LAYOUT) | {MARKER}, "report.html": None, "report": frozenset(IMAGES) | {MARKER},
}
ASSIGN_LAYOUT = {"assignments.parquet": None, "manifest.json": None}


def run_files(config: PipelineConfig, events: str | Path, out: str | Path, items: str | Path | None = None,
              truth: str | Path | None = None, adapter: str | None = None,
              on_stage: StageCallback | None = None) -> Pipeline:
    """Read the inputs, fit the pipeline, write assignments, cluster profiles, the model and the manifest.

    The output folder is checked before anything is read, and replaced as one unit at the end."""
    config.validate()
    with OutputDir(out, "run", RUN_LAYOUT) as staging:
        backend = resolve_backend(config.device)
        recorder = StageRecorder(backend)
        steps = []
        if on_stage:
            on_stage("read")
        with recorder.stage("read"):
            if adapter:
                raw_events, raw_items, steps = get_adapter(adapter)(read_table(events, backend.frame), backend.frame)
            else:
                raw_events = read_events(events, backend.frame, config.columns)
                raw_items = None
            if items is not None:
                raw_items = read_items(items, backend.frame, config.columns)
            raw_truth = read_truth(truth, backend.frame) if truth is not None else None

        pipeline = Pipeline(config).fit(raw_events, raw_items, raw_truth, steps=steps, recorder=recorder,
                                        on_stage=on_stage)
        pipeline.manifest_["inputs"] = {
            "events": str(events), "items": None if items is None else str(items),
            "truth": None if truth is None else str(truth), "adapter": adapter,
        }
        _write_run(pipeline, staging)
    return pipeline


def write_outputs(pipeline: Pipeline, out: str | Path) -> Path:
    """A fitted pipeline's output set (and its saved model, OUT/model), replacing `out` as one unit."""
    with OutputDir(out, "run", RUN_LAYOUT) as staging:
        _write_run(pipeline, staging)
    return Path(out)


def _write_run(pipeline: Pipeline, folder: Path) -> None:
    run_id = pipeline.manifest_["run_id"]
    write_parquet(folder / "assignments.parquet", pipeline.labels_)
    write_parquet(folder / "map.parquet", pipeline.map_)
    write_json(folder / "clusters.json", {"run_id": run_id, "clusters": pipeline.profiles_,
                                          "population": pipeline.population_, "anomalies": pipeline.anomalies_})
    try:
        pipeline.save(folder / "model")
        pipeline.manifest_["model"] = "model"
    except UsageError as exc:  # e.g. UMAP: the run is still good, only not reusable for `assign`
        pipeline.manifest_["model"] = f"not saved: {exc}"
    write_json(folder / "manifest.json", pipeline.manifest_)


def assign_files(model: str | Path, events: str | Path, out: str | Path, device: str | None = None,
                 adapter: str | None = None) -> tuple[Pipeline, Any]:
    """Place the users of `events` in a saved model's clusters; writes OUT/assignments.parquet and
    OUT/manifest.json as one unit."""
    started = time.perf_counter()
    with OutputDir(out, "assign", ASSIGN_LAYOUT) as staging:
        pipeline = Pipeline.load(model, device=device)
        backend, config = pipeline.backend_, pipeline.config_
        if adapter:
            raw_events, _, _ = get_adapter(adapter)(read_table(events, backend.frame), backend.frame)
        else:
            raw_events = read_events(events, backend.frame, config.columns)
        labels = pipeline.assign(raw_events)
        sizes = host_frame(labels["cluster"].value_counts().sort_index().to_frame())
        manifest = {
            "gpuclust": gpuclust.__version__,
            "created": now_iso(),
            "model": str(model),
            "inputs": {"events": str(events), "adapter": adapter},
            "device": machine(backend),
            "versions": versions(),
            "rows": {"steps": [s.to_dict() for s in pipeline.assign_data_.steps], "users": len(labels)},
            "cluster_sizes": {int(k): int(v) for k, v in sizes.iloc[:, 0].items()},
            "seconds": round(time.perf_counter() - started, 4),
        }
        write_parquet(staging / "assignments.parquet", labels)
        write_json(staging / "manifest.json", manifest)
    return pipeline, manifest
