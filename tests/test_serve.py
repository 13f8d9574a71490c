"""The segment service: the fast path equals predict(), the HTTP contract, hostile input, auth, reload."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from gpuclust import PipelineConfig, UserClusterer  # noqa: E402
from gpuclust.serve.app import ServeSettings, Work, create_app  # noqa: E402
from gpuclust.serve.events import read_body  # noqa: E402
from gpuclust.serve.fastpath import FastAssigner  # noqa: E402
from gpuclust.serve.state import load_state  # noqa: E402
from gpuclust.synth import SynthSpec, generate  # noqa: E402

TOKEN = "a-token-for-the-tests-0123456789"
ADMIN_TOKEN = "an-admin-token-for-the-tests-987"


def _embed(texts):
    """A cheap deterministic text encoder: hashed words, so the text feature runs without a model."""
    out = np.zeros((len(texts), 16), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in text.split():
            out[i, int(hashlib.md5(word.encode()).hexdigest(), 16) % 16] += 1.0
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Every fast-path featuriser at once: behaviour (quantile), TF-IDF (items + categories), text with
    time decay, and a PCA reducer."""
    root = tmp_path_factory.mktemp("serve")
    data = generate(SynthSpec(n_users=900, n_items=400, n_groups=4, seed=5))
    config = PipelineConfig(device="cpu", seed=0)
    config.cluster.k = 4
    config.features.features = ("behaviour", "tfidf", "text")
    config.features.normalise = "quantile"
    config.features.text.half_life_days = 7.0
    config.reduce.method = "pca"
    config.reduce.n_components = 8
    fitted = UserClusterer(config=config, embedding_model=_embed).fit(data.events, data.items)
    fitted.save(root / "model")
    other = UserClusterer(n_clusters=3, device="cpu", features=("tfidf",)).fit(data.events, data.items)
    other.save(root / "other")
    return root, fitted, data


def _body(events: pd.DataFrame, **extra) -> dict:
    return {"events": [{"user_id": int(r.user_id), "item_id": int(r.item_id), "event_type": str(r.event_type),
                        "timestamp": r.timestamp.isoformat(), "value": float(r.value)} for r in events.itertuples()],
            **extra}


def _columns(events: pd.DataFrame) -> dict:
    return {"columns": {"user_id": events["user_id"].tolist(), "item_id": events["item_id"].tolist(),
                        "event_type": events["event_type"].astype(str).tolist(),
                        "timestamp": (events["timestamp"].astype("datetime64[ms]").astype("int64")).tolist(),
                        "value": events["value"].astype(float).tolist()}}


# --- the fast path is predict() -----------------------------------------------------------------

