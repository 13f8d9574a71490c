"""A sampled 2D map of users for reports and notebooks: the plane that spreads the cluster centres apart.

A plain PCA of the fused features shows where users vary most, which is mostly within clusters: the
clusters overlap in one blob. Projecting onto the principal axes of the (size-weighted) cluster centres
instead shows the clusters apart, as far as the data allows; with fewer than 3 clusters it is plain PCA.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpuclust import schema
from gpuclust.backend import Backend, array_module, to_host
from gpuclust.features.svd import component_signs
from gpuclust.frames import array_frame
from gpuclust.segments import group_sums


def project_2d(x: Any, labels: Any, users: Any, backend: Backend, sample: int = 20_000, seed: int = 0):
    """user_id, x, y, cluster for a seeded sample of users, on the cluster centres' plane (`_centre_axes`).

    `labels` may be on the device or where the frames keep their data (`frames.frame_local`); only the
    sample's coordinates cross to the host for pandas frames.
    """
    xp = backend.xp
    n = int(x.shape[0])
    rows = np.arange(n) if n <= sample else np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))
    idx = xp.asarray(rows)
    xs = x[idx].astype(xp.float64)
    xs -= xs.mean(axis=0, keepdims=True)
    sample_labels = labels[array_module(labels).asarray(rows)]
    same = array_module(sample_labels) is xp  # frame-local labels beside device features: the sample moves
    comps = _centre_axes(xs, (sample_labels if same else xp.asarray(to_host(sample_labels))).astype(xp.int64), xp)
    if comps is None:
        _, _, vt = xp.linalg.svd(xs, full_matrices=False)
        comps = vt[:2]
    comps *= component_signs(comps, xp)[:, None]  # each axis's sign fixed, so reruns draw the same picture
    coords = (xs @ comps.T).astype(xp.float32)
    if coords.shape[1] < 2:
        coords = xp.concatenate([coords, xp.zeros((coords.shape[0], 2 - coords.shape[1]), xp.float32)], axis=1)
    frame = array_frame({schema.USER_IDX: rows.astype(np.int32), "x": coords[:, 0], "y": coords[:, 1],
                         "cluster": sample_labels}, backend)
    out = frame.merge(users, on=schema.USER_IDX).sort_values(schema.USER_IDX)
    return out[[schema.USER, "x", "y", "cluster"]].reset_index(drop=True)


def _centre_axes(xs: Any, labels: Any, xp) -> Any:
    """The 2 principal axes of the sample's cluster centres, each weighted by its cluster's size (the
    between-cluster scatter); None where fewer than 3 clusters have members (no plane to speak of)."""
    member = labels >= 0
    if not bool(member.any()):
        return None
    k = int(labels[member].max()) + 1
    sums, counts = group_sums(xs[member], labels[member], k, xp)
    present = counts > 0
    if int(present.sum()) < 3:
        return None
    centres = sums[present] / counts[present, None]
    centres -= (centres * counts[present, None]).sum(axis=0) / counts[present].sum()
    _, _, vt = xp.linalg.svd(centres * xp.sqrt(counts[present])[:, None], full_matrices=False)
    return vt[:2] if vt.shape[0] >= 2 else None
