"""The optimisation loop, in pieces that the in-memory fit and the Ray Train loop share.

``run_epoch`` trains one pass over minibatches and returns its ``EpochSums``;
``ValidationSums`` gathers the validation bounds; both are sums (not means) with a
``to_tensor``/``from_tensor`` pair, so that a distributed trainer all-reduces them in one
call; ``epoch_report`` turns them into the EpochReport. ``train_step`` takes the module *as
called for training* — a TrainingModule (vae_core.objectives) or its DDP wrapper — and
always goes through ``model(...)`` (``forward``), which is what makes DDP all-reduce the
gradients. Clipping happens after ``backward`` and before ``step``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, astuple, dataclass, fields
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from vae_core.config import TrainConfig
from vae_core.nn import LatentVariableModule
from vae_core.objectives import (
    LossOutput,
    TrainingModule,
    WithDistanceStress,
    objective_for,
    row_moments,
)
from vae_core.objectives.distances import encoded_distance_scale, principal_projection


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
               kl_weight: float, grad_clip: float = 0.0) -> LossOutput:
    """One optimiser step through ``model(x, c, kl_weight)``; ``grad_clip``: max global
    gradient norm (0: none)."""
    opt.zero_grad(set_to_none=True)
    out: LossOutput = model(x, c, kl_weight)
    out.loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return out


S = TypeVar("S", bound="Sums")


class Sums:
    """A dataclass of float sums that travels as one float64 tensor (one all-reduce)."""

    def to_tensor(self, device: torch.device | str | None = None) -> torch.Tensor:
        return torch.tensor(astuple(self), dtype=torch.float64, device=device)

    @classmethod
    def from_tensor(cls: type[S], t: torch.Tensor) -> S:
        return cls(*t.tolist())

    @classmethod
    def size(cls) -> int:
        return len(fields(cls))


@dataclass
class EpochSums(Sums):
    """Row-weighted sums of an epoch's training losses; β-TCVAE's KL parts stay 0 otherwise."""

    rows: float = 0.0
    loss: float = 0.0
    reconstruction: float = 0.0
    kl: float = 0.0
    mi: float = 0.0
    tc: float = 0.0
    dim_kl: float = 0.0
    seconds: float = 0.0  # the epoch's training time (summed over ranks once all-reduced)

    @classmethod
    def of(cls, totals: torch.Tensor | None, rows: int, seconds: float = 0.0) -> EpochSums:
        """From ``totals``, the row-weighted sum of an epoch's ``step_terms``: one device
        sync per epoch, so that the CPU queues the next steps while the GPU runs this one."""
        if totals is None:
            return cls(seconds=seconds)
        return cls(rows, *totals.tolist(), seconds=seconds)


def step_terms(out: LossOutput) -> torch.Tensor:
    """(loss, reconstruction, kl[, mi, tc, dim_kl]) of one step as one float64 tensor."""
    terms = [out.loss, out.reconstruction, out.kl]
    return torch.stack(terms if out.kl_terms is None else [*terms, *out.kl_terms]
                       ).detach().double()


@dataclass
class ValidationSums(Sums):
    """Sums of the validation bounds: ELBO and objective over ``rows`` (trimmed rows left
    out, see validation_terms), IWAE over ``iwae_rows``."""

    rows: float = 0.0
    elbo: float = 0.0
    objective: float = 0.0
    iwae_rows: float = 0.0
    iwae: float = 0.0

    def add(self, module: LatentVariableModule, x: torch.Tensor, c: torch.Tensor,
            generator: torch.Generator | None, beta: float = 1.0,
            trim_fraction: float = 0.0) -> None:
        elbo, objective, rows = validation_terms(module, x, c, generator, beta, trim_fraction)
        self.elbo, self.objective, self.rows = (self.elbo + elbo, self.objective + objective,
                                                self.rows + rows)

    def add_iwae(self, module: LatentVariableModule, x: torch.Tensor, c: torch.Tensor, k: int,
                 generator: torch.Generator | None) -> None:
        self.iwae += float(module.iwae(x, c, k, generator=generator).sum())
        self.iwae_rows += len(x)

    @property
    def mean_elbo(self) -> float | None:
        return self.elbo / self.rows if self.rows else None

    @property
    def mean_objective(self) -> float | None:
        return self.objective / self.rows if self.rows else None

    @property
    def mean_iwae(self) -> float | None:
        return self.iwae / self.iwae_rows if self.iwae_rows else None


def run_epoch(model: nn.Module, opt: torch.optim.Optimizer,
              batches: Iterable[tuple[torch.Tensor, torch.Tensor]], cfg: TrainConfig,
              epoch: int, batches_per_epoch: int) -> EpochSums:
    """One epoch of train_step over the minibatches (x, c), ``epoch`` 0-based; the KL
    weight follows its warm-up within the epoch.

    Float32 on every device: for these small MLPs bf16 autocast was slower than float32 in
    11 of 12 CUDA measurements on an H200 (0.81–1.03 of float32's rows/s; batch 256 and
    4,096, default and autoregressive models, three runs; README, "On a GPU"). The Gaussian
    layers stay float32 under a caller's own autocast (vae_core.nn.blocks)."""
    model.train()
    totals, rows, t0 = None, 0, time.perf_counter()
    for i, (x, c) in enumerate(batches):
        kl_weight = cfg.kl_weight(epoch + min(i / batches_per_epoch, 1.0))
        step = step_terms(train_step(model, opt, x, c, kl_weight, cfg.grad_clip)) * len(x)
        totals = step if totals is None else totals + step
        rows += len(x)
    sums = EpochSums.of(totals, rows)
    sums.seconds = time.perf_counter() - t0  # after the sync: the device's work included
    return sums


