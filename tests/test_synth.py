"""The synthetic generator: schema, determinism, realism properties and recoverable planted groups."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from gpuclust.errors import UsageError
from gpuclust.synth import EVENT_TYPES, SynthSpec, generate, write

SPEC = SynthSpec()  # 5k users, 8 groups: the size the recoverability bar is set for


def assert_same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Same columns, dtypes and values (assert_frame_equal is slow on categoricals)."""
    assert list(a.columns) == list(b.columns) and a.dtypes.equals(b.dtypes)
    assert a.equals(b)


@pytest.fixture(scope="module")
def data():
    return generate(SPEC)


@pytest.fixture(scope="module")
def joined(data):
    return data.events.merge(data.items, on="item_id", how="left", validate="many_to_one")


def test_schema_and_dtypes(data):
    ev, items, truth = data.events, data.items, data.truth
    assert list(ev.columns) == ["user_id", "item_id", "event_type", "timestamp", "value"]
    assert ev["user_id"].dtype == np.int64 and ev["item_id"].dtype == np.int64
    assert isinstance(ev["event_type"].dtype, pd.CategoricalDtype)
    assert list(ev["event_type"].cat.categories) == list(EVENT_TYPES)
    assert str(ev["timestamp"].dtype).startswith("datetime64")
    assert ev["value"].dtype == np.float32
    assert list(items.columns) == ["item_id", "title", "category", "price"]
    assert items["item_id"].dtype == np.int64 and items["price"].dtype == np.float32
    assert pd.api.types.is_string_dtype(items["title"]) and pd.api.types.is_string_dtype(items["category"])
    assert list(truth.columns) == ["user_id", "group"] and truth["group"].dtype == np.int64
    assert len(items) == SPEC.n_items and len(truth) == SPEC.n_users


def test_ids_are_distinct_and_not_indices(data):
    uid, iid = data.truth["user_id"], data.items["item_id"]
    assert uid.is_unique and iid.is_unique
    assert not np.array_equal(uid.sort_values(), np.arange(len(uid)))
    assert not np.array_equal(iid.sort_values(), np.arange(len(iid)))
    assert data.events["user_id"].isin(uid).all() and data.events["item_id"].isin(iid).all()


def test_deterministic_and_seed_dependent(data):
    again = generate(SPEC)
    assert_same(data.events, again.events)
    assert_same(data.items, again.items)
    assert_same(data.truth, again.truth)
    other = generate(SynthSpec(n_users=500, seed=1))
    assert not data.events.head(200).reset_index(drop=True).equals(other.events.head(200))


def test_groups_present_and_noise_share(data):
    counts = data.truth["group"].value_counts()
    assert set(counts.index) == set(range(-1, SPEC.n_groups))
    assert abs(counts[-1] / SPEC.n_users - SPEC.noise_share) < 0.02
    assert counts.drop(-1).min() > 0.3 * SPEC.n_users / SPEC.n_groups  # no vanishing persona


def test_activity_is_heavy_tailed_with_the_asked_mean(data):
    per_user = data.events.groupby("user_id").size().reindex(data.truth["user_id"], fill_value=0)
    assert per_user.min() >= 1
    assert abs(per_user.mean() / SPEC.events_per_user - 1) < 0.15
    assert per_user.quantile(0.99) > 4 * per_user.median()


def test_timestamps_within_range(data):
    start = pd.Timestamp(SPEC.start)
    ts = data.events["timestamp"]
    assert ts.min() >= start and ts.max() < start + pd.Timedelta(days=SPEC.days)
    assert ts.max() - ts.min() > pd.Timedelta(days=SPEC.days - 5)  # spread over the whole window


def test_funnel_stages_follow_earlier_stages(data):
    """Each click/cart/purchase has its own earlier stage for the same user and item, shortly before."""
    ev = data.events.sort_values("timestamp", kind="stable")
    ev = ev.assign(stage=ev["event_type"].cat.codes,
                   rank=ev.groupby(["user_id", "item_id", "event_type"], observed=True).cumcount())
    for s in (1, 2, 3):
        later = ev[ev["stage"] == s]
        earlier = ev[ev["stage"] == s - 1]
        m = later.merge(earlier, on=["user_id", "item_id", "rank"], how="left", suffixes=("", "_prev"))
        assert m["timestamp_prev"].notna().all(), f"{EVENT_TYPES[s]} without a preceding {EVENT_TYPES[s - 1]}"
        gap = m["timestamp"] - m["timestamp_prev"]
        assert (gap > pd.Timedelta(0)).all()
        assert gap.median() < pd.Timedelta(minutes=10)


