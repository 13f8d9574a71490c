"""The pipeline on each device. Every test runs on the CPU in CI (the twin that keeps the GPU test from
rotting: an API change fails here first) and on CUDA where CUDA torch and CuPy are both usable."""

import numpy as np
import pytest

from gpuclust import PipelineConfig, UserClusterer
from gpuclust.backend import resolve_backend, transfers
from tests.conftest import fit_5k as fit

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


@pytest.fixture(scope="module")
def synthetic(synthetic_5k):
    return synthetic_5k


@pytest.fixture(scope="module")
def fitted(synthetic, fitted_5k_cpu):
    """The default fit of `synthetic` on a device, made once per device for the tests that only read it (the
    CPU one is tests/conftest.py's, shared with tests/test_pipeline.py)."""
    fits = {"cpu": fitted_5k_cpu}

    def on(device: str):
        if device not in fits:
            fits[device] = fit(synthetic, device)
        return fits[device]

    return on


@pytest.mark.parametrize("device", DEVICES)
def test_pipeline_quality_on_each_device(synthetic, fitted, device):
    model = fitted(device)
    assert model.manifest_["device"]["backend"]["device"] == device
    assert model.metrics_["ari"] >= 0.88
    assert type(model.labels_) is type(synthetic.events)  # pandas in, pandas out
    if device == "cuda":
        assert model.metrics_["ari"] >= fitted("cpu").metrics_["ari"] - 0.05


@pytest.mark.parametrize("device", DEVICES)
def test_events_features_and_clusters_live_on_the_backend_device(synthetic, fitted, device):
    """The event table, the behaviour statistics' inputs, the centres and the labels are arrays of the
    backend's library (CuPy on CUDA), and no stage of a fit builds an events frame."""
    from gpuclust.features.tfidf import user_vocabulary_counts
    from gpuclust.preprocess.clean import Preprocessor

    backend = resolve_backend(device)
    data = Preprocessor().run(synthetic.events, backend)
    for name in ("user", "item", "event", "time", "value", "weight", "offsets"):
        assert type(getattr(data.table, name)) is backend.xp.ndarray, name
    counts = user_vocabulary_counts(data, backend, "item")
    assert counts.shape == (data.n_users, data.n_items)
    model = fitted(device)
    assert type(model.cluster_centers_) is backend.xp.ndarray
    assert type(model.clusterer_.labels_) in (backend.xp.ndarray, np.ndarray)
    built = {name: s["event_frames_built"] for name, s in model.manifest_["timings"]["stages"].items()}
    assert not any(built.values()), built


@pytest.mark.parametrize("device", DEVICES)
def test_the_fit_moves_only_small_results_to_the_host(synthetic, device):
    transfers.reset()
    model = fit(synthetic, device)
    n, dims = model.manifest_["rows"]["users"], model.manifest_["features"]["dims"]
    if device == "cuda" and model.clusterer_.engine_ in ("sklearn", "faiss"):
        pytest.skip(f"engine {model.clusterer_.engine_} trains on the host by design; no device engine usable here")
    moved = model.manifest_["device_to_host_bytes"]
    assert moved < n * dims * 4  # less than the feature matrix
    if model.backend_.frame_library == "cudf":  # pandas out: the output frames' id columns cross as well
        assert moved < n * 64
        return
    # With pandas frames (the GPU test machine): the assignments written once (labels, distances, anomaly
    # scores: 4 bytes each), user and item codes of the id tables (8 bytes each), the distinct integer ids
    # factorised on the device (8 bytes each), the map's x and y for its sampled users, and per-cluster
    # summaries and top rows. The behaviour statistics stay on the device (profiles are group sums there):
    # no per-user column of theirs crosses.
    map_rows = min(n, model.config_.assess.map_sample)
    items = model.manifest_["rows"].get("items", len(model.vocabulary_))
    assert moved <= 28 * n + 16 * items + 8 * map_rows + 64 * 1024, moved


@pytest.mark.gpu
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


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("how", ["objective", "predictive"])
def test_the_holdouts_inside_a_fit_split_the_event_table(synthetic, device, how):
    """The recommend objective's k sweep and the predictive clusterer hold items out on the table's
    arrays: no stage builds an events frame for them."""
    config = PipelineConfig(device=device, seed=0)
    if how == "objective":
        config.cluster.k_values, config.cluster.objective = (6, 8), "recommend"
    else:
        config.cluster.k, config.cluster.algorithm = 8, "predictive"
        config.cluster.epochs = 3
    events = synthetic.events[synthetic.events["user_id"].isin(synthetic.events["user_id"].unique()[:1500])]
    model = UserClusterer(config=config).fit(events, synthetic.items)
    built = {name: s["event_frames_built"] for name, s in model.manifest_["timings"]["stages"].items()}
    assert not any(built.values()), built
    if how == "objective":
        assert model.sweep_.extra["objective"] == "recommend"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("normalise", ["standard", "minmax", "log1p", "quantile"])
def test_each_normaliser_fits_and_places_new_users(synthetic, device, normalise):
    """Every normaliser's arithmetic on the device's arrays, fit and predict: cupy.interp refuses a
    non-contiguous column, which a quantile fit on a GPU gave it before."""
    config = PipelineConfig(device=device, seed=0)
    config.cluster.k, config.features.features, config.features.normalise = 8, ("behaviour",), normalise
    events = synthetic.events[synthetic.events["user_id"].isin(synthetic.events["user_id"].unique()[:1500])]
    model = UserClusterer(config=config).fit(events)
    placed = model.predict(events)
    assert len(placed) == model.manifest_["rows"]["users"] and placed["cluster"].between(0, 7).all()
