"""The segment primitives and the array steps of preprocessing, against pandas on random inputs."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gpuclust import segments
from gpuclust.backend import resolve_backend
from gpuclust.config import PreprocessConfig
from gpuclust.preprocess.clean import Preprocessor

small_ints = arrays(np.int64, st.integers(0, 60), elements=st.integers(0, 6))


@st.composite
def segmented(draw):
    """Sorted segment ids with values: some segments empty, some long."""
    n = draw(st.integers(1, 8))
    ids = np.sort(draw(arrays(np.int64, st.integers(0, 50), elements=st.integers(0, n - 1))))
    values = draw(arrays(np.float64, len(ids), elements=st.floats(-100, 100, allow_nan=False, width=32)))
    keys = draw(arrays(np.int64, len(ids), elements=st.integers(0, 4)))
    return n, ids, values, keys


@given(st.integers(0, 40), st.integers(0, 7), st.integers(1, 6), st.integers(1, 90), st.data())
def test_group_sums_by_column_blocks_equal_a_bincount_per_column(rows, d, n, cells, data):
    """The device's group sums (`_group_sums_by_blocks`, a bincount per block of columns) run here on NumPy,
    in blocks of any width: the same bits as a bincount per column, groups at or past `n` left out."""
    x = data.draw(arrays(np.float32, (rows, d), elements=st.floats(-1e3, 1e3, allow_nan=False, width=32)))
    ids = data.draw(arrays(np.int32, rows, elements=st.integers(0, n + 1)))
    want = segments.group_sums(x, ids, n, np, squares=True)
    got = segments._group_sums_by_blocks(x, ids, n, np, squares=True, cells=cells)
    for a, b in zip(want, got, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(segments._group_sums_by_blocks(x, ids, n, np, cells=cells)[0], want[0])


@given(st.sampled_from([np.int64, np.int32, np.uint64]), st.data())
def test_sorted_codes_equal_pandas_factorize(dtype, data):
    """The GPU's factorisation of integer ids (`frames.sorted_codes`, one sort where the ids live) runs here on
    NumPy: the codes and distinct values of pandas' `factorize(sort=True)`, dtype kept."""
    from gpuclust.frames import sorted_codes

    top = np.iinfo(dtype).max if dtype is not np.uint64 else 2**64 - 1
    values = data.draw(arrays(dtype, st.integers(1, 60), elements=st.sampled_from([0, 1, 7, 7, 2**20, int(top)])))
    codes, uniques = sorted_codes(values, np)
    want_codes, want_uniques = pd.Series(values).factorize(sort=True)
    np.testing.assert_array_equal(codes, want_codes)
    assert codes.dtype == np.int64 and uniques.dtype == want_uniques.dtype
    np.testing.assert_array_equal(uniques, np.asarray(want_uniques))


@given(segmented())
def test_segment_reductions_match_pandas_groupby(case):
    n, ids, values, keys = case
    offsets = segments.offsets_of(ids, n, np)
    assert offsets[0] == 0 and offsets[-1] == len(ids)
    found = segments.ids_of(offsets, np)
    np.testing.assert_array_equal(found, ids)
    assert found.dtype == np.int32
    frame = pd.DataFrame({"s": ids, "v": values, "k": keys})
    grouped = frame.groupby("s")
    expect_sum = grouped["v"].sum().reindex(range(n), fill_value=0.0).to_numpy()
    np.testing.assert_allclose(segments.segment_sum(values, ids, n, np), expect_sum, atol=1e-9)
    np.testing.assert_array_equal(segments.segment_sum(None, ids, n, np),
                                  grouped.size().reindex(range(n), fill_value=0).to_numpy())
    np.testing.assert_array_equal(segments.segment_first(values, offsets, -1.0, np),
                                  grouped["v"].first().reindex(range(n), fill_value=-1.0).to_numpy())
    np.testing.assert_array_equal(segments.segment_last(values, offsets, -1.0, np),
                                  grouped["v"].last().reindex(range(n), fill_value=-1.0).to_numpy())
    np.testing.assert_array_equal(segments.distinct_per_segment(ids, keys, n, 5, np),
                                  grouped["k"].nunique().reindex(range(n), fill_value=0).to_numpy())


