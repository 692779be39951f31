"""The HTTP routes in process (FastAPI TestClient, no Ray): results, MLflow's scoring
protocol, and every 4xx."""

import json

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from serving.app import DirectBackend, create_app
from serving.codecs import ARROW_STREAM, table_from_arrow, table_to_arrow
from serving.service import ModelService
from tests.serving_cases import (
    BAD_GENERATE_REQUESTS,
    BAD_INVOCATIONS,
    BAD_SCORE_REQUESTS,
    HOSTILE_REQUESTS,
    LIMITS,
    rows,
    split,
    with_,
)


@pytest.fixture(scope="module")
def service(adult_cvae):
    return ModelService(adult_cvae, {"name": "adult", "version": "1", "alias": "champion"},
                        LIMITS)


@pytest.fixture(scope="module")
def client(service):
    backend = DirectBackend(service)
    return TestClient(create_app(lambda: backend))


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
    ranged = {"n": 30, "seed": 1, "conditions": {"age": {">=": 30, "<": 40},
                                                 "workclass": ["Private", "State-gov"]}}
    got = client.post("/v1/generate", json=ranged).json()["rows"]
    assert len(got) == 30 and all(30 <= r["age"] < 40 for r in got)
    assert {r["workclass"] for r in got} <= {"Private", "State-gov"}
    info = client.get("/v1/model").json()
    assert info["alias"] == "champion" and info["thresholds"]["0.99"] > 0
    assert [c["name"] for c in info["schema"]] == adult_test.column_names
    assert client.get("/healthz").json() == {"status": "ok"}
    stages = [part.split(";")[0] for part in a.headers["server-timing"].split(", ")]
    assert stages == ["decode", "model", "encode"]
    assert client.get("/openapi.json").status_code == 200


@pytest.mark.parametrize("make_request, status, words", BAD_SCORE_REQUESTS)
def test_bad_score_requests_get_a_4xx_naming_the_problem(client, adult_test, make_request,
                                                          status, words):
    r = client.post("/v1/score", **make_request(adult_test))
    assert r.status_code == status, r.text
    assert words in r.json()["error"]


def test_unseen_category_is_scored_and_flagged(client, adult_test):
    r = client.post("/v1/score", json={"rows": with_(rows(adult_test, 2),
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


@pytest.mark.parametrize("method, path, make_request, status, words", HOSTILE_REQUESTS)
def test_hostile_requests_get_a_4xx_naming_the_problem(client, adult_test, method, path,
                                                       make_request, status, words):
    r = client.request(method.upper(), path, **make_request(adult_test))
    assert r.status_code == status, r.text
    assert words in r.json()["error"]


def test_invocations_speak_mlflows_scoring_protocol(client, adult_cvae, adult_test):
    from mlflow.deployments import PredictionsResponse
    from mlflow.utils.proto_json_utils import dump_input_data

    t = adult_test.slice(0, 20)
    expected = adult_cvae.score(t, seed=4, top_k=2).column("log_px").to_pylist()
    bodies = {  # MLflow's own encoder of a DataFrame, and the other three JSON shapes
        "client": {"content": dump_input_data(t.to_pandas(), params={"seed": 4, "top_k": 2}),
                   "headers": {"content-type": "application/json"}},
        "records": {"json": {"dataframe_records": rows(t, 20), "params": {"seed": 4, "top_k": 2}}},
        "instances": {"json": {"instances": rows(t, 20), "params": {"seed": "4", "top_k": 2}}},
        "inputs": {"json": {"inputs": t.to_pydict(), "params": {"seed": 4, "top_k": 2.0}}},
    }
    for name, body in bodies.items():
        r = client.post("/invocations", **body)
        assert r.status_code == 200, (name, r.text)
        got = PredictionsResponse.from_json(r.text).get_predictions()
        assert got["log_px"].tolist() == pytest.approx(expected, rel=1e-6), name
        assert got["top_columns"].map(len).max() == 2
    csv = t.to_pandas().to_csv(index=False).encode()
    r = client.post("/invocations", content=csv, headers={"content-type": "text/csv"})
    assert r.status_code == 200, r.text
    assert [p["log_px"] for p in r.json()["predictions"]] == pytest.approx(
        adult_cvae.score(t).column("log_px").to_pylist(), rel=1e-6)


def test_invocations_read_pandas_nan_as_missing(client, adult_cvae, adult_test):
    from mlflow.utils.proto_json_utils import dump_input_data

    t = adult_test.slice(0, 3)
    frame = t.to_pandas()
    frame.loc[0, "age"] = float("nan")  # how pandas, and so MLflow's client, sends a gap
    age = t.schema.get_field_index("age")
    missing = t.set_column(age, "age", pa.array([None, *t.column(age).to_pylist()[1:]],
                                                t.schema.field(age).type))
    r = client.post("/invocations", content=dump_input_data(frame),
                    headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert [p["log_px"] for p in r.json()["predictions"]] == pytest.approx(
        adult_cvae.score(missing).column("log_px").to_pylist(), rel=1e-6)
    assert adult_cvae.score(missing).column("log_px")[0] != adult_cvae.score(t).column(
        "log_px")[0]


def test_invocations_embed_and_generate(client, service, adult_cvae, adult_test):
    t = adult_test.slice(0, 5)
    r = client.post("/invocations", json={"dataframe_split": split(t, 5),
                                          "params": {"mode": "embed", "return_std": True}})
    assert r.status_code == 200, r.text
    got = r.json()["predictions"]
    assert [p["z_0"] for p in got] == pytest.approx(adult_cvae.embed(t)[:, 0].tolist(), rel=1e-5)
    assert "zstd_0" in got[0]
    r = client.post("/invocations", json={"inputs": rows(t, 3),
                                          "params": {"mode": "generate", "seed": 7}})
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == 3  # n defaults to the rows sent, as the pyfunc's
    assert r.json()["predictions"] == client.post("/v1/generate", json={"n": 3, "seed": 7}
                                                  ).json()["rows"]
    conditions = {"income": ">50K", "age": {">=": 40}}  # as JSON text, or as an object
    for given in (json.dumps(conditions), conditions):
        r = client.post("/invocations", json={"inputs": rows(t, 1), "params": {
            "mode": "generate", "n": 20, "seed": 7, "conditions": given}})
        assert r.status_code == 200, r.text
        got = r.json()["predictions"]
        assert got == client.post("/v1/generate", json={"n": 20, "seed": 7,
                                                        "conditions": conditions}).json()["rows"]
        assert all(p["income"] == ">50K" and p["age"] >= 40 for p in got)


@pytest.mark.parametrize("make_request, status, words", BAD_INVOCATIONS)
def test_bad_invocations_get_a_4xx_naming_the_problem(client, adult_test, make_request, status,
                                                      words):
    r = client.post("/invocations", **make_request(adult_test))
    assert r.status_code == status, r.text
    assert words in r.json()["error"]


def test_mlflow_probes_and_the_token_on_invocations(service, adult_test):
    client = TestClient(create_app(lambda: DirectBackend(service, token="s3cret")))
    assert client.get("/ping").status_code == 200 and client.get("/health").status_code == 200
    body = {"inputs": rows(adult_test, 1)}
    assert client.post("/invocations", json=body).status_code == 401
    assert client.post("/invocations", json=body,
                       headers={"authorization": "Bearer s3cret"}).status_code == 200
