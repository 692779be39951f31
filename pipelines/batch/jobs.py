"""The three batch jobs, one small type each: what it reads, what it checks before any Ray
work, what it does to a batch of numbered rows, and the verb of its summary line.

Built with keywords only (``ScoreJob(model=..., input=..., output=...)``); the fields shared
by every job live in :class:`BatchJob`. The runner (pipelines.batch.runner) does the rest:
read with row numbers → actor pool → atomic commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vae_core import TabularVAE
from vae_core.embedding_table import embedding_table

Runs = list[tuple[int, int, int]]  # (offset in the batch, length, first row number)


@dataclass(frozen=True, kw_only=True)
class BatchJob:
    """What every batch job has: the model, where rows come from and go, and the workers."""

    action: ClassVar[str] = ""
    verb: ClassVar[str] = ""  # of the summary line: "scored 6,000 rows in …"
    needs_input: ClassVar[bool] = True

    model: str  # a model folder or models:/NAME@ALIAS, models:/NAME/VERSION (see model_refs)
    output: str  # a folder of Parquet files
    input: str | None = None  # Parquet file, folder or glob
    seed: int = 0
    overwrite: bool = False
    actors: int | None = None  # default: half the cluster's CPUs, or one per GPU share
    gpus_per_actor: float = 0.0
    batch_rows: int = 8192  # rows per model call
    address: str | None = None  # Ray cluster; default RAY_ADDRESS or a local Ray

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return {"action": self.action, **asdict(self)}

    # -- on the driver, before any Ray work ----------------------------------------------
    def check_input(self, vae: TabularVAE, empty: pa.Table) -> None:
        """A missing or mistyped input column raises here (SchemaError naming it)."""
        vae.transformer.transform(empty)

    def input_columns(self, vae: TabularVAE) -> list[str]:
        schema = vae.transformer.schema
        return [s.name for s in schema.ids + schema.features + schema.conditions]

    def validate(self, vae: TabularVAE, input_rows: int | None) -> int:
        """The number of rows the output must have; raises ValueError on a bad combination."""
        if input_rows is None:
            raise ValueError(f"vae {self.action} needs --input PATH (Parquet file or folder)")
        return input_rows

    # -- in each model actor -------------------------------------------------------------
    def compute(self, vae: TabularVAE, table: pa.Table | None, runs: Runs) -> pa.Table:
        raise NotImplementedError

    def check(self, vae: TabularVAE, table: pa.Table) -> None:
        """Re-run the input checks on part of a failed batch, to find the rows at fault."""
        vae.transformer.transform(table)

    # -- on the driver, at the end -------------------------------------------------------
    def tally(self, parquet: pq.ParquetFile) -> int | None:
        """A count for the summary line from one output file (None: nothing to count)."""
        return None


@dataclass(frozen=True, kw_only=True)
class ScoreJob(BatchJob):
    """Anomaly scores: elbo, log_px (IWAE), score, percentile, is_anomaly, top_columns."""

    action: ClassVar[str] = "score"
    verb: ClassVar[str] = "scored"

    iwae_samples: int | None = None  # K for the IWAE log p(x) (default: the model's)
    top_k: int = 3  # columns listed in top_columns

    def compute(self, vae: TabularVAE, table: pa.Table | None, runs: Runs) -> pa.Table:
        # Each run of consecutive rows draws its IWAE noise from its first row number on.
        return vae.score(table, iwae_samples=self.iwae_samples, top_k=self.top_k,
                         segments=[(n, self.seed, first) for _, n, first in runs])

    def tally(self, parquet: pq.ParquetFile) -> int | None:
        flags = parquet.read(columns=["is_anomaly"]).column(0)
        return int(np.count_nonzero(flags.to_numpy()))


@dataclass(frozen=True, kw_only=True)
class EmbedJob(BatchJob):
    """Posterior means z_0… (and zstd_0… with return_std), id columns passed through."""

    action: ClassVar[str] = "embed"
    verb: ClassVar[str] = "embedded"

    return_std: bool = False  # zstd_* columns too

    def compute(self, vae: TabularVAE, table: pa.Table | None, runs: Runs) -> pa.Table:
        return embedding_table(vae, table, self.return_std)


@dataclass(frozen=True, kw_only=True)
class GenerateJob(BatchJob):
    """Synthetic rows with the training schema: ``n`` rows of the seed's stream, optionally
    meeting conditions on any column, or one row per condition row of ``input``."""

    action: ClassVar[str] = "generate"
    verb: ClassVar[str] = "generated"
    needs_input: ClassVar[bool] = False

    n: int | None = None  # rows to generate (default: one per condition row)
    # column → value, [values] or {">=": low, "<": high} (vae_core.conditions; strings are
    # cast to the column's type)
    conditions: dict[str, Any] = field(default_factory=dict)

    def check_input(self, vae: TabularVAE, empty: pa.Table) -> None:
        vae.transformer.transform_conditions(empty)

    def input_columns(self, vae: TabularVAE) -> list[str]:
        return [s.name for s in vae.transformer.schema.conditions]

    def validate(self, vae: TabularVAE, input_rows: int | None) -> int:
        if self.conditions and input_rows is not None:
            raise ValueError("give --condition or condition rows in --input, not both")
        if input_rows is not None and self.n not in (None, input_rows):
            raise ValueError(f"--n {self.n} differs from the {input_rows} condition rows in "
                             f"{self.input}")
        if input_rows is None and not (self.n and self.n >= 1):
            raise ValueError("vae generate needs --n ≥ 1 (or condition rows in --input)")
        vae.sample(1, conditions=self.conditions or None, seed=0)  # names, values, rate
        return self.n if input_rows is None else input_rows

    def compute(self, vae: TabularVAE, table: pa.Table | None, runs: Runs) -> pa.Table:
        conditions = self.conditions or None
        return pa.concat_tables(  # rows first… of the seed's stream, per run
            vae.sample(n, seed=self.seed, start=first,
                       conditions=conditions if table is None else table.slice(offset, n))
            for offset, n, first in runs)

    def check(self, vae: TabularVAE, table: pa.Table) -> None:
        vae.transformer.transform_conditions(table)


JOBS: dict[str, type[BatchJob]] = {cls.action: cls for cls in (EmbedJob, ScoreJob, GenerateJob)}


def job_for(action: str, **fields: Any) -> BatchJob:
    """The job for ``action`` (embed | score | generate), built from keyword fields."""
    if action not in JOBS:
        raise ValueError(f"unknown batch action '{action}' (one of {', '.join(JOBS)})")
    return JOBS[action](**fields)
