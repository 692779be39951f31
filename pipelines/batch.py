"""Batch jobs over Parquet with Ray Data: embed, score, generate.

    input files ─▶ one read task per row group; each row tagged with its number in the input
                ─▶ map_batches over an actor pool (the model is loaded once per actor)
                ─▶ write_parquet into a hidden folder beside --output
                ─▶ rows counted against the input, _SUCCESS written, folder renamed to --output

Every row gets what one in-process ``TabularVAE`` call on the whole input gives it: the IWAE
noise and the generated rows are addressed by row number (vae_core.row_streams), so neither
depends on how Ray cuts the input into batches. Every output row carries ``row_index``, its
row number in the input (or in the generated stream): Ray Data writes blocks as they finish,
so the files are not in input order (even ``preserve_order`` reordered rows in our tests).

Everything that can be checked without Ray is checked first (output path, model, input
files and schema, conditions), so a typo fails in seconds with one line naming the culprit.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines import dataset, ray_runtime, registry, tracking
from vae_core import DataError, SchemaError, TabularVAE
from vae_core.artifact import META_FILE, WEIGHTS_FILE

ACTIONS = ("embed", "score", "generate")
ROW = "__row"  # internal: the row's number in the input (files in name order, then rows)
ROW_INDEX = "row_index"  # in every output: the row's number in the input
GENERATE_CHUNK_ROWS = 65_536  # rows per generate task
ROWS_PER_FILE = 262_144  # output files of a few MB to a few tens of MB, not one per batch
SUCCESS = "_SUCCESS"


@dataclass
class BatchJob:
    action: str  # embed | score | generate
    model: str  # a model folder or models:/NAME@ALIAS, models:/NAME/VERSION
    output: str  # a folder of Parquet files
    input: str | None = None  # rows to embed / score; for generate, optional condition rows
    n: int | None = None  # generate: how many rows (default: one per condition row)
    conditions: dict[str, str] = field(default_factory=dict)  # generate: column → value
    seed: int = 0
    iwae_samples: int | None = None  # score: K (default: the model's)
    top_k: int = 3
    return_std: bool = False  # embed: zstd_* columns too
    overwrite: bool = False
    actors: int | None = None  # default: half the cluster's CPUs, or one per GPU share
    gpus_per_actor: float = 0.0
    batch_rows: int = 8192
    address: str | None = None


@dataclass
class BatchOutcome:
    action: str
    model: str
    output: str
    rows: int
    files: int
    seconds: float
    anomalies: int | None = None

    def summary(self) -> str:
        rate = self.rows / self.seconds if self.seconds else float("nan")
        verb = {"embed": "embedded", "score": "scored", "generate": "generated"}[self.action]
        line = f"{verb} {self.rows:,} rows in {self.seconds:.1f} s ({rate:,.0f} rows/s)"
        if self.anomalies is not None:
            line += f"; {self.anomalies:,} anomalies ({self.anomalies / max(self.rows, 1):.2%})"
        return f"{line} → {self.output} ({self.files} file(s)); model {self.model}"


# -- the work on Ray: reading with row numbers, the model actor -----------------------------

@dataclass(frozen=True)
class _Piece:
    path: str
    row_group: int
    start: int  # the number of its first row in the input
    rows: int


def _pieces(source: dataset.ParquetInput) -> list[_Piece]:
    pieces, start = [], 0
    for path in source.files:
        with source.filesystem.open_input_file(path) as handle:
            meta = pq.ParquetFile(handle).metadata
        for g in range(meta.num_row_groups):
            rows = meta.row_group(g).num_rows
            if rows:
                pieces.append(_Piece(path, g, start, rows))
            start += rows
    return pieces


def _read_pieces(batch: dict, filesystem: pafs.FileSystem, columns: list[str],
                 block_rows: int) -> Iterator[pa.Table]:
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


def _runs(rows: np.ndarray) -> list[tuple[int, int, int]]:
    """(offset in the batch, length, first row number) of each run of consecutive rows."""
    cuts = np.flatnonzero(np.diff(rows) != 1) + 1
    starts, ends = np.r_[0, cuts], np.r_[cuts, len(rows)]
    return [(int(a), int(b - a), int(rows[a])) for a, b in zip(starts, ends, strict=True)]


class ModelActor:
    """One model per actor; ``__call__`` maps a batch of tagged rows to output rows."""

    def __init__(self, model_files: dict[str, bytes], job: dict, device: str,
                 file_starts: list[tuple[int, str]], id_columns: list[str]) -> None:
        import torch

        torch.set_num_threads(1)  # one actor per CPU: threads would only fight each other
        with tempfile.TemporaryDirectory() as folder:
            for name, data in model_files.items():
                Path(folder, name).write_bytes(data)
            self.vae = TabularVAE.load(folder, device=device)
        self.job = BatchJob(**job)
        self.file_starts, self.id_columns = file_starts, id_columns
        self.conditions = _typed_conditions(self.vae, self.job.conditions)

    def __call__(self, batch: pa.Table) -> pa.Table:
        if ROW in batch.column_names:
            rows, table = batch.column(ROW).to_numpy(), batch.drop_columns([ROW])
        else:  # generate without condition rows: chunks {start, rows} of the seed's stream
            rows = np.concatenate([np.arange(s, s + n) for s, n in zip(
                batch.column("start").to_numpy(), batch.column("rows").to_numpy(), strict=True)])
            table = None
        try:
            out = self._compute(table, _runs(rows))
        except (DataError, SchemaError) as e:
            raise self._located(e, table, rows) from e
        return out.add_column(0, ROW_INDEX, pa.array(rows))

    def _compute(self, table: pa.Table | None, runs: list[tuple[int, int, int]]) -> pa.Table:
        job, vae = self.job, self.vae
        if job.action == "score":
            return vae.score(table, iwae_samples=job.iwae_samples, top_k=job.top_k,
                             segments=[(n, job.seed, first) for _, n, first in runs])
        if job.action == "embed":
            out = vae.embed(table, return_std=job.return_std)
            mu, sigma = out if job.return_std else (out, None)
            columns = {c: table.column(c) for c in self.id_columns}
            columns |= {f"z_{i}": pa.array(mu[:, i]) for i in range(mu.shape[1])}
            if sigma is not None:
                columns |= {f"zstd_{i}": pa.array(sigma[:, i]) for i in range(sigma.shape[1])}
            return pa.table(columns)
        return pa.concat_tables(  # generate: rows first… of the seed's stream, per run
            vae.sample(n, seed=job.seed, start=first,
                       conditions=(self.conditions or None) if table is None
                       else table.slice(offset, n))
            for offset, n, first in runs)

    def _located(self, error: DataError | SchemaError, table: pa.Table, rows: np.ndarray
                 ) -> DataError | SchemaError:
        """The error again, naming the file and rows at fault (a batch can span files)."""
        starts = np.array([s for s, _ in self.file_starts])
        which = np.searchsorted(starts, rows, side="right") - 1
        check = (self.vae.transformer.transform_conditions if self.job.action == "generate"
                 else self.vae.transformer.transform)
        cuts = np.flatnonzero(np.diff(which)) + 1
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(rows)], strict=True):
            start, path = self.file_starts[which[a]]
            try:
                check(table.slice(a, b - a))
            except (DataError, SchemaError) as e:
                where = f"{path} (rows {rows[a] - start}–{rows[b - 1] - start})"
                return type(e)(f"{where}: {e}", e.column)
        return type(error)(f"rows {rows[0]}–{rows[-1]} of the input: {error}", error.column)


def _typed_conditions(vae: TabularVAE, conditions: dict[str, str]) -> dict[str, Any]:
    """``--condition col=value`` strings cast to the column's training type."""
    schema = vae.transformer.schema
    names = {s.name for s in schema.conditions}
    typed = {}
    for name, value in conditions.items():
        if name not in names:
            raise SchemaError(f"'{name}' is not a condition column of this model "
                              f"(conditions: {', '.join(sorted(names)) or 'none'})", name)
        try:
            typed[name] = pa.array([value]).cast(schema.arrow_type(name))[0].as_py()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise SchemaError(f"condition '{name}={value}': not a {schema.arrow_type(name)} "
                              f"({e})", name) from e
    return typed


