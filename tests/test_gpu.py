"""GPU paths: skipped, with the reason, where CUDA torch and CuPy are not both usable."""

import numpy as np
import pytest

from gpuclust import PipelineConfig, UserClusterer
from gpuclust.backend import transfers
from gpuclust.synth import SynthSpec, generate

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def synthetic():
    return generate(SynthSpec(n_users=5000, n_groups=8, seed=0))


def fit(synthetic, device):
    config = PipelineConfig(device=device, seed=0)
    config.cluster.k = 8
    return UserClusterer(config=config).fit(synthetic.events, synthetic.items, synthetic.truth)


def test_cuda_pipeline_matches_the_cpu_in_quality(synthetic):
    gpu, cpu = fit(synthetic, "cuda"), fit(synthetic, "cpu")
    assert gpu.manifest_["device"]["backend"]["device"] == "cuda"
    assert gpu.metrics_["ari"] >= cpu.metrics_["ari"] - 0.05
    assert type(gpu.labels_) is type(synthetic.events)  # pandas in, pandas out


def test_cuda_features_live_on_the_device(synthetic):
    import cupy

    p = fit(synthetic, "cuda")
    assert isinstance(p.features_, cupy.ndarray)
    assert isinstance(p.clusterer_.labels_, cupy.ndarray)


def test_gpu_path_moves_only_small_results_to_the_host(synthetic):
    transfers.reset()
    p = fit(synthetic, "cuda")
    n = p.data_.n_users
    if p.clusterer_.engine_ in ("sklearn", "faiss"):
        pytest.skip(f"engine {p.clusterer_.engine_} trains on the host by design; no device engine usable here")
    moved = p.manifest_["device_to_host_bytes"]
    assert moved < p.features_.nbytes
    if p.backend_.frame_library == "cudf":  # pandas out: the output frames' id columns cross as well
        assert moved < n * 64
        return
    # With pandas frames (the GPU test machine): the assignments written once (labels, distances, anomaly
    # scores: 4 bytes each), the map's x and y for its sampled users, and per-cluster summaries and top rows.
    map_rows = min(n, p.config_.assess.map_sample)
    assert moved <= 12 * n + 8 * map_rows + 64 * 1024, moved


def test_cudf_in_cudf_out(synthetic):
    from gpuclust import accelerators

    if not accelerators.cudf().usable:
        pytest.skip(f"cuDF not usable: {accelerators.cudf().reason}")
    import cudf

    config = PipelineConfig(device="cuda")
    config.cluster.k = 8
    p = UserClusterer(config=config).fit(cudf.from_pandas(synthetic.events), cudf.from_pandas(synthetic.items))
    assert isinstance(p.labels_, cudf.DataFrame)
    assert np.isfinite(p.metrics_["silhouette"])
