"""Mergeable per-column statistics from one streaming pass.

Each column keeps state that two partial passes can combine: ``merge(stats(a), stats(b))``
equals ``stats(concat(a, b))`` (exactly for counts and the sketch, to rounding for the
moments), so the pass runs per Ray Data block and is reduced afterwards.

* Moments: count, mean, M2, min, max, merged with Chan et al.'s parallel Welford update.
* Quantiles: a DDSketch-style log-bucket histogram. Bucket counts simply add under merge,
  which makes the sketch deterministic and merge-exact; quantiles have relative error
  ``relative_accuracy``.
* Whether every value of a numeric column is 0 or 1 (a one-hot or dummy column), which
  ``zero_one_as_binary`` reads to model such float columns as flags.
* Categories: exact counts. The ``max_categories`` cap and the "other" bucket are applied
  when the transformer is fitted, not here, because a cap applied per block would not
  merge exactly. Above ``MAX_TRACKED_CATEGORIES`` distinct values the rarest are dropped
  (they would land in "other" anyway).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vae_core.data.arrow_values import binary_values, label_values, numeric_values
from vae_core.data.schema import Kind, TableSchema
from vae_core.errors import DataError, SchemaError

MAX_TRACKED_CATEGORIES = 100_000


@dataclass
class Moments:
    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: float = math.inf
    max: float = -math.inf

    @classmethod
    def of(cls, x: np.ndarray) -> Moments:
        if len(x) == 0:
            return cls()
        mean = float(x.mean())
        return cls(len(x), mean, float(((x - mean) ** 2).sum()), float(x.min()), float(x.max()))

    def merge(self, other: Moments) -> Moments:
        if other.count == 0:
            return Moments(**self.__dict__)
        if self.count == 0:
            return Moments(**other.__dict__)
        n = self.count + other.count
        delta = other.mean - self.mean
        return Moments(n, self.mean + delta * other.count / n,
                       self.m2 + other.m2 + delta * delta * self.count * other.count / n,
                       min(self.min, other.min), max(self.max, other.max))

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count else 0.0


def _accumulate(keys: np.ndarray, counts: np.ndarray, low: np.ndarray, high: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per key: the summed counts and the smallest and largest value seen (keys sorted)."""
    unique, inverse = np.unique(keys, return_inverse=True)
    lo, hi = np.full(len(unique), np.inf), np.full(len(unique), -np.inf)
    np.minimum.at(lo, inverse, low)
    np.maximum.at(hi, inverse, high)
    return (unique, np.bincount(inverse, weights=counts, minlength=len(unique)).astype(np.int64),
            lo, hi)


def _empty(dtype=np.int64) -> np.ndarray:
    return np.zeros(0, dtype)