@given(small_ints, st.data())
def test_run_starts_and_stable_order(major, data):
    minor = data.draw(arrays(np.int64, len(major), elements=st.integers(-3, 3).map(lambda x: x * 1_000_000_000)))
    order = segments.stable_order(major, minor, np)
    expect = pd.DataFrame({"a": major, "b": minor}).sort_values(["a", "b"], kind="stable").index.to_numpy()
    np.testing.assert_array_equal(order, expect)
    starts = segments.run_starts(major[order], minor[order], xp=np)
    frame = pd.DataFrame({"a": major[order], "b": minor[order]})
    expect_starts = (frame != frame.shift(1)).any(axis=1).to_numpy() if len(frame) else np.zeros(0, bool)
    np.testing.assert_array_equal(starts, expect_starts)


def test_stable_order_falls_back_when_the_key_does_not_pack():
    major = np.array([3, 1, 3, 1, 2], dtype=np.int64) * (1 << 40)
    minor = np.array([5, -7, 5, 2 ** 60, 0], dtype=np.int64)
    order = segments.stable_order(major, minor, np)
    np.testing.assert_array_equal(order, np.lexsort((minor, major)))


@st.composite
def raw_events(draw):
    """A log with many exact duplicates and ties on (user, time), in any order."""
    n = draw(st.integers(1, 80))
    ints = st.integers(0, 3)
    users = draw(arrays(np.int64, n, elements=ints))
    items = draw(arrays(np.int64, n, elements=ints))
    seconds = draw(arrays(np.int64, n, elements=st.integers(0, 2)))
    kinds = draw(st.lists(st.sampled_from(["view", "click", "purchase"]), min_size=n, max_size=n))
    values = draw(arrays(np.float32, n, elements=st.sampled_from([0.0, -0.0, 1.5, 3.0])))
    return pd.DataFrame({"user_id": users, "item_id": items, "event_type": kinds,
                         "timestamp": pd.Timestamp("2026-01-01") + pd.to_timedelta(seconds, unit="s"),
                         "value": values})


@given(raw_events(), st.integers(1, 3), st.integers(1, 3))
def test_preprocessing_drops_and_keeps_what_the_frame_reference_does(events, min_user, min_item):
    """Duplicates, minimum counts and the (user, time) order on arrays equal pandas' drop_duplicates,
    value_counts filters and a stable sort, row for row."""
    config = PreprocessConfig(min_user_events=min_user, min_item_events=min_item)
    reference = events.drop_duplicates()
    for _ in range(10):
        before = len(reference)
        counts = reference["user_id"].value_counts()
        reference = reference[reference["user_id"].isin(counts[counts >= min_user].index)]
        counts = reference["item_id"].value_counts()
        reference = reference[reference["item_id"].isin(counts[counts >= min_item].index)]
        if len(reference) == before:
            break
    try:
        data = Preprocessor(config).run(events, resolve_backend("cpu"))
    except Exception as exc:  # noqa: BLE001 - an empty result must be the reference's too
        assert len(reference) == 0, exc
        return
    steps = {s.step: s for s in data.steps}
    assert steps["exact_duplicates"].dropped == len(events) - len(events.drop_duplicates())
    expect = reference.sort_values(["user_id", "timestamp"], kind="stable")
    got = data.events
    assert len(got) == len(expect) == len(data.table)
    np.testing.assert_array_equal(got["user_id"].to_numpy(), expect["user_id"].to_numpy())
    np.testing.assert_array_equal(got["timestamp"].to_numpy(), expect["timestamp"].to_numpy())
    assert sorted(zip(got["item_id"], got["event_type"].astype(str), got["value"], strict=True)) == \
        sorted(zip(expect["item_id"], expect["event_type"], expect["value"], strict=True))
    table = data.table
    np.testing.assert_array_equal(table.offsets, np.searchsorted(table.user, np.arange(data.n_users + 1)))
    assert (np.diff(table.user) >= 0).all()


