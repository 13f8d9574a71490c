"""The pipeline on a Dask cluster (`--scheduler`, `UserClusterer(scheduler=...)`): the same clusters as one
process, Parquet datasets in, partitioned assignments out, a killed worker, bad input. Ctrl-C, SIGTERM and
hostile options and datasets: tests/test_distributed_hostile.py."""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pandas as pd
import pytest

from gpuclust import UserClusterer
from gpuclust.config import PipelineConfig
from gpuclust.errors import UsageError
from tests.helpers import cli

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    """Two single-threaded worker processes, as `--scheduler local --workers 2` starts them."""
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                       memory_limit="3GiB", silence_logs=50)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def synth20k():
    from gpuclust.synth import SynthSpec, generate

    return generate(SynthSpec(n_users=20_000, n_items=3000, n_groups=8, seed=3, events_per_user=30.0))


def _ari(a: pd.DataFrame, b: pd.DataFrame) -> float:
    from sklearn.metrics import adjusted_rand_score

    joined = a.merge(b, on="user_id")
    assert len(joined) == len(a) == len(b)
    return adjusted_rand_score(joined["cluster_x"], joined["cluster_y"])


def test_same_clusters_as_one_process_on_20k_users(client, synth20k):
    data = synth20k
    single = UserClusterer(8, seed=0).fit(data.events, data.items, data.truth)
    spread = UserClusterer(8, seed=0, scheduler=client).fit(data.events, data.items, data.truth)
    assert _ari(single.labels_, spread.labels_) >= 0.95
    assert abs(single.metrics_["ari"] - spread.metrics_["ari"]) <= 0.02
    assert spread.metrics_["ari"] > 0.85
    # The same fitted attributes, of the same kinds: a pandas frame in gives pandas frames out.
    assert list(spread.labels_.columns) == list(single.labels_.columns)
    assert spread.cluster_centers_.shape == single.cluster_centers_.shape
    assert [f.name for f in spread.featurizers_] == [f.name for f in single.featurizers_]
    assert len(spread.profiles_) == 8 and all(p["exemplars"] for p in spread.profiles_)
    assert len(spread.anomalies_) == 20 and spread.map_.shape[0] == 20_000
    for key in ("silhouette", "davies_bouldin", "calinski_harabasz"):  # CH and DB over all users, by reductions
        assert spread.metrics_[key] == pytest.approx(single.metrics_[key], rel=0.05)
    stages = spread.manifest_["timings"]["stages"]
    assert {"preprocess", "features.tfidf", "cluster", "explain"} <= set(stages)
    assert all(len(stages[s]["worker_peak_rss_mib"]) == 2 for s in ("preprocess", "cluster"))
    assert spread.manifest_["dask"]["workers"] == 2 and spread.manifest_["rows"]["users"] == 20_000
    # New users are placed by the model alone, however it was fitted.
    some = data.events[data.events["user_id"].isin(data.truth["user_id"].head(300))]
    placed = spread.predict(some)
    fitted = spread.labels_.set_index("user_id").loc[placed["user_id"], "cluster"].to_numpy()
    assert (placed["cluster"].to_numpy() == fitted).mean() > 0.99
    # What serving and drift need, summed over partitions: the global popularity does not depend on labels.
    np.testing.assert_allclose(spread.segments_.table[-1], single.segments_.table[-1], rtol=1e-5, atol=1e-7)
    assert 0 <= spread.segments_.blend_weight <= 1 and spread.segments_.table.shape == single.segments_.table.shape
    assert spread.drift_baseline_["users"] == single.drift_baseline_["users"] == 20_000
    assert spread.drift_baseline_["event_type_shares"] == pytest.approx(single.drift_baseline_["event_type_shares"])
    assert spread.drift_baseline_["mean_distance"] == pytest.approx(single.drift_baseline_["mean_distance"], rel=0.05)


def _sum(x: np.ndarray) -> float:
    return float(x.sum())


