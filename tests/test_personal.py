"""The personal recommender (recommend.personal): EASE's closed form, kNN, λ selection, masking, rules."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gpuclust.backend import resolve_backend
from gpuclust.config import PipelineConfig, RecommendConfig
from gpuclust.errors import UsageError
from gpuclust.preprocess.table import EventTable
from gpuclust.recommend.personal import (
    EASE_COPIES,
    PersonalModel,
    binary_matrix,
    ease_fits,
    ease_weights,
    fit_personal,
    gram,
    knn_neighbours,
    knn_weights,
    recommend_rows,
    top_items,
)
from gpuclust.segments import offsets_of

CPU = resolve_backend("cpu")


def _matrix(n_users: int = 40, n_items: int = 12, p: float = 0.3, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((n_users, n_items)) < p).astype(np.float32)


def _table(user: np.ndarray, item: np.ndarray, n_users: int) -> EventTable:
    """Events in (user, time) order: each user's items in the order given, one second apart."""
    order = np.argsort(user, kind="stable")
    user, item = user[order].astype(np.int32), item[order].astype(np.int32)
    n = len(user)
    return EventTable(user, item, np.zeros(n, np.int8), np.arange(n, dtype=np.int64) * 10**9,
                      np.zeros(n, np.float32), np.ones(n, np.float32), offsets_of(user, n_users, np),
                      ("purchase",), np)


def _planted(n_users: int = 600, n_items: int = 200, seed: int = 0) -> tuple[EventTable, int, int]:
    """Users buy six of 20 staples, then walk a chain of the other items (i, i + 1, ...): the last item
    follows from the one before it, and co-occurrence counts alone point at the staples."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        start, length = rng.integers(0, n_items - 20), rng.integers(3, 8)
        walk = [20 + (start + j) % (n_items - 20) for j in range(length)]
        users += [u] * (6 + length)
        items += [int(i) for i in rng.integers(0, 20, 6)] + walk
    return _table(np.array(users), np.array(items), n_users), n_users, n_items


def test_ease_closed_form_equals_a_direct_constrained_solve():
    """Steck's B: column j is the ridge regression of item j on every other item (b_jj = 0)."""
    x = _matrix()
    lam = 5.0
    g = gram(binary_matrix(*np.nonzero(x), *x.shape, CPU))
    before = g.copy()
    b = ease_weights(g, lam, CPU)
    np.testing.assert_array_equal(g, before)  # the Gram is reused across the λ grid: λ comes off exactly
    x64 = x.astype(np.float64)
    for j in range(x.shape[1]):
        others = [i for i in range(x.shape[1]) if i != j]
        a = x64[:, others]
        direct = np.linalg.solve(a.T @ a + lam * np.eye(len(others)), a.T @ x64[:, j])
        np.testing.assert_allclose(b[others, j], direct, rtol=2e-4, atol=2e-5)
        assert b[j, j] == 0


@pytest.mark.parametrize("n", [1, 7, 300])
def test_the_in_place_spd_inverse_is_the_inverse(n):
    from gpuclust.backend import spd_inverse

    x = np.random.default_rng(n).random((2 * n + 3, n)).astype(np.float32)
    a = x.T @ x + np.eye(n, dtype=np.float32)
    expected = np.linalg.inv(a.astype(np.float64))
    got = spd_inverse(a, CPU)
    assert np.shares_memory(got, a)  # no items² copy
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-5)
    np.testing.assert_array_equal(got, got.T)
    with pytest.raises(np.linalg.LinAlgError):
        spd_inverse(-np.eye(3, dtype=np.float32), CPU)


def test_knn_keeps_each_items_top_cosine_neighbours():
    x = _matrix(seed=1)
    idx, val = knn_neighbours(binary_matrix(*np.nonzero(x), *x.shape, CPU), 3, CPU)
    norms = np.sqrt(x.sum(0))
    cos = (x.T @ x) / np.outer(norms, norms)
    np.fill_diagonal(cos, 0)
    for i in range(x.shape[1]):
        np.testing.assert_allclose(val[i], np.sort(cos[i])[::-1][:3], rtol=1e-5)
    w = knn_weights(idx, val, 2, CPU)
    assert np.diff(w.indptr).max() <= 2 and (w.diagonal() == 0).all()


