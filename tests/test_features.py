import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from gpuclust.backend import cpu_backend
from gpuclust.features.behaviour import behaviour_statistics
from gpuclust.features.fuse import Fuser
from gpuclust.features.normalise import Normaliser
from gpuclust.features.svd import randomized_svd
from gpuclust.features.tfidf import TfidfFeaturizer, tfidf, user_vocabulary_counts
from gpuclust.preprocess.clean import Preprocessor
from tests.helpers import blob_events

B = cpu_backend()


def prepared(n_users=60):
    ev, items, _ = blob_events(n_users=n_users)
    return Preprocessor().run(ev, B, items)


def test_behaviour_statistics_on_a_known_history():
    ev = pd.DataFrame({
        "user_id": [1, 1, 1, 2],
        "item_id": [10, 10, 11, 10],
        "event_type": ["view", "purchase", "view", "view"],
        # user 1: two events 5 minutes apart, then one 2 days later -> 2 sessions
        "timestamp": pd.to_datetime(["2026-01-01 10:00", "2026-01-01 10:05", "2026-01-03 10:05",
                                     "2026-01-04 10:05"]),
        "value": [0.0, 20.0, 0.0, 0.0],
    })
    data = Preprocessor().run(ev, B)
    raw = behaviour_statistics(data, B).frame(B)
    u1 = raw.loc[0]
    assert u1["sessions"] == 2 and u1["events"] == 3 and u1["monetary"] == 20
    assert u1["recency_days"] == pytest.approx(1.0) and u1["span_days"] == pytest.approx(2 + 5 / 1440, rel=1e-4)
    assert u1["share_purchase"] == pytest.approx(1 / 3) and u1["distinct_items"] == 2
    assert raw.loc[1, "recency_days"] == 0
    assert u1["purchases_per_session"] == pytest.approx(0.5) and raw.loc[1, "purchases_per_session"] == 0


def test_purchases_per_session_is_chosen_per_user_or_for_all():
    """table_statistics takes `purchases_per_session` as one bool (the fit's default True) or one per user
    (the service's requests); both go through an array condition, which cupy.where needs (a Python bool
    has no .astype there)."""
    from gpuclust.features.behaviour import table_statistics

    ev = pd.DataFrame({"user_id": [1, 1, 2, 2], "item_id": [10, 11, 10, 11],
                       "event_type": ["view", "purchase", "purchase", "view"],
                       "timestamp": pd.to_datetime(["2026-01-01 10:00", "2026-01-01 10:05", "2026-01-02 10:00",
                                                    "2026-01-02 10:01"]),
                       "value": [0.0, 5.0, 7.0, 0.0]})
    data = Preprocessor().run(ev, B)
    ref = int(pd.Timestamp(data.reference_time).value)
    types = ("view", "purchase")

    def column(pps):
        raw = table_statistics(data.table, data.n_users, data.n_items, ref, types, 30.0, pps)
        return raw.column("purchases_per_session").tolist()

    assert column(True) == [1.0, 1.0]
    assert column(False) == [0.0, 0.0]
    assert column(np.array([True, False])) == [1.0, 0.0]


@pytest.mark.parametrize("method", ["standard", "minmax", "log1p", "quantile"])
def test_normalisers_bound_scale(method):
    x = np.random.default_rng(0).lognormal(0, 3, size=(500, 4)).astype(np.float32)
    fitted = Normaliser(method).fit(x, np)
    y = fitted.transform(x, np)
    if method in ("standard", "log1p"):
        np.testing.assert_allclose(y.std(axis=0), 1, rtol=1e-3)
    else:
        assert y.min() >= 0 and y.max() <= 1
    # New rows use the fitted statistics, not their own.
    np.testing.assert_allclose(fitted.transform(x[:10], np), y[:10], rtol=1e-5, atol=1e-6)


def test_tfidf_matches_a_dense_reference():
    counts = sp.coo_matrix(np.array([[2.0, 0, 1], [0, 3, 0], [1, 1, 1]], dtype=np.float32))
    got = tfidf(counts, B)[0].toarray()
    dense = counts.toarray()
    tf = np.log1p(dense)
    idf = np.log(4 / (1 + (dense > 0).sum(axis=0))) + 1
    ref = tf * idf
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_randomized_svd_finds_the_top_singular_values():
    rng = np.random.default_rng(0)
    low_rank = (rng.normal(size=(400, 30)) * np.geomspace(10, 0.1, 30)) @ rng.normal(size=(30, 300))
    x = sp.csr_matrix(low_rank.astype(np.float32))
    _, s, vt = randomized_svd(x, 10, np, seed=0)
    exact = np.linalg.svd(x.toarray(), compute_uv=False)[:10]
    np.testing.assert_allclose(s, exact, rtol=1e-3)
    np.testing.assert_allclose(vt @ vt.T, np.eye(10), atol=1e-4)