@dataclass
class QuantileSketch:
    """Log-bucket histogram (DDSketch): positive bucket i holds values in (γ^(i-1), γ^i].

    Stores are sorted key/count arrays, so update and merge are vectorised. With the
    default relative accuracy of 1e-4, integer columns get one bucket per value and narrow
    float ranges (e.g. latitudes) keep about 10⁴ distinct levels per factor e.

    Each bucket also keeps the smallest and largest value it has seen (they merge by min
    and max): a bucket whose two are equal holds one exact value, which is how the
    quantile map finds atoms, values with probability mass of their own.
    """

    relative_accuracy: float = 1e-4
    pos_keys: np.ndarray = field(default_factory=_empty)
    pos_counts: np.ndarray = field(default_factory=_empty)
    neg_keys: np.ndarray = field(default_factory=_empty)
    neg_counts: np.ndarray = field(default_factory=_empty)
    zero: int = 0
    pos_low: np.ndarray = field(default_factory=lambda: _empty(np.float64))
    pos_high: np.ndarray = field(default_factory=lambda: _empty(np.float64))
    neg_low: np.ndarray = field(default_factory=lambda: _empty(np.float64))
    neg_high: np.ndarray = field(default_factory=lambda: _empty(np.float64))
    zero_low: float = math.inf
    zero_high: float = -math.inf

    # |x| below this counts as zero; keeps the bucket range bounded.
    MIN_MAGNITUDE = 1e-9

    @property
    def gamma(self) -> float:
        return (1 + self.relative_accuracy) / (1 - self.relative_accuracy)

    def _index(self, magnitude: np.ndarray) -> np.ndarray:
        return np.ceil(np.log(magnitude) / math.log(self.gamma)).astype(np.int64)

    def update(self, x: np.ndarray) -> None:
        big = np.abs(x) >= self.MIN_MAGNITUDE
        small = x[~big]
        if len(small):
            self.zero += len(small)
            self.zero_low = min(self.zero_low, float(small.min()))
            self.zero_high = max(self.zero_high, float(small.max()))
        pos, neg = x[big & (x > 0)], x[big & (x < 0)]
        self.pos_keys, self.pos_counts, self.pos_low, self.pos_high = _accumulate(
            np.concatenate([self.pos_keys, self._index(pos)]),
            np.concatenate([self.pos_counts, np.ones(len(pos), np.int64)]),
            np.concatenate([self.pos_low, pos]), np.concatenate([self.pos_high, pos]))
        self.neg_keys, self.neg_counts, self.neg_low, self.neg_high = _accumulate(
            np.concatenate([self.neg_keys, self._index(-neg)]),
            np.concatenate([self.neg_counts, np.ones(len(neg), np.int64)]),
            np.concatenate([self.neg_low, neg]), np.concatenate([self.neg_high, neg]))

    def merge(self, other: QuantileSketch) -> QuantileSketch:
        if other.relative_accuracy != self.relative_accuracy:
            raise ValueError("cannot merge sketches of different accuracy")
        pos = _accumulate(*(np.concatenate([getattr(self, f), getattr(other, f)])
                            for f in ("pos_keys", "pos_counts", "pos_low", "pos_high")))
        neg = _accumulate(*(np.concatenate([getattr(self, f), getattr(other, f)])
                            for f in ("neg_keys", "neg_counts", "neg_low", "neg_high")))
        return QuantileSketch(self.relative_accuracy, pos[0], pos[1], neg[0], neg[1],
                              self.zero + other.zero, pos[2], pos[3], neg[2], neg[3],
                              min(self.zero_low, other.zero_low),
                              max(self.zero_high, other.zero_high))

    def buckets(self) -> tuple[np.ndarray, np.ndarray]:
        """Bucket representative values (ascending) and their counts."""
        g = self.gamma
        values = np.concatenate([-2 * g ** self.neg_keys[::-1].astype(np.float64) / (g + 1),
                                 [0.0] if self.zero else [],
                                 2 * g ** self.pos_keys.astype(np.float64) / (g + 1)])
        counts = np.concatenate([self.neg_counts[::-1], [self.zero] if self.zero else [],
                                 self.pos_counts]).astype(np.int64)
        return values, counts

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The smallest and largest value seen in each bucket, in the order of ``buckets``."""
        zero = ([self.zero_low], [self.zero_high]) if self.zero else ([], [])
        return (np.concatenate([self.neg_low[::-1], zero[0], self.pos_low]),
                np.concatenate([self.neg_high[::-1], zero[1], self.pos_high]))

    def quantile(self, q: float) -> float:
        values, counts = self.buckets()
        if len(values) == 0:
            raise ValueError("quantile of an empty sketch")
        rank = math.floor(q * (counts.sum() - 1))  # the "lower" order statistic
        return float(values[np.searchsorted(np.cumsum(counts) - 1, rank, side="left")])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, QuantileSketch) and self.to_dict() == other.to_dict()

    _ARRAYS = ("pos_keys", "pos_counts", "neg_keys", "neg_counts", "pos_low", "pos_high",
               "neg_low", "neg_high")

    def to_dict(self) -> dict:
        zero = [self.zero_low, self.zero_high] if self.zero else None  # JSON has no inf
        return {"relative_accuracy": self.relative_accuracy, "zero": self.zero,
                "zero_bounds": zero, **{f: getattr(self, f).tolist() for f in self._ARRAYS}}

    @classmethod
    def from_dict(cls, d: Mapping) -> QuantileSketch:
        arrays = {f: np.asarray(d[f], np.int64 if f.endswith(("keys", "counts")) else np.float64)
                  for f in cls._ARRAYS}
        low, high = d["zero_bounds"] or (math.inf, -math.inf)
        return cls(d["relative_accuracy"], zero=int(d["zero"]), zero_low=low, zero_high=high,
                   **arrays)


@dataclass
class ColumnStatistics:
    """Statistics of one modelled column. Which fields are used depends on ``kind``."""

    kind: Kind
    rows: int = 0
    nulls: int = 0
    moments: Moments = field(default_factory=Moments)
    sketch: QuantileSketch = field(default_factory=QuantileSketch)
    categories: dict = field(default_factory=dict)  # value -> count (categorical, binary)
    zero_one: bool = True  # numeric: no present value other than 0 and 1 seen so far

    def update(self, name: str, array: pa.Array | pa.ChunkedArray) -> None:
        self.rows += len(array)
        self.nulls += array.null_count
        if self.kind.numeric:
            values, missing = numeric_values(name, array, self.kind)
            present = values[~missing]
            self.moments = self.moments.merge(Moments.of(present))
            self.sketch.update(present)
            self.zero_one = self.zero_one and bool(np.isin(present, (0.0, 1.0)).all())
        elif self.kind is Kind.BINARY:
            values, missing = binary_values(name, array)
            ones = int(values[~missing].sum())
            self._count({1: ones, 0: int((~missing).sum()) - ones})
        else:
            counts = pc.value_counts(label_values(name, array).drop_null())
            self._count(dict(zip(counts.field("values").to_pylist(),
                                 counts.field("counts").to_pylist(), strict=True)))

    def _count(self, counts: Mapping) -> None:
        for value, c in counts.items():
            if c:
                self.categories[value] = self.categories.get(value, 0) + c
        if len(self.categories) > MAX_TRACKED_CATEGORIES:
            keep = sorted(self.categories.items(), key=lambda kv: -kv[1])
            self.categories = dict(keep[:MAX_TRACKED_CATEGORIES])

    def merge(self, other: ColumnStatistics) -> ColumnStatistics:
        out = ColumnStatistics(self.kind, self.rows + other.rows, self.nulls + other.nulls,
                               self.moments.merge(other.moments), self.sketch.merge(other.sketch),
                               dict(self.categories), self.zero_one and other.zero_one)
        out._count(other.categories)
        return out

    def to_dict(self) -> dict:
        return {"kind": self.kind.value, "rows": self.rows, "nulls": self.nulls,
                "moments": self.moments.__dict__, "sketch": self.sketch.to_dict(),
                "categories": sorted(self.categories.items(), key=lambda kv: (-kv[1], str(kv[0]))),
                "zero_one": self.zero_one}

    @classmethod
    def from_dict(cls, d: Mapping) -> ColumnStatistics:
        return cls(Kind(d["kind"]), d["rows"], d["nulls"], Moments(**d["moments"]),
                   QuantileSketch.from_dict(d["sketch"]), {v: c for v, c in d["categories"]},
                   bool(d.get("zero_one", False)))


@dataclass
class TableStatistics:
    columns: dict[str, ColumnStatistics]

    @classmethod
    def empty(cls, schema: TableSchema) -> TableStatistics:
        return cls({c.name: ColumnStatistics(c.kind) for c in schema.columns if c.kind.modelled})

    @classmethod
    def of(cls, schema: TableSchema, batches: pa.Table | pa.RecordBatch | Iterable
           ) -> TableStatistics:
        stats = cls.empty(schema)
        for batch in [batches] if isinstance(batches, pa.Table | pa.RecordBatch) else batches:
            stats.update(batch)
        return stats

    @property
    def rows(self) -> int:
        return next(iter(self.columns.values())).rows if self.columns else 0

    def update(self, batch: pa.Table | pa.RecordBatch) -> None:
        for name, col in self.columns.items():
            if name not in batch.schema.names:
                raise SchemaError(f"column '{name}' is missing from the batch", name)
            col.update(name, batch.column(name))

    def merge(self, other: TableStatistics) -> TableStatistics:
        return TableStatistics({n: c.merge(other.columns[n]) for n, c in self.columns.items()})

    def check_fittable(self) -> None:
        """Refuse data a model cannot be fitted on, naming the column."""
        if self.rows == 0:
            raise DataError("the table is empty: no rows to fit on")
        for name, col in self.columns.items():
            if col.nulls == col.rows:
                raise DataError(f"column '{name}' is null in every row; mark it 'ignore'", name)

    def to_dict(self) -> dict:
        return {n: c.to_dict() for n, c in self.columns.items()}

    @classmethod
    def from_dict(cls, d: Mapping) -> TableStatistics:
        return cls({n: ColumnStatistics.from_dict(c) for n, c in d.items()})


def zero_one_as_binary(schema: TableSchema, stats: TableStatistics, keep: Collection[str] = ()
                       ) -> tuple[TableSchema, TableStatistics]:
    """The schema and statistics with every float column that holds both 0 and 1 and no other
    value (one-hot and dummy columns) made a binary column (a Bernoulli head), except the
    columns in ``keep`` (the user's overrides). Integer columns stay numbers: a count that
    never exceeded 1 in training (a pixel at the edge of a digit) may well do so later, which
    a flag would refuse; a float measurement does not take only the values 0.0 and 1.0. The
    counts of ones and zeros come from the moments: ones = mean × count, exactly, since every
    value is 0 or 1."""
    def holds_0_and_1_only(name: str) -> bool:
        col = stats.columns.get(name)
        return bool(col and col.zero_one and col.moments.min == 0 and col.moments.max == 1)

    flags = {s.name for s in schema.features if s.kind is Kind.CONTINUOUS
             and s.name not in keep and holds_0_and_1_only(s.name)}
    if not flags:
        return schema, stats
    columns = dict(stats.columns)
    for name in flags:
        col = columns[name]
        ones = round(col.moments.mean * col.moments.count)
        columns[name] = ColumnStatistics(Kind.BINARY, col.rows, col.nulls,
                                         categories={1: ones, 0: col.moments.count - ones})
    return (TableSchema(tuple(replace(s, kind=Kind.BINARY) if s.name in flags else s
                              for s in schema.columns)), TableStatistics(columns))
