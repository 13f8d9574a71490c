import re

import numpy as np
import pandas as pd
import pytest

from gpuclust.backend import cpu_backend
from gpuclust.config import PreprocessConfig
from gpuclust.errors import InputWarning, UsageError
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
    with pytest.raises(UsageError, match="could not be parsed.*e.g. 'yesterday-ish'"):
        Preprocessor().run(ev, cpu_backend())
    with pytest.warns(InputWarning, match=r"dropped 1 of 2 events \(50.0%\): timestamp could not be parsed"):
        lenient = Preprocessor(PreprocessConfig(max_bad_timestamp_share=0.5)).run(ev, cpu_backend())
    assert steps_by_name(lenient)["unparseable_timestamps"].dropped == 1


def test_an_empty_id_is_a_missing_one_in_events_and_in_the_catalogue(tmp_path):
    """"" names no one: a CSV reader reads an empty field as missing and the service refuses "", so a
    Parquet or JSON log's "" drops with the rows without ids instead of being one user (or item)."""
    from gpuclust.config import ColumnMap
    from gpuclust.io.inputs import read_inputs

    ev = pd.DataFrame({"user_id": ["u1", "", "u2", "u1"], "item_id": ["a", "b", "", "b"], "event_type": "view",
                       "timestamp": pd.date_range("2026-01-01", periods=4, freq="h")})
    items = pd.DataFrame({"item_id": ["a", "", "b"], "title": ["first", "nameless", "second"]})
    ev.to_parquet(tmp_path / "events.parquet")
    ev.assign(timestamp=ev["timestamp"].astype(str)).to_json(tmp_path / "events.json", orient="records")
    for events in (ev, read_inputs(pd, ColumnMap(), tmp_path / "events.parquet").events,
                   read_inputs(pd, ColumnMap(), tmp_path / "events.json").events):
        with pytest.warns(InputWarning, match=r"dropped 1 of 3 item rows .*the row has no item id"):
            data = Preprocessor().run(events, cpu_backend(), items=items)
        assert steps_by_name(data)["missing_ids_or_time"].dropped == 2
        assert data.users["user_id"].tolist() == ["u1"] and data.items["item_id"].tolist() == ["a", "b"]


NEW_YEAR_S = 1_767_225_600  # 2026-01-01T00:00:00Z


def one_user(**columns):
    """Events of user 1 on item 1, one row per value of the given columns."""
    n = len(next(iter(columns.values())))
    return pd.DataFrame({"user_id": [1] * n, "item_id": [1] * n, "event_type": ["view"] * n, **columns})


@pytest.mark.parametrize("scale", [1, 10**3, 10**6, 10**9], ids=["s", "ms", "us", "ns"])
def test_epochs_in_any_unit_parse(scale):
    data = Preprocessor().run(one_user(timestamp=[NEW_YEAR_S * scale]), cpu_backend())
    assert data.events["timestamp"].iloc[0] == pd.Timestamp("2026-01-01")


def test_epoch_seconds_mixed_with_milliseconds_are_read_per_value_and_warned_about():
    stamps = [NEW_YEAR_S, (NEW_YEAR_S + 60) * 1000, NEW_YEAR_S + 120, (NEW_YEAR_S + 180) * 1000]
    with pytest.warns(InputWarning, match="mix Unix epoch units.*2 in s, 2 in ms"):
        data = Preprocessor(PreprocessConfig(drop_duplicates=False)).run(one_user(timestamp=stamps), cpu_backend())
    minutes = (data.events["timestamp"] - pd.Timestamp("2026-01-01")).dt.total_seconds() / 60
    assert minutes.tolist() == [0, 1, 2, 3]
    assert steps_by_name(data)["epoch_units"].why.endswith("2 in s, 2 in ms")


def test_epochs_stored_as_text_parse_like_numbers():
    data = Preprocessor().run(one_user(timestamp=[str(NEW_YEAR_S), "2026-01-02"]), cpu_backend())
    assert data.events["timestamp"].tolist() == [pd.Timestamp("2026-01-01"), pd.Timestamp("2026-01-02")]


