"""`--k auto`: the k sweep, its stated rule, and parsing of --k."""

import json
import math

import numpy as np
import pytest
from sklearn.datasets import make_blobs

from gpuclust.backend import cpu_backend
from gpuclust.cluster.factory import build_clusterer
from gpuclust.cluster.sweep import DEFAULT_K_VALUES, RULE, KSweep, choose_k, parse_k, sweep_k
from gpuclust.config import ClusterConfig
from gpuclust.errors import UsageError

B = cpu_backend()


@pytest.fixture(scope="module")
def five_blobs():
    x, _ = make_blobs(n_samples=2000, centers=5, n_features=10, cluster_std=1.5, random_state=42)
    return x.astype(np.float32)


@pytest.mark.parametrize("engine", ["sklearn", "torch"])
def test_auto_picks_the_five_true_centres(five_blobs, engine):
    sweep = sweep_k(five_blobs, B, range(2, 10), lambda k: build_clusterer(ClusterConfig(engine=engine, n_init=3), seed=0, k=k),
                    sample=1000, seed=0)
    assert isinstance(sweep, KSweep) and sweep.best_k == 5
    assert [row["k"] for row in sweep.curve] == list(range(2, 10))
    for row in sweep.curve:
        assert set(row) >= {"k", "silhouette", "silhouette_sample", "calinski_harabasz", "davies_bouldin", "inertia",
                            "seconds"}
        assert row["silhouette_sample"] == 1000 and row["seconds"] >= 0
    inertias = [row["inertia"] for row in sweep.curve]
    assert inertias == sorted(inertias, reverse=True)
    assert sweep.rule == RULE and "silhouette" in sweep.rule and "Davies-Bouldin" in sweep.rule
    as_dict = json.loads(json.dumps(sweep.to_dict()))  # JSON-ready for the manifest
    assert as_dict["best_k"] == 5 and len(as_dict["curve"]) == 8 and as_dict["silhouette_sample"] == 1000


def test_rule_breaks_silhouette_ties_by_davies_bouldin_then_smaller_k():
    curve = [
        {"k": 3, "silhouette": 0.500, "davies_bouldin": 0.9},
        {"k": 4, "silhouette": 0.505, "davies_bouldin": 0.7},   # tied with the best (within 0.01), lowest DB
        {"k": 5, "silhouette": 0.510, "davies_bouldin": 0.8},   # best silhouette
        {"k": 6, "silhouette": 0.400, "davies_bouldin": 0.1},   # not tied: its low DB does not matter
        {"k": 7, "silhouette": math.nan, "davies_bouldin": math.nan},
    ]
    assert choose_k(curve) == 4
    assert choose_k([{"k": 8, "silhouette": 0.5, "davies_bouldin": 0.5},
                     {"k": 6, "silhouette": 0.5, "davies_bouldin": 0.5}]) == 6
    assert choose_k([{"k": 2, "silhouette": 0.9, "davies_bouldin": 0.2},
                     {"k": 3, "silhouette": 0.3, "davies_bouldin": 0.1}]) == 2
    with pytest.raises(UsageError, match="no k in the range could be scored"):
        choose_k([{"k": 2, "silhouette": math.nan, "davies_bouldin": math.nan}])


def test_auto_k_on_users_too_alike_to_split_says_so_not_to_widen_the_range():
    """Identical users fall into one cluster at every k: "widen the k range" could never help."""
    import pandas as pd

    from gpuclust import UserClusterer

    events = pd.DataFrame({"user_id": np.repeat(np.arange(20), 4), "item_id": np.tile(np.arange(4), 20),
                           "event_type": "view",
                           "timestamp": pd.Timestamp("2026-01-01") + pd.to_timedelta(np.tile(np.arange(4), 20), "h")})
    with pytest.raises(UsageError, match="too alike to tell apart.*give a fixed --k") as caught:
        UserClusterer("auto", device="cpu", features=["behaviour", "tfidf"]).fit(events)
    assert "widen" not in str(caught.value)


