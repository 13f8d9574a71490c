"""Every surface that applies a fitted model gives the same answer for the same events.

The surfaces: `UserClusterer.predict/recommend` (Python), `gpuclust assign` and `gpuclust recommend
--events` (CLI, one process), `gpuclust assign --scheduler` (Dask, two single-threaded workers) and the
service's /v1/assign and /v1/recommend (its own fast path). One fit, then the same batches of new events,
ordinary and adversarial, through each: the same cluster per user, the same distance and anomaly score
(float32 tolerance), the same lists in the same order, the same users left unplaced, the same refusals.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from gpuclust import PipelineConfig, UserClusterer  # noqa: E402
from gpuclust.errors import UsageError  # noqa: E402
from gpuclust.preprocess.parse import canonical_id  # noqa: E402
from gpuclust.privacy import Pseudonymiser  # noqa: E402
from gpuclust.serve.app import ServeSettings, create_app  # noqa: E402
from gpuclust.synth import SynthSpec, generate  # noqa: E402
from tests.helpers import cli  # noqa: E402

KEY = b"a-key-for-the-surface-tests-0123456789"


@dataclass
class Answer:
    """What one surface said about one batch: placements by canonical user id, lists, unplaced, refusal."""

    placed: dict[str, tuple[int, float, float]] = field(default_factory=dict)
    lists: dict[str, list[tuple[Any, str, float]]] | None = None  # per user: (item, source, score), best first
    unplaced: int | None = None
    drops: dict[str, int] | None = None
    refused: str | None = None


@dataclass
class Model:
    name: str
    fitted: UserClusterer
    run: Path  # run folder: run/model is the saved model
    key: Path | None = None
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    cache: dict[str, Any] = field(default_factory=dict)

    def loaded(self) -> UserClusterer:
        """The saved model, loaded once (predict and recommend do not change it)."""
        if "loaded" not in self.cache:
            self.cache["loaded"] = UserClusterer.load(self.run / "model", device="cpu", pseudonymise=self.key)
        return self.cache["loaded"]

    def client(self) -> TestClient:
        """The service of the saved model, in-process, started once."""
        if "client" not in self.cache:
            pseudonymiser = Pseudonymiser.from_file(self.key) if self.key else None
            app = create_app(ServeSettings(self.run / "model", device="cpu", pseudonymiser=pseudonymiser))
            self.cache["client"] = self.stack.enter_context(TestClient(app, raise_server_exceptions=False))
        return self.cache["client"]


def _fit(root: Path, name: str, data: Any, **kw: Any) -> Model:
    pseudonymise = kw.pop("pseudonymise", None)
    config = PipelineConfig(device="cpu", seed=0)
    for dotted, value in kw.items():
        *path, key = dotted.split("__")
        target = config
        for part in path:
            target = getattr(target, part)
        setattr(target, key, value)
    key_file = None
    if pseudonymise:
        key_file = root / f"{name}.key"
        key_file.write_bytes(KEY)
    fitted = UserClusterer(config=config, pseudonymise=key_file).fit(data.events, data.items)
    run = root / name
    fitted.save(run / "model")
    return Model(name, fitted, run, key_file)


@pytest.fixture(scope="module")
def data():
    return generate(SynthSpec(n_users=260, n_items=120, n_groups=4, seed=11, n_categories=8, events_per_user=25.0))


@pytest.fixture(scope="module")
def models(tmp_path_factory, data) -> Iterator[dict[str, Model]]:
    root = tmp_path_factory.mktemp("surfaces")
    behaviour, tfidf = ("behaviour",), ("tfidf",)
    fitted = {
        "default": _fit(root, "default", data, cluster__k=4),
        "behaviour-standard": _fit(root, "behaviour-standard", data, cluster__k=4, features__features=behaviour,
                                   features__normalise="standard"),
        "behaviour-minmax": _fit(root, "behaviour-minmax", data, cluster__k=4, features__features=behaviour,
                                 features__normalise="minmax"),
        "quantile-pca": _fit(root, "quantile-pca", data, cluster__k=4, features__normalise="quantile",
                             reduce__method="pca", reduce__n_components=6),
        "none": _fit(root, "none", data, cluster__k=3, features__normalise="none"),
        "tfidf": _fit(root, "tfidf", data, cluster__k=4, features__features=tfidf),
        "text": _fit(root, "text", data, cluster__k=4, features__features=("behaviour", "tfidf", "text")),
        "dbscan": _fit(root, "dbscan", data, cluster__algorithm="dbscan", cluster__eps=0.3,
                       reduce__method="pca", reduce__n_components=4),
        "hdbscan": _fit(root, "hdbscan", data, cluster__algorithm="hdbscan",
                        cluster__min_cluster_size=10),
        "private": _fit(root, "private", data, cluster__k=4, pseudonymise=True),
        "text-decay": _fit(root, "text-decay", data, cluster__k=4, features__features=("text",),
                           features__text__half_life_days=7.0),
        "knn": _fit(root, "knn", data, cluster__k=4, recommend__personal="knn"),
        "segments-only": _fit(root, "segments-only", data, cluster__k=4, recommend__personal="none"),
        "min-counts": _fit(root, "min-counts", data, cluster__k=4, preprocess__min_user_events=5,
                           preprocess__min_item_events=3),
        "keep-duplicates": _fit(root, "keep-duplicates", data, cluster__k=4, preprocess__drop_duplicates=False,
                                preprocess__session_gap_minutes=5.0),
        "weights": _fit(root, "weights", data, cluster__k=4,
                        preprocess__event_weights={"view": 1.0, "cart": 0.0, "purchase": 5.0}),
    }
    yield fitted
    for model in fitted.values():
        model.stack.close()


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for r in frame.to_dict("records"):
        row = {}
        for k, v in r.items():
            if isinstance(v, pd.Timestamp):
                v = v.isoformat()
            elif isinstance(v, np.generic):
                v = v.item()
            if isinstance(v, float) and math.isnan(v):
                continue
            row[k] = v
        out.append(row)
    return out


def _python(model: Model, records: list[dict[str, Any]]) -> Answer:
    loaded = model.loaded()
    frame = pd.DataFrame(records)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            placed = loaded.predict(frame)
            lists = loaded.recommend(frame, top_k=5)
    except UsageError as exc:
        return Answer(refused=str(exc))
    ans = Answer(lists={})
    for r in placed.itertuples():
        ans.placed[canonical_id(r.user_id)] = (int(r.cluster), float(r.distance), float(r.anomaly_score))
    for u, g in lists.sort_values(["user_id", "rank"]).groupby("user_id", sort=False):
        ans.lists[canonical_id(u)] = list(zip(g["item_id"].tolist(), g["source"].tolist(), g["score"].tolist(),
                                              strict=True))
    ans.drops = _drops_from([str(w.message) for w in caught])
    ans.unplaced = _unplaced(ans.drops)
    return ans


def _drops_from(lines: list[str]) -> dict[str, int]:
    """The dropped-row warnings, by what and why: {"events: why ...": n}."""
    out = {}
    for line in lines:
        m = re.search(r"dropped ([\d,]+) of [\d,]+ (\w+)(?: \([^)]*\))?: ([^,;]*)", line)
        if m:
            out[f"{m.group(2)}: {m.group(3)}"] = int(m.group(1).replace(",", ""))
    return out


def _unplaced(drops: dict[str, int]) -> int:
    return sum(n for k, n in drops.items() if k.startswith("users:"))


def _write(tmp: Path, records: list[dict[str, Any]]) -> Path:
    path = tmp / "batch.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _cli(model: Model, records: list[dict[str, Any]], tmp: Path, monkeypatch, capsys,
         scheduler: str | None = None) -> Answer:
    events = _write(tmp, records)
    out = tmp / ("dask" if scheduler else "one")
    args = ["assign", "--model", model.run / "model", "--events", events, "--out", out]
    if scheduler:  # more partitions than users in some batches: a user's rows start in several of them
        args += ["--scheduler", scheduler, "--partitions", "7"]
    if model.key:
        args += ["--pseudonymise", model.key]
    code, _, err = cli(monkeypatch, capsys, *args)
    if code != 0:
        assert code == 2, err
        assert len(err.strip().splitlines()) == 1, err
        return Answer(refused=err.strip())
    frame = pd.read_parquet(out / ("assignments" if scheduler else "assignments.parquet"))
    drops = _drops_from(err.splitlines())
    ans = Answer(unplaced=_unplaced(drops), drops=drops)
    for r in frame.itertuples():
        ans.placed[canonical_id(r.user_id)] = (int(r.cluster), float(r.distance), float(r.anomaly_score))
    if scheduler:
        return ans
    args = ["recommend", "--run", model.run, "--events", events, "--top-k", "5", "--json"]
    if model.key:
        args += ["--pseudonymise", model.key]
    code, out_text, err = cli(monkeypatch, capsys, *args)
    assert code == 0, err
    ans.lists = {}
    for row in json.loads(out_text):
        ans.lists.setdefault(canonical_id(row["user_id"]), []).append((row["item_id"], row["source"], row["score"]))
    return ans


def _service(model: Model, records: list[dict[str, Any]]) -> Answer:
    pseudonymiser = Pseudonymiser.from_file(model.key) if model.key else None
    c = model.client()
    r = c.post("/v1/assign", json={"events": records})
    if r.status_code != 200:
        assert 400 <= r.status_code < 500, r.text
        return Answer(refused=r.json()["error"])
    body = r.json()
    rec = c.post("/v1/recommend", json={"events": records, "n": 5})
    assert rec.status_code == 200, rec.text
    ans = Answer(unplaced=len(body["unplaced"]), lists={})
    for u in body["users"]:
        key = canonical_id(u["user_id"])
        if model.key:
            key = pseudonymiser.one(key)
        ans.placed[key] = (u["cluster"], u["distance"], u["anomaly_score"])
    for u in rec.json()["users"]:
        key = canonical_id(u["user_id"])
        if model.key:
            key = pseudonymiser.one(key)
        ans.lists[key] = [(i["item_id"], i["source"], i["score"]) for i in u["items"]]
    return ans


def _agree(answers: dict[str, Answer]) -> None:
    names = list(answers)
    base_name = names[0]
    base = answers[base_name]
    for name in names[1:]:
        other = answers[name]
        assert (base.refused is None) == (other.refused is None), (base_name, base.refused, name, other.refused)
        if base.refused is not None:
            continue
        assert set(base.placed) == set(other.placed), (base_name, name, set(base.placed) ^ set(other.placed))
        for user, (cluster, distance, score) in base.placed.items():
            c2, d2, s2 = other.placed[user]
            assert cluster == c2, (base_name, name, user, base.placed[user], other.placed[user])
            assert distance == pytest.approx(d2, rel=1e-4, abs=1e-5), (base_name, name, user)
            assert score == pytest.approx(s2, rel=1e-3, abs=1e-3), (base_name, name, user)
        if base.unplaced is not None and other.unplaced is not None:
            assert base.unplaced == other.unplaced, (base_name, base.unplaced, name, other.unplaced)
        if base.drops is not None and other.drops is not None:
            assert base.drops == other.drops, (base_name, base.drops, name, other.drops)
        if base.lists is not None and other.lists is not None:
            assert base.lists.keys() == other.lists.keys(), (base_name, name)
            for user, mine in base.lists.items():
                theirs = other.lists[user]
                assert [r[:2] for r in mine] == [r[:2] for r in theirs], (base_name, name, user)
                assert [r[2] for r in mine] == pytest.approx([r[2] for r in theirs], rel=1e-4, abs=1e-5)


def _all(model: Model, records, tmp_path, monkeypatch, capsys, dask: str | None = None) -> dict[str, Answer]:
    out = {"python": _python(model, records), "cli": _cli(model, records, tmp_path, monkeypatch, capsys),
           "service": _service(model, records)}
    if dask:
        out["dask"] = _cli(model, records, tmp_path, monkeypatch, capsys, scheduler=dask)
    return out


# --- the batches ----------------------------------------------------------------------------------

def _new(data, n_users: int = 12, seed: int = 0) -> pd.DataFrame:
    users = data.truth["user_id"].sample(n_users, random_state=seed)
    return data.events[data.events["user_id"].isin(users)].copy()


def _batch(name: str, data) -> list[dict[str, Any]]:
    ev = _new(data)
    recs = _records(ev)
    if name == "plain":
        return recs
    if name == "one_event":
        return _records(ev.groupby("user_id").head(1))
    if name == "unknown_items":
        extra = [dict(r, user_id="ghost", item_id=10**9 + i) for i, r in enumerate(recs[:3])]
        return recs + extra
    if name == "unknown_types":
        return recs + [dict(recs[0], event_type="wishlist"), dict(recs[1], user_id="w", event_type="Wishlist")]
    if name == "case_types":
        return [dict(r, event_type=str(r["event_type"]).upper() + " ") for r in recs]
    if name == "duplicates":
        return recs + recs[:10]
    if name == "shuffled":
        return list(np.random.default_rng(0).permutation(np.asarray(recs, dtype=object)))
    if name == "epoch_s":
        return [dict(r, timestamp=pd.Timestamp(r["timestamp"]).timestamp()) for r in recs]
    if name == "epoch_ms":
        return [dict(r, timestamp=int(pd.Timestamp(r["timestamp"]).value // 10**6)) for r in recs]
    if name == "zones":
        return [dict(r, timestamp=pd.Timestamp(r["timestamp"]).tz_localize("UTC").tz_convert("Asia/Kolkata")
                     .isoformat()) for r in recs]
    if name == "iso_z":
        return [dict(r, timestamp=pd.Timestamp(r["timestamp"]).strftime("%Y-%m-%dT%H:%M:%S.%fZ")) for r in recs]
    if name == "str_ids":
        return [dict(r, user_id=str(r["user_id"]), item_id=str(r["item_id"])) for r in recs]
    if name == "float_ids":
        return [dict(r, user_id=float(r["user_id"]), item_id=float(r["item_id"])) for r in recs]
    if name == "mixed_ids":
        return [dict(r, user_id=str(r["user_id"]) if i % 2 else r["user_id"]) for i, r in enumerate(recs)]
    if name == "no_value":
        return [{k: v for k, v in r.items() if k != "value"} for r in recs]
    if name == "text_value":
        return [dict(r, value="12.5") for r in recs]
    if name == "null_values":
        return [dict(r, value=None) if i % 2 else r for i, r in enumerate(recs)]
    if name == "null_user":
        return recs + [dict(recs[0], user_id=None), dict(recs[1], item_id=None), dict(recs[2], timestamp=None)]
    if name == "blank_ids":  # "" names no one: a missing id, as a CSV reader has it
        return recs + [dict(recs[0], user_id=""), dict(recs[1], item_id="")]
    if name == "huge_value":
        return recs + [dict(recs[0], value=1e39, user_id="rich")]
    if name == "repeated":
        half = len(recs) // 2
        return recs[half:] + recs[:half] + recs[half:half + 2]
    if name == "mixed_units":
        return [dict(r, timestamp=int(pd.Timestamp(r["timestamp"]).value // 10 ** (9 if i % 2 else 3)))
                for i, r in enumerate(recs)]
    if name == "digit_strings":
        return [dict(r, timestamp=str(int(pd.Timestamp(r["timestamp"]).timestamp()))) for r in recs]
    if name == "digit_strings_ms":  # exact: through float64 a ms epoch moves by up to 256 ns
        return [dict(r, timestamp=str(pd.Timestamp(r["timestamp"]).value // 10**6 + 1)) for r in recs]
    if name == "iso_ns":  # nanoseconds in ISO text; the copy 1 ns later is another event
        out = [dict(r, timestamp=pd.Timestamp(r["timestamp"]).strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z")
               for r in recs]
        return out + [dict(r, timestamp=r["timestamp"][:-4] + "124Z") for r in out[:5]]
    if name == "float_epochs":
        return [dict(r, timestamp=pd.Timestamp(r["timestamp"]).value / 1e9 + 0.25) for r in recs]
    if name == "lower_z_space":
        return [dict(r, timestamp=pd.Timestamp(r["timestamp"]).strftime("%Y-%m-%d %H:%M:%S") + "z") for r in recs]
    if name == "date_only":
        return [dict(r, timestamp=pd.Timestamp(r["timestamp"]).strftime("%Y-%m-%d")) for r in recs]
    if name == "padded_ids":
        return [dict(r, user_id=f" {r['user_id']} ", item_id=f"{r['item_id']} ") for r in recs]
    if name == "int_values":
        return [dict(r, value=int(r["value"])) for r in recs]
    if name == "numeric_types":
        return recs + [dict(recs[0], event_type=1), dict(recs[1], user_id="n", event_type=2.0)]
    if name == "no_event_type":
        return [{k: v for k, v in r.items() if k != "event_type"} for r in recs]
    if name == "null_event_type":
        return [dict(r, event_type=None) if i % 3 == 0 else r for i, r in enumerate(recs)]
    if name == "negative_values":
        return [dict(r, value=-abs(r["value"]) - 1.0) for r in recs]
    if name == "same_time_other_items":  # ties in time: order within a user must not matter
        t = recs[0]["timestamp"]
        return [dict(r, timestamp=t) for r in recs]
    if name == "big_ids":  # beyond float64's exact integers, and beyond int64
        return [dict(r, user_id=2**62 + r["user_id"] if i % 2 else 2**70 + r["user_id"]) for i, r in enumerate(recs)]
    if name == "negative_ids":
        return [dict(r, user_id=-r["user_id"]) for r in recs]
    if name == "naive_and_zoned":
        return [dict(r, timestamp=r["timestamp"] + ("+00:00" if i % 2 else "")) for i, r in enumerate(recs)]
    if name == "late_unknown_item":  # the latest event is on an item the model does not know
        return recs + [dict(recs[0], item_id=10**9, timestamp="2027-06-01T00:00:00")]
    if name == "late_unknown_type":
        return recs + [dict(recs[0], event_type="wishlist", timestamp="2027-06-01T00:00:00")]
    if name == "purchase_on_unknown":  # the batch's only purchase is on an unknown item
        views = [dict(r, event_type="view") for r in recs]
        return views + [dict(recs[0], item_id=10**9, event_type="purchase", value=5.0)]
    if name == "purchase_of_unknown_type":
        views = [dict(r, event_type="view") for r in recs]
        return views + [dict(recs[0], event_type="purchase", value=5.0), dict(recs[1], event_type="wishlist")]
    if name == "dup_negative_zero":
        return [dict(r, value=0.0) for r in recs] + [dict(r, value=-0.0) for r in recs[:10]]
    if name == "dup_null_value":
        return [dict(r, value=None) for r in recs] + [dict(r, value=None) for r in recs[:10]]
    if name == "dup_case_type":
        return recs + [dict(r, event_type=" " + str(r["event_type"]).title()) for r in recs[:10]]
    if name == "dup_time_forms":
        return recs + [dict(r, timestamp=int(pd.Timestamp(r["timestamp"]).value // 10**6)) for r in recs[:10]]
    if name == "dup_id_forms":
        return recs + [dict(r, user_id=str(r["user_id"]), item_id=float(r["item_id"])) for r in recs[:10]]
    if name == "mixed_bag":  # several oddities at once, on other users: for the matrix of models
        bag = _records(_new(data, 6, seed=1))
        bag = [dict(r, timestamp=pd.Timestamp(r["timestamp"]).tz_localize("UTC").tz_convert("Asia/Kolkata")
                    .isoformat(), user_id=str(r["user_id"]) if i % 2 else r["user_id"]) for i, r in enumerate(bag)]
        ones = _records(_new(data, 4, seed=2).groupby("user_id").head(1))
        ghost = [dict(r, user_id="ghost", item_id=10**9 + i) for i, r in enumerate(recs[:3])]
        return recs + recs[:8] + bag + ones + ghost + [dict(recs[0], event_type="wishlist")]
    if name == "empty":
        return []
    if name == "all_unknown":
        return [dict(r, item_id=10**9 + i) for i, r in enumerate(recs)]
    raise AssertionError(name)


BATCHES = ["plain", "one_event", "unknown_items", "unknown_types", "case_types", "duplicates", "shuffled",
           "epoch_s", "epoch_ms", "zones", "iso_z", "str_ids", "float_ids", "mixed_ids", "no_value",
           "text_value", "empty", "all_unknown", "null_values", "null_user", "blank_ids", "huge_value", "repeated", "mixed_units",
           "digit_strings", "digit_strings_ms", "naive_and_zoned", "iso_ns", "float_epochs", "lower_z_space", "date_only",
           "padded_ids", "int_values", "numeric_types", "no_event_type", "null_event_type", "negative_values",
           "same_time_other_items", "mixed_bag", "big_ids", "negative_ids", "late_unknown_item", "late_unknown_type", "purchase_on_unknown",
           "purchase_of_unknown_type", "dup_negative_zero", "dup_null_value", "dup_case_type", "dup_time_forms",
           "dup_id_forms"]


# By design the service refuses a request the batch surfaces read with drops (README, "Serving a model":
# ids are integers or non-empty text, value a finite float32 number; every bad request is a 4xx): a missing or empty id or
# time, a value written as text, a value beyond float32. The batch surfaces read a log as it comes
# and drop (and count) such rows. And a request whose every user is unplaced is a 200 listing each
# user under `unplaced` (the service answers per user), where predict and the CLI refuse the batch; an
# event without an event_type is one of no known type there, and a file without the column is refused.
SERVICE_REFUSES = {"text_value", "null_user", "blank_ids", "huge_value"}
SERVICE_ALL_UNPLACED = {"all_unknown", "no_event_type"}
# By design a text file's id column is read as a whole (README: integers where every id is an integer
# written plainly, ' 7' included), where a frame's text ids and the service's are taken value by value:
# ' 500159 ' is item 500159 to `gpuclust assign` on a JSON Lines file, and no known item to predict on a
# frame or to the service.
FILE_READS_PADDED_IDS = {"padded_ids"}


@pytest.mark.parametrize("batch", BATCHES)
def test_the_default_model_agrees_everywhere(batch, data, models, tmp_path, monkeypatch, capsys):
    answers = _all(models["default"], _batch(batch, data), tmp_path, monkeypatch, capsys)
    if batch in FILE_READS_PADDED_IDS:
        assert answers.pop("cli").placed and answers["python"].refused and not answers["service"].placed
        answers.pop("service")
        return
    if batch in SERVICE_REFUSES | SERVICE_ALL_UNPLACED:
        served = answers.pop("service")
        if batch in SERVICE_REFUSES:
            assert served.refused and answers["python"].refused is None
        else:
            assert not served.placed and served.unplaced and answers["python"].refused
    if batch == "blank_ids":  # their rows drop as those without ids, where "" was a user (and an item) before
        drops = answers["python"].drops
        assert "" not in answers["python"].placed and drops["events: user_id"] == 2  # the why, to its first comma
    _agree(answers)


SOME = ["plain", "mixed_bag"]
MODELS = ["behaviour-standard", "behaviour-minmax", "quantile-pca", "none", "tfidf", "text", "dbscan", "hdbscan",
          "private", "text-decay", "knn", "segments-only", "min-counts", "keep-duplicates", "weights"]


@pytest.mark.parametrize("batch", SOME)
@pytest.mark.parametrize("model", MODELS)
def test_each_kind_of_model_agrees_everywhere(model, batch, data, models, tmp_path, monkeypatch, capsys):
    _agree(_all(models[model], _batch(batch, data), tmp_path, monkeypatch, capsys))


# --- Dask: `gpuclust assign --scheduler` on two single-threaded workers ------------------------------

@pytest.fixture(scope="module")
def scheduler():
    """Two single-threaded worker processes, as `--scheduler local --workers 2 --threads-per-worker 1`
    starts them, shared by the tests here (one start, not one per batch)."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                       memory_limit="2GiB", silence_logs=50)
    yield cluster.scheduler_address
    cluster.close()