def test_timestamps_outside_the_nanosecond_range_are_dropped_and_counted():
    ev = one_user(timestamp=["1500-01-01", "2300-06-01", "9999-12-31", "2026-01-01"])
    with pytest.raises(UsageError, match="3 of 4 timestamps .* outside the years 1678-2261, e.g. '1500-01-01'"):
        Preprocessor().run(ev, cpu_backend())
    lenient = PreprocessConfig(max_bad_timestamp_share=0.8)
    with pytest.warns(InputWarning, match=r"dropped 3 of 4 events \(75.0%\): timestamp outside"):
        data = Preprocessor(lenient).run(ev, cpu_backend())
    assert steps_by_name(data)["timestamps_out_of_range"].dropped == 3
    # The same years in a datetime64[s] column (Parquet can hold them) and as epochs.
    seconds = pd.Series(pd.to_datetime(["1500-01-01", "2026-01-01"]).as_unit("s"))
    for stamps in (seconds, [-15_000_000_000, NEW_YEAR_S], [5 * 10**10, NEW_YEAR_S]):
        with pytest.warns(InputWarning):
            data = Preprocessor(lenient).run(one_user(timestamp=stamps), cpu_backend())
        assert data.events["timestamp"].tolist() == [pd.Timestamp("2026-01-01")]


def test_iso_strings_mixing_naive_and_utc_read_naive_as_utc():
    ev = one_user(timestamp=["2026-01-01T10:00:00Z", "2026-01-01T11:00:00", "2026-01-01T14:00:00+02:00"])
    data = Preprocessor().run(ev, cpu_backend())
    assert data.events["timestamp"].dt.hour.tolist() == [10, 11, 12]


@pytest.mark.parametrize("undated", ["10:00", "9:30 PM", "22:00-05:00", "10:00:00.5 UTC", "now", "Today"])
def test_a_time_without_a_date_is_unparseable_not_dated_the_day_of_the_run(undated):
    """The parser dates '10:00' (and 'now') on the day it runs: a rerun tomorrow would read other days. Such
    values count as unparseable, as the service refuses them; the dated ones of that day stay."""
    today = pd.Timestamp.now("UTC").strftime("%Y-%m-%d")
    ev = one_user(timestamp=[f"{today}T10:00:00", undated, "2026-01-02 10:00"])
    with pytest.raises(UsageError, match=f"could not be parsed.*e.g. {re.escape(repr(undated))}.*with their times"):
        Preprocessor().run(ev, cpu_backend())
    with pytest.warns(InputWarning, match=r"dropped 1 of 3 events .*timestamp could not be parsed"):
        data = Preprocessor(PreprocessConfig(max_bad_timestamp_share=0.5)).run(ev, cpu_backend())
    assert data.events["timestamp"].tolist() == [pd.Timestamp("2026-01-02 10:00"), pd.Timestamp(f"{today} 10:00")]
    assert steps_by_name(data)["unparseable_timestamps"].dropped == 1


def test_day_first_dates_are_read_day_first_when_any_value_shows_it():
    ev = one_user(timestamp=["11/01/2026 10:00", "13/01/2026 10:00", "02/02/2026 10:00"])
    data = Preprocessor().run(ev, cpu_backend())
    assert data.events["timestamp"].dt.strftime("%m-%d").tolist() == ["01-11", "01-13", "02-02"]


@pytest.mark.parametrize("value", ["0,0", "free", "$12.50"])
def test_values_that_are_not_numbers_are_an_error_naming_one(value):
    ev = one_user(timestamp=["2026-01-01", "2026-01-02"], value=["3.5", value])
    with pytest.raises(UsageError, match=f"value column is not numeric, e.g. '{re.escape(value)}'.*--value-col"):
        Preprocessor().run(ev, cpu_backend())


def test_complex_values_are_refused_unless_their_imaginary_parts_are_zero():
    """A complex value column was cast to its real parts without a word (NumPy's ComplexWarning, hidden)."""
    ev = one_user(timestamp=["2026-01-01", "2026-01-02"], value=np.array([3.5 + 0j, 2 + 1j]))
    with pytest.raises(UsageError, match=r"value column is not numeric, e\.g\. \(2\+1j\) \(1 rows\)"):
        Preprocessor().run(ev, cpu_backend())
    real = Preprocessor().run(ev.assign(value=np.array([3.5 + 0j, 2 + 0j])), cpu_backend())
    assert real.events["value"].tolist() == [3.5, 2.0]


