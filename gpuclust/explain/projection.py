"""A sampled 2D map of users (PCA of the fused features) for reports and notebooks."""

from __future__ import annotations

from typing import Any

import numpy as np

from gpuclust import schema
from gpuclust.backend import Backend, array_module
from gpuclust.frames import array_frame


def project_2d(x: Any, labels: Any, users: Any, backend: Backend, sample: int = 20_000, seed: int = 0):
    """user_id, x, y, cluster for a seeded sample of users; PCA by SVD of the centred sample.

    `labels` may be on the device or where the frames keep their data (`frames.frame_local`); only the
    sample's coordinates cross to the host for pandas frames.
    """
    xp = backend.xp
    n = int(x.shape[0])
    rows = np.arange(n) if n <= sample else np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))
    idx = xp.asarray(rows)
    xs = x[idx].astype(xp.float64)
    xs -= xs.mean(axis=0, keepdims=True)
    _, _, vt = xp.linalg.svd(xs, full_matrices=False)
    comps = vt[:2]
    # Fix each axis's sign so reruns draw the same picture.
    comps *= xp.where(comps[xp.arange(comps.shape[0]), xp.abs(comps).argmax(axis=1)] < 0, -1.0, 1.0)[:, None]
    coords = (xs @ comps.T).astype(xp.float32)
    if coords.shape[1] < 2:
        coords = xp.concatenate([coords, xp.zeros((coords.shape[0], 2 - coords.shape[1]), xp.float32)], axis=1)
    frame = array_frame({schema.USER_IDX: rows.astype(np.int32), "x": coords[:, 0], "y": coords[:, 1],
                         "cluster": labels[array_module(labels).asarray(rows)]}, backend)
    out = frame.merge(users, on=schema.USER_IDX).sort_values(schema.USER_IDX)
    return out[[schema.USER, "x", "y", "cluster"]].reset_index(drop=True)
