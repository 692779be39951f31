"""Table schema: which columns are modelled, and as what.

The schema is inferred from an Arrow schema and can be overridden per column. It is the
only place that decides the *kind* of a column; everything downstream (statistics,
transformer, likelihood heads) dispatches on it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

import pyarrow as pa

from vae_core.errors import SchemaError


class Kind(str, enum.Enum):
    CONTINUOUS = "continuous"  # real-valued, quantile→normal, Gaussian head
    INTEGER = "integer"  # as continuous, rounded back to an integer on output
    CATEGORICAL = "categorical"  # one-hot, categorical head
    BINARY = "binary"  # 0/1 or bool, Bernoulli head
    DATETIME = "datetime"  # modelled as seconds since the epoch, restored as timestamps
    ID = "id"  # passed through to embed/score outputs, never modelled
    IGNORE = "ignore"  # dropped

    @property
    def modelled(self) -> bool:
        return self not in (Kind.ID, Kind.IGNORE)

    @property
    def numeric(self) -> bool:
        """Kinds that go through the quantile→normal map."""
        return self in (Kind.CONTINUOUS, Kind.INTEGER, Kind.DATETIME)


# Override words a user may write in a job config, besides the kinds themselves.
CONDITION = "condition"
_OVERRIDE_WORDS = {k.value for k in Kind} | {CONDITION}


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    kind: Kind
    arrow_type: str  # str(pa.DataType), kept so outputs get the input's dtype back
    condition: bool = False  # a CVAE input: fed to encoder and decoder, not reconstructed

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind.value, "arrow_type": self.arrow_type,
                "condition": self.condition}

    @classmethod
    def from_dict(cls, d: Mapping) -> ColumnSpec:
        return cls(d["name"], Kind(d["kind"]), d["arrow_type"], bool(d.get("condition", False)))


@dataclass(frozen=True)
class TableSchema:
    columns: tuple[ColumnSpec, ...]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def features(self) -> list[ColumnSpec]:
        """Modelled columns that the decoder reconstructs."""
        return [c for c in self.columns if c.kind.modelled and not c.condition]

    @property
    def conditions(self) -> list[ColumnSpec]:
        return [c for c in self.columns if c.kind.modelled and c.condition]

    @property
    def ids(self) -> list[ColumnSpec]:
        return [c for c in self.columns if c.kind is Kind.ID]

    def __getitem__(self, name: str) -> ColumnSpec:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def arrow_type(self, name: str) -> pa.DataType:
        return type_from_string(self[name].arrow_type)

    def to_dict(self) -> dict:
        return {"columns": [c.to_dict() for c in self.columns]}

    @classmethod
    def from_dict(cls, d: Mapping) -> TableSchema:
        return cls(tuple(ColumnSpec.from_dict(c) for c in d["columns"]))


def _default_kind(name: str, t: pa.DataType) -> Kind:
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_boolean(t):
        return Kind.BINARY
    if pa.types.is_integer(t):
        return Kind.INTEGER
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return Kind.CONTINUOUS
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return Kind.CATEGORICAL
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return Kind.DATETIME
    raise SchemaError(
        f"column '{name}': Arrow type {t} is not supported; override it as 'id' or 'ignore'",
        column=name)


def _check_override(name: str, kind: Kind, t: pa.DataType) -> None:
    """Refuse overrides the transformer could not honour (e.g. a string as continuous)."""
    base = t.value_type if pa.types.is_dictionary(t) else t
    numeric = pa.types.is_integer(base) or pa.types.is_floating(base) or pa.types.is_decimal(base)
    ok = {
        Kind.CONTINUOUS: numeric,
        Kind.INTEGER: numeric,
        Kind.DATETIME: pa.types.is_timestamp(base) or pa.types.is_date(base),
        Kind.BINARY: numeric or pa.types.is_boolean(base),
        Kind.CATEGORICAL: numeric or pa.types.is_boolean(base) or pa.types.is_string(base)
        or pa.types.is_large_string(base) or pa.types.is_string_view(base),
    }.get(kind, True)
    if not ok:
        raise SchemaError(f"column '{name}': cannot model Arrow type {t} as {kind.value}",
                          column=name)


def infer_schema(schema: pa.Schema, overrides: Mapping[str, str] | None = None) -> TableSchema:
    """Kinds from Arrow types, then the user's overrides.

    Override values are a kind (``"categorical"``, ``"id"``, ...) or ``"condition"``, which
    keeps the inferred kind and marks the column as a CVAE input. ``"condition:categorical"``
    sets both.
    """
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(schema.names))
    if unknown:
        raise SchemaError(f"override for column '{unknown[0]}', which is not in the table "
                          f"(columns: {', '.join(schema.names)})", column=unknown[0])
    columns = []
    for field in schema:
        words = overrides.get(field.name, "").split(":") if field.name in overrides else []
        bad = [w for w in words if w not in _OVERRIDE_WORDS]
        if bad:
            raise SchemaError(f"column '{field.name}': unknown override '{bad[0]}' "
                              f"(use one of {', '.join(sorted(_OVERRIDE_WORDS))})",
                              column=field.name)
        condition = CONDITION in words
        kinds = [Kind(w) for w in words if w != CONDITION]
        if kinds:
            kind = kinds[-1]
            _check_override(field.name, kind, field.type)
        else:
            kind = _default_kind(field.name, field.type)
        if condition and not kind.modelled:
            raise SchemaError(f"column '{field.name}': a condition must be a modelled column, "
                              f"not {kind.value}", column=field.name)
        columns.append(ColumnSpec(field.name, kind, str(field.type), condition))
    if not any(c.kind.modelled and not c.condition for c in columns):
        raise SchemaError("the table has no column to model (all are id, ignore or condition)")
    return TableSchema(tuple(columns))


def type_from_string(s: str) -> pa.DataType:
    """Inverse of ``str(pa.DataType)`` for the types a schema can hold."""
    simple = {
        "bool": pa.bool_(), "int8": pa.int8(), "int16": pa.int16(), "int32": pa.int32(),
        "int64": pa.int64(), "uint8": pa.uint8(), "uint16": pa.uint16(), "uint32": pa.uint32(),
        "uint64": pa.uint64(), "halffloat": pa.float16(), "float": pa.float32(),
        "double": pa.float64(), "string": pa.string(), "large_string": pa.large_string(),
        "string_view": pa.string_view(), "date32[day]": pa.date32(), "date64[ms]": pa.date64(),
        "binary": pa.binary(), "large_binary": pa.large_binary(),
    }
    if s in simple:
        return simple[s]
    if s.startswith("timestamp[") and s.endswith("]"):
        inner = s[len("timestamp["):-1]
        unit, _, tz = inner.partition(", tz=")
        return pa.timestamp(unit, tz=tz or None)
    if s.startswith("dictionary<values="):
        # e.g. "dictionary<values=string, indices=int32, ordered=0>"
        body = s[len("dictionary<"):-1]
        parts = dict(p.strip().split("=", 1) for p in body.split(", "))
        return pa.dictionary(type_from_string(parts["indices"]), type_from_string(parts["values"]),
                             ordered=parts.get("ordered") == "1")
    if s.startswith("decimal"):
        return pa.float64()  # decimals are modelled and returned as float64
    # Types that only id/ignore columns may carry: keep them as strings on output.
    return pa.string()