def test_blocks_on_threads_give_the_one_block_answer(monkeypatch):
    """Neighbours, the split's second list and users' top lists in many row blocks on several threads
    (what a big catalogue gets on a multi-core CPU) equal one block on one thread."""
    from gpuclust import backend as backend_module
    from gpuclust.recommend import personal, scoring

    x = binary_matrix(*np.nonzero(_matrix(n_users=60, n_items=40, p=0.3, seed=4)), 60, 40, CPU)
    added = binary_matrix(np.array([0, 5]), np.array([39, 38]), 60, 40, CPU)
    model = PersonalModel("knn", knn_weights(*knn_neighbours(x, 6, CPU), 6, CPU), None, 6)
    one = knn_neighbours(x, 6, CPU, added=added), top_items(model, x, 5, CPU)
    monkeypatch.setattr(backend_module, "cpu_threads", lambda: 3)
    for module in (personal, scoring):
        monkeypatch.setattr(module, "BATCH_CELLS", 3 * 40 * 2)  # blocks of 2 rows on each of 3 threads
    many = knn_neighbours(x, 6, CPU, added=added), top_items(model, x, 5, CPU)
    def arrays(result):
        (split_idx, split_val), (whole_idx, whole_val) = result[0]
        return [split_idx, split_val, whole_idx, whole_val, *result[1]]

    for a, b in zip(arrays(one), arrays(many), strict=True):
        np.testing.assert_array_equal(a, b)


def test_neighbours_read_from_the_gram_equal_those_multiplied_and_leave_it_as_it_was():
    x = binary_matrix(*np.nonzero(_matrix(n_users=60, n_items=40, p=0.3, seed=4)), 60, 40, CPU)
    added = binary_matrix(np.array([0, 5]), np.array([39, 38]), 60, 40, CPU)
    g = gram(x)
    before = g.copy()
    for extra in ({}, {"added": added}):
        multiplied, read = knn_neighbours(x, 6, CPU, **extra), knn_neighbours(x, 6, CPU, g=g, **extra)
        for a, b in zip(_flat(multiplied), _flat(read), strict=True):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(g, before)


def _flat(found) -> list:
    return [a for pair in (found if isinstance(found, list) else [found]) for a in pair]


def test_seen_items_are_masked_without_a_dense_user_matrix():
    x = _matrix(n_users=5, n_items=6, p=0.5, seed=2)
    x[0] = [1, 1, 1, 1, 0, 0]  # two unseen items, a list of four
    seen = binary_matrix(*np.nonzero(x), *x.shape, CPU)
    model = PersonalModel("ease", ease_weights(gram(seen), 1.0, CPU), 1.0)
    items, scores = top_items(model, seen, 4, CPU)
    for u in range(5):
        listed = items[u][np.isfinite(scores[u])]
        assert not set(listed) & set(np.nonzero(x[u])[0])
        assert len(listed) == min(4, int((x[u] == 0).sum()))
    assert set(items[0][:2]) == {4, 5} and np.isneginf(scores[0][2:]).all()
    assert (np.diff(scores[1][np.isfinite(scores[1])]) <= 0).all()  # best first


