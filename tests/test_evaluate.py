"""Leave-last-out evaluation: clusters that mean something recommend better than global popularity."""

import json

import numpy as np
import pandas as pd
import pytest

from gpuclust import UserClusterer
from gpuclust.backend import cpu_backend
from gpuclust.config import PipelineConfig
from gpuclust.errors import UsageError
from gpuclust.preprocess.clean import Preprocessor
from gpuclust.preprocess.prepared import event_frames
from gpuclust.recommend import evaluate, leave_last_out, markdown_table
from gpuclust.recommend.evaluation import clusters_only, metrics
from gpuclust.recommend.split import split_table
from gpuclust.synth import SynthSpec, generate


@pytest.fixture(scope="module")
def synthetic():
    return generate(SynthSpec(n_users=1500, n_items=600, n_groups=4, seed=0, events_per_user=30))


FRAMES: dict[str, int] = {}  # events frames built while the fixture's evaluate ran


@pytest.fixture(scope="module")
def result(synthetic):
    config = PipelineConfig(device="cpu", seed=0)
    config.cluster.k = 4
    config.cluster.n_init = 1
    before = event_frames.built
    out = evaluate(synthetic.events, synthetic.items, config, k_values=(10, 20), seed=0)
    FRAMES["evaluate"] = event_frames.built - before
    return out


def test_evaluate_builds_no_events_frame(result):
    """The splits, the fits on their training parts, popularity, seen items and the personal model all
    work on the event table: no stage makes the events frame (on a GPU without cuDF, a host copy)."""
    assert FRAMES["evaluate"] == 0


@pytest.mark.parametrize("preprocess", [{}, {"min_user_events": 4, "min_item_events": 3}, {"sample_users": 200},
                                        {"sample_users": 400, "sample_replace": True}])
def test_a_fit_on_prepared_training_rows_equals_a_fit_on_their_events_frame(preprocess):
    """What evaluate and compare fit on: the training part as prepared data, prepared again by the model's
    steps (minimum counts and sampling apply to the training part), as its events frame would be."""
    events = generate(SynthSpec(n_users=300, n_items=120, n_groups=3, seed=1, events_per_user=12))
    config = clusters_only(PipelineConfig(device="cpu", seed=0))
    config.cluster.k, config.cluster.n_init = 3, 1
    for name, value in preprocess.items():
        setattr(config.preprocess, name, value)
    data = Preprocessor(config.preprocess, seed=0).run(events.events, cpu_backend(), events.items)
    train, _, _ = split_table(data, seed=0)
    before = event_frames.built
    prepared = UserClusterer(config=config).fit(train, events.items)
    x, placed = prepared.embed(train)
    assert event_frames.built == before
    raw = train.events[["user_id", "item_id", "event_type", "timestamp", "value"]]
    framed = UserClusterer(config=config).fit(raw, events.items)
    pd.testing.assert_frame_equal(prepared.labels_, framed.labels_)
    np.testing.assert_array_equal(x, framed.embed(raw)[0])
    assert x.shape[0] == placed.n_users and placed.n_items == len(prepared.vocabulary_)
    with pytest.raises(UsageError, match="pseudonymise"):
        UserClusterer(config=config, pseudonymise=b"k" * 32).fit(train)