def test_randomized_svd_by_row_shares_matches_one_share(monkeypatch):
    """Threads change only the order of float sums: every share count gives the one-share answer."""
    from gpuclust import backend as backend_module

    rng = np.random.default_rng(1)
    x = sp.random(997, 300, density=0.05, random_state=2, format="csr", dtype=np.float32)
    x.data = rng.random(x.nnz, dtype=np.float32)
    monkeypatch.setattr(backend_module, "cpu_threads", lambda: 1)
    _, s_one, vt_one = randomized_svd(x, 12, np, seed=3)
    for threads in (2, 3, 7):
        monkeypatch.setattr(backend_module, "cpu_threads", lambda threads=threads: threads)
        assert len(backend_module.row_shares(997, np)) == threads
        _, s, vt = randomized_svd(x, 12, np, seed=3)
        np.testing.assert_allclose(s, s_one, rtol=1e-5)
        np.testing.assert_allclose(vt, vt_one, atol=1e-4)


@pytest.mark.parametrize("spread", [1.0, 1e4])
def test_orthonormalise_takes_a_second_pass_only_when_the_sketch_is_ill_conditioned(monkeypatch, spread):
    from gpuclust.features import svd

    y = np.random.default_rng(0).normal(size=(2000, 16)) * np.geomspace(1, spread, 16)
    passes = []
    real = svd.cholesky_factor
    monkeypatch.setattr(svd, "cholesky_factor", lambda g, xp: passes.append(1) or real(g, xp))
    q = svd.orthonormalise(y.astype(np.float32), np)
    assert len(passes) == (1 if spread == 1.0 else 2)
    np.testing.assert_allclose(q.T.astype(np.float64) @ q, np.eye(16), atol=1e-5)


def test_tfidf_featuriser_blocks_are_unit_rows():
    data = prepared()
    f = TfidfFeaturizer(n_components=12)
    x = f.fit_transform(data, B)
    assert x.shape == (data.n_users, 12 + 9)  # 12 item components + 9 categories kept whole
    np.testing.assert_allclose(np.linalg.norm(x[:, :12], axis=1), 1, rtol=1e-4)
    assert f.info_["vocabularies"]["item"]["terms"] == data.n_items


@pytest.mark.parametrize("vocabularies", [("item", "category"), ("category",)])
def test_a_category_column_without_values_is_skipped_as_a_missing_one(vocabularies):
    """A category column of nulls made a block of 0 terms (and with no other vocabulary, features of 0 columns,
    blamed on the featuriser); it is skipped as a missing column is, and named where nothing is left."""
    from gpuclust.errors import UsageError

    ev, items, _ = blob_events(n_users=60)
    data = Preprocessor().run(ev, B, items.assign(category=None))
    f = TfidfFeaturizer(vocabularies, n_components=12)
    if vocabularies == ("category",):
        with pytest.raises(UsageError, match="no vocabulary to use.*category column has values"):
            f.fit_transform(data, B)
        return
    assert f.fit_transform(data, B).shape == (data.n_users, 12)
    assert f.info_["vocabularies"]["category"] == "skipped: the items input's category column has no values"
    assert set(f.fitted_) == {"item"} and f.transform(data, B).shape == (data.n_users, 12)


def test_event_weights_enter_the_counts():
    data = prepared(10)
    counts = user_vocabulary_counts(data, B, "item").tocsr()
    assert counts.sum() == pytest.approx(data.events["weight"].sum())


def test_fused_blocks_share_the_geometry_by_weight():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 100, size=(200, 3)).astype(np.float32)
    b = rng.normal(0, 0.01, size=(200, 50)).astype(np.float32)
    fuser = Fuser({"a": 1.0, "b": 3.0})
    x = fuser.fit_transform({"a": a, "b": b}, np)
    layout = fuser.layout_
    var_a = x[:, :3].var(axis=0).sum()
    var_b = x[:, 3:].var(axis=0).sum()
    assert var_b / var_a == pytest.approx(3.0, rel=1e-3)
    assert layout["b"]["columns"] == [3, 53]
    np.testing.assert_allclose(fuser.transform({"a": a[:5], "b": b[:5]}, np), x[:5], rtol=1e-5)


