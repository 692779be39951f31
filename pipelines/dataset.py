"""Input data for jobs: find the Parquet files, check them, read them with Ray Data.

Checks run on the driver from Parquet footers only (no data read), before any Ray work,
so that a bad input fails in seconds with the file's name: a missing path, no files, an
unreadable (corrupt) file, files whose schemas disagree, zero rows.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from vae_core import ColumnTransformer, DataError, TableSchema, TableStatistics
from vae_core.training import holdout_mask


@dataclass(frozen=True)
class ParquetInput:
    uri: str
    filesystem: pafs.FileSystem
    files: list[str]
    schema: pa.Schema
    rows: int


def resolve_path(uri: str) -> tuple[pafs.FileSystem, str]:
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())


def discover(uri: str) -> ParquetInput:
    try:
        fs, path = resolve_path(uri)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{uri}: cannot open ({e})") from e
    if any(ch in path for ch in "*?["):  # a glob: match files under its fixed prefix
        base = path[:min(path.index(ch) for ch in "*?[" if ch in path)].rsplit("/", 1)[0]
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        files = sorted(i.path for i in infos if i.is_file and fnmatch.fnmatch(i.path, path))
    else:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise DataError(f"{uri}: no such file or folder")
        if info.type == pafs.FileType.Directory:
            infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
            files = sorted(i.path for i in infos if i.is_file and i.path.endswith(".parquet")
                           and not Path(i.path).name.startswith(("_", ".")))
        else:
            files = [path]
    if not files:
        raise DataError(f"{uri}: no Parquet files found")
    schema, first, rows = None, None, 0
    for f in files:
        try:
            with fs.open_input_file(f) as handle:
                meta = pq.ParquetFile(handle).metadata
                file_schema = meta.schema.to_arrow_schema()
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{f}: not a readable Parquet file ({e})") from e
        rows += meta.num_rows
        if schema is None:
            schema, first = file_schema.remove_metadata(), f
        elif not file_schema.remove_metadata().equals(schema):
            why = _schema_difference(schema, file_schema)
            raise DataError(f"{f}: schema differs from {first} ({why})")
    if rows == 0:
        raise DataError(f"{uri}: the input has no rows")
    return ParquetInput(uri, fs, files, schema, rows)


def _schema_difference(a: pa.Schema, b: pa.Schema) -> str:
    for name in a.names:
        if name not in b.names:
            return f"column '{name}' is missing"
        if a.field(name).type != b.field(name).type:
            return f"column '{name}' is {b.field(name).type}, not {a.field(name).type}"
    extra = [n for n in b.names if n not in a.names]
    return f"extra column '{extra[0]}'" if extra else "column order differs"


def read(source: ParquetInput, shuffle=None):
    """The input as a Ray Data dataset, read by Ray Data's first Parquet reader: a read task
    per file. Its default reader (2.60) packs small files into one long-lived read task
    whose memory grew with the input: 4.5 GB in that one process at 10M Adult rows, 12 GB in
    all at 30M; per file, 3.9 GB at 10M (benchmarks/bench_training.py)."""
    import ray.data

    context = ray.data.DataContext.get_current()
    default, context.use_datasource_v2 = context.use_datasource_v2, False
    try:
        return ray.data.read_parquet(source.files, filesystem=source.filesystem,
                                     shuffle=shuffle)
    finally:
        context.use_datasource_v2 = default


# -- the statistics pass: one Ray Data map over blocks, merged on the driver -------------

def _block_statistics(batch: pa.Table, schema: dict) -> dict:
    stats = TableStatistics.of(TableSchema.from_dict(schema), batch)
    return {"statistics": np.array([json.dumps(stats.to_dict())], dtype=object)}


STATISTICS_ROWS = 250_000  # rows per partial statistics: a few large ones to merge


def distributed_statistics(ds, schema: TableSchema) -> TableStatistics:
    parts = ds.map_batches(_block_statistics, fn_kwargs={"schema": schema.to_dict()},
                           batch_format="pyarrow", batch_size=STATISTICS_ROWS)
    merged = TableStatistics.empty(schema)
    for part in parts.iter_rows():  # one at a time: memory does not grow with the input
        merged = merged.merge(TableStatistics.from_dict(json.loads(part["statistics"])))
    return merged


# -- encoding: Arrow → the model's float matrices, in Ray Data ----------------------------

def _encode(batch: pa.Table, transformer: dict, validation_fraction: float, seed: int) -> dict:
    enc = ColumnTransformer.from_dict(transformer).transform(batch)
    return {"x": enc.x, "c": enc.c,
            "is_val": holdout_mask(enc.x, validation_fraction, seed)}


def _keep(batch: dict, validation: bool) -> dict:
    mask = batch["is_val"] == validation
    return {"x": batch["x"][mask], "c": batch["c"][mask]}


MATERIALIZE_SHARE = 0.25  # of the cluster's object store
STREAMED_VALIDATION_ROWS = 100_000  # validation rows of a streamed input, kept in the store


@dataclass
class EncodedSplits:
    """The datasets of encoded rows a job trains and validates on."""

    train: object  # ray.data.Dataset
    val: object
    input_path: str  # "materialised": encoded once and kept; "streamed": anew every epoch
    # A streamed input's raw validation rows, the first in file order, as read on the
    # driver (None otherwise): what validation_rows() would read again.
    held_out: pa.Table | None = None


def encoded_splits(source: ParquetInput, ds, transformer: ColumnTransformer,
                   validation_fraction: float, seed: int) -> EncodedSplits:
    """The split is by row content (see vae_core.training.holdout_mask), so it is the same
    however the blocks fall.

    Encoded data under a quarter of the object store is computed once and kept there, its
    block order shuffled every epoch. Larger data streams (read → encode → train) anew every
    epoch in a file order shuffled per epoch, so memory stays bounded whatever the data
    size: nothing waits for the whole input (a block-order shuffle would), and its
    validation rows are the first STREAMED_VALIDATION_ROWS of them in file order, read once
    on the driver and kept, rather than re-read and re-encoded from every file every epoch.
    """
    import ray

    kwargs = {"transformer": transformer.to_dict(), "validation_fraction": validation_fraction,
              "seed": seed}
    rows_bytes = source.rows * (transformer.x_dim + transformer.c_dim) * 4
    if rows_bytes < MATERIALIZE_SHARE * ray.cluster_resources().get("object_store_memory", 0):
        # Both splits are kept, not only the encoded rows: a lazy split ran its filter again
        # every epoch. With 2 workers at 1M rows, the first batch then came after 0.4 s
        # instead of 7.9 s and peak memory was 3.5 GB instead of 4.5 GB, for ~6 s more
        # encoding here. The encoded rows are freed once both splits are computed.
        enc = ds.map_batches(_encode, fn_kwargs=kwargs, batch_format="pyarrow").materialize()
        train, val = (enc.map_batches(_keep, fn_kwargs={"validation": split},
                                      batch_format="numpy").materialize()
                      for split in (False, True))
        return EncodedSplits(train.randomize_block_order(seed=seed), val, "materialised")
    from ray.data import FileShuffleConfig

    shuffled = read(source, shuffle=FileShuffleConfig(seed=seed, reseed_after_execution=True))
    train = shuffled.map_batches(_encode, fn_kwargs=kwargs, batch_format="pyarrow").map_batches(
        _keep, fn_kwargs={"validation": False}, batch_format="numpy")
    held_out = validation_rows(source, transformer, validation_fraction, seed,
                               STREAMED_VALIDATION_ROWS) if validation_fraction > 0 else None
    rows = held_out if held_out is not None else source.schema.empty_table()
    val = ray.data.from_arrow(rows).map_batches(_encode, fn_kwargs=kwargs,
                                                batch_format="pyarrow")
    val = val.map_batches(_keep, fn_kwargs={"validation": True}, batch_format="numpy")
    return EncodedSplits(train, val.materialize(), "streamed", held_out)


def validation_rows(source: ParquetInput, transformer: ColumnTransformer,
                    validation_fraction: float, seed: int, limit: int) -> pa.Table:
    """Up to ``limit`` raw validation rows, the same hash split the trainer used, read on
    the driver batch by batch until there are enough. The first file or two hold them; a
    Ray Data pass with ``limit`` took ~10 s at 1M rows, its single read task encoding
    whole files before the limit applied."""
    parts, found = [], 0
    for path in source.files:
        with source.filesystem.open_input_file(path) as handle:
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=65_536):
                rows = pa.Table.from_batches([batch])
                if validation_fraction > 0:
                    x = transformer.transform(rows).x
                    rows = rows.filter(pa.array(holdout_mask(x, validation_fraction, seed)))
                parts.append(rows.slice(0, limit - found))
                found += parts[-1].num_rows
                if found >= limit:
                    return pa.concat_tables(parts).combine_chunks()
    return pa.concat_tables(parts).combine_chunks() if parts else source.schema.empty_table()