def _part_names():
    """part-000000.parquet, part-000001.parquet, …"""
    from ray.data.datasource import FilenameProvider

    class PartNames(FilenameProvider):
        def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
            return f"part-{task_index:06d}.parquet"

    return PartNames()


# -- the job on the driver ------------------------------------------------------------------

def _output_paths(output: str, overwrite: bool) -> tuple[pafs.FileSystem, str, str]:
    """(filesystem, final path, hidden temporary path beside it); refuses to clobber."""
    fs, path = dataset.resolve_path(output)
    if fs.get_file_info(path).type != pafs.FileType.NotFound and not overwrite:
        raise ValueError(f"{output}: already exists (pass --overwrite to replace it)")
    parent, name = path.rstrip("/").rsplit("/", 1) if "/" in path else ("", path)
    tmp = f"{parent}/.{name}.partial-{uuid.uuid4().hex[:8]}" if parent else \
        f".{name}.partial-{uuid.uuid4().hex[:8]}"
    return fs, path, tmp


def _model(uri: str) -> tuple[dict[str, bytes], TabularVAE, str]:
    if uri.startswith(("models:/", "runs:/", "mlflow-artifacts:")):
        tracking.use()
    folder, label = registry.resolve(uri)
    vae = TabularVAE.load(folder)  # fails here, in one line, not in every actor
    return {name: (folder / name).read_bytes() for name in (META_FILE, WEIGHTS_FILE)}, vae, label


