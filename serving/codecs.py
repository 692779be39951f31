"""Request and response bodies ↔ Arrow tables, with 4xx errors that name the problem.

Two body formats, chosen by Content-Type: JSON (``{"rows": [{column: value, ...}, ...]}``)
and Arrow IPC streams (``application/vnd.apache.arrow.stream``) for large batches. JSON
values are converted to the column types the model was trained on, so ``"age": "abc"``
is a 422 naming ``age`` and the row, not a 500 deep inside the model.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import pyarrow as pa
import pyarrow.ipc

from vae_core import TableSchema
from vae_core.schema import Kind

ARROW_STREAM = "application/vnd.apache.arrow.stream"


class RequestError(ValueError):
    """A bad request: ``status`` is the HTTP code (400, 413, 422), the message names the culprit."""

    def __init__(self, status: int, message: str, column: str | None = None) -> None:
        super().__init__(message)
        self.status, self.column = status, column


def _expected_columns(schema: TableSchema) -> list[str]:
    return [c.name for c in schema.features + schema.conditions]


def table_from_records(rows: Any, schema: TableSchema, max_rows: int) -> pa.Table:
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise RequestError(400, "'rows' must be a non-empty list of objects")
    if len(rows) > max_rows:
        raise RequestError(413, f"too many rows: {len(rows)} > {max_rows} per request; send "
                                "several requests or use the batch job")
    known = set(schema.names)
    for i, row in enumerate(rows):
        unknown = sorted(set(row) - known)
        if unknown:
            raise RequestError(422, f"row {i}: unknown column '{unknown[0]}'", unknown[0])
    arrays, fields = [], []
    for spec in schema.columns:
        present = [spec.name in r for r in rows]
        if not any(present):
            if spec.name in _expected_columns(schema):
                raise RequestError(422, f"column '{spec.name}' is missing", spec.name)
            continue  # ids and ignored columns are optional
        values = [r.get(spec.name) for r in rows]  # absent in some rows = null there
        type_ = schema.arrow_type(spec.name)
        arrays.append(_convert(spec.name, spec.kind, values, type_))
        fields.append(pa.field(spec.name, arrays[-1].type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _convert(name: str, kind: Kind, values: list, type_: pa.DataType) -> pa.Array:
    base = type_.value_type if pa.types.is_dictionary(type_) else type_
    for i, v in enumerate(values):
        if isinstance(v, float) and not math.isfinite(v) and kind is not Kind.ID:
            raise RequestError(422, f"column '{name}', row {i}: {v} is not allowed; use null "
                                    "for a missing value", name)
    if pa.types.is_timestamp(base) or pa.types.is_date(base):
        try:
            return pa.array([None if v is None else _parse_datetime(v) for v in values]).cast(base)
        except (ValueError, TypeError, pa.ArrowInvalid) as e:
            raise RequestError(422, f"column '{name}': expected ISO dates/timestamps ({e})",
                               name) from e
    try:
        return pa.array(values, type=base)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
        bad = next((i for i, v in enumerate(values) if not _fits(v, base)), None)
        where = f", row {bad}: {values[bad]!r}" if bad is not None else ""
        raise RequestError(422, f"column '{name}': expected {base}{where}", name) from e


def _fits(value: Any, type_: pa.DataType) -> bool:
    try:
        pa.array([value], type=type_)
        return True
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return False


def _parse_datetime(v: Any) -> dt.datetime | dt.date:
    if isinstance(v, str):
        text = v.replace("Z", "+00:00")
        return dt.date.fromisoformat(text) if len(text) == 10 else dt.datetime.fromisoformat(text)
    raise TypeError(f"{v!r} is not an ISO string")


def table_from_arrow(body: bytes, max_rows: int) -> pa.Table:
    try:
        table = pa.ipc.open_stream(body).read_all()
    except (pa.ArrowInvalid, OSError) as e:
        raise RequestError(400, f"malformed Arrow IPC stream ({e})") from e
    if table.num_rows == 0:
        raise RequestError(400, "the Arrow stream holds no rows")
    if table.num_rows > max_rows:
        raise RequestError(413, f"too many rows: {table.num_rows} > {max_rows} per request")
    return table


def table_to_arrow(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def table_to_json(table: pa.Table) -> bytes:
    """Records as JSON; timestamps and dates in ISO format; non-finite floats as null."""
    def default(v: Any) -> Any:
        if isinstance(v, dt.date | dt.datetime):
            return v.isoformat()
        raise TypeError(type(v).__name__)

    rows = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v)
             for k, v in r.items()} for r in table.to_pylist()]
    return json.dumps({"rows": rows}, default=default, allow_nan=False).encode()