def test_value_only_on_purchases(data, joined):
    buy = joined["event_type"] == "purchase"
    assert (joined.loc[buy, "value"] >= joined.loc[buy, "price"] - 1e-3).all()  # price x quantity
    assert (joined.loc[~buy, "value"] == 0).all()
    assert 0 < buy.mean() < 0.2 < (joined["event_type"] == "view").mean()


def test_events_cluster_in_sessions(data):
    ev = data.events  # sorted by user then time
    same_user = ev["user_id"].eq(ev["user_id"].shift()).to_numpy()
    gaps = ev["timestamp"].diff().dt.total_seconds().to_numpy()[same_user]
    assert np.median(gaps) < 5 * 60  # within a session: seconds to minutes
    long = (gaps > 3600).mean()
    assert 0.01 < long < 0.3  # between sessions: hours to days
    sessions_per_user = 1 + pd.Series(gaps > 3600).groupby(ev["user_id"].to_numpy()[same_user]).sum()
    assert sessions_per_user.median() >= 3


def test_catalogue_is_readable_and_priced_by_category(data):
    items = data.items
    assert items["title"].str.split().str.len().between(1, 8).all()
    assert items["category"].nunique() == SPEC.n_categories
    assert (items["price"] > 0).all()
    med = items.groupby("category")["price"].median()
    assert med["furniture"] > 5 * med["grocery"]
    words = items.assign(word=items["title"].str.split()).explode("word")
    spread = words.groupby("word")["category"].nunique()
    assert (spread >= 3).sum() >= 10  # shared words link similar items across categories


def test_item_popularity_is_skewed_within_category(joined):
    views = joined[joined["event_type"] == "view"].groupby(["category", "item_id"]).size()
    top_cat = views.groupby(level=0).sum().idxmax()
    per_item = views.loc[top_cat].sort_values(ascending=False)
    assert per_item.iloc[0] > 8 * per_item.median()


def test_personas_favour_their_categories(data, joined):
    truth = data.truth.set_index("user_id")["group"]
    fav = {p["group"]: set(p["favourite_categories"]) for p in data.personas}
    assert len({frozenset(v) for v in fav.values()}) == SPEC.n_groups
    assert all(2 <= len(v) <= 4 for v in fav.values())
    g = joined["user_id"].map(truth)
    persona = joined[g >= 0]
    in_fav = [c in fav[k] for c, k in zip(persona["category"], g[g >= 0], strict=True)]
    assert 0.65 < np.mean(in_fav) < 0.97  # most, not all, from favourites


