"""--algorithm predictive: prototypes trained so that a user's cluster predicts their next items."""

import numpy as np
import pytest

from gpuclust import UserClusterer
from gpuclust.backend import cpu_backend
from gpuclust.cluster.predictive import PredictiveClusters
from gpuclust.config import PipelineConfig
from gpuclust.errors import UsageError
from gpuclust.synth import SynthSpec, generate


@pytest.fixture(scope="module")
def synthetic():
    return generate(SynthSpec(n_users=800, n_items=300, n_groups=4, seed=0, events_per_user=25))


def test_fits_through_the_estimator_saves_and_places_new_users(synthetic, tmp_path):
    cfg = PipelineConfig(device="cpu", seed=0)
    cfg.cluster.algorithm = "predictive"
    cfg.cluster.epochs = 60
    model = UserClusterer(4, config=cfg).fit(synthetic.events, synthetic.items, synthetic.truth)
    assert model.manifest_["cluster"]["algorithm"] == "predictive" and model.manifest_["cluster"]["engine"] == "torch"
    assert model.metrics_["ari"] > 0.5
    sizes = model.labels_["cluster"].value_counts()
    assert len(sizes) == 4 and sizes.min() > 50  # the balance term keeps every cluster alive
    info = model.clusterer_.info_
    assert info["measured_without_targets"] and info["targets"] > 700 and info["history"]
    model.save(tmp_path / "m")
    loaded = UserClusterer.load(tmp_path / "m")
    assert (loaded.predict(synthetic.events)["cluster"] == model.labels_["cluster"]).all()


def test_needs_the_events():
    with pytest.raises(UsageError, match="learns from the users' events"):
        PredictiveClusters(2).fit(np.zeros((10, 2), np.float32), cpu_backend())


def test_balance_and_epochs_have_no_effect_with_kmeans():
    cfg = PipelineConfig()
    cfg.cluster.balance = 2.0
    with pytest.raises(UsageError, match="--balance .*predictive"):
        cfg.validate()


def test_a_balance_beyond_float32_is_refused_not_turned_into_nan_prototypes(synthetic):
    """--balance 1e39 overflowed float32: every user landed in cluster 0 with a NaN distance, exit 0."""
    cfg = PipelineConfig()
    cfg.cluster.algorithm, cfg.cluster.balance = "predictive", 1e39
    with pytest.raises(UsageError, match=r"--balance \(cluster.balance\) must be a number at least 0 and at most"):
        cfg.validate()
    cfg.cluster.balance = 1e6
    cfg.validate()
    few = synthetic.events[synthetic.events["user_id"].isin(synthetic.events["user_id"].unique()[:100])]
    with pytest.raises(UsageError, match="diverged .* lower it, e.g. --balance 1"):
        UserClusterer(3, clusterer=PredictiveClusters(3, balance=1e39, epochs=2), device="cpu").fit(few)


def test_a_k_with_an_algorithm_that_finds_its_own_names_predictive_among_those_that_take_it():
    cfg = PipelineConfig()
    cfg.cluster.algorithm, cfg.cluster.k = "dbscan", 4
    with pytest.raises(UsageError, match=r"--k \(cluster.k\) has no effect without --algorithm kmeans, agglomerative "
                                         r"or predictive"):
        cfg.validate(given=frozenset({"cluster.k"}))


def test_epochs_without_an_early_stop_are_bounded():
    """cluster.epochs = 10**9 trained silently for days on 120 users."""
    cfg = PipelineConfig()
    cfg.cluster.algorithm, cfg.cluster.epochs = "predictive", 10**9
    with pytest.raises(UsageError, match=r"cluster.epochs must be at most 10000, got 1000000000; e.g. epochs = 200"):
        cfg.validate()
