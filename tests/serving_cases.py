"""Requests and limits shared by the in-process route tests (tests/test_serving_app.py) and
the real-Serve tests (tests/integration/test_serving.py): the same bad requests get the same
4xx in both. A plain module, not a test module: test modules do not import each other."""

import json

import pyarrow as pa

from serving.codecs import ARROW_STREAM
from serving.service import Limits

LIMITS = Limits(max_rows=500, max_generate=1000, max_body_bytes=2_000_000)


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
]


