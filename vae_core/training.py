"""The optimisation loop, in pieces that a distributed trainer can reuse.

``train_step`` takes the module *as called for training* — the plain module or its DDP
wrapper — and always goes through ``model(...)`` (``forward``), which is what makes DDP
all-reduce the gradients. Clipping happens after ``backward`` and before ``step``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from vae_core.config import TrainConfig
from vae_core.module import LatentVariableModule, LossOutput


@dataclass
class EpochReport:
    epoch: int  # 1-based
    epochs: int
    train_loss: float
    train_reconstruction: float
    train_kl: float
    val_elbo: float | None  # mean per-row ELBO (β = 1) on the validation rows
    kl_weight: float
    learning_rate: float
    rows_per_second: float
    best: bool  # this epoch's weights are the best so far
    # β-TCVAE only: the KL's parts, per-row means (they sum to train_kl up to sampling)
    train_mi: float | None = None
    train_tc: float | None = None
    train_dim_kl: float | None = None
    # mean per-row E_q log p(x|z) − β·KL on the validation rows: what early stopping
    # watches (the objective training maximises; equal to val_elbo when β = 1)
    val_objective: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def make_optimizer(module: nn.Module, cfg: TrainConfig
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    # The fused kernel updates every parameter in one pass instead of a dozen small ops
    # per tensor: ~15 % of a CPU training step on Adult's small MLPs.
    devices = {p.device.type for p in module.parameters()}
    opt = torch.optim.AdamW(module.parameters(), lr=cfg.learning_rate,
                            weight_decay=cfg.weight_decay, fused=devices <= {"cpu", "cuda"})
    # Cosine decay to 5 % of the initial rate over the planned epochs, stepped per epoch.
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=max(cfg.epochs, 1), eta_min=0.05 * cfg.learning_rate)
    return opt, schedule


def train_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, c: torch.Tensor,
               kl_weight: float, cfg: TrainConfig, dataset_size: int | None = None
               ) -> LossOutput:
    """One optimiser step; ``dataset_size`` is β-TCVAE's N (the training rows)."""
    opt.zero_grad(set_to_none=True)
    out: LossOutput = model(x, c, kl_weight, cfg.free_bits, cfg.tc_weights, dataset_size,
                            cfg.tc_estimator, cfg.trim_fraction, cfg.distance_weight)
    out.loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    return out


def validation_terms(module: LatentVariableModule, x: torch.Tensor, c: torch.Tensor,
                     generator: torch.Generator | None, beta: float = 1.0,
                     trim_fraction: float = 0.0) -> tuple[float, float, int]:
    """(ELBO sum, objective sum, rows) over a batch; the objective is the β-weighted ELBO,
    E_q log p(x|z) − β·KL, per row. The batch's ``trim_fraction`` rows lowest in it are
    left out of both, as the training loss leaves them out: with contaminated data the
    validation score then measures the inliers and does not reward learning anomalies.

    Early stopping watches the objective, not the ELBO: with β < 1 the fit trades KL for
    reconstruction on purpose, so the ELBO of a still-improving fit can fall (measured on
    digits at β = 0.03: stopped at epoch 21 of 200 on the ELBO)."""
    log_px_z, kl = module.elbo_terms(x, c, generator)
    log_px_z, kl = log_px_z.sum(-1), kl.sum(-1)
    objective = log_px_z - beta * kl
    if trim_fraction > 0:
        kept = torch.topk(objective, max(1, round(len(objective) * (1 - trim_fraction)))).indices
        log_px_z, kl, objective = log_px_z[kept], kl[kept], objective[kept]
    return float((log_px_z - kl).sum()), float(objective.sum()), len(objective)


@torch.inference_mode()
def validation_means(module: LatentVariableModule, x: np.ndarray, c: np.ndarray,
                     beta: float = 1.0, trim_fraction: float = 0.0, batch_size: int = 4096,
                     seed: int = 0) -> tuple[float, float]:
    """Mean per-row (ELBO, objective) over a data set, with a fixed noise seed (see
    validation_terms)."""
    if len(x) == 0:
        return math.nan, math.nan
    gen = torch.Generator().manual_seed(seed)
    device = next(module.parameters()).device
    elbo, objective, rows = 0.0, 0.0, 0
    for start in range(0, len(x), batch_size):
        xb = torch.from_numpy(x[start:start + batch_size]).to(device)
        cb = torch.from_numpy(c[start:start + batch_size]).to(device)
        e, o, n = validation_terms(module, xb, cb, gen.manual_seed(seed + start), beta,
                                   trim_fraction)
        elbo, objective, rows = elbo + e, objective + o, rows + n
    return elbo / rows, objective / rows


