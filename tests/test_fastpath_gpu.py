"""The service's fast path on a CUDA backend (CuPy, cupyx sparse) against the CPU; needs no FastAPI, so
`scripts/gpu-check.sh` runs it on the GPU machine."""

from __future__ import annotations

import numpy as np
import pytest

from gpuclust import PipelineConfig, UserClusterer
from gpuclust.serve.events import read_body
from gpuclust.serve.fastpath import FastAssigner
from gpuclust.synth import SynthSpec, generate


@pytest.mark.gpu
def test_the_fast_path_on_the_gpu_places_users_as_on_the_cpu(tmp_path):
    data = generate(SynthSpec(n_users=600, n_items=300, n_groups=4, seed=7))
    config = PipelineConfig(device="cpu", seed=0)
    config.cluster.k = 4
    config.features.features = ("behaviour", "tfidf")
    UserClusterer(config=config).fit(data.events, data.items).save(tmp_path / "m")
    events = data.events[data.events["user_id"].isin(data.truth["user_id"].iloc[:200])]
    body = {"columns": {"user_id": events["user_id"].tolist(), "item_id": events["item_id"].tolist(),
                        "event_type": events["event_type"].astype(str).tolist(),
                        "timestamp": events["timestamp"].astype("datetime64[ms]").astype("int64").tolist(),
                        "value": events["value"].astype(float).tolist()}}
    placed = {}
    for device in ("cpu", "cuda"):
        fast = FastAssigner(UserClusterer.load(tmp_path / "m", device=device))
        assert fast.backend.device == device and fast.fallback is None
        placed[device] = fast.place([fast.prepare(read_body(body, 10**7))])[0]
    np.testing.assert_array_equal(placed["cuda"].cluster, placed["cpu"].cluster)
    np.testing.assert_allclose(placed["cuda"].distance, placed["cpu"].distance, rtol=1e-4, atol=1e-4)
