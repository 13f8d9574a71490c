"""Saved models: JSON for structure and parameters, safetensors for arrays, Parquet for the item
vocabulary, and a SHA-256 of each file so a tampered or truncated model is refused. No pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from gpuclust.backend import Backend, to_host
from gpuclust.errors import UsageError
from gpuclust.frames import host_frame

FORMAT = "gpuclust-model"
VERSION = 1
MANIFEST = "model.json"
ARRAYS = "arrays.safetensors"
ITEMS = "items.parquet"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_model(directory: str | Path, meta: dict[str, Any], arrays: dict[str, Any], items: Any) -> Path:
    """Write model.json, arrays.safetensors and items.parquet together (staged, then renamed)."""
    from safetensors.numpy import save_file

    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"model path {directory} is a file; give a directory")
    directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=directory))
    try:
        host = {name: np.ascontiguousarray(to_host(a)) for name, a in arrays.items()}
        save_file(host, str(staging / ARRAYS))
        host_frame(items).to_parquet(staging / ITEMS, index=False)
        document = {"format": FORMAT, "version": VERSION, **meta,
                    "files": {name: _sha256(staging / name) for name in (ARRAYS, ITEMS)}}
        (staging / MANIFEST).write_text(json.dumps(document, indent=2, default=str) + "\n")
        for name in (ARRAYS, ITEMS, MANIFEST):  # the manifest last: a model is complete once it exists
            os.replace(staging / name, directory / name)
        return directory
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_model(directory: str | Path, backend: Backend) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """Return (meta, arrays on the backend, item table on the backend's frame library)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    directory = Path(directory)
    manifest = directory / MANIFEST
    if not manifest.is_file():
        raise UsageError(f"no model at {directory}: {MANIFEST} is missing (a `gpuclust run` writes one to OUT/model)")
    try:
        meta = json.loads(manifest.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"model {directory} is corrupt: {MANIFEST} is not valid JSON ({exc})") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise UsageError(f"{directory} is not a gpuclust model of version {VERSION}")
    for name, expected in meta.get("files", {}).items():
        path = directory / name
        if not path.is_file():
            raise UsageError(f"model {directory} is incomplete: {name} is missing")
        if _sha256(path) != expected:
            raise UsageError(f"model {directory} was modified or truncated: {name} does not match its checksum")
    try:
        arrays = {k: backend.asarray(v) for k, v in load_file(str(directory / ARRAYS)).items()}
    except (SafetensorError, OSError) as exc:
        raise UsageError(f"model {directory} is corrupt: {ARRAYS} cannot be read ({exc})") from None
    items = backend.frame.read_parquet(directory / ITEMS)
    return meta, arrays, items


def split_arrays(arrays: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The arrays saved under `prefix.` with the prefix removed."""
    start = prefix + "."
    return {k[len(start):]: v for k, v in arrays.items() if k.startswith(start)}


# --- a pipeline's state -------------------------------------------------------------------------------

def featurizer_class(name: str):
    from gpuclust.features.behaviour import BehaviourFeaturizer
    from gpuclust.features.tfidf import TfidfFeaturizer

    if name == "behaviour":
        return BehaviourFeaturizer
    if name == "tfidf":
        return TfidfFeaturizer
    if name == "text":
        from gpuclust.features.text.featurizer import TextFeaturizer

        return TextFeaturizer
    raise UsageError(f"the model names an unknown featuriser {name!r}; was it saved by a newer gpuclust?")


def save_pipeline(pipeline, directory: str | Path) -> Path:
    """Featuriser states, the fuser's centring and scales, the PCA (if any) and the cluster centres."""
    featurizers, arrays = [], {}
    for f in pipeline.featurizers_:
        if not hasattr(f, "state"):
            raise UsageError(f"featuriser {f.name!r} cannot be saved (it has no state())")
        meta, state = f.state()
        featurizers.append({"name": f.name, "meta": meta})
        arrays.update({f"featurizer.{f.name}.{k}": v for k, v in state.items()})
    fuser = {name: {"scale": s["scale"], "weight": s["weight"]} for name, s in pipeline.fuser_.stats_.items()}
    arrays.update({f"fuser.{name}.mean": s["mean"] for name, s in pipeline.fuser_.stats_.items()})
    reducer = None
    if pipeline.reducer_ is not None:
        if not hasattr(pipeline.reducer_, "components_"):
            raise UsageError(f"a {type(pipeline.reducer_).__name__} reduction cannot be saved without pickle; "
                             "use --reduce pca or none for a reusable model")
        reducer = {"method": "pca", "n_components": int(pipeline.reducer_.components_.shape[0])}
        arrays["reducer.components"] = pipeline.reducer_.components_
        arrays["reducer.mean"] = pipeline.reducer_.mean_
    arrays["clusterer.centres"] = pipeline.clusterer_.cluster_centers_
    meta = {
        "gpuclust": pipeline.manifest_["gpuclust"],
        "config": pipeline.config_.to_dict(),
        "featurizers": featurizers,
        "fuser": fuser,
        "reducer": reducer,
        "clusterer": {"algorithm": pipeline.manifest_["cluster"]["algorithm"],
                      "engine": pipeline.manifest_["cluster"]["engine"],
                      "k": int(pipeline.clusterer_.cluster_centers_.shape[0])},
    }
    return save_model(directory, meta, arrays, pipeline.data_.items)


def load_pipeline(cls, directory: str | Path, device: str | None = None):
    from gpuclust.backend import resolve_backend
    from gpuclust.config import PipelineConfig
    from gpuclust.features.fuse import Fuser
    from gpuclust.reduce.pca import PCA

    backend = resolve_backend(device or "auto")
    meta, arrays, items = load_model(directory, backend)
    config = PipelineConfig.from_dict(meta["config"])
    if device:
        config.device = device
    pipeline = cls(config)
    pipeline.config_ = config
    pipeline.backend_ = backend
    pipeline.vocabulary_ = items
    pipeline.featurizers_ = [
        featurizer_class(f["name"]).from_state(f["meta"], split_arrays(arrays, f"featurizer.{f['name']}"), backend)
        for f in meta["featurizers"]
    ]
    pipeline.fuser_ = Fuser({n: s["weight"] for n, s in meta["fuser"].items()})
    pipeline.fuser_.stats_ = {n: {"mean": arrays[f"fuser.{n}.mean"], **s} for n, s in meta["fuser"].items()}
    pipeline.reducer_ = None
    if meta.get("reducer"):
        pipeline.reducer_ = PCA(meta["reducer"]["n_components"])
        pipeline.reducer_.components_ = arrays["reducer.components"]
        pipeline.reducer_.mean_ = arrays["reducer.mean"]
    pipeline.centres_ = arrays["clusterer.centres"]
    return pipeline