def test_lambda_is_chosen_on_the_inner_split_and_every_contender_is_recorded():
    table, n_users, n_items = _planted()
    config = RecommendConfig(lambdas=(1.0, 1e4), neighbours=(5,))
    model = fit_personal(table, n_users, n_items, CPU, config, seed=0)
    contenders = model.selection["contenders"]
    assert [(c["kind"], c.get("lambda"), c.get("neighbours")) for c in contenders] == \
        [("ease", 1.0, None), ("ease", 1e4, None), ("knn", None, 5)]
    best = max(contenders, key=lambda c: (c["HR@10"], c["NDCG@10"]))
    assert model.selection["chosen"]["kind"] == best["kind"] == model.kind
    by_lambda = {c["lambda"]: c["HR@10"] for c in contenders if c["kind"] == "ease"}
    assert by_lambda[1.0] > by_lambda[1e4] + 0.5  # a huge λ leaves B ~ XᵀX / λ: co-occurrence, the staples
    assert model.selection["users"] == n_users  # every planted user has 3+ distinct items


@pytest.mark.parametrize("kind", ["ease", "knn"])
def test_the_final_model_reuses_the_split_pass_and_equals_a_fit_on_the_whole_log(kind):
    """The whole log's Gram / neighbours are the inner split's plus a sparse correction for the held-out
    pairs: the saved model is what a separate pass over every event gives."""
    table, n_users, n_items = _planted(n_users=300, n_items=80)
    config = RecommendConfig(personal=kind, lambdas=(3.0, 30.0), neighbours=(4, 9))
    model = fit_personal(table, n_users, n_items, CPU, config, seed=1)
    x = binary_matrix(table.user, table.item, n_users, n_items, CPU)
    if kind == "ease":
        expect = ease_weights(gram(x), model.lam, CPU)
        np.testing.assert_allclose(model.weights, expect, rtol=1e-4, atol=1e-5)
    else:
        expect = knn_weights(*knn_neighbours(x, max(config.neighbours), CPU), model.neighbours, CPU)
        np.testing.assert_allclose(model.weights.toarray(), expect.toarray(), rtol=1e-6, atol=1e-7)


def test_ease_beyond_the_memory_budget_is_refused_by_name_and_auto_falls_back_to_knn():
    assert ease_fits(23170, 8.0) and not ease_fits(23171, 8.0)
    assert EASE_COPIES * 4 * 23170**2 <= 8 * 2**30
    table, n_users, n_items = _planted()
    tiny = 4 * EASE_COPIES * (n_items - 1) ** 2 / 2**30
    model = fit_personal(table, n_users, n_items, CPU, RecommendConfig(memory_gib=tiny, neighbours=(5, 10)), 0)
    assert model.kind == "knn" and {c["kind"] for c in model.selection["contenders"]} == {"knn"}
    with pytest.raises(UsageError, match="recommend.memory_gib"):
        fit_personal(table, n_users, n_items, CPU, RecommendConfig(personal="ease", memory_gib=tiny), 0)
    assert fit_personal(table, n_users, n_items, CPU, RecommendConfig(personal="none"), 0) is None


def test_users_below_the_threshold_get_their_segment_list():
    x = _matrix(n_users=6, n_items=8, p=0.0)
    x[0, :4] = 1  # four items: personal
    x[1, :1] = 1  # one item: segment
    seen = binary_matrix(*np.nonzero(x), *x.shape, CPU)
    model = PersonalModel("ease", ease_weights(gram(binary_matrix(*np.nonzero(_matrix(n_items=8)), 40, 8, CPU)),
                                                1.0, CPU), 1.0)
    table = np.zeros((3, 8), np.float32)
    table[0, 7], table[1, 6], table[2, 5] = 1.0, 1.0, 1.0  # cluster 0 likes 7, cluster 1 likes 6, global 5
    items, scores, personal = recommend_rows(model, table, 1.0, np.array([0, 1, 0, 1, 0, 1]), seen, 3, 2, CPU)
    assert personal.tolist() == [True, False, False, False, False, False]
    assert items[1, 0] == 6 and items[2, 0] == 7 and 0 not in items[1]
    np.testing.assert_array_equal(items[0], top_items(model, seen[[0]], 3, CPU)[0][0])