def test_what_a_fit_broadcasts_survives_the_death_of_every_worker_holding_it(client):
    """The flake of the test below, made certain: the scheduler's active memory manager trims a scatter's
    replicas to one, and scattered data has no lineage, so killing its holder lost it ("lost
    dependencies"). A broadcast value is a task's result now: computed again on a live worker."""
    from gpuclust.distributed.blocks import broadcast

    value = broadcast(client, np.arange(100_000, dtype=np.float64))
    value.result()
    holders = client.who_has(value)[value.key]
    pids = client.run(os.getpid, workers=list(holders))
    for pid in pids.values():
        os.kill(pid, signal.SIGKILL)
    assert client.submit(_sum, value, pure=False).result(timeout=120) == float(np.arange(100_000).sum())
    client.wait_for_workers(2, timeout=60)


def test_a_worker_killed_mid_run_loses_nothing(client, synth20k):
    """Kill one worker process (as the OOM killer would) once the prepared partitions live on the workers:
    Dask recomputes what it held from the lineage and the fit completes with every user."""
    data = synth20k
    pids = client.run(os.getpid)
    victim = sorted(pids.values())[0]
    killed = []

    def on_stage(name: str) -> None:
        if name == "features.tfidf" and not killed:
            os.kill(victim, signal.SIGKILL)
            killed.append(name)

    model = UserClusterer(8, seed=0, scheduler=client, progress=on_stage).fit(data.events, data.items, data.truth)
    assert killed
    assert len(model.labels_) == 20_000 and model.labels_["user_id"].is_unique
    assert model.metrics_["ari"] > 0.85
    client.wait_for_workers(2, timeout=60)  # the nanny restarted it


def test_a_worker_restarted_mid_run_imports_the_task_modules_before_its_first_task():
    """A worker the nanny restarted (after the kill above) once failed a task with "_DeadlockError: deadlock
    detected by _ModuleLock('scipy.sparse._csr')": a task thread and the thread unpickling a sparse matrix
    imported scipy.sparse at once. The session's worker plugin imports them as any worker starts."""
    from gpuclust.distributed.cluster import open_session
    from gpuclust.distributed.worker_setup import TASK_MODULES

    def imported() -> list[str]:
        import sys

        return [name for name in TASK_MODULES if name in sys.modules]

    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                                  memory_limit="1GiB", silence_logs=50) as cluster, distributed.Client(cluster) as c:
        assert list(c.run(imported).values()) == [[]]  # a bare worker has imported none of them
        with open_session(c, PipelineConfig().dask):
            assert list(c.run(imported).values()) == [list(TASK_MODULES)]
            os.kill(next(iter(c.run(os.getpid).values())), signal.SIGKILL)
            time.sleep(1)
            c.wait_for_workers(1, timeout=60)
            assert list(c.run(imported).values()) == [list(TASK_MODULES)]  # the restarted one too


def test_block_svd_matches_the_single_process_svd(client):
    import scipy.sparse as sp

    from gpuclust.distributed.blocks import Blocks
    from gpuclust.distributed.svd import block_randomized_svd
    from gpuclust.features.svd import randomized_svd

    x = sp.random(3000, 400, density=0.02, format="csr", random_state=1, dtype=np.float32)
    _, s_one, vt_one = randomized_svd(x, 12, np, seed=4)
    blocks = [x[i:i + 700] for i in range(0, 3000, 700)]
    futures = client.scatter(blocks)
    s, vt, squares = block_randomized_svd(Blocks(client, futures, [b.shape[0] for b in blocks]), 400, 12, seed=4)
    np.testing.assert_allclose(s, s_one, rtol=1e-4)
    np.testing.assert_allclose(np.abs(vt @ vt_one.T), np.eye(12), atol=2e-3)
    assert squares == pytest.approx(float((x.data.astype(np.float64) ** 2).sum()))


