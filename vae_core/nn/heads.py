"""One likelihood head per column kind: its distribution, log-density and draws.

Each head models all the columns of its kind at once, in group order (vae_core.nn.layout),
from their decoder output units:

    numeric      N(z_col; m, s) for a continuous value, or for an atom the probability
                 N(m, s) gives its interval [z_low, z_high] (when present)
                 × Bernoulli(missing)                                units (m, s, missing)
    binary       Bernoulli(value) (when present) × Bernoulli(missing)   units (value, missing)
    categorical  Categorical over the column's slots                    one logit per slot

Draws are encoded as vae_core.data.transform encodes data, so that a drawn row scores as
the same row read from a table would. ``validate_args=False`` everywhere: the inputs are
ours and checking them costs ~20 % of a training step.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from torch.distributions import Bernoulli, Categorical, Normal

from vae_core.data.transform import Span

ALL = slice(None)


def interval_log_prob(d: Normal, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """log P(low < X ≤ high) for X ~ d, accurate in both tails.

    Φ(b) − Φ(a) is computed as Φ(−a) − Φ(−b) when the interval lies above the mean, so that
    both terms are small and log Φ (``log_ndtr``) keeps their digits.
    """
    a, b = (low - d.loc) / d.scale, (high - d.loc) / d.scale
    upper = a > 0
    a, b = torch.where(upper, -b, a), torch.where(upper, -a, b)
    log_a, log_b = torch.special.log_ndtr(a), torch.special.log_ndtr(b)
    # log(Φ(b) − Φ(a)) = log Φ(b) + log(1 − e^(log Φ(a) − log Φ(b))); the clamp keeps an
    # interval of zero width (never an atom's) finite instead of −inf.
    return log_b + torch.log(-torch.expm1((log_a - log_b).clamp(max=-1e-12)))


def draw_bernoulli(d: Bernoulli, generator: torch.Generator | None,
                   most_likely: bool) -> torch.Tensor:
    return (d.probs > 0.5).float() if most_likely else torch.bernoulli(d.probs,
                                                                        generator=generator)


class NumericDistribution(NamedTuple):
    value: Normal  # of z, per numeric column
    missing: Bernoulli


class BinaryDistribution(NamedTuple):
    value: Bernoulli
    missing: Bernoulli


class NumericHead(nn.Module):
    """Numeric columns, encoded ``[z_low, z_high, missing]``."""

    def __init__(self, spans: list[Span], min_scale: float, scale: str = "row") -> None:
        """``scale``: "row", σ is a decoder output (heteroscedastic); "column", one learned σ
        per column for every row (homoscedastic: a row cannot be explained away by a wide
        Gaussian, which anomaly scores want); "shared", one σ for every column."""
        super().__init__()
        self.min_scale = min_scale
        self.column_scale = (None if scale == "row" else
                             nn.Parameter(torch.zeros(len(spans) if scale == "column" else 1)))
        # Each column's atom intervals, padded with +inf, so that a drawn value is encoded as
        # the transformer encodes data: its atom's interval, or a point.
        most = max((len(s.atoms) for s in spans), default=0)
        atoms = torch.full((len(spans), most, 2), math.inf)
        for i, s in enumerate(spans):
            if s.atoms:
                atoms[i, :len(s.atoms)] = torch.tensor(s.atoms)
        self.register_buffer("atom_low", atoms[..., 0].contiguous(), persistent=False)
        self.register_buffer("atom_high", atoms[..., 1].contiguous(), persistent=False)
        # Columns without nulls in training never get a null draw (their missing flag is 0).
        self.register_buffer("nullable", torch.tensor([float(s.nullable) for s in spans]),
                             persistent=False)

    def distribution(self, params: torch.Tensor, columns: slice = ALL) -> NumericDistribution:
        """From units [..., k, 3] of the numeric ``columns`` (default: all)."""
        raw_scale = params[..., 1]
        if self.column_scale is not None:  # one σ per column, or one shared by all
            raw_scale = (self.column_scale if len(self.column_scale) == 1
                         else self.column_scale[columns])
        scale = (nn.functional.softplus(raw_scale) + self.min_scale).expand_as(params[..., 0])
        return NumericDistribution(Normal(params[..., 0], scale, validate_args=False),
                                   Bernoulli(logits=params[..., 2], validate_args=False))

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x_col | z) [..., n] of encoded values x [..., n, 3].

        A point scores its density. An atom (high > low) scores the probability of its
        interval spread evenly over it: the density of the value dequantised in z, so that
        an atom's score and a continuous value's are both densities in z (rows are
        comparable as anomaly scores). Minus log(width) is a constant of the data: the
        gradient is the interval probability's, which no prediction can push above 1.
        """
        d = self.distribution(params)
        low, high, missing = x.unbind(-1)
        atom = high > low
        width = torch.where(atom, high - low, torch.ones_like(low))
        lp_value = torch.where(atom, interval_log_prob(d.value, low, high) - width.log(),
                               d.value.log_prob(low))
        return lp_value * (1 - missing) + d.missing.log_prob(missing)

    def encode_draws(self, value: torch.Tensor, columns: slice = ALL
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_low, z_high) of drawn values [..., k] of the numeric ``columns``: the interval
        of the atom a draw falls in, else the draw itself."""
        if self.atom_low.shape[1] == 0 or value.shape[-1] == 0:
            return value, value
        atom_low, atom_high = self.atom_low[columns], self.atom_high[columns]
        flat = value.reshape(-1, value.shape[-1]).T.contiguous()  # [columns, draws]
        i = torch.searchsorted(atom_high, flat).clamp(max=atom_high.shape[1] - 1)
        low, high = atom_low.gather(1, i), atom_high.gather(1, i)
        inside = (flat >= low) & (flat <= high)
        low, high = torch.where(inside, low, flat), torch.where(inside, high, flat)
        return low.T.reshape(value.shape), high.T.reshape(value.shape)

    def sample(self, params: torch.Tensor, generator: torch.Generator | None,
               most_likely: bool = False, columns: slice = ALL) -> torch.Tensor:
        """Encoded draws [..., k, 3] (or the mean and the likelier flag, ``most_likely``)."""
        d = self.distribution(params, columns)
        value = d.value.loc
        if not most_likely:
            value = value + d.value.scale * torch.randn(value.shape, generator=generator,
                                                        device=value.device)
        low, high = self.encode_draws(value, columns)
        missing = draw_bernoulli(d.missing, generator, most_likely) * self.nullable[columns]
        return torch.stack([low, high, missing], -1)


class BinaryHead(nn.Module):
    """Binary columns, encoded ``[value, missing]``."""

    def __init__(self, spans: list[Span]) -> None:
        super().__init__()
        self.register_buffer("nullable", torch.tensor([float(s.nullable) for s in spans]),
                             persistent=False)

    def distribution(self, params: torch.Tensor) -> BinaryDistribution:
        """From units [..., k, 2]."""
        return BinaryDistribution(Bernoulli(logits=params[..., 0], validate_args=False),
                                  Bernoulli(logits=params[..., 1], validate_args=False))

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x_col | z) [..., n] of encoded values x [..., n, 2]."""
        d = self.distribution(params)
        value, missing = x.unbind(-1)
        return d.value.log_prob(value) * (1 - missing) + d.missing.log_prob(missing)

    def sample(self, params: torch.Tensor, generator: torch.Generator | None,
               most_likely: bool = False, columns: slice = ALL) -> torch.Tensor:
        """Encoded draws [..., k, 2] of the binary ``columns`` whose units ``params`` holds."""
        d = self.distribution(params)
        value = draw_bernoulli(d.value, generator, most_likely)
        missing = draw_bernoulli(d.missing, generator, most_likely) * self.nullable[columns]
        return torch.stack([value, missing], -1)


