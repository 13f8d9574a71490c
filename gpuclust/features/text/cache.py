"""On-disk cache of encoded vectors, keyed by model identity and a hash of each text.

A rerun encodes only texts it has not seen under the same model, pooling, precision and max length.
Layout: `<cache_dir>/<namespace-hash>/` holds `namespace.json` (what the hash stands for), `index.json`
(text hashes in row order and the name of the vectors file) and `vectors-<token>.npy` (float32 rows).
No pickle. Each update writes a new vectors file, then atomically replaces the index that names it, so
a crash leaves the previous pair intact; the old vectors file is removed afterwards.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gpuclust.errors import UsageError
from gpuclust.io.writers import atomic_path

INDEX = "index.json"
FORMAT_VERSION = 1


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def namespace_key(namespace: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(namespace, sort_keys=True).encode()).hexdigest()[:20]


class VectorCache:
    """Vectors for (namespace, text) pairs; `namespace` says which model and settings made them."""

    def __init__(self, root: str | Path, namespace: dict[str, Any]) -> None:
        self.root = Path(root).expanduser()
        self.namespace = dict(namespace, format=FORMAT_VERSION)
        self.dir = self.root / namespace_key(self.namespace)
        self._keys: list[str] | None = None
        self._vectors: np.ndarray | None = None
        self._file: str | None = None

    def _load(self) -> None:
        if self._keys is not None:
            return
        index_path = self.dir / INDEX
        self._keys, self._vectors, self._file = [], None, None
        if not index_path.is_file():
            return
        try:
            index = json.loads(index_path.read_text())
            vectors = np.load(self.dir / index["vectors"], mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, KeyError) as exc:
            raise UsageError(
                f"text vector cache at {self.dir} is unreadable ({exc}); delete that folder to rebuild it"
            ) from None
        if vectors.shape[0] != len(index["keys"]) or vectors.dtype != np.float32:
            raise UsageError(f"text vector cache at {self.dir} is inconsistent; delete that folder to rebuild it")
        self._keys, self._vectors, self._file = list(index["keys"]), vectors, index["vectors"]

    def __len__(self) -> int:
        self._load()
        return len(self._keys or [])

    def lookup(self, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(hit mask over `keys`, float32 vectors of the hits in `keys` order)."""
        self._load()
        row_of = {k: i for i, k in enumerate(self._keys or [])}
        rows = np.fromiter((row_of.get(k, -1) for k in keys), dtype=np.int64, count=len(keys))
        hit = rows >= 0
        if not hit.any() or self._vectors is None:
            return hit, np.zeros((0, 0), dtype=np.float32)
        return hit, np.asarray(self._vectors[rows[hit]], dtype=np.float32)

    def store(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Add rows for new keys (keys already present are ignored)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if len(keys) != len(vectors):
            raise ValueError("keys and vectors differ in length")
        self._load()
        known = set(self._keys or [])
        fresh: list[int] = []
        for i, key in enumerate(keys):
            if key not in known:
                known.add(key)
                fresh.append(i)
        if not fresh:
            return
        new_keys = (self._keys or []) + [keys[i] for i in fresh]
        parts = [np.asarray(self._vectors)] if self._vectors is not None and len(self._vectors) else []
        merged = np.concatenate([*parts, vectors[fresh]], axis=0) if parts else vectors[fresh]
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"vectors-{uuid.uuid4().hex[:12]}.npy"
        with atomic_path(self.dir / name) as tmp, open(tmp, "wb") as fh:
            np.save(fh, merged, allow_pickle=False)
        with atomic_path(self.dir / "namespace.json") as tmp:
            tmp.write_text(json.dumps(self.namespace, indent=2, sort_keys=True) + "\n")
        with atomic_path(self.dir / INDEX) as tmp:
            tmp.write_text(json.dumps({"format": FORMAT_VERSION, "vectors": name, "keys": new_keys}) + "\n")
        old = self._file
        self._keys, self._vectors, self._file = new_keys, merged, name
        if old and old != name:
            (self.dir / old).unlink(missing_ok=True)