def test_parquet_dataset_in_partitioned_assignments_out(tmp_path, monkeypatch, capsys):
    """A multi-file Parquet dataset through `gpuclust run --scheduler local`, then `assign` on the cluster;
    the saved model is an ordinary one."""
    data = tmp_path / "data"
    code, _, err = cli(monkeypatch, capsys, "synth", "--users", "9000", "--items", "1500", "--groups", "6",
                       "--files", "3", "--out", data, "--json")
    assert code == 0, err
    assert sorted(p.name for p in (data / "events").iterdir()) == [f"part.{i}.parquet" for i in range(3)]
    out = tmp_path / "run"
    code, stdout, err = cli(monkeypatch, capsys, "run", "--events", data / "events", "--items", data / "items.parquet",
                            "--truth", data / "truth.parquet", "--k", "6", "--scheduler", "local", "--workers", "2",
                            "--partitions", "5", "--out", out, "--json")
    assert code == 0, err
    result = json.loads(stdout)
    assert result["metrics"]["ari"] > 0.8
    parts = sorted((out / "assignments").iterdir())
    assert [p.name for p in parts] == [f"part.{i}.parquet" for i in range(5)]
    labels = pd.read_parquet(out / "assignments")
    assert len(labels) == 9000 and labels["user_id"].is_unique
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dask"]["kind"] == "LocalCluster" and manifest["assignments"]["files"] == 5
    assert manifest["inputs"]["events_read"] == "lazy"
    assert not (out / "assignments.parquet").exists()

    model = UserClusterer.load(out / "model")  # an ordinary model folder
    assert model.n_clusters_ == 6 and len(model.labels_) == 9000
    placed = tmp_path / "placed"
    code, _, err = cli(monkeypatch, capsys, "assign", "--model", out / "model", "--events", data / "events",
                       "--out", placed, "--scheduler", "local", "--workers", "2")
    assert code == 0, err
    again = pd.read_parquet(placed / "assignments")
    joined = labels.merge(again, on="user_id")
    assert len(joined) == 9000 and (joined["cluster_x"] == joined["cluster_y"]).mean() > 0.99
    single = tmp_path / "single"  # and the single-process assign of the same model agrees
    code, _, err = cli(monkeypatch, capsys, "assign", "--model", out / "model", "--events", data / "events" /
                       "part.0.parquet", "--out", single)
    assert code == 0, err
    one = pd.read_parquet(single / "assignments.parquet").merge(again, on="user_id")
    assert (one["cluster_x"] == one["cluster_y"]).mean() > 0.99