DASK_BATCHES = ["plain", "shuffled", "repeated", "mixed_bag", "late_unknown_item", "mixed_units", "dup_time_forms",
                "numeric_types", "dup_negative_zero", "null_user", "blank_ids", "empty", "all_unknown", "big_ids"]


@pytest.mark.parametrize("batch", DASK_BATCHES)
def test_dask_places_users_as_one_process(batch, data, models, scheduler, tmp_path, monkeypatch, capsys):
    records = _batch(batch, data)
    one = _cli(models["default"], records, tmp_path, monkeypatch, capsys)
    spread = _cli(models["default"], records, tmp_path, monkeypatch, capsys, scheduler=scheduler)
    one.lists = None
    _agree({"cli": one, "dask": spread})


@pytest.mark.parametrize("model", ["quantile-pca", "text", "hdbscan", "tfidf", "behaviour-standard", "text-decay",
                                   "min-counts", "keep-duplicates", "weights"])
def test_dask_places_users_as_one_process_for_each_kind_of_model(model, data, models, scheduler, tmp_path,
                                                                  monkeypatch, capsys):
    records = _batch("shuffled", data) + _batch("one_event", data)
    one = _cli(models[model], records, tmp_path, monkeypatch, capsys)
    spread = _cli(models[model], records, tmp_path, monkeypatch, capsys, scheduler=scheduler)
    one.lists = None
    _agree({"cli": one, "dask": spread})