@pytest.mark.parametrize("setting, message", [
    ({"personal": "slim"}, "recommend.personal"), ({"lambdas": []}, "recommend.lambdas"),
    ({"lambdas": [100, -1]}, "recommend.lambdas"), ({"neighbours": [0]}, "recommend.neighbours"),
    ({"memory_gib": 0}, "recommend.memory_gib"), ({"min_items": 0}, "recommend.min_items"),
])
def test_recommend_settings_are_validated(setting, message):
    with pytest.raises(UsageError, match=message):
        PipelineConfig.from_dict({"recommend": setting}).validate()


def test_restore_refuses_weights_that_do_not_fit():
    good = PersonalModel("ease", np.zeros((3, 3), np.float32), 10.0)
    assert PersonalModel.restore(good.to_meta(), good.arrays(), 3, CPU).lam == 10.0
    bad = np.zeros((3, 3), np.float32)
    bad[0, 1] = np.nan
    for meta, arrays, n in [(good.to_meta(), {"weights": bad}, 3), (good.to_meta(), good.arrays(), 4),
                            ({**good.to_meta(), "lambda": -1.0}, good.arrays(), 3),
                            ({**good.to_meta(), "kind": "slim"}, good.arrays(), 3)]:
        with pytest.raises(ValueError):
            PersonalModel.restore(meta, arrays, n, CPU)
    x = binary_matrix(*np.nonzero(_matrix(seed=3)), 40, 12, CPU)
    knn = PersonalModel("knn", knn_weights(*knn_neighbours(x, 4, CPU), 4, CPU), None, 4)
    back = PersonalModel.restore(knn.to_meta(), knn.arrays(), 12, CPU)
    assert (back.weights != knn.weights).nnz == 0
    arrays = knn.arrays()
    arrays["indices"] = arrays["indices"].copy()
    arrays["indices"][0] = 99
    with pytest.raises(ValueError, match="out of range"):
        PersonalModel.restore(knn.to_meta(), arrays, 12, CPU)


# --- in the estimator ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fitted():
    from gpuclust import UserClusterer
    from tests.helpers import blob_events

    events, items, _ = blob_events(n_users=240, n_groups=3)
    return UserClusterer(3, device="cpu", seed=0).fit(events, items), events


def test_fit_records_the_chosen_personal_model_and_each_contenders_inner_hr(fitted):
    model, _ = fitted
    record = model.manifest_["recommend"]["personal"]
    assert record["kind"] == model.personal_.kind == record["selection"]["chosen"]["kind"]
    contenders = record["selection"]["contenders"]
    assert len(contenders) == 4 + 3 and all(0 <= c["HR@10"] <= 1 for c in contenders)
    assert model.personal_.n_items == len(model.vocabulary_)


def test_recommend_gives_personal_lists_and_segment_lists_below_the_threshold(fitted):
    import copy

    fitted_model, events = fitted
    model = copy.copy(fitted_model)
    model.config_ = copy.deepcopy(fitted_model.config_)
    model.config_.recommend.min_items = 2
    some = events[events.user_id.isin([100, 101])]
    one = events[events.user_id == 102].head(1)  # a single item: below min_items = 2
    out = model.recommend(pd.concat([some, one]), top_k=5)
    assert list(out.columns) == ["user_id", "rank", "item_id", "score", "source"]
    assert out.groupby("user_id").size().tolist() == [5, 5, 5]
    assert set(out[out.user_id != 102].source) == {"personal"} and set(out[out.user_id == 102].source) == {"segment"}
    given = pd.concat([some, one])
    for user, rows in out.groupby("user_id"):
        assert rows["rank"].tolist() == [1, 2, 3, 4, 5] and rows.score.is_monotonic_decreasing
        assert not set(rows.item_id) & set(given[given.user_id == user].item_id)
    cluster = int(model.predict(one).cluster.iloc[0])
    segment = model.segments_.scores(cluster)
    segment[int(model.vocabulary_.reset_index().set_index("item_id").loc[one.item_id.iloc[0], "index"])] = -np.inf
    expected = model.vocabulary_.item_id.to_numpy()[np.argsort(-segment, kind="stable")[:5]]
    assert set(out[out.user_id == 102].item_id) == set(expected)
    with pytest.raises(UsageError, match="top_k"):
        model.recommend(some, top_k=0)
    with pytest.raises(UsageError, match="vocabulary"):
        model.recommend_indices(binary_matrix([0], [0], 1, 5, CPU), np.zeros(1, np.int64))


