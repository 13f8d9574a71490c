"""File in, files out: what `gpuclust run` does, usable without the CLI.

Outputs go to a staging folder inside the output directory and are moved into place only after
every stage has succeeded, so a failed run leaves no half-written result.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import gpuclust
from gpuclust.backend import resolve_backend
from gpuclust.config import PipelineConfig
from gpuclust.errors import UsageError
from gpuclust.frames import host_frame
from gpuclust.io.adapters import get_adapter
from gpuclust.io.readers import read_events, read_items, read_table, read_truth
from gpuclust.io.writers import write_json, write_parquet
from gpuclust.manifest import StageRecorder, machine, now_iso, versions
from gpuclust.pipeline import Pipeline, StageCallback

OUTPUTS = ("assignments.parquet", "clusters.json", "map.parquet", "manifest.json")


def check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a directory")


def run_files(config: PipelineConfig, events: str | Path, out: str | Path, items: str | Path | None = None,
              truth: str | Path | None = None, adapter: str | None = None,
              on_stage: StageCallback | None = None) -> Pipeline:
    """Read the inputs, fit the pipeline, write assignments, cluster profiles and the manifest."""
    config.validate()
    out = Path(out)
    check_out_dir(out)
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
    write_outputs(pipeline, out)
    return pipeline


def write_outputs(pipeline: Pipeline, out: str | Path) -> list[Path]:
    """All files (and the saved model, OUT/model) are written to a staging folder first, then renamed
    into `out` together."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    try:
        write_parquet(staging / "assignments.parquet", pipeline.labels_)
        write_parquet(staging / "map.parquet", pipeline.map_)
        write_json(staging / "clusters.json", {"clusters": pipeline.profiles_, "population": pipeline.population_,
                                               "anomalies": pipeline.anomalies_})
        try:
            pipeline.save(staging / "model")
            pipeline.manifest_["model"] = "model"
        except UsageError as exc:  # e.g. UMAP: the run is still good, only not reusable for `assign`
            pipeline.manifest_["model"] = f"not saved: {exc}"
        write_json(staging / "manifest.json", pipeline.manifest_)
        written = []
        for name in OUTPUTS:
            os.replace(staging / name, out / name)
            written.append(out / name)
        if (staging / "model").exists():
            if (out / "model").exists():
                shutil.rmtree(out / "model")
            os.replace(staging / "model", out / "model")
            written.append(out / "model")
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def assign_files(model: str | Path, events: str | Path, out: str | Path, device: str | None = None,
                 adapter: str | None = None) -> tuple[Pipeline, Any]:
    """Place the users of `events` in a saved model's clusters; writes OUT/assignments.parquet and
    OUT/manifest.json."""
    out = Path(out)
    check_out_dir(out)
    started = time.perf_counter()
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
    out.mkdir(parents=True, exist_ok=True)
    write_parquet(out / "assignments.parquet", labels)
    write_json(out / "manifest.json", manifest)
    return pipeline, manifest