def test_values_as_numeric_text_are_read_as_numbers():
    data = Preprocessor().run(one_user(timestamp=["2026-01-01", "2026-01-02"], value=["3.5", None]), cpu_backend())
    assert data.events["value"].tolist() == [3.5, 0.0] and data.events["value"].dtype == np.float32


def test_infinite_or_overflowing_values_drop_their_rows_and_are_counted():
    ev = one_user(timestamp=pd.date_range("2026-01-01", periods=4, freq="h"), value=[1.0, np.inf, 1e300, np.nan])
    with pytest.warns(InputWarning, match=r"dropped 2 of 4 events \(50.0%\): value is infinite"):
        data = Preprocessor().run(ev, cpu_backend())
    assert steps_by_name(data)["non_finite_values"].dropped == 2
    assert data.events["value"].tolist() == [1.0, 0.0]  # a missing value is no money, not a bad row


def test_float_item_ids_join_an_integer_items_table():
    ev, items, _ = blob_events(n_users=20)
    ev = ev.astype({"item_id": "float64"})  # what a CSV column with a gap reads as: 501218.0
    data = Preprocessor().run(ev, cpu_backend(), items)
    assert data.items["item_id"].dtype == np.int64 and data.items["category"].notna().all()
    assert steps_by_name(data)["item_id_types"].why == "item_id: integral float ids read as integers"
    assert steps_by_name(data)["items_in_catalogue"].why.startswith(f"{len(ev):,} of {len(ev):,} events (100.0%)")


def test_a_low_share_of_events_in_the_items_table_is_warned_about():
    ev, items, _ = blob_events(n_users=20)
    items = items.assign(item_id=items["item_id"] + 10_000)
    with pytest.warns(InputWarning, match=r"only 0.0% of events have their item in the items table"):
        data = Preprocessor().run(ev, cpu_backend(), items)
    assert data.items["category"].isna().all()


def test_user_ids_mixing_numbers_and_text_or_wider_than_int64_become_text():
    for ids in ([1, "u2"], [2**70, 5]):
        ev = one_user(timestamp=["2026-01-01", "2026-01-02"]).assign(user_id=pd.Series(ids, dtype=object))
        data = Preprocessor().run(ev, cpu_backend())
        assert sorted(data.users["user_id"]) == sorted(str(i) for i in ids)
        assert "read as text" in steps_by_name(data)["user_id_types"].why


def test_numeric_event_codes_take_weights_by_name():
    ev = one_user(timestamp=["2026-01-01", "2026-01-02"], event_type=[1, 2])
    data = Preprocessor(PreprocessConfig(event_weights={"1": 1.0, "2": 4.0})).run(ev, cpu_backend())
    assert data.events["weight"].tolist() == [1.0, 4.0]


def test_an_event_type_column_of_nulls_names_the_flag():
    ev = one_user(timestamp=["2026-01-01"], event_type=[None])
    with pytest.raises(UsageError, match="empty in every row.*--event-col"):
        Preprocessor().run(ev, cpu_backend())


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


def test_sampling_with_replacement_beyond_a_hundred_copies_per_user_is_refused_before_drawing():
    ev, _, _ = blob_events(n_users=10)
    with pytest.raises(UsageError, match="give at most 1,000"):
        Preprocessor(PreprocessConfig(sample_users=10**20, sample_replace=True)).run(ev, cpu_backend())


def test_items_catalogue_joins_on_ids_of_other_types():
    ev, items, _ = blob_events(n_users=20)
    items = items.astype({"item_id": "str"})
    data = Preprocessor().run(ev, cpu_backend(), items)
    assert data.items["category"].notna().all()
    assert data.text_columns == ("title",)


def test_event_weights_that_zero_every_event_are_refused():
    ev, _, _ = blob_events(n_users=10)
    ev["event_type"] = "view"
    with pytest.raises(UsageError, match="every event left has weight 0"):
        Preprocessor(PreprocessConfig(event_weights={"view": 0.0, "click": 1.0})).run(ev, cpu_backend())
