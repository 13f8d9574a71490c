"""The model a service serves: loaded and verified once, tried on a request, then swapped in whole.

`load_state` builds everything a request needs (the estimator, its fast path, cluster labels, the
recommendation candidates per cluster) and places one made-up user through it before it is used, so a
model that loads but cannot place users is refused at load, not at the first request. The service
holds one `ModelState` and replaces the reference to it in one assignment; a request keeps the state it
started with, so it finishes on the model it began on.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gpuclust import schema
from gpuclust.errors import UsageError
from gpuclust.model import CHECKSUMS
from gpuclust.privacy import Pseudonymiser, check_key
from gpuclust.serve.events import EventColumns
from gpuclust.serve.fastpath import FastAssigner

MAX_RECOMMEND = 100  # the most items one user can ask for
SEEN_ALLOWANCE = 500  # candidates kept per cluster beyond MAX_RECOMMEND, for users who saw many of the top items


@dataclass
class ModelState:
    model_dir: Path
    model_id: str  # the first 16 hex digits of the SHA-256 of the model's checksum file: its content
    estimator: Any
    assigner: FastAssigner
    pseudonymiser: Pseudonymiser | None
    loaded_at: float
    labels: dict[int, str | None] = field(default_factory=dict)
    candidates: list[np.ndarray] = field(default_factory=list)  # per cluster (and global last): best items first
    candidate_scores: list[np.ndarray] = field(default_factory=list)
    item_fields: dict[str, list[Any]] = field(default_factory=dict)  # item_id, title, category by item_idx

    @property
    def k(self) -> int:
        return int(self.estimator.n_clusters_)

    @property
    def drift_baseline(self) -> dict[str, Any]:
        return self.estimator.drift_baseline_

    @property
    def fast(self) -> bool:
        return self.assigner.fallback is None

    def info_labels(self) -> dict[str, str]:
        return {"model_id": self.model_id, "run_id": str(self.estimator.manifest_.get("run_id")),
                "clusters": str(self.k), "device": self.estimator.backend_.device,
                "fast_path": "true" if self.fast else "false",
                "pseudonymised": "true" if self.estimator.privacy_.get("pseudonymised") else "false"}

    def describe(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "run_id": self.estimator.manifest_.get("run_id"), "clusters": self.k,
                "device": self.estimator.backend_.device, "loaded_at": round(self.loaded_at, 3),
                "fast_path": self.fast if self.fast else self.assigner.fallback,
                "blend_weight": self.estimator.segments_.blend_weight, "privacy": self.estimator.privacy_}

    def recommend(self, cluster: int, seen: set[int], n: int) -> list[dict[str, Any]]:
        """The top `n` items of the user's segment by blended popularity, without the ones in `seen`."""
        row = cluster if 0 <= cluster < self.k else self.k
        items, scores = self.candidates[row], self.candidate_scores[row]
        picked = [i for i in range(len(items)) if int(items[i]) not in seen][:n]
        if len(picked) < n and len(items) == SEEN_ALLOWANCE + MAX_RECOMMEND:  # saw most candidates: score all
            order, full = self.estimator.segments_.ranked(row)
            unseen = ((int(i), float(v)) for i, v in zip(order, full, strict=True) if int(i) not in seen)
            chosen = list(itertools.islice(unseen, n))  # per request: stop at n, not at the catalogue's end
            return [self._item(i, v) for i, v in chosen]
        return [self._item(int(items[i]), float(scores[i])) for i in picked]

    def _item(self, idx: int, score: float, source: str = "segment") -> dict[str, Any]:
        out = {name: values[idx] for name, values in self.item_fields.items()}
        out["score"] = round(score, 6)
        out["source"] = source
        return out


def model_id_of(model_dir: Path) -> str:
    try:
        return hashlib.sha256((model_dir / CHECKSUMS).read_bytes()).hexdigest()[:16]
    except OSError as exc:
        raise UsageError(f"no model at {model_dir}: {exc.strerror or exc}") from None


def load_state(model_dir: str | Path, device: str | None, pseudonymiser: Pseudonymiser | None,
               model_key: Any = None) -> ModelState:
    """Load, verify and try a model; any problem is a UsageError and nothing is swapped.

    A folder edited with its checksums recomputed can hold values no fit writes (a gap of 1e308
    minutes, JSON nested 100,000 deep): whatever the loader raises then is a refusal too, so a reload
    answers 409 and the service starts with one line, never a traceback."""
    model_dir = Path(model_dir)
    try:
        return _load_state(model_dir, device, pseudonymiser, model_key)
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - RecursionError and MemoryError included: see the docstring
        raise UsageError(f"model {model_dir} cannot be served ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:300]})") from None


def _load_state(model_dir: Path, device: str | None, pseudonymiser: Pseudonymiser | None,
                model_key: Any = None) -> ModelState:
    from gpuclust.estimator import UserClusterer

    before = model_id_of(model_dir)
    est = UserClusterer.load(model_dir, device=device, pseudonymise=pseudonymiser, model_key=model_key)
    check_key(est.privacy_, pseudonymiser, f"model {model_dir}")
    if model_id_of(model_dir) != before:
        raise UsageError(f"model {model_dir} changed while it was being loaded; reload again")
    state = ModelState(model_dir, before, est, FastAssigner(est), pseudonymiser, time.time())
    state.labels = {int(p["cluster"]): p.get("label") for p in est.profiles_}
    for row in range(state.k + 1):
        order, scores = est.segments_.ranked(row)
        state.candidates.append(order[:MAX_RECOMMEND + SEEN_ALLOWANCE])
        state.candidate_scores.append(scores[:MAX_RECOMMEND + SEEN_ALLOWANCE])
    vocab = state.assigner.vocabulary  # already on the host: one copy per load
    for name in (schema.ITEM, schema.TITLE, schema.CATEGORY):
        if name in vocab.columns:
            state.item_fields[name] = [_plain(v) for v in vocab[name].tolist()]
    _try(state)
    return state


def _try(state: ModelState) -> None:
    """One made-up user on the model's first item: the whole path runs before the model serves."""
    if not state.assigner.n_items:
        raise UsageError(f"model {state.model_dir} has no items")
    n = max(1, state.assigner.min_user_events)
    item = state.item_fields[schema.ITEM][0]
    events = EventColumns(["__gpuclust_try__"] * n, [item] * n, [state.assigner.types[0]] * n,
                          np.arange(n, dtype=np.int64) * 10**9, np.zeros(n, np.float32))
    try:
        prepared = state.assigner.prepare(events, state.pseudonymiser)
        placed = (state.assigner.place([prepared])[0] if state.fast
                  else state.assigner.predict_request(events, prepared))
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - a model that cannot place a user must not replace one that can
        raise UsageError(f"model {state.model_dir} loads but cannot place a user ({type(exc).__name__}: {exc})") from None
    if placed.cluster.shape[0] != 1 or not np.isfinite(placed.distance).all():
        raise UsageError(f"model {state.model_dir} loads but placed a test user nowhere")


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value