def test_fast_path_equals_predict_for_a_few_hundred_users(world):
    root, _, data = world
    model = UserClusterer.load(root / "model", device="cpu")
    fast = FastAssigner(model)
    assert fast.fallback is None
    users = data.truth["user_id"].iloc[::3]  # 300 users in one request
    events = data.events[data.events["user_id"].isin(users)]
    prepared = fast.prepare(read_body(_columns(events), 10**7))
    placed = fast.place([prepared])[0]
    want = model.predict(events).set_index("user_id").loc[[prepared.user_ids[p] for p in prepared.placed]]
    assert len(want) == 300
    np.testing.assert_array_equal(placed.cluster, want["cluster"].to_numpy())
    np.testing.assert_allclose(placed.distance, want["distance"].to_numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(placed.anomaly_score, want["anomaly_score"].to_numpy(), rtol=1e-3, atol=1e-3)


def test_a_micro_batch_gives_each_request_what_predict_gives_it_alone(world):
    """Recency and time decay run from each request's own latest event, whoever shares the batch."""
    root, _, data = world
    model = UserClusterer.load(root / "model", device="cpu")
    fast = FastAssigner(model)
    users = data.truth["user_id"].iloc[:16].tolist()
    requests = [data.events[data.events["user_id"] == u] for u in users]
    # One request holds two users and repeats an event, one has a single event of an unknown type too.
    requests.append(data.events[data.events["user_id"].isin(users[:2])])
    requests[0] = pd.concat([requests[0], requests[0].head(3)])
    placed = fast.place([fast.prepare(read_body(_body(r), 10**6)) for r in requests])
    for events, got in zip(requests, placed, strict=True):
        want = model.predict(events)
        np.testing.assert_array_equal(got.cluster, want["cluster"].to_numpy())
        np.testing.assert_allclose(got.distance, want["distance"].to_numpy(), rtol=1e-4, atol=1e-5)


def test_users_without_known_items_or_types_are_unplaced_with_the_reason(world):
    root, _, data = world
    fast = FastAssigner(UserClusterer.load(root / "model", device="cpu"))
    body = {"events": [
        {"user_id": "a", "item_id": int(data.events["item_id"].iloc[0]), "event_type": "View ", "timestamp": 1.7e9},
        {"user_id": "b", "item_id": 10**12, "event_type": "view", "timestamp": "2026-01-01T00:00:00Z"},
        {"user_id": "c", "item_id": 1, "event_type": "wishlist", "timestamp": "2026-01-01T00:00:00+02:00"},
    ]}
    prepared = fast.prepare(read_body(body, 100))
    assert [prepared.user_ids[p] for p in prepared.placed] == ["a"]
    assert prepared.dropped == {1: "no event on an item the model knows", 2: "no event of a type the model knows"}
    assert (prepared.counts.events, prepared.counts.unknown_items, prepared.counts.unknown_event_types) == (3, 1, 1)


# --- the HTTP contract ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def client(world):
    root, _, _ = world
    app = create_app(ServeSettings(root / "model", device="cpu", token=TOKEN, max_users=50, max_events=5000,
                                   max_body_bytes=200_000))
    with TestClient(app, raise_server_exceptions=False) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        yield c


def test_assign_recommend_clusters_healthz_and_metrics(client, world):
    root, fitted, data = world
    user = int(data.truth["user_id"].iloc[7])
    events = data.events[data.events["user_id"] == user]
    r = client.post("/v1/assign", json=_body(events))
    assert r.status_code == 200, r.text
    (got,) = r.json()["users"]
    want = fitted.predict(events).iloc[0]
    assert got["user_id"] == user and got["cluster"] == int(want["cluster"])
    assert got["distance"] == pytest.approx(float(want["distance"]), abs=1e-5)
    assert got["label"] == next(p.get("label") for p in fitted.profiles_ if p["cluster"] == got["cluster"])

    r = client.post("/v1/recommend", json=_body(events, n=7))
    rec = r.json()["users"][0]
    assert len(rec["items"]) == 7 and r.json()["blend_weight"] == fitted.segments_.blend_weight
    assert not {i["item_id"] for i in rec["items"]} & set(events["item_id"])  # nothing the user has seen
    scores = [i["score"] for i in rec["items"]]
    assert scores == sorted(scores, reverse=True) and "title" in rec["items"][0]
    # the same lists as the library's own recommender, personal where the user has enough history
    users = data.truth["user_id"].iloc[:12].tolist()
    some = data.events[data.events["user_id"].isin(users)]
    served = client.post("/v1/recommend", json=_body(some, n=5)).json()["users"]
    expect = fitted.recommend(some, top_k=5)
    assert fitted.personal_ is not None and len(served) == len(users)
    for entry in served:
        mine = expect[expect["user_id"] == entry["user_id"]].sort_values("rank")
        assert [i["item_id"] for i in entry["items"]] == mine["item_id"].tolist()
        assert [i["source"] for i in entry["items"]] == mine["source"].tolist()
        assert [i["score"] for i in entry["items"]] == pytest.approx(mine["score"].tolist(), abs=1e-5)

    clusters = client.get("/v1/clusters").json()
    assert len(clusters["clusters"]) == 4 and clusters["model_id"] == r.json()["model_id"]
    health = client.get("/healthz", headers={"Authorization": ""}).json()  # open: for load balancers
    assert health["status"] == "ok" and health["fast_path"] is True and health["clusters"] == 4

    text = client.get("/metrics").text
    for family in ("gpuclust_requests_total", "gpuclust_request_errors_total", "gpuclust_request_duration_seconds",
                   "gpuclust_batch_users", "gpuclust_model_info", "gpuclust_cluster_share", "gpuclust_drift"):
        assert f"# TYPE {family} " in text
    assert 'gpuclust_requests_total{endpoint="/v1/assign",code="200"}' in text
    assert f'model_id="{health["model_id"]}"' in text
    assert 'gpuclust_drift{measure="cluster_share_psi"}' in text


def test_the_token_is_required_on_v1_and_metrics(client):
    for path, method in (("/v1/assign", "post"), ("/v1/clusters", "get"), ("/metrics", "get"),
                         ("/v1/admin/reload", "post"), ("/v1/nothing-here", "get")):
        for header in ({"Authorization": ""}, {"Authorization": "Bearer wrong-token-of-some-length"},
                       {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN}):
            r = getattr(client, method)(path, headers=header)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
            assert r.json() == {"error": "missing or wrong bearer token (Authorization: Bearer TOKEN)"}


HOSTILE = [
    (b"", 400), (b"{not json", 400), (b"\xff\xfe\x00garbage", 400), (b'{"events": [{"user_id": NaN}]}', 400),
    (b"[" * 110_000 + b"]" * 110_000, 413), (b"[" * 30_000 + b"]" * 30_000, 400),
    (b"[]", 422), (b"null", 422), (b'"events"', 422), (b"{}", 422), (b'{"events": 3}', 422), (b'{"events": []}', 422),
    (b'{"events": [1, 2]}', 422), (b'{"events": [{}]}', 422), (b'{"columns": {"user_id": [1]}}', 422),
    (b'{"columns": {"user_id": [1], "item_id": [1, 2], "timestamp": [1]}}', 422),
]
FIELD_CASES = [
    {"user_id": {"a": 1}}, {"user_id": [1]}, {"user_id": True}, {"user_id": 1.5}, {"user_id": None}, {"user_id": ""},
    {"item_id": None}, {"timestamp": None}, {"timestamp": "yesterday"}, {"timestamp": "9999-99-99"},
    {"timestamp": 10**30}, {"timestamp": -1e300}, {"timestamp": [1]}, {"timestamp": True},
    {"value": "12 EUR"}, {"value": 1e300}, {"value": [1]}, {"event_type": {"x": 1}}, {"event_type": True},
]


def test_hostile_input_is_always_a_4xx_with_one_line_and_no_traceback(client):
    def check(r, status=None):
        assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
        if status is not None:
            assert r.status_code == status, r.text[:300]
        body = r.json()
        assert list(body) == ["error"] and "\n" not in body["error"] and len(body["error"]) < 400
        assert "Traceback" not in r.text and 'File "' not in r.text

    for raw, status in HOSTILE:
        check(client.post("/v1/assign", content=raw, headers={"content-type": "application/json"}), status)
    good = {"user_id": 1, "item_id": 1, "event_type": "view", "timestamp": "2026-01-01T00:00:00Z", "value": 1}
    for case in FIELD_CASES:
        check(client.post("/v1/assign", json={"events": [{**good, **case}]}), 422)
    check(client.post("/v1/assign", json={"events": [{**good, "user_id": u} for u in range(51)]}), 413)  # users
    check(client.post("/v1/assign", json={"events": [good] * 5001}), 413)  # events
    check(client.post("/v1/assign", content=b"x" * 300_000, headers={"content-type": "application/json"}), 413)
    check(client.post("/v1/assign", content=b"{}", headers={"content-type": "text/csv"}), 415)
    check(client.post("/v1/assign", content=b"{}", headers={"content-type": "application/json",
                                                            "content-length": "12x"}), 400)
    for n in (0, 101, "5", True, None):
        check(client.post("/v1/recommend", json={"events": [good], "n": n}), 422)
    check(client.get("/v1/assign"), 405)
    check(client.get("/no/such/path"), 404)
    check(client.get("/" + "a" * 5000), 404)
    # Odd but well-formed: a known user with an unknown item is unplaced, not an error.
    r = client.post("/v1/assign", json={"events": [{**good, "item_id": "no-such-item"}]})
    assert r.status_code == 200 and r.json()["unplaced"][0]["reason"] == "no event on an item the model knows"
    metrics = client.get("/metrics").text
    assert 'code="500"' not in metrics and 'endpoint="other"' in metrics


# --- reload ---------------------------------------------------------------------------------------

def test_reload_swaps_a_good_model_and_refuses_a_broken_one(world, tmp_path):
    root, fitted, data = world
    import shutil

    folder = tmp_path / "served"
    shutil.copytree(root / "model", folder)
    app = create_app(ServeSettings(folder, device="cpu", admin_token=ADMIN_TOKEN))
    events = data.events[data.events["user_id"] == data.truth["user_id"].iloc[0]]
    with TestClient(app, raise_server_exceptions=False) as c:
        c.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
        first = c.get("/healthz").json()["model_id"]
        UserClusterer.load(root / "other", device="cpu").save(folder)  # another model lands in the folder
        r = c.post("/v1/admin/reload")
        assert r.status_code == 200 and r.json()["model_id"] != first and r.json()["clusters"] == 3
        second = r.json()["model_id"]
        assert c.post("/v1/assign", json=_body(events)).json()["model_id"] == second
        arrays = folder / "arrays.safetensors"
        arrays.write_bytes(arrays.read_bytes()[:-1] + b"\x00")  # damaged in place
        r = c.post("/v1/admin/reload")
        assert r.status_code == 409 and f"still serving model {second}" in r.json()["error"]
        assert "does not match its checksum" in r.json()["error"]
        assert str(tmp_path) not in r.text and "<model folder>" in r.json()["error"]  # no server path to callers
        assert c.get("/healthz").json()["model_id"] == second
        assert c.post("/v1/assign", json=_body(events)).status_code == 200
        metrics = c.get("/metrics").text
        assert 'gpuclust_model_reloads_total{result="ok"} 1' in metrics
        assert 'gpuclust_model_reloads_total{result="refused"} 1' in metrics


def test_requests_finish_on_the_model_they_started_on(world):
    """A reload between a request's arrival and its pass through the model does not move it."""
    root, _, data = world
    app = create_app(ServeSettings(root / "model", device="cpu"))
    service = app.service
    old, new = service.state, load_state(root / "other", "cpu", None)
    seen = []
    compute = service._compute
    service.batcher.compute = lambda state, works: seen.append((state.model_id, len(works))) or compute(state, works)
    body = _body(data.events[data.events["user_id"] == data.truth["user_id"].iloc[0]])

    async def scenario():
        await service.start()
        first = [asyncio.ensure_future(service.place(body)) for _ in range(5)]
        await asyncio.sleep(0)  # they have arrived and hold the old model
        service.state = new  # what a reload does
        later = [asyncio.ensure_future(service.place(body)) for _ in range(3)]
        results = await asyncio.gather(*first, *later)
        await service.stop()
        return results

    results = asyncio.run(scenario())
    assert [state.model_id for state, _, _ in results] == [old.model_id] * 5 + [new.model_id] * 3
    assert seen == [(old.model_id, 5), (new.model_id, 3)]  # merged per model, never across


def test_concurrent_requests_share_passes_and_match_unbatched_answers(world):
    root, _, data = world
    bodies = [_body(data.events[data.events["user_id"] == u]) for u in data.truth["user_id"].iloc[:24]]
    answers = {}
    for batching in (True, False):
        app = create_app(ServeSettings(root / "model", device="cpu", batching=batching))
        with TestClient(app) as c, ThreadPoolExecutor(8) as pool:
            answers[batching] = [r.json()["users"] for r in pool.map(lambda b: c.post("/v1/assign", json=b), bodies)]
            assert all(r for r in answers[batching])
            metrics = c.get("/metrics").text
        passes = int(next(line.split()[-1] for line in metrics.splitlines()
                          if line.startswith("gpuclust_batch_requests_count")))
        assert passes <= 24 if batching else passes == 24
    # The same clusters; distances agree to float32 rounding (a batch's matrix products sum in another order).
    for batched, alone in zip(answers[True], answers[False], strict=True):
        assert [u["cluster"] for u in batched] == [u["cluster"] for u in alone]
        assert [u["distance"] for u in batched] == pytest.approx([u["distance"] for u in alone], abs=1e-5)


def test_work_counts_at_least_one_user():
    assert Work(type("P", (), {"n_placed": 0})(), None).users == 1


# --- privacy and the real server ------------------------------------------------------------------

def test_a_private_model_needs_its_key_and_echoes_only_what_the_caller_sent(tmp_path, capsys):
    from gpuclust.errors import UsageError
    from gpuclust.privacy import Pseudonymiser

    data = generate(SynthSpec(n_users=300, n_items=150, n_groups=3, seed=2))
    events = data.events.assign(user_id="rawuser-" + data.events["user_id"].astype(str))
    key = Pseudonymiser(b"a key for the serve privacy test")
    UserClusterer(3, device="cpu", pseudonymise=key).fit(events, data.items).save(tmp_path / "m")
    with pytest.raises(UsageError, match="same key"):
        create_app(ServeSettings(tmp_path / "m", device="cpu"))
    with TestClient(create_app(ServeSettings(tmp_path / "m", device="cpu", pseudonymiser=key))) as c:
        one = events[events["user_id"] == events["user_id"].iloc[0]]
        body = {"events": [{**e, "timestamp": e["timestamp"].isoformat()} for e in one.to_dict("records")]}
        r = c.post("/v1/recommend", json=body)
        assert r.status_code == 200 and r.json()["users"][0]["user_id"] == one["user_id"].iloc[0]
        for path in ("/metrics", "/healthz", "/v1/clusters"):
            assert "rawuser" not in c.get(path).text
    captured = capsys.readouterr()
    assert "rawuser" not in captured.out + captured.err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.read().decode()


def _wait(predicate, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
def test_sighup_reloads_the_real_server_and_a_broken_model_keeps_the_old_one(world, tmp_path):
    import shutil

    root, _, _ = world
    folder = tmp_path / "served"
    shutil.copytree(root / "model", folder)
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen([sys.executable, "-c", "from gpuclust.cli.entry import main; main()", "serve",
                               "--model", str(folder), "--port", str(port), "--device", "cpu"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert _wait(lambda: json.loads(_get(port, "/healthz"))["status"] == "ok"), server.stderr.read1(4000)
        first = json.loads(_get(port, "/healthz"))["model_id"]
        UserClusterer.load(root / "other", device="cpu").save(folder)
        server.send_signal(signal.SIGHUP)
        assert _wait(lambda: json.loads(_get(port, "/healthz"))["model_id"] != first)
        second = json.loads(_get(port, "/healthz"))["model_id"]
        (folder / "model.json").write_text("{}")
        server.send_signal(signal.SIGHUP)
        assert _wait(lambda: 'gpuclust_model_reloads_total{result="refused"} 1' in _get(port, "/metrics"))
        assert json.loads(_get(port, "/healthz"))["model_id"] == second
    finally:
        server.terminate()
        _, err = server.communicate(timeout=20)
    log = err.decode()
    assert f"SIGHUP: now serving model {second}" in log and "SIGHUP: reload refused" in log
    assert "Traceback" not in log


def test_serve_command_refuses_a_missing_model_and_a_bad_token_file(tmp_path, monkeypatch, capsys):
    from helpers import cli

    code, _, err = cli(monkeypatch, capsys, "serve", "--model", tmp_path / "nothing")
    assert code == 2 and "no model at" in err
    (tmp_path / "token").write_text("short")
    code, _, err = cli(monkeypatch, capsys, "serve", "--model", tmp_path, "--token-file", tmp_path / "token")
    assert code == 2 and "at least 16 characters" in err


def test_users_with_few_events_are_placed_by_the_service_as_predict_places_them(tmp_path):
    """A fit's min_user_events chose whom to learn from; predict and /v1/assign place anyone with a
    readable event, and agree on where."""
    from helpers import blob_events

    events, items, _ = blob_events(n_users=120)
    config = PipelineConfig(device="cpu")
    config.preprocess.min_user_events = 5
    UserClusterer(3, config=config).fit(events, items).save(tmp_path / "m")
    few = events.groupby("user_id").head(2)  # two events per user: below the fit's minimum
    expect = UserClusterer.load(tmp_path / "m", device="cpu").predict(few)
    with TestClient(create_app(ServeSettings(tmp_path / "m", device="cpu"))) as client:
        users = client.post("/v1/assign", json=_body(few)).json()["users"]
    assert len(users) == len(expect) == few["user_id"].nunique()
    got = {u["user_id"]: u["cluster"] for u in users}
    assert got == dict(zip(expect["user_id"], expect["cluster"], strict=True))
