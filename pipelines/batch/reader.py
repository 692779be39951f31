"""Reading the input with row numbers: one read task per row group, each row tagged with its
number in the input (files in name order, then rows), so that every output row can carry
``row_index`` and every random draw can be addressed by row, whatever the batching."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines import dataset
from vae_core import DataError

ROW = "__row"  # internal: the row's number in the input
GENERATE_CHUNK_ROWS = 65_536  # rows per generate task (no input: chunks of the seed's stream)


@dataclass(frozen=True)
class Piece:
    path: str
    row_group: int
    start: int  # the number of its first row in the input
    rows: int


def pieces(source: dataset.ParquetInput) -> list[Piece]:
    """Every non-empty row group of the input, with the number of its first row."""
    found, start = [], 0
    for path in source.files:
        with source.filesystem.open_input_file(path) as handle:
            meta = pq.ParquetFile(handle).metadata
        for g in range(meta.num_row_groups):
            rows = meta.row_group(g).num_rows
            if rows:
                found.append(Piece(path, g, start, rows))
            start += rows
    return found


def generate_chunks(rows: int) -> list[dict]:
    """Without input rows: {start, rows} chunks of the generated stream."""
    return [{"start": s, "rows": min(GENERATE_CHUNK_ROWS, rows - s)}
            for s in range(0, rows, GENERATE_CHUNK_ROWS)]


def read_pieces(batch: dict, filesystem: pafs.FileSystem, columns: list[str],
                block_rows: int) -> Iterator[pa.Table]:
    """Ray Data map: pieces → tables of their rows, each with its row number in ``ROW``."""
    for path, group, start in zip(batch["path"], batch["row_group"], batch["start"], strict=True):
        try:
            with filesystem.open_input_file(str(path)) as handle:
                reader = pq.ParquetFile(handle)
                offset = int(start)
                for record_batch in reader.iter_batches(block_rows, row_groups=[int(group)],
                                                        columns=columns):
                    rows = np.arange(offset, offset + record_batch.num_rows, dtype=np.int64)
                    offset += record_batch.num_rows
                    yield pa.Table.from_batches([record_batch]).append_column(ROW, pa.array(rows))
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{path}: row group {group} is unreadable ({e})") from e


def numbered(batch: pa.Table) -> tuple[np.ndarray, pa.Table | None]:
    """(row numbers, input rows) of a batch the actor receives; rows None for chunks."""
    if ROW in batch.column_names:
        return batch.column(ROW).to_numpy(), batch.drop_columns([ROW])
    rows = np.concatenate([np.arange(s, s + n) for s, n in zip(
        batch.column("start").to_numpy(), batch.column("rows").to_numpy(), strict=True)])
    return rows, None


def runs(rows: np.ndarray) -> list[tuple[int, int, int]]:
    """(offset in the batch, length, first row number) of each run of consecutive rows."""
    cuts = np.flatnonzero(np.diff(rows) != 1) + 1
    starts, ends = np.r_[0, cuts], np.r_[cuts, len(rows)]
    return [(int(a), int(b - a), int(rows[a])) for a, b in zip(starts, ends, strict=True)]


def block_bytes(source: dataset.ParquetInput | None, rows: int) -> int:
    """Bytes of ``rows`` input rows in memory, from the Parquet footers; within 1–128 MiB."""
    per_row = 256.0  # generate: conditions and the generated rows are narrow
    if source:
        with source.filesystem.open_input_file(source.files[0]) as handle:
            meta = pq.ParquetFile(handle).metadata
        groups = [meta.row_group(g) for g in range(meta.num_row_groups)]
        per_row = sum(g.total_byte_size for g in groups) / max(1, sum(g.num_rows for g in groups))
    return int(min(128 * 2**20, max(2**20, per_row * rows)))