class EarlyStopping:
    """Keeps a *copy* of the best weights (a bare state_dict() would alias the live ones)."""

    def __init__(self, patience: int) -> None:
        self.patience, self.best, self.best_state, self.stale = patience, -math.inf, None, 0

    def update(self, value: float, module: nn.Module) -> bool:
        """Record an epoch's validation objective; True if this is the best so far."""
        if value > self.best:
            self.best, self.stale = value, 0
            self.best_state = copy.deepcopy(module.state_dict())
            return True
        self.stale += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.stale >= self.patience


def holdout_mask(x: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Which encoded rows are validation rows, decided by a hash of the row's content.

    A row's side depends on nothing but its values, so the split is the same in memory, in
    any Ray Data block layout and on any worker, needs no shuffle, and an exact duplicate
    of a validation row can never sit in the training set.
    """
    if fraction <= 0 or len(x) == 0:
        return np.zeros(len(x), bool)
    words = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    mult = np.random.default_rng(seed).integers(1, 2**62, words.shape[1], dtype=np.uint64) | 1
    with np.errstate(over="ignore"):
        h = (words * mult).sum(axis=1, dtype=np.uint64)
        h ^= h >> np.uint64(33)  # murmur3 finaliser: spreads the sum's bits
        h *= np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(33)
    return (h >> np.uint64(11)).astype(np.float64) / 2.0**53 < fraction


def minibatches(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    order = rng.permutation(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def _kl_terms(out: LossOutput) -> list[float]:
    return out.kl_terms.tolist() if out.kl_terms is not None else [0.0, 0.0, 0.0]


def fit_module(module: LatentVariableModule, x: np.ndarray, c: np.ndarray, x_val: np.ndarray,
               c_val: np.ndarray, cfg: TrainConfig,
               progress: Callable[[EpochReport], None] | None = None) -> list[EpochReport]:
    """Train in memory; ends with the best validation weights loaded (or the last ones)."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    opt, schedule = make_optimizer(module, cfg)
    stopper = EarlyStopping(cfg.early_stopping_patience)
    device = next(module.parameters()).device
    xt, ct = torch.from_numpy(x).to(device), torch.from_numpy(c).to(device)
    n_batches = max(1, math.ceil(len(x) / cfg.batch_size))
    history = []
    for epoch in range(cfg.epochs):
        module.train()
        t0, sums = time.perf_counter(), np.zeros(6)  # loss, recon, kl, MI, TC, dim-wise KL
        for i, idx in enumerate(minibatches(len(x), cfg.batch_size, rng)):
            kl_weight = cfg.kl_weight(epoch + i / n_batches)
            rows = torch.from_numpy(idx).to(device)
            out = train_step(module, opt, xt[rows], ct[rows], kl_weight, cfg, len(x))
            sums += len(idx) * np.array([float(out.loss.detach()), float(out.reconstruction),
                                         float(out.kl), *_kl_terms(out)])
        seconds = time.perf_counter() - t0
        lr = opt.param_groups[0]["lr"]
        schedule.step()
        module.eval()
        val, objective = (validation_means(module, x_val, c_val, cfg.beta, cfg.trim_fraction)
                          if len(x_val) else (None, None))
        best = stopper.update(objective, module) if objective is not None else False
        means = (sums / len(x)).tolist()
        report = EpochReport(epoch + 1, cfg.epochs, *means[:3], val, cfg.kl_weight(epoch + 1),
                             lr, len(x) / seconds, best,
                             *(means[3:] if cfg.tc_weights else [None] * 3),
                             val_objective=objective)
        history.append(report)
        if progress:
            progress(report)
        if stopper.should_stop:
            break
    if stopper.best_state is not None:
        module.load_state_dict(stopper.best_state)
    module.eval()
    return history
