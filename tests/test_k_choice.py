"""Choosing k: a range with --objective chooses within it, a TOML's range is kept, --k auto reaches further
for the recommend objective, and a choice at the edge of the range tried is a warning."""

from __future__ import annotations

import json
import math
import warnings

import pytest

from gpuclust import PipelineConfig, UserClusterer
from gpuclust.cli.options import build_config
from gpuclust.cluster.sweep import DEFAULT_K_VALUES, auto_k_values, edge_warning
from gpuclust.errors import ResultWarning
from gpuclust.synth import SynthSpec, generate
from tests.helpers import blob_events, cli


@pytest.fixture(scope="module")
def synthetic():
    return generate(SynthSpec(n_users=500, n_items=200, n_groups=4, seed=0, events_per_user=20))


def test_auto_reaches_about_sqrt_users_for_the_recommend_objective_only():
    assert auto_k_values(600, "separation") == DEFAULT_K_VALUES
    for n in (600, 4334, 100_000):
        values = auto_k_values(n, "recommend")
        assert values[0] == 2 and values[-1] == min(100, round(math.sqrt(n))) and len(values) <= 21
        assert list(values) == sorted(set(values)) and values[:5] == (2, 3, 4, 5, 6)  # dense where k is small
    assert auto_k_values(9, "recommend") == tuple(range(2, 9))  # never as many clusters as users


def test_a_choice_at_the_edge_of_the_range_tried_is_a_line_with_a_wider_range():
    assert "k = 12 was chosen at the top of the range tried (2..12, by the recommend objective)" in \
        edge_warning(12, range(2, 13), 4000, "recommend")
    assert "--k 2:48:1" in edge_warning(12, range(2, 13), 4000, "recommend")
    assert "bottom" in edge_warning(8, (8, 10, 12), 4000, "separation")
    assert edge_warning(2, range(2, 13), 4000, "separation") is None  # k cannot go below 2
    assert edge_warning(7, range(2, 13), 4000, "separation") is None
    assert edge_warning(12, range(2, 13), 13, "separation") is None  # no room above


def test_the_estimator_sweeps_the_wider_auto_range_and_warns_at_its_edge(synthetic):
    config = PipelineConfig(device="cpu", seed=0)
    config.cluster.objective = "recommend"
    model = UserClusterer("auto", config=config, features=("tfidf",)).fit(synthetic.events)
    tried = [row["k"] for row in model.sweep_.to_dict()["curve"]]
    assert tuple(tried) == auto_k_values(500, "recommend") and max(tried) > 12
    with pytest.warns(ResultWarning, match=r"k = 3 was chosen at the top of the range tried \(2..3"):
        UserClusterer("2-3", features=("tfidf",), device="cpu").fit(synthetic.events)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResultWarning)
        UserClusterer("2-8", features=("tfidf",), device="cpu").fit(synthetic.events)  # 4 groups: inside


def test_k_auto_keeps_a_toml_range_and_a_fixed_k_or_range_replaces_it(tmp_path):
    (tmp_path / "c.toml").write_text("[cluster]\nk_values = [3, 5, 7]\n")
    kept = build_config(tmp_path / "c.toml", {"cluster": {"objective": "recommend"}}, k="auto")
    assert kept.cluster.k_values == (3, 5, 7) and not kept.cluster.k_auto
    assert build_config(tmp_path / "c.toml", {}, k="4").cluster.k_values == ()
    assert build_config(tmp_path / "c.toml", {}, k="2:6:2").cluster.k_values == (2, 4, 6)
    default = build_config(None, {"cluster": {"objective": "recommend"}}, k="auto")
    assert default.cluster.k_auto and default.cluster.k_values == DEFAULT_K_VALUES
    config = PipelineConfig.from_toml(tmp_path / "c.toml")  # and n_clusters="auto" from Python alike
    assert UserClusterer("auto", config=config)._settings().cluster.k_values == (3, 5, 7)


def test_evaluate_chooses_within_a_range_by_the_objective_with_event_weights(monkeypatch, capsys, tmp_path):
    events, _, _ = blob_events(n_users=150)
    kinds = events["event_type"].map({"view": "view", "click": "view", "cart": "addtocart",
                                      "purchase": "transaction"})
    events.assign(event_type=kinds).to_parquet(tmp_path / "rr.parquet")
    code, out, err = cli(monkeypatch, capsys, "evaluate", "--events", tmp_path / "rr.parquet", "--device", "cpu",
                         "--k", "2:6:2", "--objective", "recommend", "--features", "tfidf", "--json",
                         "--event-weights", "view=1,addtocart=3,transaction=5")
    assert code == 0, err
    assert "dropped" not in err  # evaluate takes --event-weights, as its own warnings tell the user to
    result = json.loads(out)
    row = next(r for r in result["rows"] if r["representation"] == "tfidf")
    assert result["objective"] == "recommend" and row["k"] in (2, 4, 6)
    assert [c["k"] for c in row["k_sweep"]["curve"]] == [2, 4, 6]


def test_ks_of_a_given_range_at_or_above_the_users_are_named_when_left_out(synthetic):
    """k_values = [2, 3, 5000] on 500 users: 5000 cannot be scored and is left out; a line says so, where
    before the only line was the edge warning's 'top of the range tried (2..3)', as if 3 had been the top."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        model = UserClusterer([2, 3, 5000], features=("tfidf",), device="cpu").fit(synthetic.events)
    lines = [str(w.message) for w in seen if issubclass(w.category, ResultWarning)]
    assert "k = 5000 of the range given is not below the number of users after filtering (500) and is left out of " \
        "the sweep: 2..3 is tried" in lines
    assert [row["k"] for row in model.sweep_.to_dict()["curve"]] == [2, 3]
