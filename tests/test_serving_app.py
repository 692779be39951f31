"""The HTTP routes in process (FastAPI TestClient, no Ray): results and every 4xx."""

import json

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from serving.app import DirectBackend, create_app
from serving.codecs import ARROW_STREAM, table_from_arrow, table_to_arrow
from serving.service import Limits, ModelService

# Shared with the real-Serve tests (tests/integration/test_serving.py): same limits there.
LIMITS = Limits(max_rows=500, max_generate=1000, max_body_bytes=2_000_000)


@pytest.fixture(scope="module")
def service(adult_cvae):
    return ModelService(adult_cvae, {"name": "adult", "version": "1", "alias": "champion"},
                        LIMITS)


@pytest.fixture(scope="module")
def client(service):
    backend = DirectBackend(service)
    return TestClient(create_app(lambda: backend))


def rows(table: pa.Table, n: int) -> list[dict]:
    return table.slice(0, n).to_pylist()


def test_score_json_and_arrow_match_in_process(client, adult_cvae, adult_test):
    expected = adult_cvae.score(adult_test.slice(0, 30), seed=5)
    r = client.post("/v1/score?seed=5", json={"rows": rows(adult_test, 30)})
    assert r.status_code == 200
    got = r.json()["rows"]
    assert [g["log_px"] for g in got] == pytest.approx(expected.column("log_px").to_pylist())
    assert [g["top_columns"] for g in got] == expected.column("top_columns").to_pylist()
    r = client.post("/v1/score?seed=5", content=table_to_arrow(adult_test.slice(0, 30)),
                    headers={"content-type": ARROW_STREAM})
    assert r.headers["content-type"] == ARROW_STREAM
    assert table_from_arrow(r.content, 100).equals(expected)


def test_embed_generate_model_health(client, adult_cvae, adult_test):
    r = client.post("/v1/embed?return_std=true", json={"rows": rows(adult_test, 4)})
    assert r.status_code == 200 and set(r.json()["rows"][0]) == \
        {f"z_{i}" for i in range(8)} | {f"zstd_{i}" for i in range(8)}
    assert r.json()["rows"][0]["z_0"] == pytest.approx(float(adult_cvae.embed(
        adult_test.slice(0, 1))[0, 0]))
    body = {"n": 20, "conditions": {"income": ">50K"}, "seed": 3}
    a, b = client.post("/v1/generate", json=body), client.post("/v1/generate", json=body)
    assert a.status_code == 200 and a.json() == b.json()
    assert {r["income"] for r in a.json()["rows"]} == {">50K"}
    info = client.get("/v1/model").json()
    assert info["alias"] == "champion" and info["thresholds"]["0.99"] > 0
    assert [c["name"] for c in info["schema"]] == adult_test.column_names
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/openapi.json").status_code == 200


def _with(rows_, **changes):
    rows_[0].update(changes)
    return rows_


BAD_SCORE_REQUESTS = [
    (lambda t: {"json": {"rows": [{k: v for k, v in r.items() if k != "age"} for r in rows(t, 2)]}},
     422, "column 'age' is missing"),
    (lambda t: {"json": {"rows": _with(rows(t, 2), age="old")}}, 422, "column 'age'"),
    (lambda t: {"content": json.dumps({"rows": _with(rows(t, 2), age=float("nan"))}),
                "headers": {"content-type": "application/json"}}, 422, "nan is not allowed"),
    (lambda t: {"json": {"rows": []}}, 400, "non-empty list"),
    (lambda t: {"json": {"rows": rows(t, 501)}}, 413, "too many rows"),
    (lambda t: {"content": b"{not json", "headers": {"content-type": "application/json"}},
     400, "malformed JSON"),
    (lambda t: {"content": b"garbage", "headers": {"content-type": ARROW_STREAM}}, 400,
     "malformed Arrow"),
    (lambda t: {"content": b"x" * 2_000_001, "headers": {"content-type": "application/json"}},
     413, "limit"),
    (lambda t: {"json": {"rowz": []}}, 400, "'rows'"),
]
BAD_GENERATE_REQUESTS = [
    ({"n": 5000}, 413, "n must be in 1..1000"),
    ({"n": 0}, 422, "n must be in"),
    ({"n": "5"}, 400, "integer 'n'"),
    ({"n": 5, "conditions": {"income": "lots"}}, 422, "'income': condition value 'lots'"),
    ({"n": 5, "temperature": 2}, 400, "unknown field 'temperature'"),
]


@pytest.mark.parametrize("make_request, status, words", BAD_SCORE_REQUESTS)
def test_bad_score_requests_get_a_4xx_naming_the_problem(client, adult_test, make_request,
                                                          status, words):
    r = client.post("/v1/score", **make_request(adult_test))
    assert r.status_code == status, r.text
    assert words in r.json()["error"]


def test_unseen_category_is_scored_and_flagged(client, adult_test):
    r = client.post("/v1/score", json={"rows": _with(rows(adult_test, 2),
                                                     **{"native-country": "Atlantis"})})
    assert r.status_code == 200
    assert [x["unseen_categories"] for x in r.json()["rows"]] == [1, 0]


@pytest.mark.parametrize("body, status, words", BAD_GENERATE_REQUESTS)
def test_bad_generate_requests(client, body, status, words):
    r = client.post("/v1/generate", json=body)
    assert r.status_code == status and words in r.json()["error"]


def test_bearer_token(service, adult_test):
    client = TestClient(create_app(lambda: DirectBackend(service, token="s3cret")))
    body = {"rows": rows(adult_test, 1)}
    assert client.post("/v1/score", json=body).status_code == 401
    assert client.post("/v1/score", json=body,
                       headers={"authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/v1/score", json=body,
                       headers={"authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/healthz").status_code == 200  # probes need no token