def test_bad_input_is_one_line_and_exit_2_before_any_work(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "events"
    folder.mkdir()
    pd.DataFrame({"customer": [1, 2], "item_id": [1, 2], "event_type": ["view", "view"],
                  "timestamp": pd.to_datetime(["2026-01-01", "2026-01-02"])}).to_parquet(folder / "part.0.parquet")
    started = time.perf_counter()
    code, _, err = cli(monkeypatch, capsys, "run", "--events", folder, "--scheduler", "local", "--out", tmp_path / "o")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "'user_id' not found" in err and "customer" in err
    assert time.perf_counter() - started < 5  # the first fragment's schema, before a cluster starts
    assert not (tmp_path / "o").exists()
    (folder / "part.1.parquet").write_bytes(b"not parquet at all")
    (folder / "part.0.parquet").write_bytes(b"PAR1 broken")
    code, _, err = cli(monkeypatch, capsys, "run", "--events", folder, "--scheduler", "local", "--out", tmp_path / "o")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "not a readable Parquet file" in err
    code, _, err = cli(monkeypatch, capsys, "run", "--events", tmp_path / "nothing-*.parquet", "--scheduler", "local",
                       "--out", tmp_path / "o")
    assert code == 2 and "no file matches" in err


@pytest.mark.parametrize("flags, message", [
    (["--algorithm", "dbscan"], "--algorithm dbscan does not run on a Dask cluster"),
    (["--k", "auto"], "a k sweep"),
    (["--reduce", "pca"], "--reduce pca does not run"),
    (["--engine", "faiss"], "--engine faiss does not run"),
    (["--scheduler", "somewhere:8786"], "neither 'local' nor a scheduler address"),
    (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "--workers (dask.workers) has no effect without --scheduler local"),
])
def test_what_does_not_run_on_a_cluster_is_one_clear_error(tmp_path, monkeypatch, capsys, flags, message):
    args = ["run", "--events", tmp_path / "e.parquet", "--out", tmp_path / "o", *flags]
    if "--scheduler" not in flags:
        args += ["--scheduler", "local"]
    code, _, err = cli(monkeypatch, capsys, *args)
    assert code == 2 and message in err


def _mixed_case_types(path) -> pd.DataFrame:
    """An events file whose types need the cleaner's reading: " View" and "PURCHASE" are known, "Bogus",
    " bogus", "WISHLIST " and empty cells are not; most users have only unknown types, so some partitions
    have no known type at all."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(40):
        kinds = [" View", "PURCHASE", "view", "Bogus"] if u < 16 else ["Bogus", " bogus", "WISHLIST ", None]
        rows += [{"user_id": f"u{u}", "item_id": int(rng.integers(0, 12)), "event_type": kinds[j % 4],
                  "timestamp": pd.Timestamp("2026-01-01") + pd.Timedelta(minutes=100 * u + j)} for j in range(8)]
    pd.DataFrame(rows).to_csv(path, index=False)
    return pd.read_csv(path, parse_dates=["timestamp"])


def test_unknown_event_types_are_counted_as_one_process_counts_them(client, tmp_path):
    """Partitions report the cleaner's own count of unknown types (trimmed, lower case, empty cells as
    "(missing)"), also where no type of a partition is known: the manifest's drop and its words, the
    warning and the drift yardstick equal the single-process fit's."""
    import warnings

    from gpuclust.config import PreprocessConfig
    from gpuclust.distributed.prepare import clean_partition

    events = _mixed_case_types(tmp_path / "events.csv")
    fits = {}
    for name, scheduler in (("single", None), ("dask", client)):
        config = PipelineConfig(device="cpu", seed=0)
        config.dask.partitions = 16 if scheduler is not None else None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = UserClusterer(2, seed=0, scheduler=scheduler, config=config).fit(events)
        dropped = [s for s in model.manifest_["rows"]["steps"] if s["step"] == "unknown_event_types"]
        said = [str(w.message) for w in caught if "event type without a weight" in str(w.message)]
        fits[name] = dropped, said, model.drift_baseline_["event_type_shares"]
    assert fits["dask"] == fits["single"]
    dropped, said, shares = fits["single"]
    assert [(s["rows_in"], s["dropped"]) for s in dropped] == [(320, 224)]
    assert dropped[0]["why"] == "event type without a weight ('bogus' 128, '(missing)' 48, 'wishlist' 48)"
    assert len(said) == 1 and shares["view"] == pytest.approx(2 / 3)
    # One partition without a known type: its rows drop, counted by the cleaner's reading of the types.
    only_unknown = events[events["user_id"] == "u20"]
    cleaned = clean_partition(only_unknown, PreprocessConfig(), 0, "cpu")
    assert cleaned.unknown_types == {"bogus": 4, "wishlist": 2, "(missing)": 2} and len(cleaned.codes) == 0
    step = next(s for s in cleaned.steps if s.step == "unknown_event_types")
    assert (step.dropped, step.why) == (8, "event type without a weight ('bogus' 4, '(missing)' 2, 'wishlist' 2)")


def test_cluster_settings_without_a_scheduler_are_refused():
    config = PipelineConfig()
    config.dask.workers = 4
    with pytest.raises(UsageError, match="--workers .* has no effect without --scheduler local"):
        config.validate()


def test_local_defaults_come_from_the_machine():
    from gpuclust.config import DaskConfig
    from gpuclust.distributed.cluster import local_defaults, total_memory_bytes

    sizes = local_defaults(DaskConfig())
    assert sizes.workers == max(1, min(8, os.cpu_count() or 1)) and sizes.threads_per_worker == 1
    assert int(sizes.memory_limit.removesuffix("MiB")) * 2**20 * sizes.workers <= total_memory_bytes()
    given = local_defaults(DaskConfig(workers=3, threads_per_worker=2, memory_limit="2GiB"))
    assert (given.workers, given.threads_per_worker, given.memory_limit) == (3, 2, "2GiB")
    assert local_defaults(DaskConfig(), gpus=4).workers == 4