# --- the fit's own users, and a model saved then loaded ------------------------------------------

@pytest.mark.parametrize("model", ["default", "quantile-pca", "text", "tfidf", "private", "dbscan", "hdbscan"])
def test_a_loaded_model_places_as_the_fitted_one(model, data, models):
    m = models[model]
    batch = pd.DataFrame(_batch("plain", data))
    loaded = UserClusterer.load(m.run / "model", device="cpu", pseudonymise=m.key)
    a, b = m.fitted.predict(batch), loaded.predict(batch)
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(m.fitted.recommend(batch, 5), loaded.recommend(batch, 5))
    pd.testing.assert_frame_equal(m.fitted.transform(batch), loaded.transform(batch))


@pytest.mark.parametrize("model", ["default", "quantile-pca", "text", "tfidf", "private", "behaviour-minmax",
                                   "text-decay", "keep-duplicates", "weights", "min-counts"])
def test_the_fit_places_its_own_users_as_predict_does(model, data, models):
    """k-means: the fit's assignments are predict's on the training events. By design the minimum counts
    choose whom the model learns from, not whom it places (`embed`): predict places the users the fit
    left out too (min-counts), and everyone the fit placed as the fit did."""
    m = models[model]
    fit = m.fitted.labels_.set_index("user_id").sort_index()
    again = m.fitted.predict(data.events).set_index("user_id").sort_index()
    if model == "min-counts":
        assert len(fit) < len(again) and fit.index.isin(again.index).all()
        again = again.loc[fit.index]
    assert fit.index.equals(again.index)
    np.testing.assert_array_equal(fit["cluster"].to_numpy(), again["cluster"].to_numpy())
    np.testing.assert_allclose(fit["distance"].to_numpy(), again["distance"].to_numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fit["anomaly_score"].to_numpy(), again["anomaly_score"].to_numpy(), rtol=1e-3,
                               atol=1e-3)


