"""Building blocks of the encoders and decoders: MLPs and Gaussian layers.

A Gaussian layer reads (μ, log σ²) from a network's output; log σ² is clamped so that
exp() stays finite (PyOD#609-style NaNs), and the result is float32 even under bf16
autocast, so that densities are always computed in float32.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn
from torch.distributions import Normal

LOGVAR_MIN, LOGVAR_MAX = -12.0, 8.0


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear + SiLU for each consecutive pair of ``sizes``."""
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.SiLU()]
    return nn.Sequential(*layers)


def gaussian_head(h: torch.Tensor) -> Normal:
    """N(μ, σ²) from a layer's output [..., 2d] = (μ, log σ²); float32 even under autocast."""
    mu, logvar = h.float().chunk(2, -1)
    return Normal(mu, (0.5 * logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)).exp())


def standard_normal(like: torch.Tensor, dim: int) -> Normal:
    """N(0, I) over ``dim`` dimensions, with ``like``'s leading shape, device and dtype."""
    zero = torch.zeros(*like.shape[:-1], dim, device=like.device, dtype=like.dtype)
    return Normal(zero, torch.ones_like(zero))
