"""What a run folder holds, and how a fitted model's output set is written into one.

Below both `gpuclust.run` (one process) and `gpuclust.distributed.run` (Dask), which write the same set.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from gpuclust.errors import OutOfRoom, UsageError
from gpuclust.io.outputs import MARKER
from gpuclust.io.writers import write_json, write_parquet
from gpuclust.model import LAYOUT as MODEL_LAYOUT
from gpuclust.report.html import ASSIGNMENT_PARTS, IMAGES

# What a run folder may hold: its outputs, the saved model and, once `gpuclust report` ran, the report.
# A run on a Dask cluster writes its assignments as a partitioned dataset, OUT/assignments/part.N.parquet.
PARTS = re.compile(r"part\.\d+\.parquet")
RUN_LAYOUT = {
    "assignments.parquet": None, ASSIGNMENT_PARTS: PARTS, "clusters.json": None, "map.parquet": None,
    "manifest.json": None, "model": frozenset(MODEL_LAYOUT) | {MARKER}, "report.html": None,
    "report": frozenset(IMAGES) | {MARKER},
}
ASSIGN_LAYOUT = {"assignments.parquet": None, ASSIGNMENT_PARTS: PARTS, "manifest.json": None}


def write_run(model: Any, folder: Path, assignments_file: bool = True, model_key: Any = None) -> None:
    """The output set of a fitted model into `folder` (a staging folder); a Dask run has written its
    assignments as a partitioned dataset already (`assignments_file=False`). A `model_key` signs the model."""
    if assignments_file:
        write_parquet(folder / "assignments.parquet", model.labels_)
    write_parquet(folder / "map.parquet", model.map_)
    write_json(folder / "clusters.json", {"run_id": model.manifest_["run_id"], "clusters": model.profiles_,
                                          "population": model.population_, "anomalies": model.anomalies_,
                                          "privacy": model.privacy_})
    try:
        model.save(folder / "model", model_key=model_key)
        model.manifest_["model"] = "model"
    except OutOfRoom:  # the disk, not the model: the run fails as a whole
        raise
    except UsageError as exc:  # e.g. UMAP: the run is still good, only not reusable for `assign`
        model.manifest_["model"] = f"not saved: {exc}"
    write_json(folder / "manifest.json", model.manifest_)
