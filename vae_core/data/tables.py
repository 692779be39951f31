"""Turning what a user hands us (table, DataFrame, records, Parquet path) into Arrow."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from vae_core.errors import DataError

TableLike = pa.Table | pa.RecordBatch | Mapping | Sequence | str | Path


def read_parquet(path: str | Path) -> pa.Table:
    """A Parquet file or a folder of them; errors name the file that failed."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    files = sorted(p for p in path.rglob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise DataError(f"{path}: the folder holds no .parquet file")
    parts = []
    for f in files:
        try:
            parts.append(pq.read_table(f))
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{f}: not a readable Parquet file ({e})") from e
    try:
        return pa.concat_tables(parts, promote_options="default")
    except pa.ArrowInvalid as e:
        raise DataError(f"{path}: the files' schemas disagree ({e})") from e


def as_table(data: TableLike) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, str | Path):
        return read_parquet(data)
    if type(data).__module__.split(".")[0] == "pandas":  # a DataFrame, without importing pandas
        return pa.Table.from_pandas(data, preserve_index=False)
    if isinstance(data, Mapping):
        return pa.table(dict(data))
    if isinstance(data, Sequence):
        return pa.Table.from_pylist(list(data))
    raise TypeError(f"cannot read a table from {type(data).__name__}")
