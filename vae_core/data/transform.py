"""ColumnTransformer: Arrow table ↔ the float matrices the VAE sees.

Layout of the feature matrix ``x`` (one block per modelled column, schema order):

* numeric (continuous, integer, datetime): ``[z_low, z_high, missing]`` — the value's
  interval of z under the quantile→normal map: a point (low = high) for a continuous
  value, the interval of its probability mass for an atom (see quantile_map); 0 where
  missing; missing ∈ {0, 1};
* binary: ``[value, missing]``;
* categorical: one-hot over ``[known categories..., null, other, unknown]``. "other" holds
  the categories beyond ``max_categories``; "unknown" receives values never seen in
  training (counted, never an error), which the decoder learns to give ~zero mass, so an
  unseen value scores as anomalous. Sampling only draws from the known values and null.

Condition columns (CVAE) are encoded the same way into a separate matrix ``c``.
Everything is vectorised over rows; no per-row Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vae_core.config import NUMERIC_TRANSFORMS, ModelConfig
from vae_core.data.encoders import (
    BinaryEncoder,
    CategoricalEncoder,
    Encoder,
    NumericEncoder,
    numeric_map_from_dict,
)
from vae_core.data.quantile_map import QuantileNormalMap
from vae_core.data.schema import ColumnSpec, Kind, TableSchema, type_from_string
from vae_core.data.standard_map import StandardScoreMap
from vae_core.data.statistics import TableStatistics, zero_one_as_binary
from vae_core.errors import SchemaError


@dataclass(frozen=True)
class Span:
    """Where one column lives in the encoded matrix, and which likelihood head models it."""

    name: str
    head: str  # "numeric" | "binary" | "categorical"
    start: int
    width: int
    sampleable: int = 0  # categorical: leading slots a sample may take (known + null)
    atoms: tuple[tuple[float, float], ...] = ()  # numeric: each atom's (z_low, z_high)
    nullable: bool = True  # numeric, binary: training had nulls, so a sample may be null
    one_rate: float = 0.5  # binary: the share of ones in training


@dataclass
class EncodedTable:
    x: np.ndarray  # float32 [rows, x_dim]
    c: np.ndarray  # float32 [rows, c_dim]
    unseen: np.ndarray  # int32 [rows]: how many columns held a category unseen in training


class ColumnTransformer:
    def __init__(self, schema: TableSchema, encoders: dict[str, Encoder]) -> None:
        self.schema, self.encoders = schema, encoders
        self.feature_spans = self._spans(schema.features)
        self.condition_spans = self._spans(schema.conditions)

    def _spans(self, specs: list[ColumnSpec]) -> list[Span]:
        spans, start = [], 0
        for spec in specs:
            enc = self.encoders[spec.name]
            # Samples may take the known categories, and null only if training had nulls.
            sampleable = (enc.null_slot + (enc.nulls > 0) if isinstance(enc, CategoricalEncoder)
                          else 0)
            atoms = (tuple((float(lo), float(hi)) for _, lo, hi in enc.qmap.atoms)
                     if isinstance(enc, NumericEncoder) else ())
            nullable = getattr(enc, "null_rate", 1.0) > 0
            one_rate = enc.one_rate if isinstance(enc, BinaryEncoder) else 0.5
            spans.append(Span(spec.name, enc.head, start, enc.width, sampleable, atoms,
                              nullable, one_rate))
            start += enc.width
        return spans

    @property
    def x_dim(self) -> int:
        return sum(s.width for s in self.feature_spans)

    @property
    def c_dim(self) -> int:
        return sum(s.width for s in self.condition_spans)

    @classmethod
    def for_model(cls, schema: TableSchema, stats: TableStatistics, cfg: ModelConfig
                  ) -> ColumnTransformer:
        """The transformer a model config asks for: its column kinds (0/1 float columns as
        flags with ``zero_one_columns: binary``), category cap, knots and numeric transform."""
        if cfg.zero_one_columns == "binary":
            schema, stats = zero_one_as_binary(schema, stats, keep=cfg.columns)
        return cls.fit(schema, stats, cfg.max_categories, cfg.max_knots, cfg.numeric_transform)

    @classmethod
    def fit(cls, schema: TableSchema, stats: TableStatistics, max_categories: int = 100,
            max_knots: int = 512, numeric_transform: str = "quantile") -> ColumnTransformer:
        """``numeric_transform``: "quantile" (quantile→normal with atoms, the default) or
        "standard" (z = (x − mean) / std; see vae_core.data.standard_map) or "pooled" (the
        same with one std for all numeric columns)."""
        if numeric_transform not in NUMERIC_TRANSFORMS:
            raise ValueError(f"numeric_transform '{numeric_transform}' is not one of "
                             f"{', '.join(NUMERIC_TRANSFORMS)}")
        stats.check_fittable()
        encoders: dict[str, Encoder] = {}
        pooled = _pooled_std(schema, stats) if numeric_transform == "pooled" else None
        for spec in schema.columns:
            if not spec.kind.modelled:
                continue
            col = stats.columns[spec.name]
            null_rate = col.nulls / col.rows
            if spec.kind.numeric:
                qmap = (StandardScoreMap.fit(col, pooled) if numeric_transform != "quantile" else
                        QuantileNormalMap.fit(col, max_knots, integer=spec.kind is Kind.INTEGER))
                encoders[spec.name] = NumericEncoder(spec, qmap, null_rate)
            elif spec.kind is Kind.BINARY:
                present = col.rows - col.nulls
                encoders[spec.name] = BinaryEncoder(spec, col.categories.get(1, 0) / present,
                                                    null_rate)
            else:
                encoders[spec.name] = CategoricalEncoder.fit(
                    spec, col.categories, col.nulls, _label_type(schema.arrow_type(spec.name)),
                    max_categories)
        return cls(schema, encoders)

    def check_columns(self, table: pa.Table) -> None:
        missing = [c.name for c in self.schema.features + self.schema.conditions
                   if c.name not in table.schema.names]
        if missing:
            raise SchemaError(f"column '{missing[0]}' is missing (the model needs "
                              f"{', '.join(c.name for c in self.schema.features)})", missing[0])

    def transform(self, table: pa.Table | pa.RecordBatch) -> EncodedTable:
        self.check_columns(table)
        unseen = np.zeros(table.num_rows, np.int32)

        def encode(specs: list[ColumnSpec]) -> np.ndarray:
            blocks = []
            for spec in specs:
                block, n_unseen = self.encoders[spec.name].encode(table.column(spec.name))
                if n_unseen:
                    unseen[:] += block[:, -1].astype(np.int32)  # "unknown" is the last slot
                blocks.append(block)
            return _stack(blocks, table.num_rows)

        return EncodedTable(encode(self.schema.features), encode(self.schema.conditions), unseen)

    def transform_conditions(self, table: pa.Table) -> np.ndarray:
        """Condition columns only; an unseen condition value is an error, not a guess."""
        blocks = []
        for spec in self.schema.conditions:
            if spec.name not in table.schema.names:
                raise SchemaError(f"condition column '{spec.name}' is missing", spec.name)
            block, unseen = self.encoders[spec.name].encode(table.column(spec.name))
            if unseen:
                enc = self.encoders[spec.name]
                bad = pc.unique(pc.filter(table.column(spec.name), pc.invert(pc.is_in(
                    table.column(spec.name), value_set=enc.value_set)))).to_pylist()
                raise SchemaError(f"column '{spec.name}': condition value {bad[0]!r} was not seen "
                                  f"in training (known: {enc.categories[:20]})", spec.name)
            blocks.append(block)
        return _stack(blocks, table.num_rows)

    def draw_conditions(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Condition rows drawn column by column from their training marginals."""
        return _stack([self.encoders[s.name].draw(n, rng) for s in self.schema.conditions], n)

    def inverse(self, x: np.ndarray, c: np.ndarray | None = None, generated: bool = False
                ) -> pa.Table:
        """Encoded rows back to a table with the training schema (ids and ignored → null).

        ``generated`` decodes model samples: numeric values snap to point masses and stay in
        the training range (see quantile_map). Without it this is the exact inverse of
        ``transform``.
        """
        n = len(x)
        blocks = {s.name: x[:, s.start:s.start + s.width] for s in self.feature_spans}
        if c is not None:
            blocks |= {s.name: c[:, s.start:s.start + s.width] for s in self.condition_spans}
        arrays, fields = [], []
        for spec in self.schema.columns:
            type_ = self.schema.arrow_type(spec.name)
            if spec.name in blocks:
                arrays.append(self.encoders[spec.name].decode(blocks[spec.name], type_, generated))
            else:
                arrays.append(pa.nulls(n, type_))
            fields.append(pa.field(spec.name, type_))
        return pa.Table.from_arrays(arrays, schema=pa.schema(fields))

    def to_dict(self) -> dict:
        return {"schema": self.schema.to_dict(),
                "encoders": {n: e.to_dict() for n, e in self.encoders.items()}}

    @classmethod
    def from_dict(cls, d: Mapping) -> ColumnTransformer:
        schema = TableSchema.from_dict(d["schema"])
        encoders: dict[str, Encoder] = {}
        for spec in schema.columns:
            if not spec.kind.modelled:
                continue
            e = d["encoders"][spec.name]
            if spec.kind.numeric:
                encoders[spec.name] = NumericEncoder(spec, numeric_map_from_dict(e["map"]),
                                                     e["null_rate"])
            elif spec.kind is Kind.BINARY:
                encoders[spec.name] = BinaryEncoder(spec, e["one_rate"], e["null_rate"])
            else:
                encoders[spec.name] = CategoricalEncoder(spec, e["categories"], e["counts"],
                                                         e["nulls"],
                                                         type_from_string(e["value_type"]))
        return cls(schema, encoders)


def _stack(blocks: list[np.ndarray], rows: int) -> np.ndarray:
    """Column blocks side by side as float32; a (rows, 0) matrix when there are none.

    Each block is written into one float32 matrix: concatenating first and casting after
    made two more copies of the whole matrix, and was most of the transform's time."""
    out = np.empty((rows, sum(b.shape[1] for b in blocks)), np.float32)
    start = 0
    for block in blocks:
        out[:, start:start + block.shape[1]] = block
        start += block.shape[1]
    return out


def _label_type(t: pa.DataType) -> pa.DataType:
    t = t.value_type if pa.types.is_dictionary(t) else t
    return pa.string() if pa.types.is_string_view(t) else t


def _pooled_std(schema: TableSchema, stats: TableStatistics) -> float:
    """One scale for every numeric column, √(mean of their variances): z keeps the table's
    own units, so distances weigh columns as the data does (PCA on raw columns)."""
    variances = [stats.columns[s.name].moments.std ** 2 for s in schema.columns
                 if s.kind.modelled and s.kind.numeric]
    pooled = float(np.sqrt(np.mean(variances))) if variances else 1.0
    return pooled if pooled > 0 else 1.0
