"""The function every Ray Train worker runs (also in local mode, ``workers: 0``).

The epoch itself is vae_core.training's (``run_epoch``, ``ValidationSums``, the report);
what is left here is Ray's. Each worker streams its shard of the encoded rows, trains a
TrainingModule wrapped by ``ray.train.torch.prepare_model`` (so DDP all-reduces the
gradients), evaluates its share of the validation rows, and all-reduces the epoch's sums
in one call, so that every rank takes the same early-stopping decision. Every epoch, rank
0 writes a checkpoint that is itself a loadable model folder (the best weights so far)
plus ``train_state.pt`` (current weights, optimiser, schedule, counters) to resume from;
every rank calls ``ray.train.report`` (it is a barrier) with the epoch's metrics, from
which the driver prints its progress line (pipelines.progress).
"""

from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import torch

from vae_core import ColumnTransformer, ModelConfig, TabularVAE, TrainConfig
from vae_core.artifact import upgrade_state
from vae_core.nn import LatentVariableModule, build_module
from vae_core.objectives import TrainingModule, objective_for, row_moments
from vae_core.presets import PresetChoice
from vae_core.training import (
    EarlyStopping,
    EpochReport,
    EpochSums,
    ValidationSums,
    aim_at_principal_directions,
    epoch_report,
    make_optimizer,
    run_epoch,
)

TRAIN_STATE = "train_state.pt"
IWAE_ROWS = 2048  # validation rows per shard and epoch that also get the IWAE bound
FETCH_ROWS = 8192  # rows per Ray Data batch; minibatches are cut from it
KEEP_CHECKPOINTS = 2


def checkpoint_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("checkpoint_epoch_*") if (p / TRAIN_STATE).is_file())


@contextlib.contextmanager
def _checkpoint_dir(local_root: str | None, epoch: int):
    """A temporary folder (Ray copies it to storage), or, in local mode, the kept folder."""
    if local_root is None:
        with tempfile.TemporaryDirectory() as d:
            yield Path(d)
        return
    root = Path(local_root)
    final = root / f"checkpoint_epoch_{epoch:04d}"
    partial = root / f".partial_epoch_{epoch:04d}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    yield partial
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)  # a half-written checkpoint is never taken for a complete one
    for old in checkpoint_dirs(root)[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)


