"""The service under a hostile caller (issue 18): never a 500 or a traceback, admin routes guarded,
damaged models refused on reload, the loop free while big requests run, options refused in one line,
and a real server that stops within a bound whatever its clients hold."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from gpuclust import UserClusterer  # noqa: E402
from gpuclust.errors import UsageError  # noqa: E402
from gpuclust.privacy import Pseudonymiser  # noqa: E402
from gpuclust.serve.app import ServeSettings, create_app  # noqa: E402
from gpuclust.serve.batcher import MicroBatcher  # noqa: E402
from gpuclust.synth import SynthSpec, generate  # noqa: E402

ADMIN = "an-admin-token-for-the-tests-987"
CLIENT = "a-client-token-for-the-tests-123"
KEY = Pseudonymiser(b"a key for the hostile serve tests")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A plain model and a pseudonymised one (behaviour + TF-IDF: the fast path), and the data."""
    root = tmp_path_factory.mktemp("hostile")
    data = generate(SynthSpec(n_users=300, n_items=150, n_groups=3, seed=3))
    UserClusterer(3, device="cpu", features=("behaviour", "tfidf")).fit(data.events, data.items).save(root / "plain")
    UserClusterer(3, device="cpu", features=("behaviour", "tfidf"), pseudonymise=KEY).fit(
        data.events, data.items).save(root / "private")
    return root, data