@pytest.mark.parametrize("model", ["dbscan", "hdbscan"])
def test_a_density_model_places_its_noise_at_the_nearest_centre(model, data, models, tmp_path, monkeypatch, capsys):
    """By design (`predict`'s docstring, `cluster.outcome`): the fit's labels are the density clustering's,
    noise (-1) included, with each member's distance to its own cluster's centre (member mean), while a
    user asked about is never noise and goes to the nearest centre. So the fit and predict agree where
    the density cluster is the nearest centre; elsewhere (noise, a non-convex cluster's border) predict's
    distance is the smaller one. Every surface places noise users alike."""
    m = models[model]
    fit = m.fitted.labels_.set_index("user_id").sort_index()
    again = m.fitted.predict(data.events).set_index("user_id").sort_index()
    noise = fit["cluster"].to_numpy() == -1
    assert 0 < noise.sum() < len(fit) and (again["cluster"] >= 0).all()
    same = fit["cluster"].to_numpy() == again["cluster"].to_numpy()
    assert same[~noise].mean() > 0.9
    np.testing.assert_allclose(fit["distance"][same | noise], again["distance"][same | noise], rtol=1e-4, atol=1e-5)
    assert (again["distance"][~same] <= fit["distance"][~same] + 1e-5).all()
    # a batch of noise users only, through every surface
    users = fit.index[noise][:10]
    records = _records(data.events[data.events["user_id"].isin(users)])
    _agree(_all(m, records, tmp_path, monkeypatch, capsys))