@pytest.mark.gpu
def test_dask_cuda_worker_against_the_single_gpu_path(tmp_path):
    """One LocalCUDACluster worker (dask_cudf frames, cuML's multi-GPU KMeans) against the single-GPU fit."""
    pytest.importorskip("dask_cuda")
    pytest.importorskip("dask_cudf")
    from gpuclust.synth import SynthSpec, generate

    data = generate(SynthSpec(n_users=20_000, n_items=3000, n_groups=8, seed=3))
    single = UserClusterer(8, seed=0, device="cuda").fit(data.events, data.items, data.truth)
    config = PipelineConfig(device="cuda")
    config.dask.workers = 1
    spread = UserClusterer(8, seed=0, scheduler="local", config=config).fit(data.events, data.items, data.truth)
    assert spread.manifest_["dask"]["kind"] == "LocalCUDACluster"
    assert spread.manifest_["cluster"]["engine"] == "cuml.dask"
    assert _ari(single.labels_, spread.labels_) >= 0.95


def _hostile(n_users: int = 60, seed: int = 0) -> pd.DataFrame:
    """Events with what cleaning drops: missing timestamps, unknown and oddly written types, exact
    duplicates (values 0.0 and -0.0 among them), users with one or two events and items with a few, whom
    minimum counts drop."""
    rng = np.random.default_rng(seed)
    sizes = np.where(np.arange(n_users) % 3 == 0, rng.integers(1, 3, n_users), rng.integers(4, 12, n_users))
    users = np.repeat(np.arange(n_users), sizes)
    n = len(users)
    events = pd.DataFrame({
        "user_id": users, "item_id": np.where(np.arange(n) % 29 == 0, rng.integers(100, 400, n), rng.integers(0, 15, n)),
        "event_type": rng.choice([" View", "click", "PURCHASE", "cart", "bogus", None], n),
        "timestamp": pd.Timestamp("2026-01-01") + pd.to_timedelta(rng.integers(0, 40, n) * 30, unit="s"),
        "value": rng.choice([0.0, -0.0, 2.5], n)})
    events.loc[events.index[::17], "timestamp"] = pd.NaT
    return pd.concat([events, events.iloc[::4]], ignore_index=True)