def _check_input(vae: TabularVAE, source: dataset.ParquetInput, action: str) -> list[str]:
    """Columns to read; a missing or mistyped column fails here, naming it and the file."""
    empty = source.schema.empty_table()
    try:
        if action == "generate":
            vae.transformer.transform_conditions(empty)
        else:
            vae.transformer.transform(empty)
    except SchemaError as e:
        raise SchemaError(f"{source.files[0]}: {e}", e.column) from e
    schema = vae.transformer.schema
    wanted = schema.conditions if action == "generate" else (
        schema.ids + schema.features + schema.conditions)
    return [s.name for s in wanted if s.name in source.schema.names]


def _block_bytes(source: dataset.ParquetInput | None, rows: int) -> int:
    """Bytes of ``rows`` input rows in memory, from the Parquet footers; within 1–128 MiB."""
    per_row = 256.0  # generate: conditions and the generated rows are narrow
    if source:
        with source.filesystem.open_input_file(source.files[0]) as handle:
            meta = pq.ParquetFile(handle).metadata
        groups = [meta.row_group(g) for g in range(meta.num_row_groups)]
        per_row = sum(g.total_byte_size for g in groups) / max(1, sum(g.num_rows for g in groups))
    return int(min(128 * 2**20, max(2**20, per_row * rows)))


