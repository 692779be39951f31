"""The training job: Parquet → Ray Data → Ray Train → MLflow run + registered model.

Order matters for failing fast: the MLflow server, the input files and the schema are
checked before Ray starts, so a typo costs seconds, not an hour of training.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipelines import dataset, logs, plots, ray_runtime, registry, tracking
from pipelines.job_config import PLACEMENTS, JobConfig
from pipelines.progress import epoch_line, epoch_lines, tapped
from pipelines.stage_times import LOOP_STAGES, StageTimes, summary_line
from pipelines.train_loop import checkpoint_dirs, loop_config, train_loop
from vae_core import Calibration, ColumnTransformer, TabularVAE, infer_schema
from vae_core.config import changed_fields
from vae_core.model import CALIBRATION_ROWS
from vae_core.presets import PresetChoice, TableShape, apply_preset

RUN_ID_FILE = "mlflow_run_id"
LOG_FILE = "vae.log"  # Ray's and MLflow's logs when the CLI is quiet


@dataclass
class TrainingOutcome:
    run_id: str
    run_name: str
    model_name: str
    version: str
    champion: bool
    promotion: str
    val_elbo: float
    val_log_px: float
    epochs: int
    seconds: float
    checkpoint_path: str

    def summary(self) -> str:
        alias = "champion" if self.champion else "candidate"
        return (f"registered {self.model_name} v{self.version} (@{alias}): held-out log p(x) "
                f"{self.val_log_px:.3f}, ELBO {self.val_elbo:.3f} after {self.epochs} epochs in "
                f"{self.seconds:.0f} s; {self.promotion}")


def _storage_path(job: JobConfig) -> str:
    return job.storage_path or str(Path.cwd() / "ray_results")


def _run_name(job: JobConfig, storage: str) -> str:
    if job.run_name:
        return job.run_name
    if job.resume:  # the model's most recent run under the storage path
        runs = sorted(Path(storage).glob(f"{job.model_name}-*")) if "://" not in storage else []
        if not runs:
            raise ValueError(f"--resume: no earlier run of '{job.model_name}' in {storage}; "
                             "pass --run-name")
        return runs[-1].name
    return f"{job.model_name}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"


def with_preset(job: JobConfig, shape: TableShape) -> tuple[JobConfig, PresetChoice | None]:
    """The job with its preset filled in for this table's shape. Keys the job set win: those
    its file or flags named, and (for a JobConfig built in code) fields off their default."""
    if job.preset is None:
        return job, None
    set_keys = job.set_keys | changed_fields(job.model) | changed_fields(job.train)
    model, train, choice = apply_preset(job.preset, shape, job.model, job.train, set_keys)
    return replace(job, model=model, train=train), choice


def _mlflow_run(job: JobConfig, experiment_id: str, run_dir: Path | None, run_name: str,
                preset: PresetChoice | None, input_path: str) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    if job.resume and run_dir and (run_dir / RUN_ID_FILE).is_file():
        run_id = (run_dir / RUN_ID_FILE).read_text().strip()
        client.set_tag(run_id, "vae.input_path", input_path)  # the data may have grown
        return run_id
    run = client.create_run(experiment_id, run_name=run_name,
                            tags={"vae.model_name": job.model_name, "vae.data": job.data,
                                  "vae.preset": job.preset or "none",
                                  "vae.input_path": input_path})
    flat = {**{k: v for k, v in job.to_dict().items() if k not in ("model", "train")},
            **{f"model.{k}": v for k, v in job.model.to_dict().items() if k != "columns"},
            **{f"train.{k}": v for k, v in job.train.to_dict().items()},
            **{f"preset.filled.{k}": v for k, v in (preset.filled if preset else {}).items()}}
    for key, value in flat.items():
        client.log_param(run.info.run_id, key, json.dumps(value) if isinstance(
            value, dict | list | tuple) else str(value))
    if run_dir:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / RUN_ID_FILE).write_text(run.info.run_id)
    return run.info.run_id


def train(job: JobConfig, log: Callable[[str], None] = print, progress: bool = False
          ) -> TrainingOutcome:
    """Run the job; ``progress`` logs a line per epoch, on the driver (pipelines.progress).

    When the CLI is quiet (pipelines.logs), Ray's and MLflow's logs go to ``vae.log`` in the
    Ray Train run folder (``logs/RUN.log`` for remote storage), named in the first line.
    """
    import mlflow
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    t0, clock = time.perf_counter(), StageTimes()
    uri, experiment_id = tracking.connect(job.experiment)
    clock.lap("mlflow_connect")
    source = dataset.discover(job.data)
    schema = infer_schema(source.schema, job.columns)
    clock.lap("input")
    storage = _storage_path(job)
    run_name = _run_name(job, storage)
    run_dir = Path(storage) / run_name if "://" not in storage else None
    if run_dir and (run_dir / RUN_ID_FILE).is_file() and not job.resume:
        # Ray would silently resume a same-named run; make that the user's explicit choice.
        raise ValueError(f"run '{run_name}' already exists in {storage}: pass --resume to "
                         "continue it, or another --run-name")
    log_file = logs.attach(run_dir / LOG_FILE if run_dir else logs.in_logs_folder(run_name))
    log(f"input: {len(source.files)} file(s), {source.rows} rows; MLflow: {uri}"
        + (f"; logs: {log_file}" if log_file else ""))

    ray_runtime.init(job.address, log_to_driver=progress, train_workers=job.workers)
    clock.lap("ray_start")
    ds = dataset.read(source)
    stats = dataset.distributed_statistics(ds, schema)
    job, preset = with_preset(job, TableShape.of(schema, stats))
    if preset:
        log(f"preset {preset.name}: " + ", ".join(f"{k}={v}" for k, v in preset.filled.items()))
    transformer = ColumnTransformer.for_model(schema, stats, job.model)
    clock.lap("statistics")
    splits = dataset.encoded_splits(source, ds, transformer, job.train.validation_fraction,
                                    job.train.seed)
    clock.lap("encoding")  # materialised here when it fits; else streamed during training
    run_id = _mlflow_run(job, experiment_id, run_dir, run_name, preset, splits.input_path)
    clock.lap("mlflow_run")
    log(f"run {run_name} (MLflow run {run_id}), {job.workers or 'local-mode'} worker(s), "
        f"encoded rows {splits.input_path}")

    scaling = ScalingConfig(num_workers=0) if job.workers == 0 else ScalingConfig(
        num_workers=job.workers, use_gpu=job.use_gpu,
        placement_strategy=PLACEMENTS[job.placement],
        resources_per_worker={"CPU": ray_runtime.cpus_per_worker(job.workers,
                                                                 job.cpus_per_worker)})
    local_root = resume_from = None
    if job.workers == 0:  # local mode persists nothing itself (see train_loop)
        if run_dir is None:
            raise ValueError("local mode (workers: 0) needs a local storage_path; use workers ≥ 1 "
                             f"for {storage}")
        local_root = str(run_dir / "local_checkpoints")
        previous = checkpoint_dirs(Path(local_root)) if job.resume else []
        resume_from = str(previous[-1]) if previous else None
    config = loop_config(transformer, job.model, job.train, source.rows, job.torch_threads,
                         preset, local_root, resume_from, uri, run_id)
    with contextlib.ExitStack() as stack:
        loop, callbacks = train_loop, []
        if progress and job.workers == 0:  # the loop runs here: tap its reports
            loop = tapped(train_loop, lambda m: log(epoch_line(m, job.train.epochs)))
        elif progress:  # the Train controller hands each report to a callback
            callbacks = [stack.enter_context(epoch_lines(log, job.train.epochs))]
        trainer = TorchTrainer(
            loop, train_loop_config=config, datasets={"train": splits.train, "val": splits.val},
            dataset_config=DataConfig(datasets_to_split="all"), scaling_config=scaling,
            run_config=RunConfig(name=run_name, storage_path=storage, callbacks=callbacks,
                                 failure_config=FailureConfig(max_failures=job.max_failures),
                                 checkpoint_config=CheckpointConfig(num_to_keep=2)))
        result = trainer.fit()
    clock.lap("training")
    if job.workers == 0:  # the Result's checkpoint is only a reference (see train_loop)
        kept = checkpoint_dirs(Path(local_root))
        result_checkpoint_path = str(kept[-1]) if kept else None
    else:
        result_checkpoint_path = result.checkpoint.path if result.checkpoint else None
    if result_checkpoint_path is None:
        raise RuntimeError(f"run {run_name} finished without a checkpoint")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "vae_model"
        if job.workers == 0:
            shutil.copytree(result_checkpoint_path, folder,
                            ignore=shutil.ignore_patterns("train_state.pt"))
        else:
            with result.checkpoint.as_directory() as d:
                shutil.copytree(d, folder, ignore=shutil.ignore_patterns("train_state.pt"))
        vae = TabularVAE.load(folder)
        # A streamed job holds the first validation rows already (CALIBRATION_ROWS ≤
        # STREAMED_VALIDATION_ROWS): the same rows validation_rows() would read again.
        val_rows = splits.held_out.slice(0, CALIBRATION_ROWS) if splits.held_out is not None \
            else dataset.validation_rows(source, transformer, job.train.validation_fraction,
                                         job.train.seed, CALIBRATION_ROWS)
        # One IWAE pass over the validation rows serves both the figures and the threshold:
        # calibrate() would repeat score()'s pass (same K, seed 0) to get the same scores.
        scored = vae.score(val_rows, seed=0)
        vae.calibration = Calibration.fit(scored.column("score").to_numpy())
        val_log_px = float(np.mean(scored.column("log_px").to_numpy()))
        val_elbo = float(np.mean(scored.column("elbo").to_numpy()))
        vae.save(folder)
        synthetic = vae.sample(val_rows.num_rows, seed=0)
        _log_figures(run_id, vae, val_rows, synthetic, scored)
        detection = _log_evaluation(run_id, vae, val_rows, synthetic,
                                    Path(tmp) / "evaluation")
        with mlflow.start_run(run_id=run_id):
            mlflow.log_metrics({"final_val_log_px": val_log_px, "final_val_elbo": val_elbo,
                                "anomaly_threshold": vae.calibration.threshold()})
        clock.lap("finalise")
        version = registry.log_model(run_id, folder, job.model_name, val_rows.slice(0, 100),
                                     job.preset)
    promotion = registry.promote_if_better(
        job.model_name, version, val_log_px, val_rows, job.promote,
        blocked=_detection_gate(detection, job.max_detection_roc_auc))
    clock.lap("registry")
    log(_log_times(run_id, clock))
    outcome = TrainingOutcome(run_id, run_name, job.model_name, version, promotion.champion,
                              promotion.reason, val_elbo, val_log_px, len(vae.history),
                              time.perf_counter() - t0, result_checkpoint_path)
    log(outcome.summary())
    return outcome


def _log_figures(run_id: str, vae: TabularVAE, rows: pa.Table, synthetic: pa.Table,
                 scored: pa.Table) -> None:
    import matplotlib.pyplot as plt
    import mlflow

    from vae_core.evaluation import marginals_figure
    from vae_core.evaluation.columns import modelled_columns

    first_four = modelled_columns(vae.transformer.schema)[:4]
    figures = {"loss_curves.png": plots.loss_curves(vae),
               "latent_2d.png": plots.latent_view(vae, rows),
               "marginals.png": marginals_figure(rows, synthetic, first_four),
               "anomaly_scores.png": plots.score_histogram(
                   scored.column("score").to_numpy(), vae.calibration.threshold())}
    with mlflow.start_run(run_id=run_id):
        for name, fig in figures.items():
            mlflow.log_figure(fig, f"plots/{name}")
            plt.close(fig)


EVALUATION_METRICS = ("column_shapes", "pair_trends", "detection_roc_auc",
                      "dcr_synthetic_median", "dcr_holdout_median", "exact_copies_synthetic")


def _log_times(run_id: str, clock: StageTimes) -> str:
    """The driver's stage times as ``time.*`` metrics, beside the loop's (logged by it)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics(clock.metrics())
    logged = MlflowClient().get_run(run_id).data.metrics
    loop = {stage: logged[f"time.{stage}_s"] for stage in LOOP_STAGES
            if f"time.{stage}_s" in logged}
    return summary_line(clock.seconds, loop)


def _detection_gate(detection: float | None, limit: float | None) -> str | None:
    """Why the synthetic rows bar this version from @champion, if they do."""
    if limit is None or detection is None or detection <= limit:
        return None
    return f"synthetic rows' detection ROC-AUC {detection:.3f} > max_detection_roc_auc {limit}"


def _log_evaluation(run_id: str, vae: TabularVAE, rows: pa.Table, synthetic: pa.Table,
                    folder: Path) -> float | None:
    """``vae evaluate``'s report of ``synthetic`` (as many sampled rows as there are
    validation rows) against the validation rows, which the model never trained on: metrics
    ``synthetic.*`` and artifacts ``evaluation/`` (report.json, report.html, plots). Returns
    the detection ROC-AUC (None when too few rows to measure it)."""
    import mlflow

    report = vae.evaluate(rows, synthetic, seed=0)
    report.write(folder, rows, synthetic, vae.transformer.schema)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({f"synthetic.{k}": report.summary[k] for k in EVALUATION_METRICS
                            if report.summary[k] is not None})
        mlflow.log_artifacts(str(folder), "evaluation")
    return report.summary["detection_roc_auc"]
