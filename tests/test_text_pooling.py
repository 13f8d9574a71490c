"""Sparse user pooling equals a dense NumPy reference, time decay included."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gpuclust.backend import cpu_backend, transfers
from gpuclust.errors import UsageError
from gpuclust.features.text.pooling import interaction_weights, pool_users
from gpuclust.preprocess.prepared import PreparedData

REF = pd.Timestamp("2024-03-31 12:00:00")


def prepared(n_users: int = 5, n_items: int = 7, n_events: int = 40, seed: int = 0) -> PreparedData:
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n_events).astype("int32")
    users[:n_users] = np.arange(n_users)
    items = rng.integers(0, n_items, n_events).astype("int32")
    ages = rng.uniform(0, 60, n_events)
    events = pd.DataFrame({
        "user_id": [f"u{u}" for u in users], "item_id": [f"i{i}" for i in items],
        "event_type": rng.choice(["view", "purchase"], n_events),
        "timestamp": (REF - pd.to_timedelta(ages, unit="D")).astype("datetime64[ns]"),
        "value": np.zeros(n_events, dtype="float32"),
        "weight": rng.choice([1.0, 5.0], n_events).astype("float32"),
        "user_idx": users, "item_idx": items,
    })
    events["timestamp"] = events["timestamp"].where(np.arange(n_events) != 0, REF)  # one event at the reference
    users_df = pd.DataFrame({"user_idx": np.arange(n_users, dtype="int32"), "user_id": [f"u{u}" for u in range(n_users)]})
    items_df = pd.DataFrame({"item_idx": np.arange(n_items, dtype="int32"), "item_id": [f"i{i}" for i in range(n_items)]})
    return PreparedData(events, users_df, items_df, n_users, n_items, REF)


def dense_reference(data: PreparedData, vectors: np.ndarray, half_life: float | None) -> np.ndarray:
    w = np.zeros((data.n_users, data.n_items))
    for row in data.events.itertuples():
        decay = 1.0
        if half_life is not None:
            age_days = (REF - row.timestamp) / pd.Timedelta(days=1)
            decay = 0.5 ** (age_days / half_life)
        w[row.user_idx, row.item_idx] += row.weight * decay
    users = w @ vectors
    return users / np.linalg.norm(users, axis=1, keepdims=True)


@pytest.mark.parametrize("half_life", [None, 7.0, 30.0])
def test_pooling_equals_dense_reference(half_life):
    data = prepared()
    vectors = np.random.default_rng(1).normal(size=(data.n_items, 16)).astype(np.float32)
    backend = cpu_backend()
    weights = interaction_weights(data, backend, half_life)
    assert weights.shape == (data.n_users, data.n_items) and weights.dtype == np.float32
    users = pool_users(weights, vectors, backend)
    assert users.dtype == np.float32
    np.testing.assert_allclose(users, dense_reference(data, vectors, half_life), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(users, axis=1), 1.0, atol=1e-5)


def test_half_life_halves_weight_per_half_life():
    data = prepared(n_users=1, n_items=1, n_events=2)
    data.events["timestamp"] = [REF, REF - pd.Timedelta(days=10)]
    data.events["weight"] = np.float32(1.0)
    w = interaction_weights(data, cpu_backend(), half_life_days=10.0)
    assert w[0, 0] == pytest.approx(1.5)


def test_microsecond_timestamps_are_accepted():
    data = prepared()
    data.events["timestamp"] = data.events["timestamp"].astype("datetime64[us]")
    ref = interaction_weights(prepared(), cpu_backend(), 7.0).toarray()
    np.testing.assert_allclose(interaction_weights(data, cpu_backend(), 7.0).toarray(), ref, rtol=1e-6)


@pytest.mark.parametrize("bad", [0, -3, "7", True])
def test_bad_half_life_is_a_usage_error(bad):
    with pytest.raises(UsageError, match="half_life_days"):
        interaction_weights(prepared(), cpu_backend(), bad)


@pytest.mark.gpu
def test_gpu_pooling_copies_nothing_to_the_host():
    import cupy
    import torch

    from gpuclust.backend import cuda_backend, from_torch

    backend = cuda_backend()
    data = prepared()
    host_vectors = np.random.default_rng(1).normal(size=(data.n_items, 16)).astype(np.float32)
    item_vectors = from_torch(torch.from_numpy(host_vectors).cuda(), backend)
    transfers.reset()
    weights = interaction_weights(data, backend, 7.0)
    users = pool_users(weights, item_vectors, backend)
    assert isinstance(users, cupy.ndarray)
    assert transfers.bytes == 0 and transfers.copies == 0
    np.testing.assert_allclose(users.get(), dense_reference(data, host_vectors, 7.0), atol=1e-5)
