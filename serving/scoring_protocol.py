"""MLflow's scoring protocol (what ``mlflow models serve`` answers at ``POST /invocations``),
read into the same tables and options as the /v1 routes.

Checked against ``mlflow/pyfunc/scoring_server`` (MLflow 3.x):

- ``application/json``: an object with exactly one of ``dataframe_split`` (``{"columns":
  [...], "data": [[...], ...]}``, what ``DataFrame.to_dict(orient="split")`` and MLflow's
  clients send), ``dataframe_records`` (``[{column: value}, ...]``), ``instances`` or
  ``inputs`` (a list of row objects, or an object of column → values), and optionally
  ``params``. As in pandas, ``NaN`` is a missing value here (the /v1 routes want ``null``).
- ``text/csv``: a header line, then rows; an empty field is a missing value.
- The answer: ``{"predictions": [{column: value}, ...]}``, a DataFrame as MLflow's server
  writes one (orient "records").

``params`` are the pyfunc wrapper's (pipelines/mlflow_pyfunc.py): ``mode`` (``score``, the
default, ``embed`` or ``generate``) and that mode's options — score: ``iwae_samples``,
``seed``, ``top_k``; embed: ``return_std``; generate: ``n`` (default: the number of rows
sent), ``seed`` and ``conditions`` (the object /v1/generate takes, as JSON text: MLflow's
params are scalars). Any other parameter is a 422 naming it.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.csv

from serving.codecs import RequestError, parse_json, table_from_records, value_type
from vae_core import TableSchema

JSON, CSV = "application/json", "text/csv"
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
MODE_OPTIONS = {"score": {"iwae_samples": int, "seed": int, "top_k": int},
                "embed": {"return_std": bool},
                "generate": {"n": int, "seed": int, "conditions": dict}}


@dataclass(frozen=True)
class Invocation:
    """One /invocations request: the verb, its options, and the rows (None for generate,
    which only counts them: ``rows_sent``)."""

    mode: str
    options: dict[str, Any] = field(default_factory=dict)
    table: pa.Table | None = None
    rows_sent: int = 0


def parse_invocation(body: bytes, content_type: str, schema: TableSchema, max_rows: int
                     ) -> Invocation:
    media_type, _, parameters = content_type.partition(";")
    media_type = media_type.strip().lower()
    charset = parameters.strip().lower().removeprefix("charset=") if parameters.strip() else ""
    if charset not in ("", "utf-8"):
        raise RequestError(415, f"only UTF-8 bodies are read, not '{parameters.strip()}'")
    if media_type == CSV:
        return Invocation("score", table=_table_from_csv(body, schema, max_rows))
    if media_type != JSON:
        raise RequestError(415, f"Content-Type '{media_type}' is not one of {JSON}, {CSV}")
    payload = parse_json(body, nan_is_null=True)
    if not isinstance(payload, dict):
        raise RequestError(400, f"expected a JSON object with one of {', '.join(FORMATS)}")
    formats = [k for k in FORMATS if k in payload]
    if len(formats) != 1:
        raise RequestError(400, f"expected exactly one of {', '.join(FORMATS)}; got "
                                f"{sorted(payload) or 'none'}")
    unknown = sorted(set(payload) - {formats[0], "params"})
    if unknown:
        raise RequestError(400, f"unknown field '{unknown[0]}' beside '{formats[0]}' and "
                                "'params'")
    mode, options = _params(payload.get("params"))
    records = _records(formats[0], payload[formats[0]])
    if mode == "generate":
        return Invocation(mode, options, rows_sent=len(records))
    return Invocation(mode, options, table_from_records(records, schema, max_rows))


def _records(name: str, data: Any) -> list:
    if name == "dataframe_split":
        if not isinstance(data, dict) or not isinstance(data.get("columns"), list) or \
                not isinstance(data.get("data"), list):
            raise RequestError(400, "'dataframe_split' must be an object with 'columns' and "
                                    "'data' lists")
        columns = data["columns"]
        if not all(isinstance(c, str) for c in columns):
            raise RequestError(400, "'dataframe_split.columns' must be column names")
        for i, row in enumerate(data["data"]):
            if not isinstance(row, list) or len(row) != len(columns):
                raise RequestError(400, f"'dataframe_split.data' row {i} must be a list of "
                                        f"{len(columns)} values, one per column")
        return [dict(zip(columns, row, strict=True)) for row in data["data"]]
    if isinstance(data, dict) and name in ("instances", "inputs"):  # column → values
        lengths = {len(v) if isinstance(v, list) else -1 for v in data.values()}
        if len(lengths) != 1 or -1 in lengths:
            raise RequestError(400, f"'{name}' as an object must map each column to a list "
                                    "of values, all of one length")
        return [dict(zip(data, values, strict=True)) for values in zip(*data.values(),
                                                                       strict=True)]
    if not isinstance(data, list):
        raise RequestError(400, f"'{name}' must be a list of row objects")
    return data


def _params(params: Any) -> tuple[str, dict]:
    if params is None:
        return "score", {}
    if not isinstance(params, dict):
        raise RequestError(400, "'params' must be an object")
    params = dict(params)
    mode = params.pop("mode", "score")
    if mode not in MODE_OPTIONS:
        raise RequestError(422, f"params.mode must be one of {', '.join(MODE_OPTIONS)}, "
                                f"got {mode!r}")
    options = {}
    for name, value in params.items():
        type_ = MODE_OPTIONS[mode].get(name)
        if type_ is None:
            raise RequestError(422, f"unknown parameter 'params.{name}' for mode '{mode}' "
                                    f"({', '.join(MODE_OPTIONS[mode])})")
        if value is None:
            continue
        options[name] = _typed(name, value, type_)
    return mode, options


def _typed(name: str, value: Any, type_: type) -> Any:
    """A parameter as ``type_``; MLflow's clients may send numbers as strings or floats, and
    an object (``conditions``) as JSON text."""
    if type_ is dict:
        parsed = _json_object(value) if isinstance(value, str) else value
        if isinstance(parsed, dict):
            return parsed or None  # "" and {}: no conditions
        raise RequestError(422, f"params.{name} must be a JSON object: {{column: value | "
                                f"[values] | {{\">=\": low, \"<\": high}}}}, got {value!r}")
    if type_ is bool:
        if isinstance(value, bool) or value in ("true", "false"):
            return value in (True, "true")
    elif not isinstance(value, bool):
        try:
            number = float(value) if isinstance(value, str) else value
            if isinstance(number, int | float) and math.isfinite(number) and \
                    number == int(number) and number >= 0:
                return int(number)
        except ValueError:
            pass
    expected = "true or false" if type_ is bool else "an integer ≥ 0"
    raise RequestError(422, f"params.{name} must be {expected}, got {value!r}")


def _json_object(text: str) -> Any:
    if not text.strip():
        return {}
    try:
        return parse_json(text.encode())
    except RequestError:
        return None


def _table_from_csv(body: bytes, schema: TableSchema, max_rows: int) -> pa.Table:
    types = {spec.name: value_type(schema.arrow_type(spec.name)) for spec in schema.columns}
    try:
        table = pa.csv.read_csv(io.BytesIO(body), convert_options=pa.csv.ConvertOptions(
            column_types=types, strings_can_be_null=True))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        column = _csv_column(body, str(e))
        if column is not None:
            raise RequestError(422, f"column '{column}': {e}", column) from e
        raise RequestError(400, f"malformed CSV ({e})") from e
    if table.num_rows == 0:
        raise RequestError(400, "the CSV holds no rows")
    if table.num_rows > max_rows:
        raise RequestError(413, f"too many rows: {table.num_rows} > {max_rows} per request; "
                                "send several requests or use the batch job")
    return table


def _csv_column(body: bytes, error: str) -> str | None:
    """The header name of the column an Arrow CSV conversion error points at by number."""
    match = re.search(r"CSV column #(\d+)", error)
    if match is None:
        return None
    header = next(csv.reader([body.split(b"\n", 1)[0].decode("utf-8", "replace")]), [])
    i = int(match.group(1))
    return header[i] if i < len(header) else None