def test_a_saved_model_recommends_exactly_as_the_fitted_one(fitted, tmp_path):
    from gpuclust import UserClusterer

    model, events = fitted
    model.save(tmp_path / "m")
    loaded = UserClusterer.load(tmp_path / "m")
    assert loaded.personal_.kind == model.personal_.kind and loaded.personal_.lam == model.personal_.lam
    if model.personal_.kind == "ease":
        np.testing.assert_array_equal(loaded.personal_.weights, model.personal_.weights)
    sample = events[events.user_id < 130]
    pd.testing.assert_frame_equal(loaded.recommend(sample), model.recommend(sample))


def test_a_saved_model_with_non_finite_weights_is_refused(fitted, tmp_path):
    from safetensors.numpy import load_file, save_file

    from gpuclust import UserClusterer
    from tests.test_model_tampering import rewrite_checksums

    model, _ = fitted
    model.save(tmp_path / "m")
    arrays = load_file(str(tmp_path / "m" / "arrays.safetensors"))
    name = next(k for k in arrays if k.startswith("recommend.personal.") and arrays[k].dtype == np.float32)
    arrays[name] = arrays[name].copy()
    arrays[name].flat[1] = np.inf
    save_file(arrays, str(tmp_path / "m" / "arrays.safetensors"))
    rewrite_checksums(tmp_path / "m")
    with pytest.raises(UsageError, match="malformed|damaged"):
        UserClusterer.load(tmp_path / "m")


def test_each_cluster_gets_items_to_promote_that_few_of_it_have_with_their_lift(fitted):
    """(The blob groups own their whole item range, so lists may be short here; the planted case below
    checks which items come first.)"""
    model, events = fitted
    labels = model.labels_.set_index("user_id").cluster
    for profile in model.profiles_:
        promote = profile["promote"]
        assert len(promote) <= 10 and [p["score"] for p in promote] == sorted((p["score"] for p in promote),
                                                                                  reverse=True)
        members = labels[labels == profile["cluster"]].index
        bought = events[events.user_id.isin(members)].groupby("item_id").user_id.nunique() / len(members)
        for p in promote:
            assert p["owned_share"] <= 0.1 and bought.get(p["item_id"], 0.0) == pytest.approx(p["owned_share"], abs=1e-4)
            assert p["lift"] > 0


def test_promotions_follow_the_segments_taste_on_planted_groups():
    from gpuclust.recommend.campaign import promotions

    x = np.zeros((40, 8), np.float32)
    x[:20, :3] = 1  # segment 0 buys items 0-2; its half also buy 3
    x[:10, 3] = 1
    x[20:, 4:7] = 1  # segment 1 buys 4-6; its half also buy 7
    x[20:30, 7] = 1
    user, item = np.nonzero(x)
    model = PersonalModel("ease", ease_weights(gram(binary_matrix(user, item, 40, 8, CPU)), 1.0, CPU), 1.0)
    promoted = promotions(model, binary_matrix(user, item, 40, 8, CPU), np.repeat([0, 1], 20), 2, CPU, max_owned=0.5)
    assert promoted[0][0]["item_idx"] == 3 and promoted[1][0]["item_idx"] == 7
    assert promoted[0][0]["lift"] > 1 and promoted[0][0]["owned_share"] == 0.5


def test_a_model_without_a_personal_part_serves_segment_lists_and_saves_without_one(tmp_path):
    from gpuclust import UserClusterer
    from tests.helpers import blob_events

    events, items, _ = blob_events(n_users=90, n_groups=3)
    config = PipelineConfig(device="cpu")
    config.recommend.personal = "none"
    model = UserClusterer(3, config=config).fit(events, items)
    assert model.personal_ is None and model.manifest_["recommend"]["personal"] is None
    assert set(model.recommend(events.head(40), top_k=3).source) == {"segment"}
    assert UserClusterer.load(model.save(tmp_path / "m")).personal_ is None


