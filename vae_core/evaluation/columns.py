"""The modelled columns of a table as plain arrays, the form every evaluation reads.

Numbers (continuous, integer, datetime) become float64 with NaN for a missing value;
categories and flags become strings with ``MISSING`` for a missing value. ``encode`` turns
several tables' columns into one numeric matrix for scikit-learn: numbers as they are,
categories as codes over the levels all the tables use (the most frequent 250, the rest as
one more code), so the same value gets the same code in each.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vae_core.data.schema import TableSchema

MISSING = "\x00missing"
MAX_LEVELS = 250  # HistGradientBoosting's categorical features take < 256 codes


@dataclass(frozen=True)
class Column:
    name: str
    numeric: bool


def modelled_columns(schema: TableSchema) -> list[Column]:
    return [Column(c.name, c.kind.numeric) for c in schema.features + schema.conditions]


def check_columns(table: pa.Table, schema: TableSchema, what: str) -> None:
    """A ValueError naming ``what`` and the first modelled column ``table`` lacks, or saying
    that it holds no rows."""
    if table.num_rows == 0:
        raise ValueError(f"{what} holds no rows")
    names = set(table.column_names)
    for column in modelled_columns(schema):
        if column.name not in names:
            raise ValueError(f"{what}: column '{column.name}' is missing (the model's columns: "
                             f"{', '.join(c.name for c in modelled_columns(schema))})")


def values(table: pa.Table, column: Column) -> np.ndarray:
    array = table.column(column.name)
    if column.numeric:
        if pa.types.is_timestamp(array.type) or pa.types.is_date(array.type):
            array = pc.cast(pc.cast(array, pa.timestamp("s")), pa.int64())
        return pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False)
    text = pc.fill_null(pc.cast(array, pa.string()), MISSING)
    return np.asarray(text.to_numpy(zero_copy_only=False), dtype=object)


def encode(tables: list[pa.Table], columns: list[Column]) -> tuple[list[np.ndarray], np.ndarray]:
    """One float matrix per table (rows × columns) and the mask of categorical columns."""
    out = [np.empty((t.num_rows, len(columns))) for t in tables]
    for j, column in enumerate(columns):
        parts = [values(t, column) for t in tables]
        if column.numeric:
            for o, v in zip(out, parts, strict=True):
                o[:, j] = v
            continue
        levels, counts = np.unique(np.concatenate(parts), return_counts=True)
        kept = levels[np.argsort(-counts, kind="stable")[:MAX_LEVELS]]
        code = {v: float(i) for i, v in enumerate(kept)}
        for o, v in zip(out, parts, strict=True):
            o[:, j] = [np.nan if x == MISSING else code.get(x, float(MAX_LEVELS)) for x in v]
    return out, np.array([not c.numeric for c in columns])


def sample_rows(table: pa.Table, n: int, rng: np.random.Generator) -> pa.Table:
    """At most ``n`` rows of ``table``, drawn without replacement."""
    if table.num_rows <= n:
        return table
    return table.take(np.sort(rng.choice(table.num_rows, n, replace=False)))
