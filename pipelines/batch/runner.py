"""The runner shared by every batch job, on the driver:

    plan   output path free (or --overwrite), model resolved (alias → version) and loaded,
           input files and schema checked, the job's own checks — all before Ray starts
    read   one read task per row group, rows numbered (pipelines.batch.reader)
    map    an actor pool of ModelActor, the model loaded once per actor
    commit write_parquet into a hidden folder beside --output, rows counted against the
           input, _SUCCESS written, the folder renamed to --output (the old one dropped)

A failure leaves no output behind (and an --overwrite keeps the old one). Errors raised in
a Ray worker come back as one line: the DataError / SchemaError inside Ray's traceback.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq

import model_refs
from pipelines import dataset, logs, ray_runtime, tracking
from pipelines.batch import reader
from pipelines.batch.actor import ModelActor
from pipelines.batch.jobs import BatchJob
from vae_core import DataError, SchemaError, TabularVAE

ROWS_PER_FILE = 262_144  # output files of a few MB to a few tens of MB, not one per batch
SUCCESS = "_SUCCESS"


@dataclass
class BatchOutcome:
    action: str
    model: str  # as resolved: models:/m@champion (version 3)
    output: str
    rows: int
    files: int
    seconds: float
    anomalies: int | None = None
    verb: str = "wrote"

    def summary(self) -> str:
        rate = self.rows / self.seconds if self.seconds else float("nan")
        line = f"{self.verb} {self.rows:,} rows in {self.seconds:.1f} s ({rate:,.0f} rows/s)"
        if self.anomalies is not None:
            line += f"; {self.anomalies:,} anomalies ({self.anomalies / max(self.rows, 1):.2%})"
        return f"{line} → {self.output} ({self.files} file(s)); model {self.model}"


@dataclass
class Plan:
    """What the driver checked and resolved before any Ray work."""

    fs: pafs.FileSystem
    final: str  # the output path
    tmp: str  # the hidden folder written first
    model_files: dict[str, bytes]
    label: str  # the model, as resolved (alias → version)
    source: dataset.ParquetInput | None
    columns: list[str]  # input columns to read
    rows: int  # rows the output must have


def plan(job: BatchJob) -> Plan:
    fs, final, tmp = _output_paths(job.output, job.overwrite)
    model_files, vae, label = _model(job.model)
    source, columns = None, []
    if job.input:
        source = dataset.discover(job.input)
        try:
            job.check_input(vae, source.schema.empty_table())
        except SchemaError as e:
            raise SchemaError(f"{source.files[0]}: {e}", e.column) from e
        columns = [c for c in job.input_columns(vae) if c in source.schema.names]
    rows = job.validate(vae, source.rows if source else None)
    return Plan(fs, final, tmp, model_files, label, source, columns, rows)


def run(job: BatchJob, log: Callable[[str], None] = print) -> BatchOutcome:
    """Run a batch job; the output appears, complete, only when every row is written."""
    import ray.data

    t0 = time.perf_counter()
    checked = plan(job)
    log_file = logs.attach(logs.beside(job.output))
    ray_runtime.init(job.address)
    context = ray.data.DataContext.get_current()
    kept = context.target_max_block_size
    # Ray coalesces a task's output into blocks of up to 128 MiB, and one block goes to one
    # actor: blocks of about one model call each give every actor work. (Ray's streaming
    # repartition would cut blocks by rows, but it does not keep their order.)
    context.target_max_block_size = reader.block_bytes(checked.source, job.batch_rows)
    try:
        ds, actors = _dataset(job, checked)
        device = "cuda" if job.gpus_per_actor else "cpu"
        log(f"{job.action}: {checked.rows:,} rows with {checked.label} on {actors} actor(s) "
            f"({device}) → {job.output}" + (f"; logs: {log_file}" if log_file else ""))
        try:
            from ray.data import SaveMode

            # OVERWRITE: the folder is ours and fresh; names then need no write UUID.
            ds.write_parquet(checked.tmp, filesystem=checked.fs, filename_provider=_part_names(),
                             mode=SaveMode.OVERWRITE, min_rows_per_file=ROWS_PER_FILE)
            outcome = _commit(job, checked, time.perf_counter() - t0)
        except BaseException as e:
            if checked.fs.get_file_info(checked.tmp).type == pafs.FileType.Directory:
                checked.fs.delete_dir(checked.tmp)
            raise user_error(e) from e
    finally:
        context.target_max_block_size = kept
    log(outcome.summary())
    return outcome


# -- plan ---------------------------------------------------------------------------------

def _output_paths(output: str, overwrite: bool) -> tuple[pafs.FileSystem, str, str]:
    """(filesystem, final path, hidden temporary path beside it); refuses to clobber."""
    fs, path = dataset.resolve_path(output)
    if fs.get_file_info(path).type != pafs.FileType.NotFound and not overwrite:
        raise ValueError(f"{output}: already exists (pass --overwrite to replace it)")
    parent, name = path.rstrip("/").rsplit("/", 1) if "/" in path else ("", path)
    hidden = f".{name}.partial-{uuid.uuid4().hex[:8]}"
    return fs, path, f"{parent}/{hidden}" if parent else hidden


def _model(uri: str) -> tuple[dict[str, bytes], TabularVAE, str]:
    if model_refs.parse(uri).needs_tracking:
        tracking.use()
    resolved = model_refs.resolve(uri)
    vae = TabularVAE.load(resolved.folder)  # fails here, in one line, not in every actor
    files = {p.name: p.read_bytes() for p in Path(resolved.folder).iterdir() if p.is_file()}
    return files, vae, resolved.label


# -- read → map ---------------------------------------------------------------------------

def _actors(job: BatchJob) -> int:
    import ray

    if job.actors:
        return job.actors
    resources = ray.cluster_resources()
    if job.gpus_per_actor:
        return max(1, int(resources.get("GPU", 0) / job.gpus_per_actor))
    return max(1, int(resources.get("CPU", 2)) // 2)  # the rest read and write


def _dataset(job: BatchJob, checked: Plan):
    """Read (numbered rows, or generate chunks) → model actors, lazily; (dataset, actors)."""
    import ray.data

    if checked.source:
        pieces = reader.pieces(checked.source)
        ds = ray.data.from_items([asdict(p) for p in pieces], override_num_blocks=len(pieces))
        # Its own CPU share keeps Ray from fusing the read into the actors: fused, one actor
        # would read a whole row group and compute every batch of it while the others idle.
        ds = ds.map_batches(reader.read_pieces, batch_size=1, batch_format="numpy",
                            num_cpus=0.5, fn_kwargs={"filesystem": checked.source.filesystem,
                                                     "columns": checked.columns,
                                                     "block_rows": job.batch_rows})
        file_starts = [(p.start, p.path) for p in pieces]
    else:
        chunks = reader.generate_chunks(checked.rows)
        ds = ray.data.from_items(chunks, override_num_blocks=len(chunks))
        file_starts = [(0, "(generated)")]
    actors = _actors(job)
    return ds.map_batches(
        ModelActor, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=1, num_gpus=job.gpus_per_actor or None,
        batch_size=job.batch_rows if checked.source else 1,
        fn_constructor_kwargs={"model_files": checked.model_files, "job": job,
                               "device": "cuda" if job.gpus_per_actor else "cpu",
                               "file_starts": file_starts}), actors


def _part_names():
    """part-000000.parquet, part-000001.parquet, …"""
    from ray.data.datasource import FilenameProvider

    class PartNames(FilenameProvider):
        def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
            return f"part-{task_index:06d}.parquet"

    return PartNames()


_RAISED_IN_A_WORKER = re.compile(
    r"^vae_core\.(?:[\w.]+\.)?(DataError|SchemaError|ModelFormatError): (.+)$", re.MULTILINE)


def user_error(e: BaseException) -> BaseException:
    """Ray hands a worker's DataError back wrapped in a traceback; unwrap its message."""
    found = _RAISED_IN_A_WORKER.findall(str(e))
    if not found:
        return e
    kind, message = found[-1]
    return {"DataError": DataError, "SchemaError": SchemaError}.get(kind, ValueError)(message)


# -- commit -------------------------------------------------------------------------------

def _commit(job: BatchJob, checked: Plan, seconds: float) -> BatchOutcome:
    """Check the rows, mark the folder complete and move it into place."""
    fs, tmp, final = checked.fs, checked.tmp, checked.final
    files = sorted(i.path for i in fs.get_file_info(pafs.FileSelector(tmp))
                   if i.path.endswith(".parquet"))
    written, tallies = 0, []
    for f in files:
        with fs.open_input_file(f) as handle:
            parquet = pq.ParquetFile(handle)
            written += parquet.metadata.num_rows
            tallies.append(job.tally(parquet))
    if written != checked.rows:
        raise RuntimeError(f"the job wrote {written} rows, expected {checked.rows}; "
                           "output discarded")
    counted = [t for t in tallies if t is not None]
    outcome = BatchOutcome(job.action, checked.label, job.output, written, len(files), seconds,
                           sum(counted) if counted else None, job.verb)
    with fs.open_output_stream(f"{tmp}/{SUCCESS}") as out:
        out.write(json.dumps({**asdict(outcome), "job": job.to_dict()}, indent=1).encode())
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
