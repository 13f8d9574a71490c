"""Saved models: JSON for structure and parameters, safetensors for arrays, Parquet for the item
vocabulary, and a checksum file over every other file, so a model with any file changed, removed,
added or renamed is refused before anything in it is parsed. No pickle.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from gpuclust import registry
from gpuclust.backend import Backend, to_host
from gpuclust.errors import UsageError
from gpuclust.frames import host_frame
from gpuclust.io.outputs import OutputDir
from gpuclust.io.writers import json_text
from gpuclust.signing import SIGNATURE, ModelKey

FORMAT = "gpuclust-model"
# 3: privacy (pseudonymised ids, key fingerprint), segment popularity and blend weight, drift yardsticks.
# 4: the personal recommender (EASE or item-kNN weights, recommend.personal.*; "personal" in model.json).
# 5: every profile has a name and a description (rule-based, or a language model's: `described_by`).
VERSION = 5
MANIFEST = "model.json"
ARRAYS = "arrays.safetensors"
ITEMS = "items.parquet"
ASSIGNMENTS = "assignments.parquet"
MAP = "map.parquet"
TABLES = (ITEMS, ASSIGNMENTS, MAP)
CHECKSUMS = "checksums.sha256"
PERSONAL = "recommend.personal"  # prefix of the personal model's arrays
# Every file a model folder may hold; the checksum file lists all of them but itself and the signature.
LAYOUT = dict.fromkeys((MANIFEST, ARRAYS, *TABLES, CHECKSUMS, SIGNATURE))
REQUIRED_KEYS = ("format", "version", "gpuclust", "run_id", "config", "featurizers", "fuser", "reducer", "clusterer",
                 "sweep", "profiles", "population", "anomalies", "manifest", "privacy", "recommend", "personal",
                 "drift")
_PLAIN_NAME = re.compile(r"\.?[A-Za-z0-9][A-Za-z0-9_.-]*")
_LINE = re.compile(r"(?P<digest>[0-9a-f]{64})  (?P<name>.+)")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_model(directory: str | Path, meta: dict[str, Any], arrays: dict[str, Any], tables: dict[str, Any],
                key: ModelKey | None = None) -> Path:
    """Write model.json, arrays.safetensors, the Parquet tables and the checksums of all of them as one unit;
    with a key, a signature of the checksums too."""
    from safetensors.numpy import save_file

    with OutputDir(directory, "model", LAYOUT, what="model folder") as staging:
        host = {name: np.ascontiguousarray(to_host(a)) for name, a in arrays.items()}
        try:
            save_file(host, str(staging / ARRAYS))
        except Exception as exc:  # safetensors' I/O errors are no OSError: keep the errno (a full disk, ulimit -f)
            code = re.search(r"os error (\d+)", str(exc))
            if code is None:
                raise
            raise OSError(int(code[1]), os.strerror(int(code[1])), str(staging / ARRAYS)) from None
        for name, table in tables.items():
            host_frame(table).to_parquet(staging / name, index=False)
        document = {"format": FORMAT, "version": VERSION, **meta}
        (staging / MANIFEST).write_text(json_text(document))
        lines = [f"{_sha256(path.read_bytes())}  {path.name}" for path in sorted(staging.iterdir())]
        (staging / CHECKSUMS).write_text("\n".join(lines) + "\n")
        if key is not None:
            (staging / SIGNATURE).write_text(key.sign((staging / CHECKSUMS).read_bytes()))
    return Path(directory)


def read_verified(directory: str | Path, key: ModelKey | None = None) -> dict[str, bytes]:
    """Every file of a model folder, each checked against the checksum file before anything is parsed.

    The folder must hold exactly the files the checksum file lists (plain names, regular files), so a
    file changed, removed, added or renamed is refused; parsing then uses these verified bytes only."""
    directory = Path(directory)
    try:
        folder = directory.is_dir()
    except OSError as exc:  # a name past the file system's limit (ENAMETOOLONG), a path it cannot look at
        raise UsageError(f"no model at {directory}: {exc.strerror or exc}") from None
    if not folder:
        raise UsageError(f"no model at {directory}: not a folder (a `gpuclust run` writes one to OUT/model)")
    listed = _read_checksums(directory)
    if key is not None:  # before any file is trusted: the checksums themselves must be ours
        signature = directory / SIGNATURE
        key.verify((directory / CHECKSUMS).read_bytes(),
                   signature.read_bytes() if signature.is_file() and not signature.is_symlink() else None,
                   f"model {directory}")
    present = {entry.name for entry in os.scandir(directory)} - {CHECKSUMS, SIGNATURE}
    for name in sorted(set(listed) - present):
        raise UsageError(f"model {directory} is incomplete: {name} is missing")
    for name in sorted(present - set(listed)):
        raise UsageError(f"model {directory} holds {name}, which its checksums do not list: "
                         "it was modified; re-save the model")
    contents = {}
    for name, expected in listed.items():
        path = directory / name
        if path.is_symlink() or not path.is_file():
            raise UsageError(f"model {directory} is corrupt: {name} is not a regular file")
        data = path.read_bytes()
        if _sha256(data) != expected:
            raise UsageError(f"model {directory} was modified or truncated: {name} does not match its checksum")
        contents[name] = data
    return contents


def _read_checksums(directory: Path) -> dict[str, str]:
    path = directory / CHECKSUMS
    if not path.is_file() or path.is_symlink():
        if (directory / MANIFEST).is_file():
            raise UsageError(f"model {directory} has no {CHECKSUMS}: it was modified, or saved by an older "
                             "gpuclust; re-run `gpuclust run` to save it again")
        raise UsageError(f"no model at {directory}: {MANIFEST} is missing (a `gpuclust run` writes one to OUT/model)")
    try:
        text = path.read_bytes().decode("ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"model {directory} is corrupt: {CHECKSUMS} cannot be read ({exc})") from None
    if not text.endswith("\n"):  # exactly as written: "<sha256>  <name>\n" per file, nothing else
        raise UsageError(f"model {directory} is corrupt: {CHECKSUMS} does not end with a line break")
    lines = text[:-1].split("\n")
    listed: dict[str, str] = {}
    for line in lines:
        match = _LINE.fullmatch(line)
        if match is None or not _PLAIN_NAME.fullmatch(match["name"]) or match["name"] in listed:
            raise UsageError(f"model {directory} is corrupt: {CHECKSUMS} has a malformed line {line[:80]!r}")
        listed[match["name"]] = match["digest"]
    if MANIFEST not in listed:
        raise UsageError(f"model {directory} is corrupt: {CHECKSUMS} does not cover {MANIFEST}")
    return listed


def read_model(directory: str | Path, backend: Backend,
               key: ModelKey | None = None) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Return (meta, arrays on the backend, tables on the backend's frame library), all verified (and the
    signature, with a key)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    directory = Path(directory)
    contents = read_verified(directory, key)
    try:
        meta = json.loads(contents[MANIFEST])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"model {directory} is corrupt: {MANIFEST} is not valid JSON ({exc})") from None
    except RecursionError:
        raise UsageError(f"model {directory} is corrupt: {MANIFEST} is nested too deeply to be a model") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UsageError(f"{directory} is not a gpuclust model: {MANIFEST} is not a gpuclust model description")
    if meta.get("version") != VERSION:
        raise UsageError(f"{directory} is a gpuclust model of version {meta.get('version')!r}; this gpuclust "
                         f"reads version {VERSION}: re-run `gpuclust run` to save it again")
    missing = [key for key in REQUIRED_KEYS if key not in meta]
    if missing:
        raise UsageError(f"model {directory} is malformed: {MANIFEST} lacks {', '.join(missing)}")
    for name in (ARRAYS, *TABLES):
        if name not in contents:
            raise UsageError(f"model {directory} is incomplete: {name} is missing")
    try:
        host_arrays = load(contents[ARRAYS])
    except (SafetensorError, OSError, ValueError) as exc:
        raise UsageError(f"model {directory} is corrupt: {ARRAYS} cannot be read ({exc})") from None
    for name, values in host_arrays.items():  # checksums prove the bytes are as written, not that they make sense
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise UsageError(f"model {directory} is damaged: its array {name} holds NaN or infinite values; "
                             "re-save it with `gpuclust run`")
    arrays = {k: backend.asarray(v) for k, v in host_arrays.items()}
    tables = {}
    for name in TABLES:
        try:
            tables[name] = backend.frame.read_parquet(io.BytesIO(contents[name]))
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
            raise UsageError(f"model {directory} is corrupt: {name} cannot be read ({exc})") from None
    return meta, arrays, tables


def split_arrays(arrays: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The arrays saved under `prefix.` with the prefix removed."""
    start = prefix + "."
    return {k[len(start):]: v for k, v in arrays.items() if k.startswith(start)}


