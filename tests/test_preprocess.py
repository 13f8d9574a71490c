import numpy as np
import pandas as pd
import pytest

from gpuclust.backend import cpu_backend
from gpuclust.config import PreprocessConfig
from gpuclust.errors import UsageError
from gpuclust.preprocess.clean import Preprocessor
from tests.helpers import blob_events


def steps_by_name(data):
    return {s.step: s for s in data.steps}


def test_each_cleaning_step_is_counted():
    ev = pd.DataFrame({
        "user_id": [1, 1, 1, 2, None, 3],
        "item_id": ["a", "a", "b", "b", "a", "c"],
        "event_type": ["view", "view", "Purchase", "teleport", "view", "view"],
        "timestamp": ["2026-01-01 10:00", "2026-01-01 10:00", "2026-01-02", "2026-01-03", "2026-01-01", "2026-01-04"],
    })
    data = Preprocessor().run(ev, cpu_backend())
    steps = steps_by_name(data)
    assert steps["missing_ids_or_time"].dropped == 1
    assert steps["unknown_event_types"].dropped == 1
    assert steps["exact_duplicates"].dropped == 1
    assert len(data.events) == 3 and data.n_users == 2
    assert set(data.events["event_type"]) == {"view", "purchase"}  # case-folded
    assert data.events["weight"].tolist() == [1.0, 5.0, 1.0]


def test_indices_are_contiguous_int32_and_sorted_by_id():
    ev, _, _ = blob_events(n_users=50)
    data = Preprocessor().run(ev.sample(frac=1, random_state=1), cpu_backend())
    assert data.events["user_idx"].dtype == np.int32 and data.events["item_idx"].dtype == np.int32
    assert data.users["user_idx"].tolist() == list(range(data.n_users))
    assert data.users["user_id"].is_monotonic_increasing
    assert data.events["user_idx"].max() == data.n_users - 1


def test_minimum_counts_filter_until_stable():
    # Items z and w have 1 event each; dropping them leaves users 3 and 4 with 1 event, which must go
    # on the next pass.
    ev = pd.DataFrame({
        "user_id": [1, 1, 2, 2, 3, 3, 4, 4],
        "item_id": ["x", "y", "x", "y", "x", "z", "y", "w"],
        "event_type": "view",
        "timestamp": pd.date_range("2026-01-01", periods=8, freq="h"),
    })
    cfg = PreprocessConfig(min_user_events=2, min_item_events=2)
    data = Preprocessor(cfg).run(ev, cpu_backend())
    assert sorted(data.users["user_id"]) == [1, 2]
    steps = steps_by_name(data)
    assert steps["min_item_events"].rows_out == len(data.events) == 4


def test_unparseable_timestamps_are_an_error_above_the_tolerated_share():
    ev = pd.DataFrame({"user_id": [1, 2], "item_id": [1, 2], "event_type": "view",
                       "timestamp": ["2026-01-01", "yesterday-ish"]})
    with pytest.raises(UsageError, match="could not be parsed, e.g. 'yesterday-ish'"):
        Preprocessor().run(ev, cpu_backend())
    lenient = Preprocessor(PreprocessConfig(max_bad_timestamp_share=0.5)).run(ev, cpu_backend())
    assert steps_by_name(lenient)["unparseable_timestamps"].dropped == 1


def test_epoch_seconds_and_milliseconds_parse():
    for scale in (1, 1000):
        ev = pd.DataFrame({"user_id": [1], "item_id": [1], "event_type": "view",
                           "timestamp": [1_767_225_600 * scale]})
        data = Preprocessor().run(ev, cpu_backend())
        assert data.events["timestamp"].iloc[0] == pd.Timestamp("2026-01-01")


def test_empty_and_all_unknown_inputs_say_what_to_do():
    with pytest.raises(UsageError, match="no rows"):
        Preprocessor().run(pd.DataFrame(columns=["user_id", "item_id", "event_type", "timestamp"]), cpu_backend())
    ev = pd.DataFrame({"user_id": [1], "item_id": [1], "event_type": ["like"], "timestamp": ["2026-01-01"]})
    with pytest.raises(UsageError, match="--event-weights"):
        Preprocessor().run(ev, cpu_backend())


def test_user_sampling_keeps_whole_histories():
    ev, _, _ = blob_events(n_users=100)
    data = Preprocessor(PreprocessConfig(sample_users=30), seed=3).run(ev, cpu_backend())
    assert data.n_users == 30
    assert (data.events.groupby("user_id").size() == 20).all()
    again = Preprocessor(PreprocessConfig(sample_users=30), seed=3).run(ev, cpu_backend())
    assert data.users["user_id"].tolist() == again.users["user_id"].tolist()


def test_sampling_with_replacement_makes_distinct_copies():
    ev, _, _ = blob_events(n_users=10)
    data = Preprocessor(PreprocessConfig(sample_users=40, sample_replace=True)).run(ev, cpu_backend())
    assert data.n_users == 40
    assert data.users["user_id"].str.contains("#").any()
    assert len(data.events) == 40 * 20


def test_items_catalogue_joins_on_ids_of_other_types():
    ev, items, _ = blob_events(n_users=20)
    items = items.astype({"item_id": "str"})
    data = Preprocessor().run(ev, cpu_backend(), items)
    assert data.items["category"].notna().all()
    assert data.text_columns == ("title",)
