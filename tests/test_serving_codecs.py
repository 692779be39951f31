"""Request bodies → typed Arrow tables; each bad input is a 4xx that names the problem."""

import datetime as dt
import json

import pyarrow as pa
import pytest

from serving.codecs import (
    RequestError,
    table_from_arrow,
    table_from_records,
    table_to_arrow,
    table_to_json,
)
from vae_core import infer_schema


@pytest.fixture(scope="module")
def schema(adult_cvae):
    return adult_cvae.transformer.schema


def rows_of(table: pa.Table, n: int) -> list[dict]:
    return table.slice(0, n).to_pylist()


def test_json_records_score_like_the_original_rows(adult_cvae, adult_test, schema):
    rows = rows_of(adult_test, 20)
    table = table_from_records(json.loads(json.dumps(rows)), schema, max_rows=100)
    assert table.schema == adult_test.schema
    assert adult_cvae.score(table).equals(adult_cvae.score(adult_test.slice(0, 20)))


@pytest.mark.parametrize("mutate, status, words", [
    (lambda r: [row.pop("age") for row in r], 422, "column 'age' is missing"),
    (lambda r: r[1].update(salary=3), 422, "row 1: unknown column 'salary'"),
    (lambda r: r[2].update(age="abc"), 422, "column 'age': expected int64, row 2: 'abc'"),
    (lambda r: r[0].update(**{"hours-per-week": float("nan")}), 422,
     "column 'hours-per-week', row 0: nan is not allowed"),
])
def test_bad_records_name_the_column(adult_test, schema, mutate, status, words):
    rows = rows_of(adult_test, 3)
    mutate(rows)
    with pytest.raises(RequestError, match=words) as e:
        table_from_records(rows, schema, max_rows=100)
    assert e.value.status == status


def test_shape_and_size_limits(adult_test, schema):
    for bad in ([], {"age": 3}, [1, 2]):
        with pytest.raises(RequestError, match="non-empty list of objects") as e:
            table_from_records(bad, schema, max_rows=10)
        assert e.value.status == 400
    with pytest.raises(RequestError, match="too many rows: 11 > 10") as e:
        table_from_records(rows_of(adult_test, 11), schema, max_rows=10)
    assert e.value.status == 413


def test_request_errors_keep_status_column_and_headers_through_pickle():
    """They travel from a model replica to the ingress pickled (a 422 must not become a 500)."""
    import pickle

    e = pickle.loads(pickle.dumps(RequestError(503, "busy", "age", {"Retry-After": "1"})))
    assert (e.status, str(e), e.column, e.headers) == (503, "busy", "age", {"Retry-After": "1"})


def test_a_column_absent_from_some_rows_is_null_there(adult_test, schema):
    rows = rows_of(adult_test, 3)
    del rows[1]["workclass"]
    table = table_from_records(rows, schema, max_rows=10)
    assert table.column("workclass").to_pylist()[1] is None


def test_arrow_ipc_round_trip_and_errors(adult_test):
    body = table_to_arrow(adult_test.slice(0, 50))
    assert table_from_arrow(body, max_rows=100).equals(adult_test.slice(0, 50))
    with pytest.raises(RequestError, match="malformed Arrow IPC stream") as e:
        table_from_arrow(b"not arrow at all", max_rows=100)
    assert e.value.status == 400
    with pytest.raises(RequestError, match="too many rows: 50 > 10") as e:
        table_from_arrow(body, max_rows=10)
    assert e.value.status == 413


def test_datetimes_in_and_out_as_iso_strings():
    table = pa.table({"when": pa.array([dt.datetime(2024, 5, 1, 12, 30)], pa.timestamp("us")),
                      "day": pa.array([dt.date(2024, 5, 1)]), "x": [1.5]})
    schema = infer_schema(table.schema)
    parsed = table_from_records([{"when": "2024-05-01T12:30:00", "day": "2024-05-01",
                                  "x": 1.5}], schema, max_rows=1)
    assert parsed.equals(table)
    out = json.loads(table_to_json(pa.table({"when": table.column("when"),
                                             "v": [float("nan")]})))
    assert out == {"rows": [{"when": "2024-05-01T12:30:00", "v": None}]}