@pytest.mark.parametrize("given", [
    ["1768200123298", "1768200123298123", "1768200123298123457", "-1768200123", "2026-01-12T06:42:03.298"],
    ["2026-01-12T06:42:03.123456789Z", "2026-01-12T06:42:03.1234567+02:00", "1969-12-31T23:59:59.999999999",
     "2026-01-12T06:42:03.1234567891", "2026-01-12T06:42:03,123456789", "2026-01-12T06:42:03.12345678z"],
])
def test_the_batch_reader_and_the_service_read_a_time_as_the_same_nanosecond(given):
    """Whole epochs written as text are integers (through float64 a ms epoch moved by up to 256 ns), and
    an ISO time keeps its nanoseconds on the service too (datetime stops at microseconds)."""
    from gpuclust.preprocess.parse import parse_timestamps
    from gpuclust.serve.events import timestamps_ns

    read = parse_timestamps(pd.Series(given, dtype=object), pd)
    assert not read.unparseable.any()
    assert read.values.astype("int64").tolist() == timestamps_ns(given).tolist()


def test_a_fit_on_dask_places_its_own_users_as_predict_does(data, scheduler):
    """The assignments of a fit on Dask are what its model's predict gives for the training events."""
    config = PipelineConfig(device="cpu", seed=0)
    config.cluster.k = 4
    fitted = UserClusterer(config=config, scheduler=scheduler).fit(data.events, data.items)
    fit = fitted.labels_.set_index("user_id").sort_index()
    again = fitted.predict(data.events).set_index("user_id").sort_index()
    assert fit.index.equals(again.index)
    np.testing.assert_array_equal(fit["cluster"].to_numpy(), again["cluster"].to_numpy())
    np.testing.assert_allclose(fit["distance"].to_numpy(), again["distance"].to_numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fit["anomaly_score"].to_numpy(), again["anomaly_score"].to_numpy(), rtol=1e-3,
                               atol=1e-3)


