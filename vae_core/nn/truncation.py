"""Draws of one column restricted to an allowed set A, and the mass P(x_col ∈ A) they had.

Conditions on a column that is not a CVAE input (vae_core.constrained_sampling) draw that
column from its distribution given z (and, with an autoregressive decoder, the columns
before it) truncated to A:

    numeric      the Normal of z truncated to [z_low, z_high], by the inverse CDF;
                 never missing                    mass (Φ(b) − Φ(a)) · (1 − P(missing))
    binary       the allowed values of {0, 1}     mass P(value ∈ A) · (1 − P(missing))
    categorical  the allowed slots, renormalised  mass Σ_{slots ∈ A} softmax

The mass is what makes the kept rows exact draws from p(x | x ∈ A): see
vae_core.constrained_sampling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.distributions import Normal

from vae_core.nn.heads import BinaryHead, CategoricalHead, NumericHead, interval_log_prob


@dataclass(frozen=True)
class Restriction:
    """The encoded values one column may take: an interval of z (numeric), or a mask of
    allowed values (binary: [2] for 0, 1; categorical: [width], its slots)."""

    z_low: float = -math.inf
    z_high: float = math.inf
    allowed: torch.Tensor | None = None


def truncated_normal(d: Normal, low: torch.Tensor | float, high: torch.Tensor | float,
                     generator: torch.Generator | None) -> torch.Tensor:
    """X ~ d conditioned on low ≤ X ≤ high, by the inverse CDF in float64. An interval above
    the mean is drawn as its mirror image below it, where Φ keeps its digits (as
    heads.interval_log_prob computes its mass); beyond about 37σ the draw is held at the
    bound."""
    loc, scale = d.loc.double(), d.scale.double()
    a = (torch.as_tensor(low, dtype=torch.float64, device=loc.device) - loc) / scale
    b = (torch.as_tensor(high, dtype=torch.float64, device=loc.device) - loc) / scale
    mirror = a > 0
    a, b = torch.where(mirror, -b, a), torch.where(mirror, -a, b)
    # p = Φ(a)(1 − u) + Φ(b) u, from log Φ: torch's Φ itself loses its digits below −8.
    u = torch.rand(loc.shape, generator=generator, device=loc.device, dtype=torch.float64)
    log_p = torch.logaddexp(torch.special.log_ndtr(a) + torch.log1p(-u),
                            torch.special.log_ndtr(b) + torch.log(u))
    p = log_p.exp().clamp(torch.finfo(torch.float64).tiny, 1 - 2 ** -53)
    t = torch.maximum(torch.minimum(torch.special.ndtri(p), b), a)
    return (loc + scale * torch.where(mirror, -t, t)).to(d.loc.dtype)


def numeric_within(head: NumericHead, params: torch.Tensor, columns: slice,
                   r: Restriction, generator: torch.Generator | None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(encoded draws [..., 1, 3], log mass [...]) of one numeric column."""
    d = head.distribution(params, columns)
    value = truncated_normal(d.value, r.z_low, r.z_high, generator)
    log_mass = interval_log_prob(d.value, torch.full_like(value, r.z_low),
                                 torch.full_like(value, r.z_high))
    present = torch.log1p(-d.missing.probs * head.nullable[columns])
    low, high = head.encode_draws(value, columns)
    return (torch.stack([low, high, torch.zeros_like(low)], -1),
            (log_mass + present).sum(-1))


def binary_within(head: BinaryHead, params: torch.Tensor, columns: slice, r: Restriction,
                  generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(encoded draws [..., 1, 2], log mass [...]) of one binary column."""
    d = head.distribution(params)
    allow_zero, allow_one = (bool(a) for a in r.allowed)
    p_one = d.value.probs
    if allow_zero and allow_one:
        value, mass = torch.bernoulli(p_one, generator=generator), torch.ones_like(p_one)
    else:
        value = torch.full_like(p_one, float(allow_one))
        mass = p_one if allow_one else 1 - p_one
    present = 1 - d.missing.probs * head.nullable[columns]
    return (torch.stack([value, torch.zeros_like(value)], -1),
            (mass.clamp_min(1e-300).log() + present.log()).sum(-1))


def categorical_within(head: CategoricalHead, logits: torch.Tensor, columns: slice,
                       r: Restriction, generator: torch.Generator | None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(one-hot draws [..., width], log mass [...]) of one categorical column."""
    padded = logits[..., head.padded[columns]].masked_fill(~head.sampleable[columns], -math.inf)
    allowed = torch.zeros(padded.shape[-1], dtype=torch.bool, device=padded.device)
    allowed[:len(r.allowed)] = r.allowed.to(padded.device)  # padded to the widest column
    log_mass = (torch.logsumexp(padded.masked_fill(~allowed, -math.inf), -1)
                - torch.logsumexp(padded, -1))
    return head.sample(logits, generator, False, columns, allowed), log_mass.sum(-1)