def _assert_table_is(table, frame: pd.DataFrame) -> None:
    """An event table holds the rows of a prepared events frame, in its order."""
    np.testing.assert_array_equal(table.user, frame["user_idx"].to_numpy())
    np.testing.assert_array_equal(table.item, frame["item_idx"].to_numpy())
    np.testing.assert_array_equal(table.time, frame["timestamp"].astype("datetime64[ns]").astype("int64").to_numpy())
    np.testing.assert_array_equal(table.weight, frame["weight"].to_numpy())
    np.testing.assert_array_equal(np.asarray(table.event_names)[table.event], frame["event_type"].astype(str).to_numpy())


@pytest.mark.filterwarnings("ignore::gpuclust.errors.DroppedRowsWarning")
@given(raw_events(), st.integers(1, 3), st.integers(1, 3), st.booleans(), st.sampled_from([None, 2, 3]))
def test_preparing_prepared_events_again_equals_preparing_their_frame(events, min_user, min_item, fewer_types,
                                                                      sample):
    """`Preprocessor.run_prepared` (what a fit on a holdout's training part runs) gives what `run` gives on
    the prepared events' frame: the same rows, indices, ids and unknown-type counts, with other minimum
    counts, a sample, or fewer event types than the first preparation had."""
    from gpuclust.errors import UsageError
    from gpuclust.preprocess.prepared import event_frames

    backend = resolve_backend("cpu")
    first = Preprocessor().run(events, backend)
    frame = first.events[["user_id", "item_id", "event_type", "timestamp", "value"]]
    weights = {"purchase": 5.0, "view": 1.0} if fewer_types else PreprocessConfig().event_weights
    config = PreprocessConfig(event_weights=weights, min_user_events=min_user, min_item_events=min_item,
                              sample_users=sample)
    reference = Preprocessor(config, seed=1)
    try:
        expect = reference.run(frame, backend)
    except UsageError as exc:
        built = event_frames.built
        with pytest.raises(UsageError, match=re.escape(str(exc)[:22])):
            Preprocessor(config, seed=1).run_prepared(first, backend)
        assert event_frames.built == built
        return
    built = event_frames.built
    again = Preprocessor(config, seed=1)
    got = again.run_prepared(first, backend)
    assert event_frames.built == built
    _assert_table_is(got.table, expect.events)
    pd.testing.assert_frame_equal(got.users, expect.users)
    pd.testing.assert_frame_equal(got.items, expect.items)
    assert (got.n_users, got.n_items, got.event_types) == (expect.n_users, expect.n_items, expect.event_types)
    assert got.reference_time == expect.reference_time
    assert again.unknown_types_ == reference.unknown_types_
    steps = {s.step: s.to_dict() for s in got.steps}
    for step in expect.steps:
        if step.step in steps or step.dropped:
            assert steps[step.step] == step.to_dict()


