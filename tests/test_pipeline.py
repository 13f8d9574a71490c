"""End to end on the CPU: synthetic users with planted groups, and the real Online Retail log."""

import json
import sys
import traceback

import numpy as np
import pandas as pd
import pytest

from gpuclust import PipelineConfig, UserClusterer
from gpuclust import backend as backend_module
from gpuclust.backend import array_module, transfers
from gpuclust.cluster.kmeans import KMeans
from gpuclust.run import run_files
from tests.conftest import RETAIL, ROOT, fit_5k
from tests.helpers import blob_events

SAMPLE = ROOT / "tests" / "data" / "online_retail_sample.csv.gz"


@pytest.fixture(scope="module")
def synthetic(synthetic_5k):
    return synthetic_5k


@pytest.fixture(scope="module")
def fitted(fitted_5k_cpu):
    """The default CPU fit (k = 8, seed 0, with truth): tests/conftest.py's, shared with tests/test_gpu.py."""
    return fitted_5k_cpu


def test_default_config_recovers_the_planted_groups(fitted):
    # The default features (behaviour + TF-IDF) reach ARI 0.95 on this data; the bar leaves room for
    # seeds, not for a broken stage.
    assert fitted.metrics_["ari"] >= 0.9
    assert fitted.metrics_["truth_noise_users_excluded"] > 0


def test_pandas_in_pandas_out_and_profiles_are_complete(fitted, synthetic):
    labels = fitted.labels_
    assert isinstance(labels, pd.DataFrame)
    assert list(labels.columns) == ["user_id", "cluster", "distance", "anomaly_score"]
    assert set(labels["user_id"]) == set(synthetic.events["user_id"])
    assert sum(p["size"] for p in fitted.profiles_) == len(labels)
    first = fitted.profiles_[0]
    assert first["top_categories"] and first["top_items"] and "monetary" in first["behaviour_lift"]
    shares = [c["share"] for c in first["top_categories"]]
    assert shares == sorted(shares, reverse=True)


def test_manifest_records_config_versions_device_and_rows(fitted):
    m = fitted.manifest_
    assert m["config"]["seed"] == 0 and m["cluster"]["engine"] == "sklearn"
    assert m["versions"]["numpy"] and m["device"]["backend"]["device"] == "cpu"
    assert m["rows"]["users"] == 5000
    assert m["device_to_host_bytes"] == sum(s["device_to_host_bytes"] for s in m["timings"]["stages"].values())
    json.dumps(m, default=str)


def _shares(a, b) -> bool:
    return type(a) is type(b) and bool(array_module(a).shares_memory(a, b))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_the_label_array_crosses_to_the_host_once_per_fit(monkeypatch, device):
    """Every device-to-host copy goes through `to_host`; this counts the calls that get the label array
    itself (the clustering outcome's). On the CPU those calls pass host data through, so each returns a
    copy here, as a GPU would: later readers of that copy are not crossings, readers of the original are."""
    import gpuclust.estimator as estimator_module

    original, real_outcome = backend_module.to_host, estimator_module.outcome_of
    produced: list = []
    crossings: list[str] = []

    def to_host(data):
        if any(_shares(data, labels) for labels in produced):
            crossings.append(traceback.extract_stack(limit=2)[0].name)
            return np.array(original(data), copy=True)
        return original(data)

    def outcome_of(*args):
        outcome = real_outcome(*args)
        produced.append(outcome.labels)
        return outcome

    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("gpuclust") and getattr(module, "to_host", None) is original:
            monkeypatch.setattr(module, "to_host", to_host)
    monkeypatch.setattr(estimator_module, "outcome_of", outcome_of)
    events, items, truth = blob_events(n_users=300)
    config = PipelineConfig(device=device, seed=0)
    config.cluster.k = 3
    config.assess.anomalies = 5
    p = UserClusterer(config=config).fit(events, items, truth)
    assert len(produced) == 1 and p.metrics_["ari"] == pytest.approx(1.0)
    # frame_local places the labels where the frames are, once; profiles, c-TF-IDF, truth scores, the map
    # and the assignments all read that copy.
    assert crossings == (["frame_local"] if p.backend_.frame_library == "pandas" else [])


def test_same_seed_same_labels(synthetic, fitted):
    """A second fit with the shared fit's config and seed gives its labels again (one new fit, not two)."""
    again = fit_5k(synthetic, "cpu")
    np.testing.assert_array_equal(again.labels_["cluster"], fitted.labels_["cluster"])


def test_stages_are_swappable(synthetic):
    from gpuclust.features.behaviour import BehaviourFeaturizer

    p = UserClusterer(config=PipelineConfig(device="cpu"), features=[BehaviourFeaturizer("quantile")],
                      clusterer=KMeans(4, engine="sklearn", n_init=1)).fit(synthetic.events)
    assert p.labels_["cluster"].nunique() == 4
    assert list(p.manifest_["features"]["blocks"]) == ["behaviour"]


def retail_path():
    return RETAIL if RETAIL.exists() else None


@pytest.mark.parametrize("source", ["sample", "full"])
def test_online_retail_runs_through_the_adapter(tmp_path, source):
    path = SAMPLE if source == "sample" else retail_path()
    if path is None:
        pytest.skip(f"the shared Online Retail log is absent ({RETAIL}); the shipped sample covers the adapter")
    config = PipelineConfig(device="cpu")
    config.cluster.k = 5
    transfers.reset()
    p = run_files(config, path, tmp_path / "out", adapter="online-retail")
    steps = {s["step"]: s for s in p.manifest_["rows"]["steps"]}
    assert steps["retail_no_customer"]["dropped"] > 0
    assert steps["retail_cancellations"]["dropped"] > 0
    if source == "full":
        assert steps["retail_no_customer"]["dropped"] == 135_080
        assert p.manifest_["rows"]["users"] > 4000
    titles = [i.get("title") for c in p.profiles_ for i in c["top_items"]]
    assert all(isinstance(t, str) and t.isupper() for t in titles)
    assert (tmp_path / "out" / "clusters.json").exists()
