"""Distances between rows, and how far an embedding is from keeping them.

``distance_weight`` (TrainConfig) adds ``distance_stress`` of each batch's posterior means to
the training loss, so that Euclidean distance in the embedding follows distance between rows.
The likelihood alone does not ask for that: a VAE's code is close to whitened (the prior is
N(0, I)), so a direction of little variance in the data weighs as much in the embedding as one
of much variance, and neighbours in the embedding need not be neighbours in the table.
``WithDistanceStress`` adds the term to another objective. ``distance_rest_share`` < 1 aims
the stress at a denoised target: distance along the table's top d principal directions
plus that share of the rest; at 0 it is the distance PCA's d-dimensional code keeps, which on
a noisy table separates groups better than the full distance, noise included. The directions
are tracked over the training batches (``PrincipalSubspace``), or, with
``distance_directions: exact``, PCA's own: the top eigenvectors of the covariance of every
row (``row_moments`` summed over the rows, and over the workers, in one pass before
training; ``WithDistanceStress.fix_directions``). Tracked directions can stay far from PCA's
on a wide table of rare flags; exact ones cost that pass, O(rows · width²), and an
eigendecomposition, O(width³).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch.nn import functional

from vae_core.data.transform import Span
from vae_core.nn.latent import LatentVariableModule
from vae_core.objectives.loss import LossOutput, Objective


def encoded_distance_scale(spans: list[Span]) -> torch.Tensor:
    """Per encoded slot, the factor that makes Euclidean distance between encoded rows the
    distance PCA would see: numbers as transformed (a point value is [z, z, missing], so each
    z slot counts 1/√2 and the value once), flags standardised as the standard transform
    would standardise a 0/1 number (1/√(p(1 − p)), p the share of ones), categories one-hot
    (√2 between two levels), and each missing flag 1."""
    scale = torch.ones(sum(s.width for s in spans))
    for s in spans:
        if s.head == "numeric":
            scale[s.start:s.start + 2] = 1 / math.sqrt(2)
        elif s.head == "binary" and 0 < s.one_rate < 1:
            scale[s.start] = 1 / math.sqrt(s.one_rate * (1 - s.one_rate))
    return scale


def distance_stress(codes: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The normalised raw stress of metric MDS between the rows' pairwise distances and their
    codes': the mean over pairs of (d_codes / mean d_codes − d_rows / mean d_rows)². Zero
    exactly when the codes' distances are proportional to the rows', at any scale (the prior
    sets the codes' scale, not this term)."""
    if len(codes) < 2:
        return codes.sum() * 0.0  # no pairs; keeps the graph (and DDP's) intact
    d_codes, d_rows = functional.pdist(codes.float()), functional.pdist(rows.float())
    tiny = torch.finfo(torch.float32).tiny
    return ((d_codes / d_codes.mean().clamp_min(tiny)
             - d_rows / d_rows.mean().clamp_min(tiny)) ** 2).mean()