def epoch_report(epoch: int, cfg: TrainConfig, train: EpochSums, val: ValidationSums,
                 learning_rate: float, best: bool, workers: int = 1) -> EpochReport:
    """Epoch ``epoch`` (0-based) as per-row means; ``train`` and ``val`` summed over
    ``workers`` ranks (rows per second: by the ranks' mean epoch time)."""
    tc = cfg.tc_weights is not None

    def mean(total: float) -> float:
        return total / train.rows if train.rows else math.nan

    return EpochReport(
        epoch=epoch + 1, epochs=cfg.epochs, train_loss=mean(train.loss),
        train_reconstruction=mean(train.reconstruction), train_kl=mean(train.kl),
        val_elbo=val.mean_elbo, kl_weight=cfg.kl_weight(epoch + 1), learning_rate=learning_rate,
        rows_per_second=train.rows / (train.seconds / workers), best=best,
        train_mi=mean(train.mi) if tc else None, train_tc=mean(train.tc) if tc else None,
        train_dim_kl=mean(train.dim_kl) if tc else None, val_objective=val.mean_objective)


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
def validate(module: LatentVariableModule, x: np.ndarray, c: np.ndarray, beta: float = 1.0,
             trim_fraction: float = 0.0, batch_size: int = 4096, seed: int = 0
             ) -> ValidationSums:
    """The validation sums over a data set in memory, with fixed noise: batch ``start``
    draws from a generator seeded ``seed + start`` (see validation_terms)."""
    sums = ValidationSums()
    if len(x) == 0:
        return sums
    device = next(module.parameters()).device
    gen = torch.Generator(device=device)
    for start in range(0, len(x), batch_size):
        sums.add(module, torch.from_numpy(x[start:start + batch_size]).to(device),
                 torch.from_numpy(c[start:start + batch_size]).to(device),
                 gen.manual_seed(seed + start), beta, trim_fraction)
    return sums


def validation_means(module: LatentVariableModule, x: np.ndarray, c: np.ndarray,
                     beta: float = 1.0, trim_fraction: float = 0.0, batch_size: int = 4096,
                     seed: int = 0) -> tuple[float, float]:
    """Mean per-row (ELBO, objective) over a data set (NaN without rows; see validate)."""
    sums = validate(module, x, c, beta, trim_fraction, batch_size, seed)
    return ((sums.mean_elbo, sums.mean_objective) if sums.rows else (math.nan, math.nan))


class EarlyStopping:
    """Keeps a *copy* of the best weights (a bare state_dict() would alias the live ones)."""

    def __init__(self, patience: int) -> None:
        self.patience, self.best, self.best_state, self.stale = patience, -math.inf, None, 0

    def update(self, value: float | None, module: nn.Module) -> bool:
        """Record an epoch's validation objective (None: no validation rows, nothing to
        compare); True if this is the best so far."""
        if value is None:
            return False
        if value > self.best:
            self.best, self.stale = value, 0
            self.best_state = copy.deepcopy(module.state_dict())
            return True
        self.stale += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.stale >= self.patience