def test_a_sampled_fit_places_its_sample_as_predict_does(data, tmp_path):
    """By design `sample_users` chooses whom the fit learns from (and so whom labels_ lists): predict
    places every user, and the sampled ones as the fit did."""
    m = _fit(tmp_path, "sampled", data, cluster__k=4, preprocess__sample_users=150)
    fit = m.fitted.labels_.set_index("user_id").sort_index()
    again = m.fitted.predict(data.events).set_index("user_id").sort_index()
    assert len(fit) == 150 and len(again) == data.truth.shape[0]
    again = again.loc[fit.index]
    np.testing.assert_array_equal(fit["cluster"].to_numpy(), again["cluster"].to_numpy())
    np.testing.assert_allclose(fit["distance"].to_numpy(), again["distance"].to_numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("batch", ["mixed_bag", "dup_case_type", "late_unknown_type", "dup_negative_zero"])
def test_the_service_counts_events_for_drift_as_predict_does(batch, data, models):
    """/metrics' drift counts (events, unknown items, unknown types, types) are `gpuclust drift`'s."""
    from gpuclust.quality.drift import event_counts
    from gpuclust.serve.events import read_body
    from gpuclust.serve.fastpath import FastAssigner

    model = models["default"].loaded()
    records = _batch(batch, data)
    served = FastAssigner(model).prepare(read_body({"events": records}, 10**6)).counts
    batch_counts = event_counts(model.place(pd.DataFrame(records))[1])
    assert vars(served) == vars(batch_counts)


@pytest.mark.parametrize("name", ["events.jsonl", "events.json"])
def test_a_json_id_wider_than_int64_is_text_as_on_the_service(name, tmp_path):
    """pandas' JSON parser refuses an integer beyond 64 bits; the service and a frame read it as text."""
    from gpuclust.config import ColumnMap
    from gpuclust.io.inputs import read_inputs

    rows = [{"user_id": 2**70, "item_id": 1, "event_type": "view", "timestamp": 1768200123},
            {"user_id": 3, "item_id": 2, "event_type": "view", "timestamp": 1768200124}]
    path = tmp_path / name
    path.write_text(json.dumps(rows) if name.endswith(".json") else "".join(json.dumps(r) + "\n" for r in rows))
    events = read_inputs(pd, ColumnMap(), path).events
    assert [canonical_id(u) for u in events["user_id"]] == [str(2**70), "3"]


def _as_file(records: list[dict[str, Any]], path: Path) -> Path:
    frame = pd.DataFrame(records)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize("batch", ["mixed_units", "duplicates", "null_values"])
def test_csv_parquet_and_the_columns_form_read_as_json_lines(suffix, batch, data, models, tmp_path, monkeypatch,
                                                             capsys):
    """The same events as CSV or Parquet through `gpuclust assign`, and in the service's compact
    `columns` form, are placed as from JSON Lines."""
    model = models["default"]
    records = _batch(batch, data)
    if suffix == ".parquet" and batch in ("mixed_units", "null_values"):
        records = [dict(r, timestamp=str(r["timestamp"])) for r in records]  # one type a Parquet column
    want = _cli(model, records, tmp_path, monkeypatch, capsys)
    path = _as_file(records, tmp_path / f"batch{suffix}")
    out = tmp_path / "from-file"
    code, _, err = cli(monkeypatch, capsys, "assign", "--model", model.run / "model", "--events", path, "--out", out)
    assert code == 0, err
    got = Answer(unplaced=_unplaced(_drops_from(err.splitlines())), drops=_drops_from(err.splitlines()))
    for r in pd.read_parquet(out / "assignments.parquet").itertuples():
        got.placed[canonical_id(r.user_id)] = (int(r.cluster), float(r.distance), float(r.anomaly_score))
    fields = ("user_id", "item_id", "event_type", "timestamp", "value")
    columns = {f: [r.get(f) for r in records] for f in fields}
    body = model.client().post("/v1/assign", json={"columns": columns}).json()
    served = Answer(unplaced=len(body["unplaced"]))
    for u in body["users"]:
        served.placed[canonical_id(u["user_id"])] = (u["cluster"], u["distance"], u["anomaly_score"])
    want.lists = None
    _agree({"jsonl": want, "file": got, "columns": served})


@pytest.fixture(scope="module")
def user_text_model(tmp_path_factory, data) -> Iterator[Model]:
    """User-mode text: the service has no fast path for it and runs predict per request (`predict_request`)."""
    m = _fit(tmp_path_factory.mktemp("user-text"), "user-text", data, cluster__k=4, features__features=("text",),
             features__text__mode="user")
    yield m
    m.stack.close()


@pytest.mark.parametrize("batch", ["mixed_bag", "iso_ns", "all_unknown"])
def test_the_service_fallback_agrees_too(batch, data, user_text_model, tmp_path, monkeypatch, capsys):
    answers = _all(user_text_model, _batch(batch, data), tmp_path, monkeypatch, capsys)
    assert "user mode" in str(user_text_model.client().get("/healthz").json()["fast_path"])
    if batch in SERVICE_ALL_UNPLACED:
        served = answers.pop("service")
        assert not served.placed and served.unplaced and answers["python"].refused
    _agree(answers)
