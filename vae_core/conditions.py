"""The condition rows of a CVAE's samples: what a user hands ``sample(conditions=...)``,
checked against the model's condition columns and encoded."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa

from vae_core.data.tables import TableLike, as_table
from vae_core.data.transform import ColumnTransformer
from vae_core.errors import DataError, SchemaError


def condition_rows(transformer: ColumnTransformer, n: int,
                   conditions: TableLike | Mapping | None) -> np.ndarray | None:
    """Encoded condition rows [n, c_dim] from a mapping ``{column: value}`` (every row) or a
    table of n rows (or one, repeated); None: draw them from the training marginals."""
    wanted = transformer.schema.conditions
    if conditions is None:
        return None
    if not wanted:
        raise SchemaError("this model has no condition columns; sample without conditions")
    if isinstance(conditions, Mapping) and not any(
            isinstance(v, list | tuple | np.ndarray) for v in conditions.values()):
        types = {s.name: transformer.schema.arrow_type(s.name) for s in wanted}
        unknown = sorted(set(conditions) - set(types))
        if unknown:
            raise SchemaError(f"'{unknown[0]}' is not a condition column of this model "
                              f"(conditions: {', '.join(types)})", unknown[0])
        table = pa.table({k: pa.array([v] * n, type=types.get(k)) for k, v in
                          conditions.items()})
    else:
        table = as_table(conditions)
    if table.num_rows == 1 and n != 1:
        table = table.take(np.zeros(n, dtype=np.int64))
    if table.num_rows != n:
        raise DataError(f"conditions have {table.num_rows} rows for n = {n} samples")
    return transformer.transform_conditions(table)