def test_planted_groups_are_recoverable(data, joined):
    """KMeans on category shares + a few behaviour stats finds the personas (ARI on non-noise users)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score
    from sklearn.preprocessing import StandardScaler

    share = pd.crosstab(joined["user_id"], joined["category"], normalize="index")
    mix = pd.crosstab(joined["user_id"], joined["event_type"], normalize="index")
    by_user = joined.groupby("user_id")
    stats = pd.DataFrame({"log_events": np.log1p(by_user.size()), "click": mix["click"],
                          "purchase": mix["purchase"], "log_price": np.log(by_user["price"].mean())})
    X = StandardScaler().fit_transform(share.join(stats))
    labels = KMeans(SPEC.n_groups, n_init=10, random_state=0).fit_predict(X)
    truth = data.truth.set_index("user_id")["group"].reindex(share.index).to_numpy()
    ari = adjusted_rand_score(truth[truth >= 0], labels[truth >= 0])
    assert ari >= 0.8, f"ARI {ari:.3f}"
    assert ari < 0.999  # overlapping personas and noise keep it from being trivial


def test_write_streams_three_files_matching_generate(tmp_path):
    spec = SynthSpec(n_users=9000, n_items=500, events_per_user=8, seed=3)
    calls: list[tuple[int, int]] = []
    summary = write(spec, tmp_path / "a", chunk_users=4096, progress=lambda d, t: calls.append((d, t)))
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [".gpuclust.json", "events.parquet", "items.parquet",
                                                                  "truth.parquet"]
    assert calls[-1] == (9000, 9000) and len(calls) == 3
    assert summary["n_users"] == 9000 and summary["n_items"] == 500
    assert summary["n_events"] == sum(summary["event_counts"].values())
    assert set(summary["event_counts"]) == set(EVENT_TYPES) and summary["seconds"] >= 0

    ev = pq.read_table(tmp_path / "a" / "events.parquet")
    assert ev.schema.field("event_type").type.value_type == "string"  # dictionary-encoded strings
    assert pq.ParquetFile(tmp_path / "a" / "events.parquet").metadata.num_row_groups == 3
    mem = generate(spec)
    assert_same(ev.to_pandas(), mem.events)
    assert_same(pd.read_parquet(tmp_path / "a" / "items.parquet"), mem.items)
    assert_same(pd.read_parquet(tmp_path / "a" / "truth.parquet"), mem.truth)
    assert summary["n_events"] == len(mem.events)


def test_write_is_reproducible_and_chunk_independent(tmp_path):
    spec = SynthSpec(n_users=5000, n_items=300, events_per_user=5, seed=7)
    write(spec, tmp_path / "a", chunk_users=1000)
    write(spec, tmp_path / "b", chunk_users=1000)
    write(spec, tmp_path / "c", chunk_users=50_000)
    for name in ("events.parquet", "items.parquet", "truth.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        assert_same(pd.read_parquet(tmp_path / "a" / name), pd.read_parquet(tmp_path / "c" / name))


SYNTH_FILES = [".gpuclust.json", "events.parquet", "items.parquet", "truth.parquet"]


def test_write_replaces_its_own_output_and_leaves_no_temp_files(tmp_path):
    write(SynthSpec(n_users=50, n_items=40, events_per_user=3, seed=1), tmp_path / "d")
    write(SynthSpec(n_users=60, n_items=40, events_per_user=3, seed=2), tmp_path / "d")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == SYNTH_FILES
    assert [p.name for p in tmp_path.iterdir()] == ["d"]
    assert len(pd.read_parquet(tmp_path / "d" / "truth.parquet")) == 60


def test_failed_write_keeps_previous_files(tmp_path):
    write(SynthSpec(n_users=50, n_items=40, events_per_user=3), tmp_path / "d")
    before = (tmp_path / "d" / "events.parquet").read_bytes()

    def boom(done: int, total: int) -> None:
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write(SynthSpec(n_users=50, n_items=40, events_per_user=3, seed=9), tmp_path / "d", progress=boom)
    assert (tmp_path / "d" / "events.parquet").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == SYNTH_FILES
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_write_refuses_a_folder_of_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="did not write"):
        write(SynthSpec(n_users=50, n_items=40, events_per_user=3), tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_tiny_worlds_work():
    d = generate(SynthSpec(n_users=1, n_items=1, n_groups=1, n_categories=1, noise_share=0.0))
    assert len(d.truth) == 1 and d.truth["group"].iloc[0] == 0 and len(d.events) >= 1
    d = generate(SynthSpec(n_users=30, n_items=40, n_groups=6, n_categories=4, events_per_user=3))
    assert set(d.truth["group"]) >= set(range(6))


@pytest.mark.parametrize(("change", "name"), [
    ({"n_users": 0}, "n_users"),
    ({"n_users": 5, "n_groups": 8}, "n_groups"),
    ({"n_groups": 0}, "n_groups"),
    ({"n_items": 10, "n_categories": 24}, "n_items"),
    ({"n_categories": 3, "n_groups": 5}, "n_groups"),
    ({"events_per_user": 0}, "events_per_user"),
    ({"events_per_user": float("nan")}, "events_per_user"),
    ({"noise_share": 1.0}, "noise_share"),
    ({"noise_share": -0.1}, "noise_share"),
    ({"days": 0}, "days"),
    ({"seed": -1}, "seed"),
    ({"n_users": 10.5}, "n_users"),
    ({"start": "not a date"}, "start"),
])
def test_impossible_parameters_raise_usage_error(change, name):
    with pytest.raises(UsageError, match=name) as err:
        SynthSpec(**change).validate()
    assert "\n" not in str(err.value)


def test_synth_cli_errors_name_the_flag_and_a_valid_value(tmp_path, monkeypatch, capsys):
    """They named only the SynthSpec fields (n_groups, n_items), which the command line does not have."""
    from tests.helpers import cli

    for args, expected in ((("--groups", "0"), "n_groups=0 (--groups) is out of range"),
                           (("--users", "5"), "exceeds n_users=5 (--users); give at most one group per user, "
                                              "e.g. --groups 5"),
                           (("--items", "5"), "e.g. --items 24"),
                           (("--noise-share", "1.5"), "noise_share=1.5 (--noise-share) must be in [0, 1), e.g. 0.05")):
        code, _, err = cli(monkeypatch, capsys, "synth", "--sequential", "--out", tmp_path / "d", *args)
        assert code == 2 and expected in err and err.count("\n") == 1, err
    assert not (tmp_path / "d").exists()


def test_write_rejects_bad_chunk_size(tmp_path):
    with pytest.raises(UsageError, match="chunk_users"):
        write(SynthSpec(n_users=10), tmp_path, chunk_users=0)
    assert not any(tmp_path.iterdir())
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        write(SynthSpec(n_users=10), tmp_path / "f")


# --- sequential personas ----------------------------------------------------------------------------

def test_sequential_personas_differ_only_in_the_order_of_their_categories():
    from gpuclust.synth.generator import build_world

    spec = SynthSpec(n_users=400, n_items=200, n_groups=4, seed=0, sequential=True).validate()
    world = build_world(spec)
    for a, b in ((0, 1), (2, 3)):
        assert world.favourites[a] == world.favourites[b] and len(world.favourites[a]) >= 3
        assert np.allclose(world.cat_pref[a], world.cat_pref[b])
        assert world.price_level[a] == world.price_level[b] and np.allclose(world.funnel[a], world.funnel[b])
        fav = list(world.favourites[a])
        forward = {c: int(world.next_category[a, c]) for c in fav}
        backward = {c: int(world.next_category[b, c]) for c in fav}
        assert all(backward[forward[c]] == c for c in fav)  # b walks a's route backwards
    described = generate(spec).personas
    assert described[0]["route"] == [described[1]["route"][0], *described[1]["route"][:0:-1]]


def test_sequential_users_follow_their_route_within_sessions():
    spec = SynthSpec(n_users=600, n_items=240, n_groups=2, seed=1, sequential=True, noise_share=0.0)
    data = generate(spec)
    from gpuclust.synth.generator import build_world

    world = build_world(spec)
    ev = data.events[data.events.event_type == "view"].merge(data.items[["item_id", "category"]], on="item_id")
    ev = ev.merge(data.truth, on="user_id").sort_values(["user_id", "timestamp"])
    names = {c: i for i, c in enumerate(world.category_names)}
    ev["c"] = ev.category.map(names)
    prev = ev.groupby("user_id")["c"].shift(1)
    gap = ev.groupby("user_id")["timestamp"].diff().dt.total_seconds()
    moves = ev[prev.notna() & (prev != ev.c) & (gap < 1800)].assign(prev=prev.dropna().astype(int))
    follows = [world.next_category[g, p] == c for g, p, c in zip(moves.group, moves.prev, moves.c, strict=True)]
    assert np.mean(follows) > 0.6  # route moves dominate category changes inside a session


def test_sequential_option_is_recorded_only_when_set(tmp_path):
    import json

    write(SynthSpec(n_users=50, n_items=60, n_groups=2), tmp_path / "plain")
    write(SynthSpec(n_users=50, n_items=60, n_groups=2, sequential=True), tmp_path / "seq")
    plain = json.loads(pq.read_schema(tmp_path / "plain" / "events.parquet").metadata[b"gpuclust.synth"])
    seq = json.loads(pq.read_schema(tmp_path / "seq" / "events.parquet").metadata[b"gpuclust.synth"])
    assert "sequential" not in plain and seq["sequential"] is True


def test_sequential_needs_categories_for_routes():
    with pytest.raises(UsageError, match="routes of 3-4 categories"):
        SynthSpec(n_groups=4, n_categories=2, n_items=10, sequential=True).validate()
def test_synth_as_a_multi_file_dataset_has_the_same_rows(tmp_path):
    """`--files N`: events/part.N.parquet with whole users per file, the same rows as one file."""
    import pandas as pd

    from gpuclust.synth import SynthSpec, write

    spec = SynthSpec(n_users=9000, n_items=500, n_groups=4, seed=2)
    one = write(spec, tmp_path / "one")
    many = write(spec, tmp_path / "many", files=3)
    assert many["files"]["events"] == str(tmp_path / "many" / "events") and many["n_events"] == one["n_events"]
    parts = [pd.read_parquet(tmp_path / "many" / "events" / f"part.{i}.parquet") for i in range(3)]
    assert all(len(p) for p in parts)
    assert not set(parts[0]["user_id"]) & set(parts[1]["user_id"])  # users are not split across files
    pd.testing.assert_frame_equal(pd.concat(parts, ignore_index=True),
                                  pd.read_parquet(tmp_path / "one" / "events.parquet"))


def test_synth_writes_as_many_files_as_asked(tmp_path):
    """`--files 4` over 5 seeding blocks wrote 3 files (2 blocks each) while its summary said 4."""
    import pandas as pd

    from gpuclust.synth import SynthSpec, write
    from gpuclust.synth.generator import BLOCK_USERS

    spec = SynthSpec(n_users=4 * BLOCK_USERS + 500, n_items=200, n_groups=3, events_per_user=3, seed=1)
    write(spec, tmp_path / "one")
    many = write(spec, tmp_path / "many", files=4, chunk_users=2 * BLOCK_USERS)
    written = sorted(p.name for p in (tmp_path / "many" / "events").iterdir())
    assert written == [f"part.{i}.parquet" for i in range(4)] and many["files"]["event_files"] == 4
    parts = [pd.read_parquet(tmp_path / "many" / "events" / name) for name in written]
    assert all(len(p) for p in parts)
    pd.testing.assert_frame_equal(pd.concat(parts, ignore_index=True),
                                  pd.read_parquet(tmp_path / "one" / "events.parquet"))
