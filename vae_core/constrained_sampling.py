"""Rows drawn from the model's conditional distribution p(x | x ∈ A), for conditions on
columns that are not CVAE inputs (vae_core.conditions).

Each constrained column is drawn from its distribution truncated to its allowed set A_j
(vae_core.nn.truncation), and the row carries the mass those sets had,

    w = Π_j P(x_j ∈ A_j | z, c, x_<j)        (x_<j: earlier columns, autoregressive decoder).

Truncation alone is not the conditional: z and the earlier columns would stay as if
unconditioned (a z that means "aged 60" would still be drawn, its age then forced into
30–40, and its occupation left a 60-year-old's). Keeping a row with probability w / M
makes the kept rows exact draws from p(x | x ∈ A) when M ≥ sup w — rejection sampling
with the truncated draws as proposal. M = 1 is always safe, and is plain rejection. When
a condition is rare for every z, sup w is far below 1 and most of those draws would be
wasted, so M is twice the largest w met so far in the block, at most 1 (a margin on
empirical-supremum rejection, Caffo, Booth & Davison 2002): exact when twice the largest
w of the block's first 1,024 draws bounds every w; a larger w met later means the rows
drawn before it were kept slightly too often. Declared condition
columns given a list or a range are drawn from their training marginals, as without
conditions, and filtered.

Every kept row is also checked in value space (a range's edge can fall inside one
rounding step), so every row returned satisfies every condition. The rows come in blocks
of BLOCK_ROWS kept rows, block b from its own generator seeded by (seed, b), so rows
start..start+n are the same however a table is cut into calls (vae_core.row_streams).
When the conditions keep fewer than MIN_ACCEPTANCE of the rows drawn, sampling stops with
an error that states the rate: never fewer rows than asked for.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from vae_core.conditions import Constraint
from vae_core.data.schema import Kind
from vae_core.data.transform import ColumnTransformer, Span
from vae_core.errors import DataError, SchemaError
from vae_core.nn import LatentVariableModule
from vae_core.nn.truncation import Restriction
from vae_core.row_streams import blockwise

BLOCK_ROWS = 256  # kept rows per block of the stream
FIRST_DRAW_ROWS = 1024  # rows drawn first in a block: they set M and the acceptance rate
MAX_DRAW_ROWS = 32768  # rows drawn at once, to bound memory
MIN_ACCEPTANCE = 0.001  # below this share of rows kept, sampling fails
ENVELOPE_MARGIN = 2.0  # M = this × the largest w met so far (at most 1)
# Where numeric ranges are mapped into z: fine where the quantile map puts the data, and
# tails out to 10⁴ for the standard map, whose z is (x − mean) / std.
_TAIL = np.geomspace(8.5, 1e4, 400)[1:]
Z_GRID = np.concatenate([-_TAIL[::-1], np.linspace(-8.5, 8.5, 17_001), _TAIL])


class ConditionError(DataError):
    """The conditions are satisfiable but too rare under the model to sample."""


def restrictions(transformer: ColumnTransformer, constraints: Sequence[Constraint]
                 ) -> dict[int, Restriction]:
    """The truncation of each constrained feature column (span index → Restriction);
    condition (CVAE) columns are filtered, not truncated. Fails, naming the column, when
    no value the model draws satisfies a constraint."""
    index = {s.name: j for j, s in enumerate(transformer.feature_spans)}
    declared = {s.name: s for s in transformer.condition_spans}
    out = {}
    for constraint in constraints:
        name = constraint.column
        span = transformer.feature_spans[index[name]] if name in index else declared[name]
        restriction = _restriction(span, transformer.encoders[name],
                                   transformer.schema.arrow_type(name), constraint)
        if name in index:  # a declared column is drawn from its marginal and filtered
            out[index[name]] = restriction
    return out


def _restriction(span: Span, encoder, arrow_type: pa.DataType, constraint: Constraint
                 ) -> Restriction:
    if span.head == "numeric":
        return _z_interval(constraint, encoder, arrow_type)
    slots = span.sampleable if span.head == "categorical" else 2
    one_hot = np.eye(span.width)[:slots] if span.head == "categorical" else np.array(
        [[0.0, 0.0], [1.0, 0.0]])
    allowed = np.zeros(span.width if span.head == "categorical" else 2, bool)
    allowed[:slots] = constraint.holds(encoder.decode(one_hot, arrow_type, generated=True))
    if not allowed.any():
        known = getattr(encoder, "categories", [False, True])[:20]
        raise SchemaError(f"condition {constraint}: no such value was seen in training "
                          f"(known: {known})", constraint.column)
    return Restriction(allowed=torch.from_numpy(allowed))


def _known(transformer: ColumnTransformer, name: str, value: object) -> np.ndarray:
    """The encoded block of a declared condition column fixed to ``value``: an unseen value
    is an error, as in ``transform_conditions``, never the "unknown" slot."""
    return transformer.transform_conditions(pa.table(
        {s.name: pa.array([value] if s.name == name else [None], transformer.schema.arrow_type(
            s.name)) for s in transformer.schema.conditions}))[:, _span_slice(transformer, name)]


def _span_slice(transformer: ColumnTransformer, name: str) -> slice:
    span = next(s for s in transformer.condition_spans if s.name == name)
    return slice(span.start, span.start + span.width)


def _z_interval(constraint: Constraint, encoder, arrow_type: pa.DataType) -> Restriction:
    """The interval of z whose values can satisfy the constraint: its edges found on a grid,
    then by bisection, each kept on its failing side (the value check rejects the rest).
    The value of z is monotone in z."""
    values = encoder.decode(np.stack([Z_GRID, Z_GRID, np.zeros_like(Z_GRID)], 1), arrow_type,
                            generated=True)
    if constraint.values is not None:
        hull = pa.array([min(constraint.values.to_pylist()), max(constraint.values.to_pylist())],
                        constraint.values.type)
        bounds = Constraint(constraint.column, None, hull[0], True, hull[1], True)
    else:
        bounds = constraint
    above = Constraint(bounds.column, low=bounds.low, low_inclusive=bounds.low_inclusive)
    below = Constraint(bounds.column, high=bounds.high, high_inclusive=bounds.high_inclusive)
    low_ok, high_ok = above.holds(values), below.holds(values)
    drawn = pc.min_max(values).as_py()
    if not low_ok.any() or not high_ok.any() or (
            (constraint.values is not None or encoder.spec.kind is Kind.INTEGER
             or pa.types.is_date(values.type))
            and not constraint.holds(values).any()):
        raise SchemaError(f"condition {constraint}: the model draws no such value (its "
                          f"values run {drawn['min']} … {drawn['max']}; a value too rare to "
                          "draw needs a range)", constraint.column)
    def value_at(z: float) -> pa.Array:
        return encoder.decode(np.array([[z, z, 0.0]]), arrow_type, generated=True)

    z_low = z_high = math.inf
    if not low_ok.all():  # the edge lies between the last failing point and the next
        i = np.flatnonzero(~low_ok)[-1]
        z_low = _edge(Z_GRID[i], Z_GRID[i + 1], lambda z: bool(above.holds(value_at(z))[0]))
    if not high_ok.all():
        i = np.flatnonzero(~high_ok)[0]
        z_high = _edge(Z_GRID[i - 1], Z_GRID[i], lambda z: not below.holds(value_at(z))[0])
    return Restriction(z_low=float(-math.inf if low_ok.all() else z_low), z_high=float(z_high))


def _edge(fails: float, holds: float, ok: Callable[[float], bool]) -> float:
    """Bisection for the edge between a z where ``ok`` is false and one where it is true;
    the end where it is false comes back, so the interval found still holds the edge (a
    grid step is too coarse in the tails: a truncated draw piles up at its bound)."""
    for _ in range(60):
        middle = (fails + holds) / 2
        if middle in (fails, holds):
            break
        fails, holds = (fails, middle) if ok(middle) else (middle, holds)
    return fails


def sample_constrained(module: LatentVariableModule, transformer: ColumnTransformer,
                       constraints: Sequence[Constraint], fixed: Mapping, n: int, seed: int,
                       start: int, device: torch.device, max_draws: int | None = None
                       ) -> pa.Table:
    """Rows start..start+n of the seed's stream of rows satisfying every constraint, with
    the declared condition columns in ``fixed`` set to their values; at most ``max_draws``
    rows drawn in all (a server's budget per request), else a ConditionError."""
    restricted = restrictions(transformer, constraints)
    described = " and ".join(map(str, constraints)) or "conditions"
    total = 0
    fixed_blocks = {name: _known(transformer, name, value) for name, value in fixed.items()}

    def conditions(rows: int, rng: np.random.Generator) -> np.ndarray:
        c = transformer.draw_conditions(rows, rng)
        for name, block in fixed_blocks.items():
            c[:, _span_slice(transformer, name)] = block
        return c

    @torch.inference_mode()
    def draw(block_seed: int, block_rows: int, wanted: slice) -> pa.Table:
        nonlocal total
        gen = torch.Generator(device=device).manual_seed(block_seed)
        rng = np.random.default_rng(block_seed)
        kept, got, drawn, envelope = [], 0, 0, 0.0
        while got < block_rows:
            if drawn >= block_rows / MIN_ACCEPTANCE:
                raise ConditionError(
                    f"conditions {described}: {got} of {drawn:,} "
                    f"rows drawn met them ({got / drawn:.3%}), below the limit of "
                    f"{MIN_ACCEPTANCE:.1%}; widen them, or declare the column a condition "
                    f"(columns: {{name: condition}}) to fix it exactly")
            rate = got / drawn if got else 1 / max(drawn, FIRST_DRAW_ROWS)
            first = FIRST_DRAW_ROWS if restricted else int(1.25 * block_rows)  # w ≡ 1 else
            rows = first if not drawn else int(min(
                MAX_DRAW_ROWS, max(BLOCK_ROWS, 1.25 * (block_rows - got) / rate)))
            if max_draws is not None and total + rows > max_draws:
                raise ConditionError(
                    f"conditions {described}: {n:,} rows need more than the {max_draws:,} "
                    f"rows this request may draw (kept so far: {got} of {drawn:,}); ask for "
                    "fewer rows or widen the conditions")
            total += rows
            c = conditions(rows, rng)
            x, log_w = module.sample_within(rows, torch.from_numpy(c).float().to(device),
                                            restricted, gen, device)
            w = log_w.double().exp()
            envelope = min(1.0, max(envelope, ENVELOPE_MARGIN * float(w.max())))
            keep = (torch.rand(rows, generator=gen, device=device, dtype=torch.float64)
                    * envelope < w).cpu().numpy()
            table = transformer.inverse(x[torch.from_numpy(keep).to(device)].double().cpu()
                                        .numpy(), c[keep], generated=True)
            ok = np.ones(table.num_rows, bool)
            for constraint in constraints:
                ok &= constraint.holds(table.column(constraint.column))
            kept.append(table.filter(pa.array(ok)))
            got, drawn = got + int(ok.sum()), drawn + rows
        return pa.concat_tables(kept).slice(wanted.start, wanted.stop - wanted.start)

    parts = blockwise(seed, start, n, BLOCK_ROWS, draw)
    return pa.concat_tables(parts) if parts else transformer.inverse(
        np.zeros((0, transformer.x_dim)), np.zeros((0, transformer.c_dim)))