def _fit_and_list(backend) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same small fit and lists on any backend: B, and the top-5 of both kinds for every user."""
    from gpuclust.backend import to_host

    table, n_users, n_items = _planted(n_users=300, n_items=120)
    on = EventTable(*(backend.asarray(a) for a in (table.user, table.item, table.event, table.time, table.value,
                                                     table.weight, table.offsets)), table.event_names, backend.xp)
    ease = fit_personal(on, n_users, n_items, backend, RecommendConfig(personal="ease", lambdas=(10.0,)), 0)
    knn = fit_personal(on, n_users, n_items, backend, RecommendConfig(personal="knn", neighbours=(5,)), 0)
    seen = binary_matrix(on.user, on.item, n_users, n_items, backend)
    return (to_host(ease.weights), to_host(top_items(ease, seen, 5, backend)[0]),
            to_host(top_items(knn, seen, 5, backend)[0]))


def test_the_cpu_twin_of_the_gpu_path_runs_the_same_code():
    weights, ease_top, knn_top = _fit_and_list(CPU)
    assert weights.dtype == np.float32 and ease_top.shape == knn_top.shape == (300, 5)


@pytest.mark.gpu
def test_ease_and_knn_on_cupy_agree_with_numpy():
    gpu = resolve_backend("cuda")
    cpu_weights, cpu_ease, cpu_knn = _fit_and_list(CPU)
    gpu_weights, gpu_ease, gpu_knn = _fit_and_list(gpu)
    np.testing.assert_allclose(gpu_weights, cpu_weights, rtol=1e-3, atol=1e-4)
    assert (gpu_ease[:, 0] == cpu_ease[:, 0]).mean() > 0.95 and (gpu_knn[:, 0] == cpu_knn[:, 0]).mean() > 0.95


def test_cli_recommend_prints_the_campaign_view_and_users_lists(fitted, tmp_path, monkeypatch, capsys):
    import json

    from gpuclust.run import write_outputs
    from tests.helpers import cli

    model, events = fitted
    write_outputs(model, tmp_path / "run")
    assert all("promote" in p for p in json.loads((tmp_path / "run" / "clusters.json").read_text())["clusters"])
    code, out, _ = cli(monkeypatch, capsys, "recommend", "--run", tmp_path / "run", "--segments", "--json")
    assert code == 0 and [row["cluster"] for row in json.loads(out)] == [p["cluster"] for p in model.profiles_]
    events.head(60).to_parquet(tmp_path / "events.parquet")
    code, out, _ = cli(monkeypatch, capsys, "recommend", "--run", tmp_path / "run", "--events",
                       tmp_path / "events.parquet", "--top-k", 3)
    assert code == 0 and out.splitlines()[0] == "user_id,rank,item_id,score,source"
    assert len(out.splitlines()) == 1 + 3 * events.head(60).user_id.nunique()
    code, _, err = cli(monkeypatch, capsys, "recommend", "--run", tmp_path / "run")
    assert code == 2 and "exactly one of --segments" in err


def test_auto_takes_item_knn_beyond_the_cpu_time_bound_but_a_gpu_keeps_ease():
    from gpuclust.recommend.personal import EASE_CPU_ITEMS, _kinds

    config = RecommendConfig()
    assert _kinds(config, EASE_CPU_ITEMS, on_gpu=False) == ("ease", "knn")
    assert _kinds(config, EASE_CPU_ITEMS + 1, on_gpu=False) == ("knn",)
    assert _kinds(config, EASE_CPU_ITEMS + 1, on_gpu=True) == ("ease", "knn")
    assert _kinds(RecommendConfig(personal="ease"), EASE_CPU_ITEMS + 1, on_gpu=False) == ("ease",)
