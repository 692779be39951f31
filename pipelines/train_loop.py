"""The function every Ray Train worker runs (also in local mode, ``workers: 0``).

Each worker streams its shard of the encoded rows, trains through ``model(...)`` (so DDP
all-reduces the gradients), evaluates its share of the validation rows, and sums the
metrics across workers so that every rank takes the same early-stopping decision. Every
epoch, rank 0 writes a checkpoint that is itself a loadable model folder (the best weights
so far) plus ``train_state.pt`` (current weights, optimiser, schedule, counters) to resume
from; every rank calls ``ray.train.report`` (it is a barrier).
"""

from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
import time
from pathlib import Path

import torch

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


def _all_reduce(values: list[float], device: torch.device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(t)
    return t.tolist()


def train_loop(cfg: dict) -> None:
    import mlflow
    import ray.train
    import ray.train.torch

    from vae_core import ColumnTransformer, ModelConfig, TabularVAE, TrainConfig
    from vae_core.model import build_module
    from vae_core.training import (
        EarlyStopping,
        EpochReport,
        make_optimizer,
        train_step,
        validation_terms,
    )

    torch.set_num_threads(cfg["torch_threads"])  # local mode runs in the driver: Ray won't
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    transformer = ColumnTransformer.from_dict(cfg["transformer"])
    model_cfg, train_cfg = ModelConfig.from_dict(cfg["model"]), TrainConfig.from_dict(cfg["train"])
    torch.manual_seed(train_cfg.seed)
    module = build_module(transformer, model_cfg)
    # To the device (and DDP when world > 1) before the optimizer and any checkpoint are
    # loaded, so that the optimizer's state lands on the parameters' device.
    model = ray.train.torch.prepare_model(module)
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
        module.load_state_dict(state["module"])
        opt.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        stopper.best, stopper.stale, stopper.best_state = (state["best"], state["stale"],
                                                           state["best_module"])
        start_epoch = state["epoch"] + 1
        history = [EpochReport(**h) for h in state["history"]]

    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    batches_per_epoch = max(1, math.ceil(cfg["train_rows"] / world / train_cfg.batch_size))
    shuffle = torch.Generator().manual_seed(train_cfg.seed * 1000 + rank)

    if rank == 0 and cfg.get("mlflow_run_id"):
        mlflow.set_tracking_uri(cfg["tracking_uri"])
        mlflow.start_run(run_id=cfg["mlflow_run_id"])

    for epoch in range(start_epoch, train_cfg.epochs):
        module.train()
        # loss, recon, kl, rows, then β-TCVAE's MI, TC, dim-wise KL (zeros otherwise)
        t0, sums = time.perf_counter(), [0.0] * 7
        i = 0
        # Ray Data hands over large chunks (its per-batch cost is fixed, ~ms); the loop cuts
        # them into shuffled minibatches. Block order is shuffled per epoch in dataset.py.
        for chunk in train_shard.iter_torch_batches(batch_size=FETCH_ROWS, dtypes=torch.float32,
                                                    device=device):
            order = torch.randperm(len(chunk["x"]), generator=shuffle, device="cpu").to(device)
            for start in range(0, len(order), train_cfg.batch_size):
                rows_idx = order[start:start + train_cfg.batch_size]
                x, c = chunk["x"][rows_idx], chunk["c"][rows_idx]
                kl_weight = train_cfg.kl_weight(epoch + min(i / batches_per_epoch, 1.0))
                # bf16 autocast on GPU; the likelihood is computed in float32 (see module).
                with torch.autocast("cuda", dtype=torch.bfloat16,
                                    enabled=device.type == "cuda"):
                    out = train_step(model, opt, x, c, kl_weight, train_cfg, cfg["train_rows"])
                n = len(x)
                terms = out.kl_terms.tolist() if out.kl_terms is not None else [0.0] * 3
                sums = [a + b for a, b in zip(sums, [
                    float(out.loss.detach()) * n, float(out.reconstruction) * n,
                    float(out.kl) * n, n, *(t * n for t in terms)], strict=True)]
                i += 1
        seconds = time.perf_counter() - t0
        lr = opt.param_groups[0]["lr"]
        schedule.step()

        module.eval()
        gen = torch.Generator(device=device).manual_seed(train_cfg.seed)
        val_sum, objective_sum, val_rows, iwae_sum, iwae_rows = 0.0, 0.0, 0, 0.0, 0
        with torch.inference_mode():
            for batch in val_shard.iter_torch_batches(batch_size=IWAE_ROWS, dtypes=torch.float32,
                                                      device=device):
                x, c = batch["x"], batch["c"]
                elbo, objective, kept = validation_terms(module, x, c, gen, train_cfg.beta,
                                                         train_cfg.trim_fraction)
                val_sum, objective_sum, val_rows = (val_sum + elbo, objective_sum + objective,
                                                    val_rows + kept)
                if iwae_rows == 0:  # IWAE costs K forward passes: one batch per epoch is enough
                    iwae_sum += float(module.iwae(x, c, train_cfg.iwae_samples,
                                                  generator=gen).sum())
                    iwae_rows += len(x)
        (loss, recon, kl, rows, mi, tc, dim_kl, val_sum, objective_sum, val_rows, iwae_sum,
         iwae_rows, seconds_sum) = _all_reduce([*sums, val_sum, objective_sum, val_rows,
                                                iwae_sum, iwae_rows, seconds], device)
        kl_terms = ([mi / rows, tc / rows, dim_kl / rows] if train_cfg.tc_weights
                    else [None] * 3)
        val_elbo = val_sum / val_rows if val_rows else None
        val_objective = objective_sum / val_rows if val_rows else None
        best = stopper.update(val_objective, module) if val_objective is not None else False
        report = EpochReport(epoch + 1, train_cfg.epochs, loss / rows, recon / rows, kl / rows,
                             val_elbo, train_cfg.kl_weight(epoch + 1), lr,
                             rows / (seconds_sum / world), best,  # mean epoch time of ranks
                             *kl_terms, val_objective=val_objective)
        history.append(report)
        metrics = {"epoch": epoch + 1, "train_loss": report.train_loss,
                   "train_reconstruction": report.train_reconstruction,
                   "train_kl": report.train_kl, "kl_weight": report.kl_weight,
                   "learning_rate": lr, "rows_per_second": report.rows_per_second,
                   **({"val_elbo": val_elbo, "val_objective": val_objective,
                       "val_iwae": iwae_sum / iwae_rows}
                      if val_elbo is not None else {}),
                   **({"train_mi": kl_terms[0], "train_tc": kl_terms[1],
                       "train_dim_kl": kl_terms[2]} if train_cfg.tc_weights else {})}
        if rank == 0 and cfg.get("progress"):
            print(f"epoch {epoch + 1:3d}/{train_cfg.epochs}  loss {report.train_loss:9.3f}  "
                  f"KL {report.train_kl:6.2f}  val ELBO {val_elbo or float('nan'):9.3f}  "
                  f"{report.rows_per_second:8.0f} rows/s{'  *' if best else ''}", flush=True)
        if rank == 0 and cfg.get("mlflow_run_id"):
            mlflow.log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step=epoch + 1)

        local_root = cfg.get("local_checkpoint_root")
        with _checkpoint_dir(local_root if rank == 0 else None, epoch + 1) as d:
            ck = None
            if rank == 0:
                best_state = stopper.best_state or module.state_dict()
                TabularVAE.from_parts(transformer, _module_with(build_module(
                    transformer, model_cfg), best_state), model_cfg, train_cfg,
                    history=history).save(d)
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
    if rank == 0 and cfg.get("mlflow_run_id"):
        mlflow.end_run()


def _module_with(module: torch.nn.Module, state: dict) -> torch.nn.Module:
    module.load_state_dict(state)
    return module