def _reference_holdout(events: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The frame rules leave-last-out had before the arrays: sort by (user, time, weight, hash), keep last."""
    from gpuclust.recommend.split import seeded_hash

    distinct = events[["user_idx", "item_idx"]].drop_duplicates().groupby("user_idx").size()
    ranked = events.copy()
    ranked["_t"] = seeded_hash(ranked["user_idx"].to_numpy(), ranked["item_idx"].to_numpy(), seed, np)
    ranked = ranked[ranked["user_idx"].isin(distinct[distinct >= 2].index)]
    ranked = ranked.sort_values(["user_idx", "timestamp", "weight", "_t"])
    test = ranked.drop_duplicates(subset=["user_idx"], keep="last")[["user_idx", "item_idx"]]
    return test.sort_values("user_idx").reset_index(drop=True)


def _reference_split(events: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) by the frame rules: every event of a user on its held-out item leaves the training part."""
    test = _reference_holdout(events, seed)
    held = events.merge(test.assign(_held=True), on=["user_idx", "item_idx"], how="left")["_held"].notna()
    return events[~held.to_numpy()].reset_index(drop=True), test


@pytest.mark.filterwarnings("ignore::gpuclust.errors.DroppedRowsWarning")
@given(st.integers(1, 60), st.integers(0, 3), st.data())
def test_leave_last_out_on_the_event_table_holds_out_what_the_frame_rules_did(n, seed, data):
    """The split evaluate and compare make, on prepared data's arrays (twice: the inner split of the blend
    tuning splits the training part again), against the frame rules on the events frame."""
    from gpuclust.errors import UsageError
    from gpuclust.preprocess.prepared import event_frames
    from gpuclust.recommend.split import held_out, leave_last_out

    ints = arrays(np.int64, n, elements=st.integers(0, 4))
    raw = pd.DataFrame({
        "user_id": data.draw(ints), "item_id": data.draw(ints) * 7,
        "event_type": data.draw(st.lists(st.sampled_from(["view", "click", "cart", "purchase"]), min_size=n,
                                         max_size=n)),
        "timestamp": pd.Timestamp("2026-01-01") + pd.to_timedelta(data.draw(ints), unit="s"),
    })
    prepared = Preprocessor().run(raw, resolve_backend("cpu"))
    events = prepared.events  # the reference's frame; the split below must not need one
    built = event_frames.built
    train, test = _reference_split(events, seed)
    if len(test) == 0:
        try:
            leave_last_out(prepared, seed=seed)
        except UsageError:
            return
        raise AssertionError("no user has 2 distinct items, yet leave-last-out split")
    split = leave_last_out(prepared, seed=seed)
    assert event_frames.built == built
    np.testing.assert_array_equal(split.users, test["user_idx"].to_numpy())
    np.testing.assert_array_equal(split.items, test["item_idx"].to_numpy())
    assert split.n_eligible == len(test)
    _assert_table_is(split.train.table, train)
    np.testing.assert_array_equal(split.train.table.offsets,
                                  np.searchsorted(train["user_idx"].to_numpy(), np.arange(prepared.n_users + 1)))
    inner_train, inner_test = _reference_split(train, seed)
    if len(inner_test):
        inner = leave_last_out(split.train, seed=seed)
        np.testing.assert_array_equal(inner.users, inner_test["user_idx"].to_numpy())
        np.testing.assert_array_equal(inner.items, inner_test["item_idx"].to_numpy())
        _assert_table_is(inner.train.table, inner_train)
    assert event_frames.built == built
    # held_out in any row order (sorted once first) gives the same rows as in the table's (user, time) order.
    shuffled = events.sample(frac=1.0, random_state=seed)
    user, item = held_out(shuffled["user_idx"].to_numpy(), shuffled["item_idx"].to_numpy(),
                          shuffled["timestamp"].astype("int64").to_numpy(), shuffled["weight"].to_numpy(), 5, seed, np)
    np.testing.assert_array_equal(user, test["user_idx"].to_numpy())
    np.testing.assert_array_equal(item, test["item_idx"].to_numpy())


@given(st.integers(1, 30), st.integers(1, 8), st.booleans(), st.integers(0, 2**31 - 1))
def test_training_rows_leave_every_event_on_a_held_out_pair(n_users, n_items, repeated_users, seed):
    """The gather (one held-out item per user) and the general case (several per user) both equal the
    definition: an event stays unless its (user, item) pair is held out."""
    from gpuclust.recommend.split import training_rows

    rng = np.random.default_rng(seed)
    user, item = rng.integers(0, n_users, 60), rng.integers(0, n_items, 60)
    test_user = rng.integers(0, n_users, 5) if repeated_users else rng.permutation(n_users)[:5]
    test_item = rng.integers(0, n_items, len(test_user))
    held = set(zip(test_user.tolist(), test_item.tolist(), strict=True))
    expected = [(u, i) not in held for u, i in zip(user.tolist(), item.tolist(), strict=True)]
    assert training_rows(user, item, test_user, test_item, n_items, np).tolist() == expected
    assert training_rows(user[:0], item[:0], test_user, test_item, n_items, np).tolist() == []