class CategoricalHead(nn.Module):
    """Categorical columns, one-hot; their logits and slots flat, column after column.

    Scores are computed on the flat slots: a padded [columns, widest] block would be ~3×
    larger on Adult (one 42-slot column). Draws use the padded block, and only the leading
    ``sampleable`` slots of each column (known values and null)."""

    def __init__(self, spans: list[Span]) -> None:
        super().__init__()
        widths = torch.tensor([s.width for s in spans], dtype=torch.long)
        first = torch.cumsum(widths, 0) - widths  # each column's first flat slot
        widest = max((s.width for s in spans), default=1)
        slot = torch.arange(widest)
        # Per flat slot its column, and that as a [slots, columns] 0/1 matrix, so that
        # per-column sums over slots are one matrix product.
        segment = torch.repeat_interleave(torch.arange(len(spans)), widths)
        self.register_buffer("segment", segment, persistent=False)
        self.register_buffer("membership", (segment[:, None] == torch.arange(len(spans))
                                            ).float(), persistent=False)
        self.register_buffer("first", first, persistent=False)
        # Padded block [columns, widest]: the flat slot of each cell, which cells are pads,
        # which a draw may take, and the last one it may take.
        pad = slot[None, :] >= widths[:, None]
        self.register_buffer("padded", torch.where(pad, 0, first[:, None] + slot[None, :]),
                             persistent=False)
        self.register_buffer("pad", pad, persistent=False)
        sampleable = slot[None, :] < torch.tensor([s.sampleable for s in spans],
                                                  dtype=torch.long)[:, None]
        self.register_buffer("sampleable", sampleable, persistent=False)
        self.register_buffer("last", sampleable.sum(-1) - 1, persistent=False)

    def distribution(self, logits: torch.Tensor) -> Categorical:
        """Categorical over each column's slots [..., n_cat, widest], from flat logits."""
        return Categorical(logits=logits[..., self.padded].masked_fill(self.pad, -math.inf),
                           validate_args=False)

    def log_prob(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p of each column's one-hot value [..., n_cat], from flat slots x and logits:
        a log-softmax within each column's slots."""
        with torch.no_grad():  # a per-column shift keeps exp() finite; the value is exact
            shift = logits.new_full((*logits.shape[:-1], self.membership.shape[1]),
                                    -math.inf).scatter_reduce(
                -1, self.segment.expand(logits.shape), logits, "amax")
        shifted = logits - shift[..., self.segment]
        return (x * shifted) @ self.membership - (shifted.exp() @ self.membership).log()

    def sample(self, logits: torch.Tensor, generator: torch.Generator | None,
               most_likely: bool = False, columns: slice = ALL,
               allowed: torch.Tensor | None = None) -> torch.Tensor:
        """One-hot draws [..., slots of ``columns``], flat, from the flat logits of all;
        ``allowed`` [widest] (one column): only from those of its slots, renormalised."""
        padded = self.padded[columns]
        sampleable, last = self.sampleable[columns], self.last[columns]
        if allowed is not None:
            sampleable = sampleable & allowed
            last = torch.where(sampleable, torch.arange(sampleable.shape[-1],
                                                        device=sampleable.device), 0).amax(-1)
        logits = logits[..., padded].masked_fill(~sampleable, -math.inf)
        if most_likely:
            choice = logits.argmax(-1)
        else:  # inverse CDF: one uniform per cell (torch.multinomial is ~6× slower here)
            u = torch.rand(logits.shape[:-1], generator=generator, device=logits.device)
            below = (logits.softmax(-1).cumsum(-1) < u.unsqueeze(-1)).sum(-1)
            choice = torch.minimum(below, last)  # never a pad, nor a slot not allowed
        first = self.first[columns]
        slots = int(self.segment.shape[0]) if columns == ALL else int(
            (~self.pad[columns]).sum())
        draw = logits.new_zeros(*logits.shape[:-2], slots)
        return draw.scatter_(-1, choice + (first - first[:1]), 1.0) if len(first) else draw