def test_sweep_rejects_impossible_ranges(five_blobs):
    def make(k):
        return build_clusterer(ClusterConfig(), k=k)

    with pytest.raises(UsageError, match="at least 2"):
        sweep_k(five_blobs, B, [1, 2, 3], make)
    with pytest.raises(UsageError, match="larger than the number of users"):
        sweep_k(five_blobs[:10], B, [2, 20], make)
    with pytest.raises(UsageError, match="empty"):
        sweep_k(five_blobs, B, [], make)


@pytest.mark.parametrize("text, expected", [
    ("auto", (None, DEFAULT_K_VALUES)),
    ("AUTO", (None, DEFAULT_K_VALUES)),
    ("8", (8, (8,))),
    (8, (8, (8,))),
    ("4-7", (None, (4, 5, 6, 7))),
    ("4:16:4", (None, (4, 8, 12, 16))),
    ("4:10:4", (None, (4, 8))),
    ("3:5", (None, (3, 4, 5))),
    (" 2-3 ", (None, (2, 3))),
])
def test_parse_k(text, expected):
    assert parse_k(text) == expected


@pytest.mark.parametrize("text, message", [
    ("many", "not understood: use auto"),
    ("4-", "not understood"),
    ("-3", "not understood"),
    ("4.5", "not understood"),
    ("0", "at least 1"),
    ("8-4", "2 <= start < stop"),
    ("1-5", "2 <= start < stop"),
    ("4:16:0", "step must be at least 1"),
])
def test_parse_k_errors(text, message):
    with pytest.raises(UsageError, match=message):
        parse_k(text)


@pytest.mark.parametrize("n_clusters", ["auto", "2-5", [2, 3]])
def test_a_k_range_with_no_k_below_the_users_is_refused_not_replaced_by_the_configs_k(n_clusters):
    """Two users: no k of the range can be scored (k < users). No sweep ran and the config's fixed k was
    fitted instead: "k=8 is larger than the number of users", or with k = 1 in the config, k=1 in silence."""
    import pandas as pd

    from gpuclust import PipelineConfig, UserClusterer

    events = pd.DataFrame({"user_id": [1, 1, 1, 2, 2, 2], "item_id": [1, 2, 3, 3, 4, 5], "event_type": "view",
                           "timestamp": pd.Timestamp("2026-01-01") + pd.to_timedelta(range(6), "h")})
    if n_clusters == "auto":  # one user: "k=2 is larger than the number of users (1); lower --k" was no advice
        with pytest.raises(UsageError, match=r"no k of the range tried \(2\.\.\d+\) is below the number of users "
                                             r"after filtering \(1\).*give a fixed --k of at most 1"):
            UserClusterer(n_clusters, config=PipelineConfig(device="cpu"), features=["behaviour"]).fit(events[:3])
    for k in (8, 1):
        config = PipelineConfig(device="cpu")
        config.cluster.k = k
        with pytest.raises(UsageError, match=r"no k of the range tried \(2\.\.\d+\) is below the number of users "
                                             r"after filtering \(2\)"):
            UserClusterer(n_clusters, config=config, features=["behaviour"]).fit(events)


@pytest.mark.parametrize("objective, why", [("separation", "the silhouette needs more users than clusters"),
                                            ("recommend", "each user's cluster is the user alone")])
def test_the_reason_a_k_sweep_cannot_run_is_its_objectives(objective, why):
    """The recommend objective scores hit rates, not a silhouette: its refusal gave the silhouette as the reason."""
    import pandas as pd

    from gpuclust import PipelineConfig, UserClusterer

    events = pd.DataFrame({"user_id": [1, 1, 1, 2, 2, 2], "item_id": [1, 2, 3, 3, 4, 5], "event_type": "view",
                           "timestamp": pd.Timestamp("2026-01-01") + pd.to_timedelta(range(6), "h")})
    config = PipelineConfig(device="cpu")
    config.cluster.objective = objective
    with pytest.raises(UsageError, match=r"no k of the range tried .*\([^)]*" + why.replace("'", ".") + r"\)") as caught:
        UserClusterer("auto", config=config, features=["behaviour"]).fit(events)
    assert ("silhouette" in str(caught.value)) == (objective == "separation")
