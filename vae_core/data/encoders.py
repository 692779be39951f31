"""The per-column encoders of the ColumnTransformer: one Arrow column <-> its block of slots.

* NumericEncoder: ``[z_low, z_high, missing]`` through a fitted monotone map (quantile_map,
  standard_map);
* BinaryEncoder: ``[value, missing]``;
* CategoricalEncoder: one-hot over ``[known categories..., null, other, unknown]``.

Each also draws encoded rows from its training marginal (CVAE conditions) and decodes a
block back to an Arrow array of the column's type.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vae_core.data.arrow_values import binary_values, from_numeric, label_values, numeric_values
from vae_core.data.quantile_map import QuantileNormalMap
from vae_core.data.schema import ColumnSpec, Kind
from vae_core.data.standard_map import StandardScoreMap
from vae_core.errors import SchemaError


def _missing(block: np.ndarray, generated: bool, null_rate: float) -> np.ndarray:
    """The missing flag, a block's last slot. A generated row is never null in a column
    that had no nulls in training, whatever small mass the model left there."""
    if generated and null_rate == 0:
        return np.zeros(len(block), bool)
    return block[:, -1] > 0.5


def _draw_missing(n: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    return (rng.random(n) < rate).astype(np.float64)


NumericMap = QuantileNormalMap | StandardScoreMap


def numeric_map_from_dict(d: Mapping) -> NumericMap:
    return (StandardScoreMap if d.get("kind") == "standard" else QuantileNormalMap).from_dict(d)


class NumericEncoder:
    head = "numeric"
    width = 3

    def __init__(self, spec: ColumnSpec, qmap: NumericMap, null_rate: float) -> None:
        self.spec, self.qmap, self.null_rate = spec, qmap, null_rate

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Encoded draws from the training marginal (the map sends it to ≈ N(0, 1))."""
        values = self.qmap.inverse(rng.standard_normal(n), generated=True)
        low, high = self.qmap.forward(values)
        return np.stack([low, high, _draw_missing(n, self.null_rate, rng)], axis=1)

    def encode(self, array: pa.Array) -> tuple[np.ndarray, int]:
        values, missing = numeric_values(self.spec.name, array, self.spec.kind)
        low, high = self.qmap.forward(values)
        low, high = np.where(missing, 0.0, low), np.where(missing, 0.0, high)
        return np.stack([low, high, missing.astype(np.float64)], axis=1), 0

    def decode(self, block: np.ndarray, type_: pa.DataType, generated: bool = False) -> pa.Array:
        middle = (block[:, 0].astype(np.float64) + block[:, 1]) / 2
        values = self.qmap.inverse(middle, generated)
        return from_numeric(values, _missing(block, generated, self.null_rate), self.spec.kind,
                            type_)

    def to_dict(self) -> dict:
        return {"map": self.qmap.to_dict(), "null_rate": self.null_rate}


class BinaryEncoder:
    head = "binary"
    width = 2

    def __init__(self, spec: ColumnSpec, one_rate: float, null_rate: float) -> None:
        self.spec, self.one_rate, self.null_rate = spec, one_rate, null_rate

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return np.stack([(rng.random(n) < self.one_rate).astype(np.float64),
                         _draw_missing(n, self.null_rate, rng)], axis=1)

    def encode(self, array: pa.Array) -> tuple[np.ndarray, int]:
        values, missing = binary_values(self.spec.name, array)
        return np.stack([values, missing.astype(np.float64)], axis=1), 0

    def decode(self, block: np.ndarray, type_: pa.DataType, generated: bool = False) -> pa.Array:
        return from_numeric((block[:, 0] > 0.5).astype(np.float64),
                            _missing(block, generated, self.null_rate), Kind.BINARY, type_)

    def to_dict(self) -> dict:
        return {"one_rate": self.one_rate, "null_rate": self.null_rate}


class CategoricalEncoder:
    head = "categorical"

    def __init__(self, spec: ColumnSpec, categories: list, counts: list[int], nulls: int,
                 value_type: pa.DataType) -> None:
        self.spec, self.categories, self.value_type = spec, categories, value_type
        self.counts, self.nulls = counts, nulls
        self.null_slot, self.other_slot, self.unknown_slot = (len(categories) + i for i in range(3))
        self.width = len(categories) + 3
        self.value_set = pa.array(categories, type=value_type)

    @classmethod
    def fit(cls, spec: ColumnSpec, counts: Mapping, nulls: int, value_type: pa.DataType,
            max_categories: int) -> CategoricalEncoder:
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))[:max_categories]
        return cls(spec, [v for v, _ in ranked], [c for _, c in ranked], nulls, value_type)

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        weights = np.asarray([*self.counts, self.nulls], np.float64)
        idx = rng.choice(len(weights), size=n, p=weights / weights.sum())
        return np.eye(self.width)[idx]

    def _indices(self, array: pa.Array) -> tuple[np.ndarray, int]:
        labels = label_values(self.spec.name, array)
        if labels.type != self.value_type:
            # Same family only (int32 → int64, large_string → string): casting numbers to
            # strings would "work" and silently turn every value into an unseen category.
            mismatch = SchemaError(f"column '{self.spec.name}': expected {self.value_type} values "
                                   f"(as in training), got {labels.type}", self.spec.name)
            if _family(labels.type) != _family(self.value_type):
                raise mismatch
            try:
                labels = pc.cast(labels, self.value_type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise mismatch from e
        index = pc.index_in(labels, value_set=self.value_set)
        null = labels.is_null().to_numpy(zero_copy_only=False)
        unseen = index.is_null().to_numpy(zero_copy_only=False) & ~null
        idx = index.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        idx = np.where(null, self.null_slot, np.where(unseen, self.unknown_slot, idx))
        return idx, int(unseen.sum())

    def encode(self, array: pa.Array) -> tuple[np.ndarray, int]:
        idx, unseen = self._indices(array)
        one_hot = np.zeros((len(idx), self.width), np.float32)
        one_hot[np.arange(len(idx)), idx] = 1.0
        return one_hot, unseen

    def decode(self, block: np.ndarray, type_: pa.DataType, generated: bool = False) -> pa.Array:
        idx = block.argmax(axis=1)
        # "other" and "unknown" have no value to give back: they decode to null.
        known = idx < len(self.categories)
        values = self.value_set.take(pa.array(np.where(known, idx, 0)))
        out = pc.if_else(pa.array(known), values, pa.nulls(len(idx), self.value_type))
        return out if not pa.types.is_dictionary(type_) else pc.cast(out, type_)

    def to_dict(self) -> dict:
        return {"categories": self.categories, "counts": self.counts, "nulls": self.nulls,
                "value_type": str(self.value_type)}


Encoder = NumericEncoder | BinaryEncoder | CategoricalEncoder


def _family(t: pa.DataType) -> str:
    for name, test in (("string", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)
                        or pa.types.is_string_view(t)), ("integer", pa.types.is_integer),
                       ("boolean", pa.types.is_boolean), ("float", pa.types.is_floating)):
        if test(t):
            return name
    return str(t)