@pytest.mark.filterwarnings("ignore::gpuclust.errors.CatalogueWarning")  # half the catalogue, on purpose
def test_a_fit_on_prepared_data_without_items_keeps_the_catalogue_it_was_prepared_with():
    """Prepared with an items table, refitted without one: the categories and the catalogue step came back
    only when the items were passed again; otherwise the model's vocabulary had no category and its
    profiles no top categories, silently."""
    events = generate(SynthSpec(n_users=300, n_items=120, n_groups=3, seed=1, events_per_user=12))
    items = events.items.iloc[: len(events.items) // 2]  # half the catalogue: the rest have no row in it
    config = clusters_only(PipelineConfig(device="cpu", seed=0))
    config.cluster.k, config.cluster.n_init = 3, 1
    data = Preprocessor(config.preprocess, seed=0).run(events.events, cpu_backend(), items)
    assert sorted(data.catalogue()["item_id"]) == sorted(set(items["item_id"]) & set(data.items["item_id"]))
    alone = UserClusterer(config=config).fit(data)
    given = UserClusterer(config=config).fit(data, items)
    assert "category" in alone.vocabulary_.columns
    pd.testing.assert_frame_equal(alone.vocabulary_, given.vocabulary_)
    assert [p.get("top_categories") for p in alone.profiles_] == [p.get("top_categories") for p in given.profiles_]
    steps = {s["step"]: s for s in alone.manifest_["rows"]["steps"]}
    assert steps["items_in_catalogue"] == {s["step"]: s for s in given.manifest_["rows"]["steps"]}[
        "items_in_catalogue"]
    bare = Preprocessor(config.preprocess, seed=0).run(events.events, cpu_backend())
    assert bare.catalogue() is None and "category" not in UserClusterer(config=config).fit(bare).vocabulary_


def test_cluster_popularity_beats_global_popularity_on_planted_groups(result):
    rows = {r["method"].split(" (")[0].split(":")[0]: r for r in result["rows"]}
    assert set(rows) == {"global popularity", "cluster popularity", "blend", "personal", "served"}
    assert rows["cluster popularity"]["HR@10"] > rows["global popularity"]["HR@10"] + 0.05
    assert rows["blend"]["blend_weight"] == result["validation"]["chosen_weight"]
    assert result["validation"]["chosen_weight"] in [g["w"] for g in result["validation"]["grid"]]
    assert 5 <= len(result["validation"]["grid"]) <= 8  # coarse to fine: tests/test_progress.py
    json.dumps(result)
    assert "| cluster popularity |" in markdown_table(result)


def test_metrics_are_rates_and_ndcg_never_exceeds_hr(result):
    for row in [*result["rows"], *result["validation"]["grid"]]:
        for k in (10, 20):
            assert 0.0 <= row[f"NDCG@{k}"] <= row[f"HR@{k}"] <= 1.0
        assert row["HR@10"] <= row["HR@20"]
    users = result["users"]
    assert users["evaluated"] == users["eligible"] - users["not_clustered"] > 1000
    assert all(r["users"] == users["evaluated"] for r in result["rows"])


def test_held_out_item_is_never_in_the_training_events(synthetic):
    data = Preprocessor().run(synthetic.events, cpu_backend(), synthetic.items)
    split = leave_last_out(data, seed=0)
    train = split.train.table
    train_pairs = set(zip(train.user.tolist(), train.item.tolist(), strict=True))
    test_pairs = list(zip(split.users.tolist(), split.items.tolist(), strict=True))
    assert not any(pair in train_pairs for pair in test_pairs)
    assert len(np.unique(split.users)) == len(split.users) == split.n_eligible
    assert (np.diff(split.users) > 0).all()
    # the held-out item is one the user touched last
    table = data.table
    last = np.full(data.n_users, np.iinfo(np.int64).min)
    np.maximum.at(last, table.user, table.time)
    held = np.isin(table.user.astype(np.int64) * data.n_items + table.item, split.users * data.n_items + split.items)
    held_last = np.full(data.n_users, np.iinfo(np.int64).min)
    np.maximum.at(held_last, table.user[held], table.time[held])
    assert (held_last[split.users] == last[split.users]).all()
    # every user still has something to learn from
    assert set(split.users.tolist()) <= set(train.user.tolist())
    assert split.train.n_users == data.n_users and split.train.n_items == data.n_items


def test_ties_on_the_last_timestamp_break_the_same_way_every_time():
    t = pd.Timestamp("2026-01-01")
    events = pd.DataFrame({"user_id": [1, 1, 1, 2, 2, 3], "item_id": [10, 11, 12, 10, 11, 10],
                           "event_type": ["purchase"] * 6, "timestamp": [t, t, t, t, t + pd.Timedelta("1h"), t]})
    data = Preprocessor().run(events, cpu_backend())
    first = leave_last_out(data, seed=0)
    again = leave_last_out(data, seed=0)
    np.testing.assert_array_equal(first.users, again.users)
    np.testing.assert_array_equal(first.items, again.items)
    assert first.users.tolist() == [0, 1]  # user 3 has one item only
    assert first.items[first.users == 1].item() == 1  # the later one, not a tie
    picks = {int(leave_last_out(data, seed=s).items[0]) for s in range(20)}
    assert len(picks) > 1  # the tie-break favours no item across seeds


def test_leave_last_out_takes_prepared_data_and_a_keyword_seed(synthetic):
    data = Preprocessor().run(synthetic.events, cpu_backend())
    with pytest.raises(UsageError, match="prepared data"):
        leave_last_out(synthetic.events, seed=0)
    # the frame function's old call (events, n_items, seed): named with the new form, never a bare TypeError
    with pytest.raises(UsageError, match=r"old form was leave_last_out\(events, n_items, seed\)"):
        leave_last_out(data, data.n_items, 0)
    with pytest.raises(UsageError, match="n_items="):
        leave_last_out(data, n_items=data.n_items)


@pytest.mark.parametrize("seed", ["1", None, 1.5, -1, 2**32, True])
def test_a_split_seed_that_is_no_seed_is_a_usage_error(synthetic, seed):
    """A string seed was repeated 2**60 times (MemoryError), None and a float failed or ran inside the hash."""
    data = Preprocessor().run(synthetic.events.head(300), cpu_backend())
    with pytest.raises(UsageError, match="split's seed must be a whole number"):
        leave_last_out(data, seed=seed)
    with pytest.raises(UsageError, match="split's seed"):  # before the events are read
        evaluate(None, None, PipelineConfig(device="cpu"), seed=seed)


def test_a_numpy_integer_seed_splits_as_that_int(synthetic):
    data = Preprocessor().run(synthetic.events.head(300), cpu_backend())
    np.testing.assert_array_equal(leave_last_out(data, seed=np.int64(3)).items, leave_last_out(data, seed=3).items)


def test_a_split_of_prepared_data_without_events_is_a_usage_error(synthetic):
    from gpuclust.preprocess.prepared import PreparedData

    data = Preprocessor().run(synthetic.events.head(300), cpu_backend())
    with pytest.raises(UsageError, match="has no events and users"):
        leave_last_out(PreparedData(items=data.items), seed=0)


def test_a_log_of_two_items_a_user_names_the_third_that_evaluation_needs():
    """Every user has 2 distinct items: the outer split works, the blend tuning's split of the training part
    does not; the message said "no user has 2 or more distinct items", untrue of this log."""
    from gpuclust.recommend.split import NoEligibleUsers, on_training_part

    t = pd.Timestamp("2026-01-01")
    events = pd.DataFrame({"user_id": np.repeat(np.arange(30), 2), "item_id": [f"i{(u + j) % 7}" for u in range(30)
                                                                              for j in range(2)],
                           "event_type": "view", "timestamp": [t + pd.Timedelta(hours=j) for _ in range(30)
                                                               for j in range(2)]})
    config = PipelineConfig(device="cpu", seed=0)
    config.cluster.k = 2
    with pytest.raises(UsageError, match="no user has 3 or more distinct items"):
        evaluate(events, None, config)
    one_each = Preprocessor().run(events.drop_duplicates("user_id"), cpu_backend())
    with pytest.raises(NoEligibleUsers, match="no user has 4 or more distinct items.*then the one before"), \
            on_training_part(held=2):
        leave_last_out(one_each, seed=0)


def test_metrics_from_ranks():
    ranks = np.array([0, 1, 9, 10, -1])
    out = metrics(ranks, (10,))
    assert out["HR@10"] == pytest.approx(3 / 5)
    assert out["NDCG@10"] == pytest.approx((1 + 1 / np.log2(3) + 1 / np.log2(11)) / 5, abs=1e-6)


def test_bad_top_k_is_a_usage_error(synthetic):
    with pytest.raises(UsageError, match="top-K"):
        evaluate(synthetic.events, None, PipelineConfig(device="cpu"), k_values=(0,))


def test_the_personal_model_and_the_served_default_are_reported_with_the_captured_lift(result):
    rows = {r["method"].split(" (")[0].split(":")[0]: r for r in result["rows"]}
    personal, served, glob = rows["personal"], rows["served"], rows["global popularity"]
    assert result["personal"]["model"]["kind"] in ("ease", "knn") and personal["HR@10_se"] > 0
    assert served["method"].endswith("(default)") and served["segment_users"] >= 0
    for name in ("global popularity", "cluster popularity", "blend"):
        row = rows[name]
        expected = (row["HR@10"] - glob["HR@10"]) / (personal["HR@10"] - glob["HR@10"])
        assert row["captured_lift"]["HR@10"] == pytest.approx(expected, abs=1e-4)
    assert rows["global popularity"]["captured_lift"]["HR@10"] == 0
    assert "captured lift (HR@10)" in markdown_table(result) and "±" in markdown_table(result)


def test_a_low_catalogue_share_is_warned_once_not_again_by_each_fit_on_a_training_part():
    """The items table's share of events was warned about on the whole log, then by the validation fit and
    the test fit again (three lines, three slightly different shares)."""
    import warnings

    from gpuclust.errors import InputWarning

    data = generate(SynthSpec(n_users=120, n_items=60, n_groups=3, seed=2, events_per_user=10))
    config = clusters_only(PipelineConfig(device="cpu", seed=0))
    config.cluster.k, config.cluster.n_init = 3, 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        evaluate(data.events, data.items.head(5), config)
    shares = [str(w.message) for w in caught if issubclass(w.category, InputWarning)
              and "have their item in the items table" in str(w.message)]
    assert len(shares) == 1 and shares[0].startswith("only ")



def test_a_captured_lift_is_given_only_where_the_personal_lift_is_beyond_its_noise():
    """On a tiny log the personal model's HR lift over global popularity was 0.05 ± 0.1 and the clusters'
    share of it read -100%: a ratio of noise. Beyond twice the gap's standard error it is reported."""
    from gpuclust.recommend.scoring import captured_lift, lift_noise

    glob, personal = {"HR@10": 0.20, "HR@10_se": 0.07}, {"HR@10": 0.25, "HR@10_se": 0.07}
    noise = lift_noise(glob, personal, "HR@10")
    assert noise == pytest.approx(2 * np.hypot(0.07, 0.07))
    assert captured_lift(0.15, 0.20, 0.25, noise) is None
    assert captured_lift(0.15, 0.20, 0.25) == -1.0  # what the table showed: -100%
    firm = {"HR@10": 0.45, "HR@10_se": 0.01}
    assert captured_lift(0.30, 0.20, 0.45, lift_noise({"HR@10": 0.20, "HR@10_se": 0.01}, firm, "HR@10")) == 0.4