# --- an estimator's state -----------------------------------------------------------------------

def save_estimator(est: Any, directory: str | Path, key: ModelKey | None = None) -> Path:
    """Featuriser states, the fuser's centring and scales, a linear reducer, the centres and the anomaly
    yardsticks (what `predict` needs), plus the fitted attributes a loaded model shows."""
    featurizers, arrays = [], {}
    for f in est.featurizers_:
        if f.name not in registry.FEATURES:
            raise UsageError(f"featuriser {f.name!r} is not in the registry, so a saved model could not rebuild it: "
                             f"call gpuclust.registry.register_feature({f.name!r}, 'module:Class') first")
        if not hasattr(f, "state"):
            raise UsageError(f"featuriser {f.name!r} cannot be saved (it has no state())")
        meta, state = f.state()
        featurizers.append({"name": f.name, "meta": meta})
        arrays.update({f"featurizer.{f.name}.{k}": v for k, v in state.items()})
    fuser = {name: {"scale": s["scale"], "weight": s["weight"]} for name, s in est.fuser_.stats_.items()}
    arrays.update({f"fuser.{name}.mean": s["mean"] for name, s in est.fuser_.stats_.items()})
    reducer = None
    if est.reducer_ is not None:
        components = getattr(est.reducer_, "components_", None)
        if components is None:
            raise UsageError(f"a {type(est.reducer_).__name__} reduction cannot be saved without pickle; "
                             "use --reduce pca (or none, or a linear reducer) for a reusable model")
        mean = getattr(est.reducer_, "mean_", None)
        arrays["reducer.components"] = components
        arrays["reducer.mean"] = np.zeros(components.shape[1], np.float32) if mean is None else mean
        reducer = {"n_components": int(components.shape[0]), "info": getattr(est.reducer_, "info_", {})}
    arrays["clusterer.centres"] = est.cluster_centers_
    arrays["anomaly.median"], arrays["anomaly.scale"] = est.spread_
    arrays["recommend.popularity"] = est.segments_.table
    personal = getattr(est, "personal_", None)
    if personal is not None:
        arrays.update({f"{PERSONAL}.{k}": v for k, v in personal.arrays().items()})
    meta = {
        "gpuclust": est.manifest_["gpuclust"],
        "run_id": est.manifest_.get("run_id"),
        "config": est.config_.to_dict(),
        "featurizers": featurizers,
        "fuser": fuser,
        "reducer": reducer,
        "clusterer": {"algorithm": est.manifest_["cluster"]["algorithm"], "engine": est.manifest_["cluster"]["engine"],
                      "k": int(est.n_clusters_)},
        "sweep": None if est.sweep_ is None else est.sweep_.to_dict(),
        "profiles": est.profiles_, "population": est.population_, "anomalies": est.anomalies_,
        "manifest": est.manifest_,
        "privacy": est.privacy_,  # the key's fingerprint, never the key
        "recommend": est.segments_.to_meta(),
        "personal": None if personal is None else personal.to_meta(),
        "drift": est.drift_baseline_,
    }
    tables = {ITEMS: est.vocabulary_, ASSIGNMENTS: est.labels_, MAP: est.map_}
    return write_model(directory, meta, arrays, tables, key)