def _actors(job: BatchJob) -> int:
    import ray

    if job.actors:
        return job.actors
    resources = ray.cluster_resources()
    if job.gpus_per_actor:
        return max(1, int(resources.get("GPU", 0) / job.gpus_per_actor))
    return max(1, int(resources.get("CPU", 2)) // 2)  # the rest read and write


@dataclass
class _Plan:
    """What the driver checked and resolved before any Ray work."""

    fs: pafs.FileSystem
    final: str  # the output path
    tmp: str  # the hidden folder written first
    model_files: dict[str, bytes]
    label: str  # the model, as resolved (alias → version)
    source: dataset.ParquetInput | None
    columns: list[str]  # input columns to read
    id_columns: list[str]
    rows: int  # rows the output must have


def _plan(job: BatchJob) -> _Plan:
    if job.action not in ACTIONS:
        raise ValueError(f"unknown action '{job.action}' (one of {', '.join(ACTIONS)})")
    fs, final, tmp = _output_paths(job.output, job.overwrite)
    model_files, vae, label = _model(job.model)
    source, columns, id_columns = None, [], []
    if job.input:
        source = dataset.discover(job.input)
        columns = _check_input(vae, source, job.action)
        id_columns = [s.name for s in vae.transformer.schema.ids if s.name in columns]
    elif job.action != "generate":
        raise ValueError(f"vae {job.action} needs --input PATH (Parquet file or folder)")
    if job.action == "generate":
        if job.conditions and job.input:
            raise ValueError("give --condition or condition rows in --input, not both")
        if source and job.n not in (None, source.rows):
            raise ValueError(f"--n {job.n} differs from the {source.rows} condition rows in "
                             f"{job.input}")
        if not source and not (job.n and job.n >= 1):
            raise ValueError("vae generate needs --n ≥ 1 (or condition rows in --input)")
        vae.sample(1, conditions=_typed_conditions(vae, job.conditions) or None, seed=0)
    return _Plan(fs, final, tmp, model_files, label, source, columns, id_columns,
                 source.rows if source else job.n)


def run(job: BatchJob, log: Callable[[str], None] = print) -> BatchOutcome:
    """Run a batch job; the output appears, complete, only when every row is written."""
    import ray.data

    t0 = time.perf_counter()
    plan = _plan(job)
    ray_runtime.init(job.address)
    context = ray.data.DataContext.get_current()
    kept = context.target_max_block_size
    # Ray coalesces a task's output into blocks of up to 128 MiB, and one block goes to one
    # actor: blocks of about one model call each give every actor work. (Ray's streaming
    # repartition would cut blocks by rows, but it does not keep their order.)
    context.target_max_block_size = _block_bytes(plan.source, job.batch_rows)
    try:
        ds = _dataset(job, plan, log)
        try:
            from ray.data import SaveMode

            # OVERWRITE: the folder is ours and fresh; names then need no write UUID.
            ds.write_parquet(plan.tmp, filesystem=plan.fs, filename_provider=_part_names(),
                             mode=SaveMode.OVERWRITE, min_rows_per_file=ROWS_PER_FILE)
            outcome = _finish(job, plan, time.perf_counter() - t0)
        except BaseException as e:
            if plan.fs.get_file_info(plan.tmp).type == pafs.FileType.Directory:
                plan.fs.delete_dir(plan.tmp)
            raise _user_error(e) from e
    finally:
        context.target_max_block_size = kept
    log(outcome.summary())
    return outcome


def _dataset(job: BatchJob, plan: _Plan, log: Callable[[str], None]):
    """Read (numbered rows, or generate chunks) → model actors, lazily."""
    import ray.data

    if plan.source:
        pieces = _pieces(plan.source)
        ds = ray.data.from_items([asdict(p) for p in pieces], override_num_blocks=len(pieces))
        # Its own CPU share keeps Ray from fusing the read into the actors: fused, one actor
        # would read a whole row group and compute every batch of it while the others idle.
        ds = ds.map_batches(_read_pieces, batch_size=1, batch_format="numpy", num_cpus=0.5,
                            fn_kwargs={"filesystem": plan.source.filesystem,
                                       "columns": plan.columns,
                                       "block_rows": job.batch_rows})
        file_starts = [(p.start, p.path) for p in pieces]
    else:
        chunks = [{"start": s, "rows": min(GENERATE_CHUNK_ROWS, job.n - s)}
                  for s in range(0, job.n, GENERATE_CHUNK_ROWS)]
        ds = ray.data.from_items(chunks, override_num_blocks=len(chunks))
        file_starts = [(0, "(generated)")]
    device = "cuda" if job.gpus_per_actor else "cpu"
    actors = _actors(job)
    log(f"{job.action}: {plan.rows:,} rows with {plan.label} on {actors} actor(s) ({device}) "
        f"→ {job.output}")
    return ds.map_batches(
        ModelActor, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=1, num_gpus=job.gpus_per_actor or None,
        batch_size=job.batch_rows if plan.source else 1,
        fn_constructor_kwargs={"model_files": plan.model_files, "job": asdict(job),
                               "device": device, "file_starts": file_starts,
                               "id_columns": plan.id_columns})


_RAISED_IN_A_WORKER = re.compile(
    r"^vae_core\.errors\.(DataError|SchemaError|ModelFormatError): (.+)$", re.MULTILINE)


def _user_error(e: BaseException) -> BaseException:
    """Ray hands a worker's DataError back wrapped in a traceback; unwrap its message."""
    found = _RAISED_IN_A_WORKER.findall(str(e))
    if not found:
        return e
    kind, message = found[-1]
    return {"DataError": DataError, "SchemaError": SchemaError}.get(kind, ValueError)(message)


def _finish(job: BatchJob, plan: _Plan, seconds: float) -> BatchOutcome:
    """Check the rows, mark the folder complete and move it into place."""
    fs, tmp, final = plan.fs, plan.tmp, plan.final
    files = sorted(i.path for i in fs.get_file_info(pafs.FileSelector(tmp))
                   if i.path.endswith(".parquet"))
    written = 0
    anomalies = 0 if job.action == "score" else None
    for f in files:
        with fs.open_input_file(f) as handle:
            parquet = pq.ParquetFile(handle)
            written += parquet.metadata.num_rows
            if anomalies is not None:
                flags = parquet.read(columns=["is_anomaly"]).column(0)
                anomalies += int(np.count_nonzero(flags.to_numpy()))
    if written != plan.rows:
        raise RuntimeError(f"the job wrote {written} rows, expected {plan.rows}; "
                           "output discarded")
    outcome = BatchOutcome(job.action, plan.label, job.output, written, len(files), seconds,
                           anomalies)
    with fs.open_output_stream(f"{tmp}/{SUCCESS}") as out:
        out.write(json.dumps({**asdict(outcome), "job": asdict(job)}, indent=1).encode())
    previous = fs.get_file_info(final).type
    old = tmp.replace(".partial-", ".replaced-")
    if previous != pafs.FileType.NotFound:  # --overwrite: swap in, then drop the old output
        fs.move(final, old)
    fs.move(tmp, final)
    if previous == pafs.FileType.Directory:
        fs.delete_dir(old)
    elif previous == pafs.FileType.File:
        fs.delete_file(old)
    return outcome
