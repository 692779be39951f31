"""Distances between rows, and how far an embedding is from keeping them.

``distance_weight`` (TrainConfig) adds ``distance_stress`` of each batch's posterior means to
the training loss, so that Euclidean distance in the embedding follows distance between rows.
The likelihood alone does not ask for that: a VAE's code is close to whitened (the prior is
N(0, I)), so a direction of little variance in the data weighs as much in the embedding as one
of much variance, and neighbours in the embedding need not be neighbours in the table.
``WithDistanceStress`` adds the term to another objective.
"""

from __future__ import annotations

import math

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


class WithDistanceStress:
    """``objective`` + ``weight`` · the distance stress between the batch's rows (encoded,
    in PCA's units) and its posterior means. It changes the loss only; the reported terms
    are ``objective``'s."""

    def __init__(self, objective: Objective, weight: float) -> None:
        self.objective, self.weight = objective, weight
        self._scale: torch.Tensor | None = None  # encoded_distance_scale of the module's spans

    def __call__(self, module: LatentVariableModule, x: torch.Tensor, c: torch.Tensor,
                 kl_weight: float = 1.0) -> LossOutput:
        out = self.objective(module, x, c, kl_weight)
        if self._scale is None or self._scale.device != x.device:
            self._scale = encoded_distance_scale(module.likelihood.spans).to(x.device)
        stress = distance_stress(module.posterior(x, c).loc, x * self._scale)
        return out._replace(loss=out.loss + self.weight * stress)