def _silent_cholesky(keep_failed_pivot: bool):
    """np.linalg.cholesky as CuPy gives it by default: cuSOLVER's potrf fails a pivot without raising and
    returns a partial factor (the failed pivot stored on the diagonal, or the tail left as it was)."""
    def cholesky(a):
        chol = np.tril(np.array(a, dtype=np.float64))
        for j in range(chol.shape[0]):
            pivot = chol[j, j] - chol[j, :j] @ chol[j, :j]
            if not pivot > 0:
                if keep_failed_pivot:
                    chol[j, j] = pivot
                return chol
            chol[j, j] = np.sqrt(pivot)
            chol[j + 1:, j] = (chol[j + 1:, j] - chol[j + 1:, :j] @ chol[j, :j]) / chol[j, j]
        return chol
    return cholesky


@pytest.mark.parametrize("keep_failed_pivot", [True, False])
def test_cholqr_falls_back_to_qr_when_cholesky_fails_silently(monkeypatch, keep_failed_pivot):
    from gpuclust.features.svd import cholesky_factor, orthonormalise

    rng = np.random.default_rng(0)
    y = rng.normal(size=(500, 8)).astype(np.float32)
    y[:, 5] = 0.0  # a rank-deficient sketch: its Gram has an exactly zero pivot
    gram = y.astype(np.float64).T @ y.astype(np.float64)
    assert cholesky_factor(gram, np) is None  # NumPy raises: rejected
    good = gram + np.eye(8)
    np.testing.assert_allclose(cholesky_factor(good, np), np.linalg.cholesky(good))

    monkeypatch.setattr(np.linalg, "cholesky", _silent_cholesky(keep_failed_pivot))
    assert cholesky_factor(gram, np) is None  # no exception, but not a factor: rejected all the same
    q = orthonormalise(y, np)
    assert np.isfinite(q).all()
    reference = np.linalg.qr(y.astype(np.float64))[0]
    np.testing.assert_allclose(np.abs(q), np.abs(reference), atol=1e-5)  # the QR fallback ran
    np.testing.assert_allclose(cholesky_factor(good, np), np.linalg.cholesky(good))  # a true factor passes


@pytest.mark.parametrize("method", ["standard", "log1p", "minmax"])
def test_a_column_constant_at_fit_time_keeps_new_users_on_a_sane_scale(method):
    """20 events for every user: float32 leaves a spread of ~1e-7; dividing by it sent every new user to
    distances around 1e5 (and all into one cluster)."""
    fit = np.column_stack([np.full(1000, 20.0, np.float32), np.random.default_rng(0).random(1000, np.float32)])
    norm = Normaliser(method).fit(fit, np)
    new = norm.transform(np.array([[21.0, 0.5], [19.0, 0.5]], np.float32), np)
    assert np.all(np.abs(new[:, 0]) < 25)


def test_behaviour_sums_beyond_float32_stay_finite():
    """Ten purchases of 3e38 sum past float32: held at its largest value, not infinite (as the service)."""
    import pandas as pd

    from gpuclust.backend import resolve_backend
    from gpuclust.features.behaviour import behaviour_statistics
    from gpuclust.preprocess.clean import Preprocessor

    events = pd.DataFrame({"user_id": [1] * 10 + [2] * 10, "item_id": list(range(20)), "event_type": "purchase",
                           "timestamp": pd.Timestamp("2026-01-01") + pd.to_timedelta(range(20), unit="h"),
                           "value": np.float32(3e38)})
    backend = resolve_backend("cpu")
    stats = behaviour_statistics(Preprocessor().run(events, backend), backend)
    assert np.isfinite(stats.values).all()
    assert stats.column("monetary")[0] == np.finfo(np.float32).max


def test_tfidf_counts_beyond_float32_stay_finite():
    """Event weights of 3e38 sum past float32 in the counts: held at its largest value, not infinite (which
    made rows NaN and the run fail with "featuriser 'tfidf' returned NaN or infinite features")."""
    from gpuclust.config import PreprocessConfig

    ev, items, _ = blob_events(n_users=40)
    weights = {"view": 3e38, "click": 3e38, "cart": 3e38, "purchase": 3e38}
    data = Preprocessor(PreprocessConfig(event_weights=weights)).run(ev, B, items)
    x = TfidfFeaturizer(n_components=8).fit_transform(data, B)
    assert np.isfinite(x).all()
    np.testing.assert_allclose(np.linalg.norm(x[:, :8], axis=1), 1, rtol=1e-4)

