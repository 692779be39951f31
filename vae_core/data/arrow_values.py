"""Arrow arrays ↔ numpy values, per column kind, vectorised.

Statistics and the transformer read columns the same way through these functions, so
that what is counted while fitting is exactly what is encoded later.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vae_core.data.schema import Kind
from vae_core.errors import DataError, SchemaError

_SECONDS_PER_UNIT = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


def _plain(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    return array


def numeric_values(name: str, array: pa.Array | pa.ChunkedArray, kind: Kind
                   ) -> tuple[np.ndarray, np.ndarray]:
    """float64 values (0 where null) and a boolean ``missing`` mask.

    Datetimes become seconds since the epoch. NaN and ±inf are refused: a null is how a
    table says "missing", a NaN is almost always a bug upstream.
    """
    array = _plain(array)
    t = array.type
    missing = array.is_null().to_numpy(zero_copy_only=False)
    if kind is Kind.DATETIME:
        if pa.types.is_timestamp(t):
            raw = pc.cast(array, pa.int64()).fill_null(0).to_numpy()
            values = raw.astype(np.float64) * _SECONDS_PER_UNIT[t.unit]
        elif pa.types.is_date32(t):
            values = pc.cast(array, pa.int32()).fill_null(0).to_numpy().astype(np.float64) * 86400
        elif pa.types.is_date64(t):
            values = pc.cast(array, pa.int64()).fill_null(0).to_numpy().astype(np.float64) * 1e-3
        else:
            raise SchemaError(f"column '{name}': expected a timestamp or date, got {t}", name)
        return values, missing
    if pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_floating(t) \
            or pa.types.is_decimal(t):
        values = pc.cast(array, pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False)
    else:
        raise SchemaError(f"column '{name}': expected a number, got {t}", name)
    bad = ~np.isfinite(values)
    if bad.any():
        what = "NaN" if np.isnan(values[bad]).any() else "inf"
        raise DataError(f"column '{name}': {int(bad.sum())} value(s) are {what}; "
                        "use null for a missing value", name)
    return values, missing


def binary_values(name: str, array: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    values, missing = numeric_values(name, array, Kind.BINARY)
    if not np.isin(values[~missing], (0.0, 1.0)).all():
        raise DataError(f"column '{name}': a binary column holds values other than 0/1", name)
    return values, missing


def label_values(name: str, array: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A categorical column as a plain (dictionary-decoded) Arrow array; nulls kept."""
    array = _plain(array)
    if pa.types.is_floating(array.type):
        present = pc.cast(array.drop_null(), pa.float64()).to_numpy(zero_copy_only=False)
        if not np.isfinite(present).all():
            raise DataError(f"column '{name}': NaN or inf in a categorical column", name)
    if pa.types.is_string_view(array.type):
        array = pc.cast(array, pa.string())
    return array


def from_numeric(values: np.ndarray, missing: np.ndarray, kind: Kind, type_: pa.DataType
                 ) -> pa.Array:
    """Inverse of :func:`numeric_values` into the column's own Arrow type."""
    mask = missing.astype(bool)
    base = type_.value_type if pa.types.is_dictionary(type_) else type_
    if kind is Kind.DATETIME:
        if pa.types.is_timestamp(base):
            ticks = np.round(values / _SECONDS_PER_UNIT[base.unit]).astype(np.int64)
            return pc.cast(pa.array(ticks, mask=mask), base)
        if pa.types.is_date32(base):
            days = np.round(values / 86400).astype(np.int32)  # nearest day: float32 z drifts
            return pc.cast(pa.array(days, mask=mask), base)
        return pc.cast(pa.array(np.round(values * 1e3).astype(np.int64), mask=mask), base)
    if pa.types.is_integer(base) or kind is Kind.INTEGER:
        values = np.round(values)
    if pa.types.is_integer(base):
        info = np.iinfo(base.to_pandas_dtype())
        values = np.clip(values, info.min, info.max)  # a sampled tail must still fit the dtype
        return pa.array(values.astype(base.to_pandas_dtype()), mask=mask)
    if pa.types.is_boolean(base):
        return pa.array(values > 0.5, mask=mask)
    return pc.cast(pa.array(values, mask=mask), base if pa.types.is_floating(base)
                   else pa.float64())