def _all_reduce(train: EpochSums, val: ValidationSums, device: torch.device
                ) -> tuple[EpochSums, ValidationSums]:
    """Both sums added up over the ranks, in one all-reduce."""
    t = torch.cat([train.to_tensor(), val.to_tensor()]).to(device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(t)
    t = t.cpu()
    return EpochSums.from_tensor(t[:EpochSums.size()]), ValidationSums.from_tensor(
        t[EpochSums.size():])


def _minibatches(shard, batch_size: int, device: torch.device, shuffle: torch.Generator
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Ray Data hands over large chunks (its per-batch cost is fixed, ~ms); they are cut
    into shuffled minibatches here. Block order is shuffled per epoch in dataset.py."""
    for chunk in shard.iter_torch_batches(batch_size=FETCH_ROWS, dtypes=torch.float32,
                                          device=device):
        order = torch.randperm(len(chunk["x"]), generator=shuffle, device="cpu").to(device)
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            yield chunk["x"][rows], chunk["c"][rows]


@torch.no_grad()
def _row_moments(shards, width: int, device: torch.device) -> torch.Tensor:
    """row_moments of the rows the job trains and validates on (a streamed input's
    validation rows are its first STREAMED_VALIDATION_ROWS), on every rank: one pass over
    this rank's shards and one all-reduce, so that each rank finds the same directions."""
    moments = row_moments((batch["x"] for shard in shards
                           for batch in shard.iter_torch_batches(
                               batch_size=FETCH_ROWS, dtypes=torch.float32, device=device)),
                          width, device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(moments)
    return moments


def _weights_from_rank_0(module: torch.nn.Module) -> None:
    """Every rank takes rank 0's weights. After the mean's start: each rank started it
    from its own eigendecomposition of the same moments, and an eigenvector's sign may
    differ between ranks; DDP synchronised the weights only in prepare_model."""
    with torch.no_grad():
        for p in module.parameters():
            torch.distributed.broadcast(p.data, src=0)


@torch.inference_mode()
def _validate(module: LatentVariableModule, shard, cfg: TrainConfig, device: torch.device
              ) -> ValidationSums:
    """This rank's validation sums, the IWAE bound on its first batch (it costs K passes)."""
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    sums = ValidationSums()
    for batch in shard.iter_torch_batches(batch_size=IWAE_ROWS, dtypes=torch.float32,
                                          device=device):
        x, c = batch["x"], batch["c"]
        sums.add(module, x, c, gen, cfg.beta, cfg.trim_fraction)
        if sums.iwae_rows == 0:
            sums.add_iwae(module, x, c, cfg.iwae_samples, gen)
    return sums


def loop_config(transformer: ColumnTransformer, model: ModelConfig, train: TrainConfig,
                rows: int, torch_threads: int, preset: PresetChoice | None = None,
                local_checkpoint_root: str | None = None, resume_from: str | None = None,
                tracking_uri: str | None = None, mlflow_run_id: str | None = None) -> dict:
    """What ``train_loop`` reads (Ray Train passes it to every worker as plain data), for a
    table of ``rows`` rows. Without ``mlflow_run_id`` the loop logs nothing to MLflow;
    ``local_checkpoint_root`` is local mode's (see pipelines.train)."""
    return {"transformer": transformer.to_dict(), "model": model.to_dict(),
            "train": train.to_dict(), "torch_threads": torch_threads,
            "train_rows": int(rows * (1 - train.validation_fraction)),
            "preset": preset.to_dict() if preset else None,
            "local_checkpoint_root": local_checkpoint_root, "resume_from": resume_from,
            "tracking_uri": tracking_uri, "mlflow_run_id": mlflow_run_id}


def _mlflow_with_run(cfg: dict) -> ModuleType | None:
    """MLflow with the job's run started, where the job has one (rank 0 logs there); None
    otherwise: the loop itself needs no MLflow (bench_gpu runs it where none is installed)."""
    if not cfg.get("mlflow_run_id"):
        return None
    import mlflow

    mlflow.set_tracking_uri(cfg["tracking_uri"])
    mlflow.start_run(run_id=cfg["mlflow_run_id"])
    return mlflow


def train_loop(cfg: dict) -> None:
    import ray.train
    import ray.train.torch

    entered = time.perf_counter()  # stage times: pipelines.stage_times
    torch.set_num_threads(cfg["torch_threads"])  # local mode runs in the driver: Ray won't
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    transformer = ColumnTransformer.from_dict(cfg["transformer"])
    model_cfg, train_cfg = ModelConfig.from_dict(cfg["model"]), TrainConfig.from_dict(cfg["train"])
    preset = PresetChoice.from_dict(cfg["preset"]) if cfg.get("preset") else None
    torch.manual_seed(train_cfg.seed)
    module = build_module(transformer, model_cfg)
    # To the device (and DDP when world > 1) before the optimizer and any checkpoint are
    # loaded, so that the optimizer's state lands on the parameters' device.
    objective = objective_for(train_cfg, cfg["train_rows"])
    model = ray.train.torch.prepare_model(TrainingModule(module, objective))
    device = ray.train.torch.get_device()
    opt, schedule = make_optimizer(module, train_cfg)
    stopper = EarlyStopping(train_cfg.early_stopping_patience)
    start_epoch, history = 0, []

    checkpoint = ray.train.get_checkpoint()  # set after a worker restart or on --resume
    if checkpoint is None and cfg.get("resume_from"):
        checkpoint = ray.train.Checkpoint.from_directory(cfg["resume_from"])
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / TRAIN_STATE, map_location="cpu", weights_only=True)
        try:
            module.load_state_dict(upgrade_state(state["module"]))  # also one written by v2
        except RuntimeError as error:  # strict: another model's parameters
            raise ValueError(
                "--resume: the checkpoint holds another model than this job describes (its "
                "model keys, or the preset's choice for them, changed since it was written: "
                f"{'; '.join(line.strip() for line in str(error).splitlines()[1:])}); pass "
                "the keys it was trained with, "
                "or start a new run") from None
        opt.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        stopper.best, stopper.stale, stopper.best_state = (state["best"], state["stale"],
                                                           upgrade_state(state["best_module"]))
        start_epoch = state["epoch"] + 1
        history = [EpochReport(**h) for h in state["history"]]

    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    batches_per_epoch = max(1, math.ceil(cfg["train_rows"] / world / train_cfg.batch_size))
    shuffle = torch.Generator().manual_seed(train_cfg.seed * 1000 + rank)

    mlflow = _mlflow_with_run(cfg) if rank == 0 else None

    if train_cfg.exact_directions:  # a resumed fit keeps its weights
        aim_at_principal_directions(module, objective, _row_moments(
            (train_shard, val_shard), module.x_dim, device), start=not checkpoint)
        if not checkpoint and world > 1:
            _weights_from_rank_0(module)
    times = {"loop_setup": time.perf_counter() - entered, "first_batch": 0.0}
    epochs_started = time.perf_counter()
    for epoch in range(start_epoch, train_cfg.epochs):
        batches = _minibatches(train_shard, train_cfg.batch_size, device, shuffle)
        if epoch == start_epoch:  # the first batch waits for Ray Data to start encoding
            batches = _first_timed(batches, times)
        sums = run_epoch(model, opt, batches, train_cfg, epoch, batches_per_epoch)
        lr = opt.param_groups[0]["lr"]
        schedule.step()
        module.eval()
        sums, val = _all_reduce(sums, _validate(module, val_shard, train_cfg, device), device)
        report = epoch_report(epoch, train_cfg, sums, val, lr,
                              best=stopper.update(val.mean_objective, module), workers=world)
        history.append(report)
        metrics = {k: v for k, v in report.to_dict().items() if v is not None}
        if val.iwae_rows:
            metrics["val_iwae"] = val.mean_iwae
        if mlflow:
            mlflow.log_metrics({k: v for k, v in metrics.items()
                                if k not in ("epoch", "epochs", "best")}, step=epoch + 1)

        local_root = cfg.get("local_checkpoint_root")
        with _checkpoint_dir(local_root if rank == 0 else None, epoch + 1) as d:
            ck = None
            if rank == 0:
                best_state = stopper.best_state or module.state_dict()
                TabularVAE.from_parts(transformer, _module_with(build_module(
                    transformer, model_cfg), best_state), model_cfg, train_cfg,
                    history=history, preset=preset).save(d)
                torch.save({"module": module.state_dict(), "optimizer": opt.state_dict(),
                            "schedule": schedule.state_dict(), "epoch": epoch,
                            "best": stopper.best, "stale": stopper.stale,
                            "best_module": best_state,
                            "history": [h.to_dict() for h in history]}, Path(d) / TRAIN_STATE)
                ck = ray.train.Checkpoint.from_directory(str(d))
            ray.train.report({**metrics, "stopped": stopper.should_stop}, checkpoint=ck,
                             checkpoint_dir_name=f"epoch_{epoch + 1:04d}")
        if stopper.should_stop:
            break
    times["epochs"] = time.perf_counter() - epochs_started - times["first_batch"]
    if mlflow:
        mlflow.log_metrics({f"time.{stage}_s": s for stage, s in times.items()})
        mlflow.end_run()


def _first_timed(batches: Iterator, times: dict[str, float]) -> Iterator:
    """``batches``, with the wait for the first one recorded as ``times["first_batch"]``."""
    started = time.perf_counter()
    for i, batch in enumerate(batches):
        if i == 0:
            times["first_batch"] = time.perf_counter() - started
        yield batch


def _module_with(module: torch.nn.Module, state: dict) -> torch.nn.Module:
    module.load_state_dict(state)
    return module
