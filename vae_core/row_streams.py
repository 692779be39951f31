"""Random draws addressed by row: row i of the stream ``seed`` is the same however the
rows are cut into calls.

Serving merges requests into one forward pass and batch jobs score or generate a table in
pieces on many workers; both must give each row exactly what one in-process call gives it.
So draws come in fixed blocks of rows, each block from its own generator seeded by
(seed, block index), and rows start..start+n are cut from the blocks that cover them. A
block is always drawn whole, at its fixed size, because a generator's output for row i
depends on the shape of the draw.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch


def block_seed(seed: int, block: int) -> int:
    """A well-mixed 63-bit seed for one block of the stream ``seed``."""
    state = np.random.SeedSequence([int(seed) % 2**63, block]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


def covering_blocks(start: int, rows: int, block_rows: int) -> Iterator[tuple[int, int, int]]:
    """(block index, first, stop): rows first..stop of that block are in start..start+rows."""
    pos, end = start, start + rows
    while pos < end:
        block = pos // block_rows
        stop = min(end, (block + 1) * block_rows)
        yield block, pos - block * block_rows, stop - block * block_rows
        pos = stop


def normal_rows(seed: int, start: int, rows: int, k: int, d: int, device: torch.device,
                block_rows: int) -> torch.Tensor:
    """ε [k, rows, d] ~ N(0, I) for rows start..start+rows of the stream ``seed``."""
    parts = []
    for block, first, stop in covering_blocks(start, rows, block_rows):
        gen = torch.Generator(device=device).manual_seed(block_seed(seed, block))
        parts.append(torch.randn((k, block_rows, d), generator=gen, device=device)
                     [:, first:stop])
    return torch.cat(parts, dim=1) if parts else torch.zeros((k, 0, d), device=device)


def blockwise(seed: int, start: int, rows: int, block_rows: int,
              draw: Callable[[int, int, slice], object]) -> list:
    """``draw(block_seed, block_rows, rows_wanted)`` for every block covering the rows."""
    return [draw(block_seed(seed, block), block_rows, slice(first, stop))
            for block, first, stop in covering_blocks(start, rows, block_rows)]


def segment_noise(segments: Sequence[tuple[int, ...]], k: int, d: int, device: torch.device,
                  pass_rows: int, block_rows: int) -> Iterator[torch.Tensor]:
    """Importance noise ε [k, rows, d] of the segments, in pieces of about ``pass_rows``.

    A segment is (rows, seed) or (rows, seed, start): rows start..start+rows of the seed's
    noise stream. A row's noise depends only on its seed, its index in the stream, k and d,
    so requests merged into one pass (serving) and a table scored in pieces by many workers
    (batch jobs) score exactly as one call would.
    """
    step = max(block_rows, pass_rows // block_rows * block_rows)
    for segment in segments:
        rows, seed, start = (*segment, 0) if len(segment) == 2 else segment
        for piece, first, stop in covering_blocks(int(start), int(rows), step):
            yield normal_rows(int(seed), piece * step + first, stop - first, k, d, device,
                              block_rows)