def load_estimator(cls, directory: str | Path, device: str | None = None, pseudonymise: Any = None,
                   key: ModelKey | None = None):
    from gpuclust.backend import resolve_backend
    from gpuclust.privacy import as_pseudonymiser, check_key

    pseudonymiser = as_pseudonymiser(pseudonymise)
    backend = resolve_backend(device or "auto")
    meta, arrays, tables = read_model(directory, backend, key)
    try:
        est = _restore(cls, meta, arrays, tables, backend, device)
        _check_shapes(est)
        if pseudonymiser is not None:
            check_key(est.privacy_, pseudonymiser, f"model {directory}")
        est.pseudonymise = est.pseudonymiser_ = pseudonymiser
    except UsageError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise UsageError(f"model {directory} is malformed ({type(exc).__name__}: {exc}); re-save it "
                         "with `gpuclust run`") from None
    return est


def _restore(cls, meta: dict[str, Any], arrays: dict[str, Any], tables: dict[str, Any], backend: Backend,
             device: str | None):
    from gpuclust.cluster.outcome import Centroids
    from gpuclust.cluster.sweep import KSweep
    from gpuclust.config import PipelineConfig
    from gpuclust.features.fuse import Fuser
    from gpuclust.recommend.personal import PersonalModel
    from gpuclust.recommend.segments import SegmentPopularity
    from gpuclust.reduce.pca import PCA

    try:  # every loaded setting as strictly as the command line's (keys, types, ranges, weights >= 0, sizes)
        config = PipelineConfig.from_dict(meta["config"])
        if device:
            config.device = device
        config.validate(require_features=False)
    except UsageError as exc:
        raise ValueError(f"its settings are invalid: {exc}") from None
    est = cls(config=config)
    est.config_, est.backend_ = config, backend
    est.featurizers_ = [
        registry.lookup(registry.FEATURES, f["name"], "featuriser").load().from_state(
            f["meta"], split_arrays(arrays, f"featurizer.{f['name']}"), backend)
        for f in meta["featurizers"]
    ]
    est.fuser_ = Fuser({n: s["weight"] for n, s in meta["fuser"].items()})
    est.fuser_.stats_ = {n: {"mean": arrays[f"fuser.{n}.mean"], **s} for n, s in meta["fuser"].items()}
    est.reducer_ = None
    if meta["reducer"]:
        est.reducer_ = PCA(meta["reducer"]["n_components"])
        est.reducer_.components_, est.reducer_.mean_ = arrays["reducer.components"], arrays["reducer.mean"]
        est.reducer_.info_ = meta["reducer"].get("info", {})
    est.cluster_centers_ = arrays["clusterer.centres"]
    est.n_clusters_ = int(est.cluster_centers_.shape[0])
    est.clusterer_ = Centroids(est.cluster_centers_, meta["clusterer"]["algorithm"], meta["clusterer"]["engine"])
    sweep = meta["sweep"]
    est.sweep_ = None if sweep is None else KSweep(
        sweep["curve"], sweep["best_k"], sweep["rule"], sweep["silhouette_sample"],
        {k: v for k, v in sweep.items() if k not in ("curve", "best_k", "rule", "silhouette_sample")})
    est.spread_ = (arrays["anomaly.median"], arrays["anomaly.scale"])
    est.vocabulary_, est.labels_, est.map_ = tables[ITEMS], tables[ASSIGNMENTS], tables[MAP]
    est.profiles_, est.population_, est.anomalies_ = meta["profiles"], meta["population"], meta["anomalies"]
    est.manifest_ = meta["manifest"]
    est.metrics_ = est.manifest_["metrics"]
    est.privacy_ = dict(meta["privacy"])
    est.pseudonymiser_ = None  # set by load_estimator from the key given, if any
    est.segments_ = SegmentPopularity(np.array(to_host(arrays["recommend.popularity"]), dtype=np.float32),
                                      float(meta["recommend"]["blend_weight"]), meta["recommend"].get("tuning", {}))
    est.drift_baseline_ = meta["drift"]
    est.personal_ = None if meta["personal"] is None else PersonalModel.restore(
        meta["personal"], split_arrays(arrays, PERSONAL), len(est.vocabulary_), backend)
    return est


