"""The row likelihood p(x | z, c) = Π_columns p(x_col | z, c), from the decoder's output.

Column kinds are handled in vectorised groups by their heads (vae_core.nn.heads), not by
a Python loop over columns; the layout (vae_core.nn.layout) says where each column's slots
and units are. Per-column results come back in span (schema) order.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.distributions import Categorical

from vae_core.data.transform import Span
from vae_core.nn.heads import (
    BinaryDistribution,
    BinaryHead,
    CategoricalHead,
    NumericDistribution,
    NumericHead,
)
from vae_core.nn.layout import ColumnLayout
from vae_core.nn.truncation import (
    Restriction,
    binary_within,
    categorical_within,
    numeric_within,
)


class RowDistributions(NamedTuple):
    """p(x | z) of each column, by head, columns in group order."""

    numeric: NumericDistribution  # value: Normal of z, missing: Bernoulli   [..., n_numeric]
    binary: BinaryDistribution  # value and missing: Bernoulli               [..., n_binary]
    categorical: Categorical  # over each column's slots, padded     [..., n_categorical, ·]


class ColumnLikelihood(nn.Module):
    """log p(x_col | z) of encoded rows given the decoder output, and draws from it."""

    def __init__(self, spans: list[Span], min_scale: float, scale: str = "row") -> None:
        """``scale``: how the numeric σ is set (vae_core.nn.heads.NumericHead)."""
        super().__init__()
        self.layout = ColumnLayout(spans)
        self.spans, self.out_dim = spans, self.layout.out_dim
        self.numeric = NumericHead(self.layout.numeric, min_scale, scale)
        self.binary = BinaryHead(self.layout.binary)
        self.categorical = CategoricalHead(self.layout.categorical)

    def distributions(self, out: torch.Tensor) -> RowDistributions:
        num, bins, cat_logits = self.layout.grouped_output(out)
        return RowDistributions(self.numeric.distribution(num), self.binary.distribution(bins),
                                self.categorical.distribution(cat_logits))

    def log_prob(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """log p(x_col | z) for every column: [..., n_columns]. ``out`` may carry sample dims."""
        num, bins, cat_logits = self.layout.grouped_output(out)
        x_num, x_bin, x_cat = self.layout.grouped_row(x, out.shape[:-1])
        return torch.cat([self.numeric.log_prob(num, x_num), self.binary.log_prob(bins, x_bin),
                          self.categorical.log_prob(cat_logits, x_cat)],
                         dim=-1)[..., self.layout.to_span_order]

    def sample(self, out: torch.Tensor, generator: torch.Generator | None,
               most_likely: bool = False) -> torch.Tensor:
        """Encoded rows [..., x_dim] drawn from p(x|z) (categoricals only from their
        sampleable slots); with ``most_likely``, each column's most likely value instead
        (numbers: the mean)."""
        num, bins, cat_logits = self.layout.grouped_output(out)
        return self.layout.row_from_groups(
            self.numeric.sample(num, generator, most_likely),
            self.binary.sample(bins, generator, most_likely),
            self.categorical.sample(cat_logits, generator, most_likely))

    def sample_column(self, out: torch.Tensor, column: int, generator: torch.Generator | None,
                      most_likely: bool = False) -> torch.Tensor:
        """Column ``column`` (its span index) alone, drawn as ``sample`` draws it: its
        encoded slots [..., width]."""
        num, bins, cat_logits = self.layout.grouped_output(out)
        numeric, binary, categorical = self.layout.group_of[column]
        head = self.spans[column].head
        if head == "numeric":
            return self.numeric.sample(num[..., numeric, :], generator, most_likely,
                                       numeric).flatten(-2)
        if head == "binary":
            return self.binary.sample(bins[..., binary, :], generator, most_likely,
                                      binary).flatten(-2)
        return self.categorical.sample(cat_logits, generator, most_likely, categorical)

    def sample_column_within(self, out: torch.Tensor, column: int, restriction: Restriction,
                             generator: torch.Generator | None
                             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Column ``column`` drawn from its distribution truncated to ``restriction``: (its
        encoded slots [..., width], log P(x_col ∈ allowed) [...]); vae_core.nn.truncation."""
        num, bins, cat_logits = self.layout.grouped_output(out)
        numeric, binary, categorical = self.layout.group_of[column]
        head = self.spans[column].head
        if head == "numeric":
            x, log_mass = numeric_within(self.numeric, num[..., numeric, :], numeric,
                                         restriction, generator)
            return x.flatten(-2), log_mass
        if head == "binary":
            x, log_mass = binary_within(self.binary, bins[..., binary, :], binary, restriction,
                                        generator)
            return x.flatten(-2), log_mass
        return categorical_within(self.categorical, cat_logits, categorical, restriction,
                                  generator)
