"""Pure cluster popularity ranks a cluster's own items first and fills the rest of the list by global
popularity: equal scores (a cluster's many zero-share items) go to the higher global share, never to
whichever item happens to come first."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpuclust.backend import resolve_backend
from gpuclust.recommend.personal import segment_top_items
from gpuclust.recommend.scoring import Popularity, rank_targets, top_k_sorted
from gpuclust.recommend.segments import SegmentPopularity

BACKEND = resolve_backend("cpu")


def _reference(scores: np.ndarray, tie: np.ndarray, k: int) -> np.ndarray:
    """The full lexicographic sort: score, then tie, then the lower index."""
    return np.stack([np.lexsort((np.arange(len(row)), -tie, -row))[:k] for row in scores])


@given(st.integers(1, 12), st.integers(2, 30), st.integers(0, 2**31 - 1))
def test_top_k_with_ties_equals_a_full_lexicographic_sort(top_k, n_items, seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 3, (5, n_items)).astype(np.float32)  # few distinct values: many ties
    scores[rng.random(scores.shape) < 0.2] = -np.inf  # seen items
    tie = rng.integers(0, 4, n_items).astype(np.float32)
    top, values = top_k_sorted(scores, top_k, np, tie)
    expected = _reference(scores, tie, min(top_k, n_items))
    assert (top == expected).all()
    assert (values == np.take_along_axis(scores, expected, axis=1)).all()


def _table():
    """Cluster 0 knows two items; globally item 5 is the most popular, then 3, then 4."""
    own = np.zeros(8, dtype=np.float32)
    own[[6, 7]] = [0.7, 0.3]
    glob = np.array([0.0, 0.01, 0.02, 0.25, 0.2, 0.4, 0.07, 0.05], dtype=np.float32)
    return np.stack([own, glob])


def test_a_cluster_with_few_items_of_its_own_is_filled_by_global_popularity():
    table = _table()
    seen = BACKEND.sparse.csr_matrix(np.zeros((1, 8), dtype=np.float32))
    items, scores = segment_top_items(table, 1.0, np.array([0]), seen, 5, BACKEND)
    assert items[0].tolist() == [6, 7, 5, 3, 4]
    pop = Popularity(table, 1)
    ranks = rank_targets(pop, np.array([0, 0, 0]), np.array([5, 4, 2]), BACKEND.sparse.csr_matrix(
        np.zeros((3, 8), dtype=np.float32)), 1.0, 5, BACKEND)
    assert ranks.tolist() == [2, 4, -1]  # item 2 (global 0.02) is no longer picked over 5, 3 and 4 by index


def test_the_service_candidates_follow_the_same_order():
    segments = SegmentPopularity(_table(), 1.0)
    order, scores = segments.ranked(0)
    assert order[:5].tolist() == [6, 7, 5, 3, 4] and 0 not in order.tolist()  # no share anywhere: never offered
    assert scores.tolist()[:3] == [np.float32(0.7), np.float32(0.3), 0.0]


def test_the_estimator_recommends_global_favourites_after_a_small_clusters_own_items():
    from gpuclust import UserClusterer
    from tests.helpers import blob_events

    events, _, _ = blob_events(n_users=120, n_groups=3)
    model = UserClusterer(3, features=("tfidf",), device="cpu", seed=0).fit(events)
    model.config_.recommend.personal = "none"
    model.personal_ = None
    model.segments_.blend_weight = 1.0
    user = pd.DataFrame({"user_id": [1], "item_id": [events["item_id"].iloc[0]], "event_type": ["view"],
                         "timestamp": [events["timestamp"].iloc[0]]})
    cluster = int(model.predict(user)["cluster"].iloc[0])
    own = model.segments_.table[cluster] > 0
    listed = model.recommend(user, top_k=int(own.sum()) + 5)
    vocabulary = model.vocabulary_.set_index("item_id")["item_idx"]
    idx = vocabulary.loc[listed["item_id"]].to_numpy()
    glob = model.segments_.table[-1]
    fill = idx[~own[idx]]
    assert len(fill) >= 5 and (np.diff(glob[fill]) <= 0).all()  # the fill is in global-popularity order
    others = np.setdiff1d(np.nonzero(~own)[0], fill)
    assert glob[fill].min() >= glob[others].max()  # and the best of it


@pytest.mark.gpu
def test_top_k_with_ties_on_cupy_equals_numpy():
    """The GPU twin of the lexicographic test above: the same function on CuPy arrays."""
    import cupy

    rng = np.random.default_rng(0)
    scores = rng.integers(0, 3, (64, 500)).astype(np.float32)
    scores[rng.random(scores.shape) < 0.2] = -np.inf
    tie = rng.integers(0, 4, 500).astype(np.float32)
    for top_k in (1, 10, 499, 500):
        top, values = top_k_sorted(cupy.asarray(scores), top_k, cupy, cupy.asarray(tie))
        expected = _reference(scores, tie, top_k)
        assert (cupy.asnumpy(top) == expected).all()
        assert (cupy.asnumpy(values) == np.take_along_axis(scores, expected, axis=1)).all()


@pytest.mark.parametrize("with_tie", [False, True])
def test_top_k_on_blocks_big_enough_for_torch_equals_the_full_sort(with_tie):
    """Blocks of at least TORCH_TOP_K_CELLS take torch.topk on the CPU where torch is installed: the same
    lists as the full sort (with a tie rule: the same items; without: the same scores, best first)."""
    from gpuclust.backend import TORCH_TOP_K_CELLS

    pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    n_items = 2048
    scores = rng.integers(0, 40, (TORCH_TOP_K_CELLS // n_items + 1, n_items)).astype(np.float32)
    scores[rng.random(scores.shape) < 0.3] = -np.inf
    tie = rng.integers(0, 50, n_items).astype(np.float32)
    top, values = top_k_sorted(scores, 50, np, tie if with_tie else None)
    expected = _reference(scores, tie, 50)
    best = np.take_along_axis(scores, expected, axis=1)
    assert (values == best).all()
    assert (np.take_along_axis(scores, top, axis=1) == values).all()
    if with_tie:
        assert (top == expected).all()


def _listed_ranks(pop, rows, targets, seen, w, top_k):
    """The definition rank_targets answers without a users x items matrix: list each user's top K in
    (score, global share, -index) order with seen items left out, and look for the target."""
    scores = np.float32(w) * pop.table[rows] + np.float32(1.0 - w) * pop.global_share[None, :]
    part = seen.tocoo()
    scores[part.row, part.col] = -np.inf
    top, values = top_k_sorted(scores, top_k, np, pop.global_share)
    hit = (top == targets[:, None]) & np.isfinite(values)
    return np.where(hit.any(axis=1), hit.argmax(axis=1), -1)


@given(st.integers(1, 12), st.integers(2, 30), st.sampled_from([0.0, 0.3, 0.5, 1.0]), st.integers(0, 2**31 - 1))
def test_target_ranks_equal_the_listed_top_k(top_k, n_items, w, seed):
    rng = np.random.default_rng(seed)
    k, n_users = int(rng.integers(1, 4)), int(rng.integers(1, 12))
    counts = rng.integers(0, 3, (k + 1, n_items)).astype(np.float32)  # few distinct values: many ties
    table = (counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)).astype(np.float32)
    pop = Popularity(table, k)
    rows = rng.integers(0, k + 1, n_users)
    targets = rng.integers(0, n_items, n_users)
    seen = BACKEND.sparse.csr_matrix((rng.random((n_users, n_items)) < 0.3).astype(np.float32))
    expected = _listed_ranks(pop, rows, targets, seen, w, min(top_k, n_items))
    assert rank_targets(pop, rows, targets, seen, w, top_k, BACKEND).tolist() == expected.tolist()


@pytest.mark.gpu
def test_target_ranks_on_cupy_equal_numpy():
    """The GPU twin of the property above: the same function on CuPy arrays and a cupyx CSR."""
    import cupy
    import cupyx.scipy.sparse

    rng = np.random.default_rng(1)
    counts = rng.integers(0, 3, (4, 300)).astype(np.float32)
    pop = Popularity((counts / counts.sum(axis=1, keepdims=True)).astype(np.float32), 3)
    rows, targets = rng.integers(0, 4, 200), rng.integers(0, 300, 200)
    seen = (rng.random((200, 300)) < 0.2).astype(np.float32)
    gpu = resolve_backend("cuda")
    for w in (0.0, 0.5, 1.0):
        expected = rank_targets(pop, rows, targets, BACKEND.sparse.csr_matrix(seen), w, 10, BACKEND)
        got = rank_targets(Popularity(cupy.asarray(pop.table), 3), cupy.asarray(rows), cupy.asarray(targets),
                           cupyx.scipy.sparse.csr_matrix(cupy.asarray(seen)), w, 10, gpu)
        assert got.tolist() == expected.tolist()
