"""An autoregressive correction for the decoder: column j's parameters also see columns < j.

A factorised decoder samples every column independently given z, so any dependence
between columns must pass through the latent code; the KL term makes that code lossy,
and relations the code drops (how income follows from capital gains, marital status
and hours) are lost in generated rows. With ``decoder: autoregressive`` the decoder
output for column j becomes

    f_j(z, c) + g_j(x_<j)

where g is a MADE (Germain et al. 2015): one masked MLP whose masks let output j see
only the inputs of columns before it in schema order, so one pass gives every column's
correction and log p(x | z) = Σ_j log p(x_j | z, c, x_<j) stays exact. Sampling runs one
pass per column. g's last layer starts at zero: training starts from the factorised
decoder.
"""

from __future__ import annotations

import torch
from torch import nn


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask [out, in]; the mask is
    derived from the columns, so it is not saved (``persistent=False``)."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight * self.mask, self.bias)


class ColumnAutoregression(nn.Module):
    """g(x): decoder-output corrections [..., out_dim], output unit u reading only the
    encoded columns before ``output_columns[u]``."""

    def __init__(self, input_columns: torch.Tensor, output_columns: torch.Tensor,
                 hidden: int) -> None:
        """``input_columns`` [x_dim] / ``output_columns`` [out_dim]: the column index of
        each encoded input slot / decoder output unit."""
        super().__init__()
        n_columns = int(input_columns.max()) + 1
        # MADE degrees: input slots of column j have degree j + 1; hidden units cycle
        # through 1 … J − 1; output units of column j read hidden units of degree ≤ j.
        in_degree = input_columns + 1
        hidden_degree = torch.arange(hidden) % max(n_columns - 1, 1) + 1
        out_degree = output_columns + 1
        self.net = nn.Sequential(
            MaskedLinear(hidden_degree[:, None] >= in_degree[None, :]), nn.SiLU(),
            MaskedLinear(hidden_degree[:, None] >= hidden_degree[None, :]), nn.SiLU(),
            MaskedLinear(out_degree[:, None] > hidden_degree[None, :]))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