_HASH_ROWS = 2048
_MOMENT_ROWS = 8192  # rows per float64 copy when the objective needs every row's moments


def holdout_mask(x: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Which encoded rows are validation rows, decided by a hash of the row's content.

    A row's side depends on nothing but its values, so the split is the same in memory, in
    any Ray Data block layout and on any worker, needs no shuffle, and an exact duplicate
    of a validation row can never sit in the training set.
    """
    if fraction <= 0 or len(x) == 0:
        return np.zeros(len(x), bool)
    words = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    mult = np.random.default_rng(seed).integers(1, 2**62, words.shape[1], dtype=np.uint64) | 1
    h = np.empty(len(words), np.uint64)
    with np.errstate(over="ignore"):
        # h = Σ_j word_j · mult_j (mod 2⁶⁴), a few thousand rows at a time: the uint64 copy
        # of a whole block does not fit in cache, and hashing it at once was 30× slower.
        for start in range(0, len(words), _HASH_ROWS):
            chunk = words[start:start + _HASH_ROWS].astype(np.uint64)
            chunk *= mult
            h[start:start + _HASH_ROWS] = chunk.sum(axis=1, dtype=np.uint64)
        h ^= h >> np.uint64(33)  # murmur3 finaliser: spreads the sum's bits
        h *= np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(33)
    return (h >> np.uint64(11)).astype(np.float64) / 2.0**53 < fraction


def minibatches(n: int, batch_size: int, rng: np.random.Generator, device: torch.device
                ) -> Iterator[torch.Tensor]:
    """Row indices of an epoch's minibatches, on ``device``: one copy per epoch (a blocking
    copy per step is a CUDA sync per step)."""
    order = torch.from_numpy(rng.permutation(n)).to(device)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def aim_at_principal_directions(module: LatentVariableModule, objective: WithDistanceStress,
                                moments: torch.Tensor, start: bool = True) -> None:
    """Aim the distance stress at PCA's exact directions of the rows behind ``moments`` and,
    with ``start`` (a fit from scratch, not a resumed one), start q's mean at PCA's code
    along them (``principal_projection``) where it has an affine part (encoder linear or
    mlp+linear): with ``distance_rest_share`` 0 (the embedding preset's) the fit then
    begins where the stress is 0 and learns what the likelihood adds, instead of finding
    PCA's code from a random one (from a random start, fits at d = 16 ended a little
    below PCA on tables PCA nearly keeps whole)."""
    objective.fix_directions(module, moments)
    if start and module.has_affine_mean:
        scale = encoded_distance_scale(module.likelihood.spans).to(moments.device)
        module.start_mean_at(*principal_projection(moments, objective.directions, scale))


def fit_module(module: LatentVariableModule, x: np.ndarray, c: np.ndarray, x_val: np.ndarray,
               c_val: np.ndarray, cfg: TrainConfig,
               progress: Callable[[EpochReport], None] | None = None) -> list[EpochReport]:
    """Train in memory; ends with the best validation weights loaded (or the last ones)."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    objective = objective_for(cfg, len(x))
    model = TrainingModule(module, objective)
    opt, schedule = make_optimizer(module, cfg)
    stopper = EarlyStopping(cfg.early_stopping_patience)
    device = next(module.parameters()).device
    xt, ct = torch.from_numpy(x).to(device), torch.from_numpy(c).to(device)
    if cfg.exact_directions:
        aim_at_principal_directions(module, objective, row_moments(
            (torch.from_numpy(rows[start:start + _MOMENT_ROWS])
             for rows in (x, x_val) for start in range(0, len(rows), _MOMENT_ROWS)),
            x.shape[1], device))
    n_batches = max(1, math.ceil(len(x) / cfg.batch_size))

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for rows in minibatches(len(x), cfg.batch_size, rng, device):
            yield xt[rows], ct[rows]

    history = []
    for epoch in range(cfg.epochs):
        sums = run_epoch(model, opt, batches(), cfg, epoch, n_batches)
        lr = opt.param_groups[0]["lr"]
        schedule.step()
        module.eval()
        val = validate(module, x_val, c_val, cfg.beta, cfg.trim_fraction)
        report = epoch_report(epoch, cfg, sums, val, lr,
                              best=stopper.update(val.mean_objective, module))
        history.append(report)
        if progress:
            progress(report)
        if stopper.should_stop:
            break
    if stopper.best_state is not None:
        module.load_state_dict(stopper.best_state)
    module.eval()
    return history