@pytest.fixture(scope="module")
def client(models):
    root, _ = models
    with TestClient(create_app(ServeSettings(root / "plain", device="cpu")), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def private(models):
    root, _ = models
    app = create_app(ServeSettings(root / "private", device="cpu", pseudonymiser=KEY))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _event(data, **changes) -> dict:
    first = data.events.iloc[0]
    return {"user_id": "u1", "item_id": int(first["item_id"]), "event_type": "purchase",
            "timestamp": "2026-01-01T00:00:00Z", "value": 1.0, **changes}


def _post(c: TestClient, path: str, body: dict | bytes):
    """JSON as an HTTP client writes it (ASCII escapes: a lone surrogate travels as \\ud800)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return c.post(path, content=raw, headers={"content-type": "application/json"})


def _one_line_4xx(r, status: int | None = None) -> str:
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    if status is not None:
        assert r.status_code == status, r.text[:300]
    body = r.json()
    assert list(body) == ["error"] and "\n" not in body["error"] and len(body["error"]) < 600
    assert "Traceback" not in r.text and 'File "' not in r.text
    return body["error"]


def _no_500(c: TestClient) -> None:
    assert 'code="500"' not in c.get("/metrics").text


# --- never a 500 ---------------------------------------------------------------------------------

@pytest.mark.parametrize("timestamp", ["--5", "²", "-²", "١٢٣", "1" * 5000, "-" + "9" * 4400, "9" * 21,
                                       10**400, -(10**30), "2026-01-01T00:00:00+23:59x", "0001-01-01T00:00:00+23:00"])
def test_timestamps_that_look_like_numbers_are_a_422(client, models, timestamp):
    _, data = models
    error = _one_line_4xx(_post(client, "/v1/assign", {"events": [_event(data, timestamp=timestamp)]}), 422)
    assert error.startswith("event 0: timestamp") and len(error) < 200
    _no_500(client)


@pytest.mark.parametrize("value", [10**400, -(10**400), 10**39, 3.5e38])
def test_values_beyond_float32_are_a_422(client, models, value):
    _, data = models
    error = _one_line_4xx(_post(client, "/v1/assign", {"events": [_event(data, value=value)]}), 422)
    assert "not a finite float32 number" in error and len(error) < 200


@pytest.mark.parametrize("path", ["/v1/assign", "/v1/recommend"])
def test_purchases_whose_sum_overflows_float32_are_placed(client, models, path):
    """Two purchases of 3.4e38 are each fine; their float32 sum is inf. The answer is a placement."""
    _, data = models
    item = int(data.events["item_id"].iloc[0])
    body = {"events": [_event(data, item_id=item, value=3.4e38, timestamp=f"2026-01-0{d}T00:00:00Z")
                       for d in (1, 2)] + [_event(data, user_id="u2", value=-3.4e38),
                                           _event(data, user_id="u2", value=-3.4e38, timestamp=1.7e9)]}
    r = _post(client, path, body)
    assert r.status_code == 200, r.text
    users = r.json()["users"] + r.json()["unplaced"]
    assert {u["user_id"] for u in users} == {"u1", "u2"}
    for user in r.json()["users"]:
        assert math.isfinite(user["distance"]) and math.isfinite(user["anomaly_score"])
    _no_500(client)


def test_a_lone_surrogate_user_id_is_a_422_on_a_private_model_and_a_plain_one(client, private, models):
    _, data = models
    for c in (private, client):
        for field in ("user_id", "item_id"):
            error = _one_line_4xx(_post(c, "/v1/assign", {"events": [_event(data, **{field: "\ud800"})]}), 422)
            assert "lone surrogate" in error
        columns = {"columns": {"user_id": ["ok", "a\udfffb"], "item_id": [1, 2], "timestamp": [1, 2]}}
        assert "event 1: user_id" in _one_line_4xx(_post(c, "/v1/recommend", columns), 422)
        _no_500(c)
    r = _post(private, "/v1/assign", {"events": [_event(data, user_id="ok-\u00e9-\U0001f600")]})  # real Unicode
    assert r.status_code == 200 and r.json()["users"][0]["user_id"] == "ok-\u00e9-\U0001f600"


def test_a_bom_and_a_lower_case_z_are_accepted(client, models):
    """Decided: both are read (a BOM is what some Windows tools write; RFC 3339 allows `z`)."""
    _, data = models
    body = {"events": [_event(data)]}
    want = _post(client, "/v1/assign", body).json()
    lower = {"events": [_event(data, timestamp="2026-01-01t00:00:00z")]}
    assert _post(client, "/v1/assign", b"\xef\xbb\xbf" + json.dumps(lower).encode()).json() == want


def test_an_escaped_exception_is_one_log_line_and_a_500_body_without_a_traceback(models, capsys):
    """The last line of defence: a bug (here a model state broken on purpose) is a one-line 500."""
    root, data = models
    app = create_app(ServeSettings(root / "plain", device="cpu", batching=False))
    app.service.state.assigner.est.cluster_centers_ = None  # not a request's doing: an internal error
    with TestClient(app, raise_server_exceptions=False) as c:
        r = _post(c, "/v1/assign", {"events": [_event(data)]})
        assert r.status_code == 500 and r.json() == {"error": "internal error; the server log has the details"}
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("internal error:") == 1 and " at " in err


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(["user_id", "item_id", "event_type", "timestamp", "value"]),
       odd=st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=10**20, max_value=10**500),
                     st.floats(allow_nan=False), st.text(max_size=30),
                     st.text(alphabet=st.characters(categories=["Nd", "No", "Pd", "Cs"]), max_size=25),
                     st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                          max_size=1)))
def test_any_value_in_any_field_is_an_answer_or_a_one_line_4xx(client, models, field, odd):
    _, data = models
    for path in ("/v1/assign", "/v1/recommend"):
        r = _post(client, path, {"events": [_event(data, **{field: odd}), _event(data, timestamp=1.7e9)]})
        if r.status_code != 200:
            _one_line_4xx(r)
        else:
            json.loads(r.text)  # finite numbers only (allow_nan=False would have raised)


# --- reload and admin routes -----------------------------------------------------------------------

def _damage(folder, edit) -> None:
    """Edit model.json and recompute the checksums, as whoever can write the folder can."""
    path = folder / "model.json"
    path.write_text(edit(path.read_text()))
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}" for p in sorted(folder.iterdir())
             if p.name != "checksums.sha256"]
    (folder / "checksums.sha256").write_text("\n".join(lines) + "\n")


def _set(key: str, value: str):
    def edit(text: str) -> str:
        doc = json.loads(text)
        doc["config"]["preprocess"][key] = json.loads(value)
        return json.dumps(doc)
    return edit


def _nested(text: str) -> str:
    doc = json.loads(text)
    doc["profiles_extra"] = "NEST"
    return json.dumps(doc).replace('"NEST"', "[" * 100_000 + "]" * 100_000)


@pytest.mark.parametrize("edit", [_set("session_gap_minutes", "1e308"), _set("min_user_events", "1e11"),
                                  _set("min_user_events", "-3"), _nested], ids=["gap", "min-events", "neg", "nested"])
def test_reload_of_a_model_damaged_with_its_checksums_recomputed_is_a_409_without_the_path(models, tmp_path, edit,
                                                                                           capsys):
    root, data = models
    folder = tmp_path / "served-model-secret-place"
    shutil.copytree(root / "plain", folder)
    app = create_app(ServeSettings(folder, device="cpu", admin_token=ADMIN))
    with TestClient(app, raise_server_exceptions=False) as c:
        c.headers["Authorization"] = f"Bearer {ADMIN}"
        before = c.get("/healthz").json()["model_id"]
        _damage(folder, edit)
        r = c.post("/v1/admin/reload")
        error = _one_line_4xx(r, 409)
        assert f"still serving model {before}" in error
        assert "served-model-secret-place" not in r.text and str(tmp_path) not in r.text
        assert c.get("/healthz").json()["model_id"] == before
        assert _post(c, "/v1/assign", {"events": [_event(data)]}).status_code == 200
        _no_500(c)
    err = capsys.readouterr().err
    assert "reload refused" in err and "Traceback" not in err  # the operator's log has the whole reason
    with pytest.raises(UsageError):  # and a service cannot start on it either
        create_app(ServeSettings(folder, device="cpu"))


def test_admin_routes_need_the_admin_token_and_are_off_without_one(models):
    root, _ = models
    refusal = "admin routes are off"
    with TestClient(create_app(ServeSettings(root / "plain", device="cpu")), raise_server_exceptions=False) as c:
        assert refusal in _one_line_4xx(c.post("/v1/admin/reload"), 403)  # no token at all: anyone on the host
        assert refusal in _one_line_4xx(c.post("/v1/admin/reload/"), 403)
    app = create_app(ServeSettings(root / "plain", device="cpu", token=CLIENT, admin_token=ADMIN))
    with TestClient(app, raise_server_exceptions=False) as c:
        for header in ("", f"Bearer {CLIENT}", f"Bearer {ADMIN}x", ADMIN):
            _one_line_4xx(c.post("/v1/admin/reload", headers={"Authorization": header}), 401)
        assert c.post("/v1/admin/reload", headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 200
        assert c.get("/v1/clusters", headers={"Authorization": f"Bearer {CLIENT}"}).status_code == 200
        _one_line_4xx(c.get("/v1/clusters", headers={"Authorization": f"Bearer {ADMIN}"}), 401)  # not a client token
    app = create_app(ServeSettings(root / "plain", device="cpu", token=CLIENT))
    with TestClient(app, raise_server_exceptions=False) as c:  # a client token does not open admin routes
        _one_line_4xx(c.post("/v1/admin/reload", headers={"Authorization": "Bearer wrong"}), 401)
        assert refusal in _one_line_4xx(c.post("/v1/admin/reload", headers={"Authorization": f"Bearer {CLIENT}"}),
                                        403)


# --- the loop stays free -----------------------------------------------------------------------------

def test_healthz_answers_while_big_requests_are_placed(models):
    """Three requests of 60,000 events (ISO timestamps: the slow parse) run; /healthz still answers
    within a small fraction of their time, because parsing and placing run in worker threads."""
    root, data = models
    events = data.events.sample(60_000, replace=True, random_state=0)
    body = json.dumps({"columns": {"user_id": [f"u{u % 900}" for u in range(len(events))],
                                   "item_id": events["item_id"].tolist(),
                                   "event_type": events["event_type"].astype(str).tolist(),
                                   "timestamp": [t.isoformat() for t in events["timestamp"]],
                                   "value": events["value"].astype(float).tolist()}}).encode()
    app = create_app(ServeSettings(root / "plain", device="cpu", max_body_bytes=64 * 2**20))
    with TestClient(app, raise_server_exceptions=False) as c:
        big: list[float] = []

        def heavy() -> None:
            started = time.perf_counter()
            r = c.post("/v1/recommend", content=body, headers={"content-type": "application/json"})
            assert r.status_code == 200, r.text[:200]
            big.append(time.perf_counter() - started)

        threads = [threading.Thread(target=heavy) for _ in range(3)]
        for t in threads:
            t.start()
        pings = []
        while any(t.is_alive() for t in threads):
            started = time.perf_counter()
            assert c.get("/healthz").status_code == 200
            pings.append(time.perf_counter() - started)
            time.sleep(0.02)
        for t in threads:
            t.join()
    assert len(big) == 3 and len(pings) >= 5
    assert max(pings) < max(0.25 * min(big), 0.1), (max(pings), big)


def test_batch_waits_are_bounded():
    for wait in (float("inf"), float("nan"), -1.0, 1001.0):
        with pytest.raises(UsageError, match="--batch-wait-ms"):
            ServeSettings("m", batch_wait_ms=wait)
        with pytest.raises(ValueError, match="max_wait_s"):
            MicroBatcher(lambda state, works: works, max_wait_s=wait / 1000)


def test_a_request_body_sent_within_the_deadline_is_answered(models):
    """The body deadline does not cut a client that is merely slow but in time."""
    root, data = models
    app = create_app(ServeSettings(root / "plain", device="cpu", read_timeout_s=5.0))
    body = json.dumps({"events": [_event(data)]}).encode()

    def slowly():
        for i in range(0, len(body), 40):
            time.sleep(0.02)
            yield body[i:i + 40]

    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.post("/v1/assign", content=slowly(), headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text
        assert np.isfinite(r.json()["users"][0]["distance"])
