"""What a user hands ``sample(conditions=...)``: checked against the model and split in two.

    {"age": {">=": 30, "<": 40}, "workclass": ["Private", "State-gov"], "income": ">50K"}

For any modelled column: an exact value, a list of values (any of them), or a range (a
mapping of ">=", ">", "<=", "<" to bounds; numeric and datetime columns). A string is a
value, never an operator (">50K" is one of Adult's incomes); values may be given as
strings and are cast to the column's type (so the CLI can pass them through).

* A declared condition column (CVAE input) fixed to one value becomes the model's input c
  (``condition_rows``): exact, and free.
* Everything else is a ``Constraint`` on the rows drawn, met by truncated draws and
  rejection (vae_core.constrained_sampling).
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vae_core.data.schema import Kind
from vae_core.data.tables import TableLike, as_table
from vae_core.data.transform import ColumnTransformer
from vae_core.errors import DataError, SchemaError

BOUNDS = {">=": ("low", True), ">": ("low", False), "<=": ("high", True), "<": ("high", False)}
_COMPARE = {">=": pc.greater_equal, ">": pc.greater, "<=": pc.less_equal, "<": pc.less}


@dataclass(frozen=True)
class Constraint:
    """Rows must have ``column`` in ``values`` (when given) and within the bounds."""

    column: str
    values: pa.Array | None = None
    low: pa.Scalar | None = None
    low_inclusive: bool = True
    high: pa.Scalar | None = None
    high_inclusive: bool = True

    def holds(self, array: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Which values satisfy it (null never does): bool [rows]."""
        if pa.types.is_dictionary(array.type):
            array = pc.cast(array, array.type.value_type)
        if self.values is not None and array.type != self.values.type:
            array = pc.cast(array, self.values.type)  # e.g. string_view decoded as string
        elif pa.types.is_floating(array.type):  # float16/32 against float64 bounds
            array = pc.cast(array, pa.float64())
        ok = pc.is_in(array, value_set=self.values) if self.values is not None else None
        for bound, inclusive, side in ((self.low, self.low_inclusive, ">"),
                                       (self.high, self.high_inclusive, "<")):
            if bound is not None:
                test = _COMPARE[side + ("=" if inclusive else "")](array, bound)
                ok = test if ok is None else pc.and_(ok, test)
        if ok is None:  # no bound on this side
            return np.ones(len(array), bool)
        return pc.fill_null(ok, False).to_numpy(zero_copy_only=False)

    def __str__(self) -> str:
        parts = []
        if self.values is not None:
            shown = self.values.to_pylist()
            parts.append(f"= {shown[0]!r}" if len(shown) == 1 else f"in {shown}")
        if self.low is not None:
            parts.append(f"{'>=' if self.low_inclusive else '>'} {self.low.as_py()}")
        if self.high is not None:
            parts.append(f"{'<=' if self.high_inclusive else '<'} {self.high.as_py()}")
        return f"{self.column} {' and '.join(parts)}"


def split_conditions(transformer: ColumnTransformer, conditions: Mapping
                     ) -> tuple[dict, list[Constraint]]:
    """(declared condition columns fixed to one value, constraints on everything else)."""
    schema = transformer.schema
    declared = {s.name for s in schema.conditions}
    modelled = {s.name: s for s in schema.features + schema.conditions}
    fixed, constraints = {}, []
    for name, wanted in conditions.items():
        if name not in modelled:
            known = {s.name for s in schema.columns}
            why = ("is an id or ignored column, which the model does not generate"
                   if name in known else "is not a column of this model")
            raise SchemaError(f"condition on '{name}': it {why} (modelled: "
                              f"{', '.join(modelled)})", name)
        constraint = _constraint(name, modelled[name].kind, schema.arrow_type(name), wanted)
        if name in declared and constraint.values is not None and len(constraint.values) == 1 \
                and constraint.low is None and constraint.high is None:
            fixed[name] = constraint.values[0].as_py()
        else:
            constraints.append(constraint)
    return fixed, constraints


def _constraint(name: str, kind: Kind, arrow_type: pa.DataType, wanted: object) -> Constraint:
    base = arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type
    if isinstance(wanted, Mapping):
        unknown = sorted(set(map(str, wanted)) - set(BOUNDS))
        if unknown or not wanted:
            raise SchemaError(f"condition on '{name}': a range is a mapping of "
                              f"{', '.join(BOUNDS)} to bounds, got {dict(wanted)!r}", name)
        if not kind.numeric:
            raise SchemaError(f"condition on '{name}': a range needs a numeric or datetime "
                              f"column, '{name}' is {kind.value}: give a value or a list", name)
        bounds: dict = {}
        for op, bound in wanted.items():
            side, inclusive = BOUNDS[op]
            if side in bounds:
                raise SchemaError(f"condition on '{name}': two {side}er bounds", name)
            bound_type = base if pa.types.is_temporal(base) else pa.float64()
            bounds[side] = (_cast(name, bound, bound_type), inclusive)
        low, high = bounds.get("low", (None, True)), bounds.get("high", (None, True))
        constraint = Constraint(name, None, low[0], low[1], high[0], high[1])
        if low[0] is not None and high[0] is not None:
            below = operator.le if low[1] and high[1] else operator.lt
            if not below(low[0].as_py(), high[0].as_py()):
                raise SchemaError(f"condition on '{name}': the range {constraint} is empty", name)
        return constraint
    values = list(wanted) if isinstance(wanted, list | tuple | set | frozenset) else [wanted]
    if not values:
        raise SchemaError(f"condition on '{name}': an empty list of values", name)
    if any(v is None for v in values):
        raise SchemaError(f"condition on '{name}': null is not a condition value", name)
    return Constraint(name, pa.array([_cast(name, v, base).as_py() for v in values], base))


def _cast(name: str, value: object, type_: pa.DataType) -> pa.Scalar:
    try:
        return pa.array([value]).cast(type_)[0]
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OverflowError,
            TypeError) as e:
        raise SchemaError(f"condition on '{name}': {value!r} is not a {type_}", name) from e


def condition_rows(transformer: ColumnTransformer, n: int,
                   conditions: TableLike | Mapping | None) -> np.ndarray | None:
    """Encoded condition rows [n, c_dim] from a mapping ``{column: value}`` (every row) or a
    table of n rows (or one, repeated); None: draw them from the training marginals."""
    wanted = transformer.schema.conditions
    if conditions is None:
        return None
    if not wanted:
        raise SchemaError("this model has no condition columns; sample without conditions")
    if isinstance(conditions, Mapping):
        types = {s.name: transformer.schema.arrow_type(s.name) for s in wanted}
        table = pa.table({k: pa.array([v] * n, type=types[k]) for k, v in conditions.items()})
    else:
        table = as_table(conditions)
    if table.num_rows == 1 and n != 1:
        table = table.take(np.zeros(n, dtype=np.int64))
    if table.num_rows != n:
        raise DataError(f"conditions have {table.num_rows} rows for n = {n} samples")
    return transformer.transform_conditions(table)