def row_moments(batches: Iterable[torch.Tensor], width: int,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """The Gram matrix of ``width``-wide rows with a leading 1, [[n, Σxᵀ], [Σx, Σxxᵀ]], in
    float64: it adds up over batches and over workers (one all-reduce; a worker without
    rows adds zeros), and holds the rows' covariance."""
    total = torch.zeros(width + 1, width + 1, dtype=torch.float64, device=device)
    for x in batches:
        augmented = torch.cat([torch.ones(len(x), 1, dtype=torch.float64, device=device),
                               x.to(device, torch.float64)], 1)
        total += augmented.T @ augmented
    return total


def _mean_and_covariance(moments: torch.Tensor, scale: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """x̄·s and diag(s)·(Σxxᵀ/n − x̄x̄ᵀ)·diag(s) of the rows behind ``moments``, float64."""
    n = moments[0, 0]
    if n == 0:
        raise ValueError("no rows to find principal directions in")
    mean = moments[1:, 0] / n
    covariance = moments[1:, 1:] / n - torch.outer(mean, mean)
    s = scale.to(covariance)
    return mean * s, s[:, None] * covariance * s[None, :]


def principal_directions(moments: torch.Tensor, k: int, scale: torch.Tensor) -> torch.Tensor:
    """The top ``k`` principal directions (width, k) of the rows behind ``moments``
    (``row_moments``), each slot multiplied by ``scale``: the eigenvectors of the largest
    eigenvalues of the covariance diag(s)·(Σxxᵀ/n − x̄x̄ᵀ)·diag(s), the directions PCA keeps."""
    vectors = torch.linalg.eigh(_mean_and_covariance(moments, scale)[1])[1]  # ascending
    return vectors[:, -k:].flip(1).float()


def principal_projection(moments: torch.Tensor, basis: torch.Tensor, scale: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """PCA's code of a row as an affine map x ↦ W·x + b, W: (k, width): the centred, scaled
    row's coordinates along ``basis`` (``principal_directions``), ((x − x̄)·s)ᵀV, times one
    factor that gives them a mean variance of 1 across the k coordinates (the prior's;
    one factor for all keeps the distances PCA's, up to scale)."""
    mean, covariance = _mean_and_covariance(moments, scale)
    v = basis.to(covariance)
    factor = torch.diagonal(v.T @ covariance @ v).mean().clamp_min(1e-12).rsqrt()
    weight = (scale.to(v)[:, None] * v * factor).T
    return weight.float(), (-(mean @ v) * factor).float()


class PrincipalSubspace:
    """The top ``k`` principal directions of the rows seen so far, tracked batch by batch by
    block power iteration on a running average of C·V (C the rows' covariance, V the current
    directions): V ← orthonormal((1 − m)·S + m·Cᵦ·V). A batch's own directions would not do:
    256 rows of a wide table have principal directions of their own (a rare flag set in one
    row dominates its batch), the table's are what PCA keeps."""

    def __init__(self, k: int, momentum: float = 0.05) -> None:
        self.k, self.momentum = k, momentum
        self.basis: torch.Tensor | None = None  # (width, k), orthonormal columns
        self._running: torch.Tensor | None = None  # running average of C·V

    def update(self, rows: torch.Tensor) -> None:
        """One step towards the top directions of ``rows``' covariance. The first batch with
        more rows than directions to find starts V at its own top directions."""
        centered = rows - rows.mean(0)
        if self.basis is None:
            if len(rows) <= min(self.k, rows.shape[1]):
                return
            self.basis = torch.linalg.svd(centered, full_matrices=False)[2][:self.k].T
            self._running = self.basis.clone()
        product = centered.T @ (centered @ self.basis) / len(rows)
        self._running = (1 - self.momentum) * self._running + self.momentum * product
        self.basis = torch.linalg.qr(self._running)[0]

    def target(self, rows: torch.Tensor, rest_share: float) -> torch.Tensor:
        """Coordinates whose Euclidean distances are d²_top + rest_share · d²_rest."""
        top = rows @ self.basis
        if rest_share == 0.0:
            return top
        return torch.cat([top, math.sqrt(rest_share) * (rows - top @ self.basis.T)], 1)


class WithDistanceStress:
    """``objective`` + ``weight`` · the distance stress between the batch's rows (encoded,
    in PCA's units) and its posterior means. It changes the loss only; the reported terms
    are ``objective``'s."""

    def __init__(self, objective: Objective, weight: float, rest_share: float = 1.0) -> None:
        self.objective, self.weight, self.rest_share = objective, weight, rest_share
        self._scale: torch.Tensor | None = None  # encoded_distance_scale of the module's spans
        self._subspace: PrincipalSubspace | None = None
        self._fixed = False  # directions set by fix_directions: the batches do not move them

    def fix_directions(self, module: LatentVariableModule, moments: torch.Tensor) -> None:
        """Aim the stress at PCA's exact directions of the rows behind ``moments``
        (``row_moments`` of encoded rows), in place of tracked ones."""
        scale = encoded_distance_scale(module.likelihood.spans)
        k = module.embedding_dim  # the width of the posterior the stress reads
        self._subspace = PrincipalSubspace(k)
        self._subspace.basis = principal_directions(moments, k, scale).to(moments.device)
        self._fixed = True

    @property
    def directions(self) -> torch.Tensor | None:
        """The (width, k) directions the stress aims along; None until known."""
        return None if self._subspace is None else self._subspace.basis

    def __call__(self, module: LatentVariableModule, x: torch.Tensor, c: torch.Tensor,
                 kl_weight: float = 1.0) -> LossOutput:
        out = self.objective(module, x, c, kl_weight)
        if self._scale is None or self._scale.device != x.device:
            self._scale = encoded_distance_scale(module.likelihood.spans).to(x.device)
        codes = module.posterior(x, c).loc
        target = (x * self._scale).float()
        if self.rest_share < 1.0:
            # Each DDP worker tracks the directions of its own shard: close to the table's,
            # and it is a target only, so no synchronisation is needed.
            if self._subspace is None:
                self._subspace = PrincipalSubspace(codes.shape[1])
            with torch.no_grad():
                # tracked directions move with the training batches; fixed ones never
                if module.training and not self._fixed:
                    self._subspace.update(target)
                if self._subspace.basis is not None:  # else the rows' own distances
                    target = self._subspace.target(target, self.rest_share)
        stress = distance_stress(codes, target)
        return out._replace(loss=out.loss + self.weight * stress)
