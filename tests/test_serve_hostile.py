"""The service under a hostile caller (issue 18): never a 500 or a traceback, admin routes guarded,
damaged models refused on reload, the loop free while big requests run, options refused in one line,
and a real server that stops within a bound whatever its clients hold."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from gpuclust import UserClusterer  # noqa: E402
from gpuclust.privacy import Pseudonymiser  # noqa: E402
from gpuclust.serve.app import ServeSettings, create_app  # noqa: E402
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
