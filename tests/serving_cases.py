"""Requests and limits shared by the in-process route tests (tests/test_serving_app.py) and
the real-Serve tests (tests/integration/test_serving.py): the same bad requests get the same
4xx in both. A plain module, not a test module: test modules do not import each other."""

import json

import pyarrow as pa

from serving.codecs import ARROW_STREAM
from serving.service import Limits

LIMITS = Limits(max_rows=500, max_generate=1000, max_body_bytes=2_000_000, max_string_chars=200,
                max_generate_draws=5000)


def rows(table: pa.Table, n: int) -> list[dict]:
    return table.slice(0, n).to_pylist()


def with_(rows_, **changes):
    rows_[0].update(changes)
    return rows_


BAD_SCORE_REQUESTS = [
    (lambda t: {"json": {"rows": [{k: v for k, v in r.items() if k != "age"} for r in rows(t, 2)]}},
     422, "column 'age' is missing"),
    (lambda t: {"json": {"rows": with_(rows(t, 2), age="old")}}, 422, "column 'age'"),
    (lambda t: {"content": json.dumps({"rows": with_(rows(t, 2), age=float("nan"))}),
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
    ({"n": 5, "conditions": "/etc/passwd"}, 400, "'conditions' must be an object"),
    ({"n": 5, "conditions": {"workclass": "Astronaut"}}, 422,
     "workclass = 'Astronaut': no such value was seen in training"),
    ({"n": 5, "conditions": {"age": {">=": 40, "<": 30}}}, 422, "is empty"),
    ({"n": 5, "conditions": {"age": {">=": 200}}}, 422, "the model draws no such value"),
    ({"n": 5, "conditions": {"workclass": {">": "P"}}}, 422, "a range needs a numeric"),
    ({"n": 5, "conditions": {"age": {"=>": 3}}}, 422, "a range is a mapping of"),
    ({"n": 5, "conditions": {"nope": 1}}, 422, "'nope': it is not a column of this model"),
    ({"n": 1000, "conditions": {"age": {">=": 60}}}, 422, "more than the 5,000 rows"),
]



# Hostile or malformed requests to any route: (method, path, request kwargs, status, words).
HOSTILE_REQUESTS = [
    ("post", "/v1/score", lambda t: {"content": b'{"rows": ' + b"[" * 100_000 + b"]" * 100_000
                                     + b"}", "headers": {"content-type": "application/json"}},
     400, "nested too deeply"),
    ("post", "/v1/score?top_k=-1", lambda t: {"json": {"rows": rows(t, 1)}}, 422, "'top_k'"),
    ("post", "/v1/score?seed=abc", lambda t: {"json": {"rows": rows(t, 1)}}, 422, "'seed'"),
    ("post", "/v1/score?iwae_samples=0", lambda t: {"json": {"rows": rows(t, 1)}}, 422,
     "'iwae_samples'"),
    ("post", "/v1/score?topk=2", lambda t: {"json": {"rows": rows(t, 1)}}, 422,
     "unknown query parameter 'topk'"),
    ("post", "/v1/embed?return_std=maybe", lambda t: {"json": {"rows": rows(t, 1)}}, 422,
     "'return_std'"),
    ("post", "/v1/generate?n=5", lambda t: {"json": {"n": 5}}, 422, "unknown query parameter"),
    ("post", "/v1/score", lambda t: {"json": {"rows": with_(rows(t, 2), workclass="w" * 201)}},
     422, "column 'workclass': a value of 201 characters"),
    ("post", "/v1/score", lambda t: {"json": {"rows": with_(rows(t, 1), age=[[[1]]])}}, 422,
     "column 'age'"),
]


def split(t: pa.Table, n: int) -> dict:
    """Rows as MLflow's clients send a DataFrame: ``DataFrame.to_dict(orient="split")``."""
    frame = t.slice(0, n).to_pandas()
    return {"columns": list(frame.columns), "data": frame.values.tolist()}


BAD_INVOCATIONS = [
    (lambda t: {"json": {"params": {"mode": "score"}}}, 400, "exactly one of"),
    (lambda t: {"json": {"dataframe_split": split(t, 1), "inputs": rows(t, 1)}}, 400,
     "exactly one of"),
    (lambda t: {"json": {"inputs": rows(t, 1), "param": {}}}, 400, "unknown field 'param'"),
    (lambda t: {"json": {"inputs": rows(t, 1), "params": {"mode": "explain"}}}, 422,
     "params.mode must be one of"),
    (lambda t: {"json": {"inputs": rows(t, 1), "params": {"n": 5}}}, 422,
     "unknown parameter 'params.n' for mode 'score'"),
    (lambda t: {"json": {"inputs": rows(t, 1), "params": {"top_k": -1}}}, 422,
     "params.top_k must be an integer ≥ 0"),
    (lambda t: {"json": {"inputs": rows(t, 1), "params": {"mode": "generate",
                                                          "conditions": "{income"}}}, 422,
     "params.conditions must be a JSON object"),
    (lambda t: {"json": {"inputs": rows(t, 1), "params": {"mode": "generate",
                                                          "conditions": "[1, 2]"}}}, 422,
     "params.conditions must be a JSON object"),
    (lambda t: {"json": {"inputs": rows(t, 1), "params": {"mode": "generate", "conditions":
                                                          '{"income": "rich"}'}}}, 422,
     "income"),
    (lambda t: {"json": {"dataframe_split": {"columns": ["age"], "data": [[1, 2]]}}}, 400,
     "row 0 must be a list of 1 values"),
    (lambda t: {"json": {"inputs": {"age": [1, 2], "sex": ["Male"]}}}, 400, "all of one length"),
    (lambda t: {"json": {"dataframe_records": with_(rows(t, 1), age="old")}}, 422,
     "column 'age'"),
    (lambda t: {"content": b"age,sex\nold,Male\n", "headers": {"content-type": "text/csv"}},
     422, "column 'age'"),
    (lambda t: {"content": b"{}", "headers": {"content-type": "text/plain"}}, 415,
     "Content-Type 'text/plain'"),
    (lambda t: {"content": b"{}", "headers": {"content-type": "application/json; charset=latin-1"}},
     415, "only UTF-8"),
]
