"""The model actor of every batch job: the model loaded once per actor from the bytes the
driver sent, and each batch of numbered rows mapped to output rows by the job's compute,
with ``row_index`` first. A DataError / SchemaError is raised again naming the input file
and the rows at fault (a batch can span files)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipelines.batch.jobs import BatchJob
from pipelines.batch.reader import numbered, runs
from vae_core import DataError, SchemaError, TabularVAE

ROW_INDEX = "row_index"  # in every output: the row's number in the input


class ModelActor:
    """One model per actor; ``__call__`` maps a batch of tagged rows to output rows."""

    def __init__(self, model_files: dict[str, bytes], job: BatchJob, device: str,
                 file_starts: list[tuple[int, str]]) -> None:
        import torch

        torch.set_num_threads(1)  # one actor per CPU: threads would only fight each other
        with tempfile.TemporaryDirectory() as folder:
            for name, data in model_files.items():
                Path(folder, name).write_bytes(data)
            self.vae = TabularVAE.load(folder, device=device)
        self.job, self.file_starts = job, file_starts

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows, table = numbered(batch)
        try:
            out = self.job.compute(self.vae, table, runs(rows))
        except (DataError, SchemaError) as e:
            raise self._located(e, table, rows) from e
        return out.add_column(0, ROW_INDEX, pa.array(rows))

    def _located(self, error: DataError | SchemaError, table: pa.Table | None,
                 rows: np.ndarray) -> DataError | SchemaError:
        """The error again, naming the file and rows at fault."""
        if table is not None:
            starts = np.array([s for s, _ in self.file_starts])
            which = np.searchsorted(starts, rows, side="right") - 1
            cuts = np.flatnonzero(np.diff(which)) + 1
            for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(rows)], strict=True):
                start, path = self.file_starts[which[a]]
                try:
                    self.job.check(self.vae, table.slice(a, b - a))
                except (DataError, SchemaError) as e:
                    where = f"{path} (rows {rows[a] - start}–{rows[b - 1] - start})"
                    return type(e)(f"{where}: {e}", e.column)
        return type(error)(f"rows {rows[0]}–{rows[-1]} of the input: {error}", error.column)
