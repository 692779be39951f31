"""Where each column lives: its slots in an encoded row and its units in the decoder output.

Everything here is derived from the transformer's spans, in ``__init__``, and never saved:
index tensors are buffers registered with ``persistent=False`` (they follow ``.to(device)``
but stay out of ``state_dict``), the rest are plain attributes.

The heads work in *group order*: every numeric column, then every binary one, then every
categorical one. The decoder output is laid out in group order to begin with

    numeric column:     (mean, scale, missing-logit)      3 units
    binary column:      (logit, missing-logit)            2 units
    categorical column: one logit per slot                its width

and one gather (``x_order``) puts an encoded row's slots, which are in span order, in
group order too, so that each group is a slice: per-group gathers (and their scatter
backward) of the padded categorical block cost ~20 % of a training step on Adult.
"""

from __future__ import annotations

import torch
from torch import nn

from vae_core.data.transform import Span

HEADS = ("numeric", "binary", "categorical")
SLOTS = {"numeric": 3, "binary": 2}  # encoded slots per column (vae_core.data.transform)
UNITS = {"numeric": 3, "binary": 2}  # decoder output units per column; categorical: its width


def units(span: Span) -> int:
    return UNITS.get(span.head, span.width)


class ColumnLayout(nn.Module):
    """The spans split by head, and the permutations between span order and group order."""

    def __init__(self, spans: list[Span]) -> None:
        super().__init__()
        for s in spans:
            if s.head in SLOTS and s.width != SLOTS[s.head]:
                raise ValueError(f"{s.head} column '{s.name}' spans {s.width} slots, "
                                 f"not {SLOTS[s.head]}")
        self.spans = spans
        self.numeric, self.binary, self.categorical = (
            [s for s in spans if s.head == head] for head in HEADS)
        groups = self.numeric + self.binary + self.categorical
        self.x_dim = sum(s.width for s in spans)
        self.out_dim = sum(units(s) for s in spans)
        self.n_numeric, self.n_binary = len(self.numeric), len(self.binary)
        column_of = {s.name: j for j, s in enumerate(spans)}
        # The column (span index) of each decoder output unit and of each encoded input slot,
        # for the autoregressive decoder's masks.
        self.output_columns = torch.tensor([column_of[s.name] for s in groups
                                            for _ in range(units(s))], dtype=torch.long)
        self.input_columns = torch.tensor([j for j, s in enumerate(spans)
                                           for _ in range(s.width)], dtype=torch.long)
        x_order = torch.tensor([i for s in groups for i in range(s.start, s.start + s.width)],
                               dtype=torch.long)
        self.register_buffer("x_order", x_order, persistent=False)
        self.register_buffer("x_from_groups", torch.argsort(x_order), persistent=False)
        self.register_buffer("to_span_order", torch.tensor(
            [groups.index(s) for s in spans], dtype=torch.long), persistent=False)
        # Each column's place in the (numeric, binary, categorical) groups, as slices (views,
        # nothing copied to the device), for drawing one column at a time.
        position = {s.name: i for g in (self.numeric, self.binary, self.categorical)
                    for i, s in enumerate(g)}
        self.group_of = [tuple(slice(position[s.name], position[s.name] + 1) if s.head == head
                               else slice(0, 0) for head in HEADS) for s in spans]

    def grouped_output(self, out: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decoder output split by group: numeric [..., n_num, 3], binary [..., n_bin, 2],
        categorical logits [..., slots] (flat, column after column)."""
        n, b = 3 * self.n_numeric, 2 * self.n_binary
        return (out[..., :n].unflatten(-1, (self.n_numeric, 3)),
                out[..., n:n + b].unflatten(-1, (self.n_binary, 2)), out[..., n + b:])

    def grouped_row(self, x: torch.Tensor, shape: torch.Size
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encoded rows split by group as ``grouped_output`` splits the decoder output,
        expanded to the output's leading ``shape`` (which may carry sample dims)."""
        xg = x[..., self.x_order]
        n, b = 3 * self.n_numeric, 2 * self.n_binary
        return (xg[..., :n].unflatten(-1, (self.n_numeric, 3)).expand(*shape, -1, -1),
                xg[..., n:n + b].unflatten(-1, (self.n_binary, 2)).expand(*shape, -1, -1),
                xg[..., n + b:])

    def row_from_groups(self, numeric: torch.Tensor, binary: torch.Tensor,
                        categorical: torch.Tensor) -> torch.Tensor:
        """The inverse of ``grouped_row``: encoded rows [..., x_dim] in span order."""
        grouped = torch.cat([numeric.flatten(-2), binary.flatten(-2), categorical], -1)
        return grouped[..., self.x_from_groups]