def _check_shapes(est) -> None:
    """Arrays of another model (or edited ones) do not line up: say so now, not at the first predict."""
    fused = sum(int(s["mean"].shape[-1]) for s in est.fuser_.stats_.values())
    names = [f.name for f in est.featurizers_]
    if sorted(names) != sorted(est.fuser_.stats_):
        raise ValueError(f"featurisers {names} do not match the fused blocks {list(est.fuser_.stats_)}")
    width = fused
    if est.reducer_ is not None:
        components = est.reducer_.components_
        if components.ndim != 2 or components.shape[1] != fused or est.reducer_.mean_.shape[-1] != fused:
            raise ValueError(f"the reducer expects {components.shape[-1]} features, the fused blocks give {fused}")
        width = components.shape[0]
    centres = est.cluster_centers_
    if centres.ndim != 2 or centres.shape[1] != width or centres.shape[0] < 1:
        raise ValueError(f"cluster centres of shape {tuple(centres.shape)} do not fit {width} features")
    if any(s.shape != (centres.shape[0],) for s in est.spread_):
        raise ValueError("the anomaly yardsticks do not match the clusters")
    table = est.segments_.table
    if not (np.isfinite(table).all() and (table >= 0).all() and (table <= 1).all()):
        raise ValueError("the popularity table holds shares outside [0, 1]")
    if table.ndim != 2 or table.shape != (centres.shape[0] + 1, len(est.vocabulary_)):
        raise ValueError(f"the popularity table of shape {tuple(table.shape)} does not fit {centres.shape[0]} "
                         f"clusters and {len(est.vocabulary_)} items")
    if not 0 <= est.segments_.blend_weight <= 1 or len(est.drift_baseline_["cluster_shares"]) != centres.shape[0]:
        raise ValueError("the blend weight or the drift yardsticks do not fit the clusters")