def test_a_partition_is_cleaned_indexed_and_read_on_codes_as_one_process_does(monkeypatch):
    """A partition is a frame only up to the known event types: then codes (the single-process steps on
    them), and an event table the per-partition stages read without an events frame. Holding every user,
    it is what one process prepares: the same steps, table and users."""
    import pickle
    import warnings

    from gpuclust.backend import cpu_backend
    from gpuclust.config import PreprocessConfig
    from gpuclust.distributed import explain as dexplain
    from gpuclust.distributed import features as dfeatures
    from gpuclust.distributed import fit as dfit
    from gpuclust.distributed import prepare
    from gpuclust.preprocess.clean import Preprocessor
    from gpuclust.preprocess.codes import EventCodes
    from gpuclust.preprocess.prepared import PreparedData, event_frames

    events = _hostile()
    config = PreprocessConfig(min_user_events=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        single = Preprocessor(config).run(events, cpu_backend())
    cleaned = prepare.clean_partition(events, config, 0, "cpu")
    assert isinstance(cleaned.codes, EventCodes)
    assert [s.to_dict() for s in cleaned.steps] == [s.to_dict() for s in single.steps]
    table, cast, _, _ = prepare.vocabulary(prepare.item_counts([cleaned.summary()]), None)
    part = prepare.index_partition(cleaned, table, cast, single.event_types, False, "cpu")
    assert not hasattr(part, "events")
    for name in ("user", "item", "event", "time", "value", "weight", "offsets"):
        np.testing.assert_array_equal(getattr(part.table, name), getattr(single.table, name), err_msg=name)
    assert part.table.event_names == single.table.event_names
    pd.testing.assert_frame_equal(part.users, single.users)

    def no_frame(self: PreparedData) -> None:
        raise AssertionError("a per-partition stage read an events frame")

    monkeypatch.setattr(PreparedData, "events", property(no_frame))
    built = event_frames.built
    g = prepare.Globals(table, len(table), part.n_users, len(part.table), single.reference_time, single.event_types,
                        (), [])
    labels = np.arange(part.n_users) % 2
    stats = dfeatures.part_statistics(part, g, "cpu", 30.0)
    assert stats.values.shape[0] == part.n_users
    assert dfeatures.part_tfidf(part, g, "cpu", "item", None).shape == (len(table),)
    assert dexplain._cluster_items(part, labels)["weight"].sum() == pytest.approx(float(single.table.weight.sum()))
    drift = dfit._part_drift_counts(part, labels, np.ones(part.n_users), np.zeros(part.n_users), g, 2)
    assert sum(drift.event_types.values()) == len(part.table)
    assert dfit._part_segment_counts(part, labels, g, 2, "cpu").shape == (3, len(table))
    assert event_frames.built == built
    again = pickle.loads(pickle.dumps(part))  # workers move and spill partitions: plain pickle, array module by name
    assert again.table.xp is np and np.array_equal(again.table.time, part.table.time)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_hostile_input_reads_the_same_on_partitions_as_in_one_process(client):
    """Unknown types, duplicates, missing timestamps and minimum counts that drop every user of some of 16
    partitions: the manifest's steps and the warnings equal the single-process fit's, each minimum-count
    step included (the global item passes once counted the users they dropped under min_item_events);
    where the minimum counts drop everything, the one-line refusal is the same too."""
    import warnings

    events = _hostile(n_users=200)
    fits = {}
    for name, scheduler in (("single", None), ("dask", client)):
        config = PipelineConfig(device="cpu", seed=0)
        config.preprocess.min_user_events, config.preprocess.min_item_events = 3, 4
        config.dask.partitions = 16 if scheduler is not None else None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = UserClusterer(2, seed=0, scheduler=scheduler, config=config).fit(events)
        said = sorted(str(w.message) for w in caught if str(w.message).startswith("dropped "))
        steps = {s["step"]: s for s in model.manifest_["rows"]["steps"]}
        minimum = (steps["min_user_events"]["dropped"], steps["min_item_events"]["dropped"])
        config.preprocess.min_user_events = 100
        with pytest.raises(UsageError) as refused:
            UserClusterer(2, seed=0, scheduler=scheduler, config=config).fit(events)
        fits[name] = steps, minimum, said, model.manifest_["rows"]["users"], str(refused.value)
    assert fits["dask"] == fits["single"]
    steps, minimum, said, _, refusal = fits["single"]
    assert {s for s, step in steps.items() if step["dropped"]} == {"missing_ids_or_time", "unknown_event_types",
                                                                  "exact_duplicates", "min_user_events",
                                                                  "min_item_events"}
    assert min(minimum) > 0 and len(said) == 3
    assert refusal == "no events left after the minimum-count filters; lower --min-user-events / --min-item-events"


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_ids_with_gaps_read_as_one_process_reads_them(client):
    """A float user-id column with a missing value (what a CSV column with a gap becomes) stayed float on
    Dask (no int64 cast: NaN is not whole), so user ids came out as 12.0, and mixed ids cast to text before
    the missing ones dropped could become a user "nan" (pandas 2). Dask reads both as one process does."""
    base = _hostile(n_users=80).dropna(subset=["user_id", "item_id"]).reset_index(drop=True)
    floats = base.assign(user_id=base["user_id"].astype("float64"))
    floats.loc[3, "user_id"] = np.nan
    mixed = base.assign(item_id=base["item_id"].astype(object))
    mixed.loc[mixed.index[::7], "item_id"] = mixed.loc[mixed.index[::7], "item_id"].astype(str)
    mixed.loc[5, "item_id"] = None
    for events in (floats, mixed):
        fits = {}
        for name, scheduler in (("single", None), ("dask", client)):
            config = PipelineConfig(device="cpu", seed=0)
            model = UserClusterer(2, seed=0, scheduler=scheduler, config=config).fit(events)
            # (Dask's from_pandas reads a mixed object column as text itself, so only one process notes it)
            fits[name] = (model.labels_.sort_values("user_id").reset_index(drop=True)["user_id"],
                          [(s["step"], s["dropped"]) for s in model.manifest_["rows"]["steps"]
                           if events is floats or s["step"] != "item_id_types"],
                          sorted(map(str, model.vocabulary_["item_id"])))
        pd.testing.assert_series_equal(fits["dask"][0], fits["single"][0])
        assert fits["dask"][1:] == fits["single"][1:]
        assert "nan" not in fits["dask"][2] and "None" not in fits["dask"][2]
        if events is floats:
            assert str(fits["dask"][0].dtype) == "int64" and ("user_id_types", 0) in fits["dask"][1]
