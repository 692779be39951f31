"""Presets: the measured setting for each job, filled in where the user set nothing.

    TabularVAE(preset="anomaly")                  # the anomaly setting
    TabularVAE(preset="embedding", latent_dim=2)  # explicit keys win over the preset's

A preset is a function of the table's *shape* (rows and columns of each kind, whether the
numeric columns share a unit), never of its labels or of which table it is: the same rule
gives every table its setting. It is resolved when the statistics pass has seen the table
(``TabularVAE.fit``, the training job), and the outcome, ``PresetChoice``, names the preset,
the keys it filled and the shape it read; it is saved in ``model.json`` and reported by
``GET /v1/model``, MLflow and ``vae models list``.

Each preset's docstring is its rule; the README's presets table says the same, with the
figures that chose it (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from vae_core.config import ModelConfig, TrainConfig, check_compatible
from vae_core.data.schema import Kind, TableSchema
from vae_core.data.statistics import TableStatistics

# How many optimiser steps a fit should get at least: a small table's epochs are raised to
# reach it (early stopping still ends a fit that stops improving).
MIN_STEPS = 1000
# How many optimiser steps without gain early stopping waits at least: patience counts
# epochs, and an epoch of a table smaller than a batch is one step (at patience 10 the
# ADBench Hepatitis table's fits stopped after 24 steps).
MIN_PATIENCE_STEPS = 100


@dataclass(frozen=True)
class TableShape:
    """What a preset may read of a table: sizes and kinds, never values or labels."""

    rows: int
    numeric_columns: int
    binary_columns: int
    categorical_columns: int
    shared_unit: bool  # the numeric columns are measured in one unit (see shares_unit)
    categorical_levels: int = 0  # the categorical columns' levels seen, summed

    @classmethod
    def of(cls, schema: TableSchema, stats: TableStatistics) -> TableShape:
        features = schema.features
        numeric = [s for s in features if s.kind.numeric]
        rows = max((stats.columns[s.name].rows for s in features), default=0)
        return cls(rows=rows, numeric_columns=len(numeric),
                   binary_columns=sum(s.kind is Kind.BINARY for s in features),
                   categorical_columns=sum(s.kind is Kind.CATEGORICAL for s in features),
                   shared_unit=shares_unit(schema, stats),
                   categorical_levels=sum(len(stats.columns[s.name].categories)
                                          for s in features if s.kind is Kind.CATEGORICAL))

    @property
    def columns(self) -> int:
        """Modelled columns the decoder reconstructs."""
        return self.numeric_columns + self.binary_columns + self.categorical_columns

    @property
    def directions(self) -> int:
        """Directions the rows can vary in: one per number or flag, levels − 1 per category
        (its one-hot slots sum to 1)."""
        return (self.numeric_columns + self.binary_columns
                + max(self.categorical_levels - self.categorical_columns, 0))

    def to_dict(self) -> dict:
        return asdict(self)


def shares_unit(schema: TableSchema, stats: TableStatistics) -> bool:
    """Whether the numeric columns look like counts of one quantity in one unit (pixel
    intensities, counts of one kind): at least 8 of them, all integers, none negative, and
    the largest value of 90 % of the columns that vary within a factor of 4 of the table's
    largest. Floats are never taken to share a unit (a table of ratios, prices and ages
    looks alike to any test of values); say ``numeric_transform: pooled`` for those."""
    numeric = [s for s in schema.features if s.kind.numeric]
    if len(numeric) < 8 or any(s.kind is not Kind.INTEGER for s in numeric):
        return False
    moments = [stats.columns[s.name].moments for s in numeric]
    if any(m.min < 0 for m in moments):
        return False
    varying = [m for m in moments if m.max > m.min]
    top = max((m.max for m in varying), default=0.0)
    if top <= 0:
        return False
    close = sum(m.max >= top / 4 for m in varying)
    return close >= 0.9 * len(varying)


def epochs_for_steps(rows: int, batch_size: int, epochs: int, steps: int = MIN_STEPS) -> int:
    """``epochs``, raised so that ``epochs`` epochs over ``rows`` rows span at least
    ``steps`` optimiser steps."""
    return max(epochs, math.ceil(steps / max(1, math.ceil(rows / batch_size))))


Setting = dict[str, Any]


def synthesis(shape: TableShape, chosen: Mapping[str, Any]) -> Setting:
    """The autoregressive decoder: column j's output also reads columns < j, so relations
    the latent code drops survive in generated rows (TSTR, Column Pair Trends)."""
    return {"decoder": "autoregressive"}


# Rows per modelled column from which the anomaly preset lets σ vary by row (see anomaly).
ROWS_PER_COLUMN_FOR_ROW_SCALE = 200


def anomaly(shape: TableShape, chosen: Mapping[str, Any]) -> Setting:
    """Distances kept (``numeric_transform: standard``) and the worst 20 % of each batch
    left out of the loss (``trim_fraction: 0.2``: the training rows hold anomalies); then,
    by rows per modelled column:

    * ≥ ROWS_PER_COLUMN_FOR_ROW_SCALE (200): a local model, σ from the decoder for each
      row (``decoder_scale: row``) and β 1: enough rows to learn where the data is tight
      and where it spreads, so a row in a sparse pocket scores low (kNN's strength);
    * fewer: a global model, one σ per column (``decoder_scale: column``) and a strongly
      regularised code (β 8): too few rows to learn σ row by row, a flexible decoder would
      widen σ to explain rare rows away; a row far from the bulk scores low (PCA's and
      Isolation Forest's strength).
    """
    setting: Setting = {"numeric_transform": "standard", "trim_fraction": 0.2}
    if shape.rows >= ROWS_PER_COLUMN_FOR_ROW_SCALE * max(1, shape.columns):
        return {**setting, "decoder_scale": "row", "beta": 1.0}
    return {**setting, "decoder_scale": "column", "beta": 8.0}


# Beyond this many columns the embedding preset leaves the stress's directions tracked:
# PCA's exact ones cost a (width + 1)² float64 matrix on every worker and an O(width³)
# eigendecomposition, at 2 048 columns (4 096-6 144 encoded slots) ~130-300 MB and up to
# a minute.
EXACT_DIRECTIONS_MAX_COLUMNS = 2048

# The embedding preset's weight of the distance stress, by the code's dimensions d: the
# lowest d it applies from, and the weight (see embedding).
STRESS_WEIGHTS = ((16, 10_000.0), (8, 1000.0), (1, 30.0))


def stress_weight(latent_dim: int) -> float:
    """The embedding preset's ``distance_weight`` for a code of ``latent_dim`` dimensions."""
    return next(weight for lowest, weight in STRESS_WEIGHTS if latent_dim >= lowest)


def embedding(shape: TableShape, chosen: Mapping[str, Any]) -> Setting:
    """A non-linear probabilistic PCA: one σ shared by every numeric column, a small KL
    weight (β 0.03), one 512-wide hidden layer; numbers standardised, or on one pooled
    scale when the columns share a unit (``TableShape.shared_unit``); float columns whose
    values are all 0 or 1 (one-hot, dummy columns) modelled as flags
    (``zero_one_columns: binary``), whose Bernoulli likelihood fits them where a Gaussian
    with one shared σ does not; the distance stress towards PCA's d-dimensional distances
    (``distance_rest_share: 0``: the distances along the table's top d principal
    directions, which drop the noise the rest holds), weighted by d (``STRESS_WEIGHTS``),
    the dimensions the embedding reads (``latent_dim``; with ``latent_layers: 2`` the top
    layer's, ``top_latent_dim``):
    30 below d = 8, a light pull; 1000 from 8; 10 000 from 16, where PCA keeps most of a
    table and a code that strays from its distances lost kNN accuracy to it.

    The directions are PCA's exact ones of the rows the fit sees, training and validation
    (``distance_directions: exact``), for d ≥ 8, and for any d when the rows vary in at
    least as many directions as a batch has rows (``TableShape.directions`` ≥
    ``batch_size``: a batch's covariance, of rank < batch_size, cannot span such a table's,
    and directions tracked over the batches stay far from PCA's: InternetAds); else, and on
    tables of more than ``EXACT_DIRECTIONS_MAX_COLUMNS`` columns, tracked over the batches
    (exact ones lost kNN accuracy at d = 2 on most tables).

    Below d = 8 also a linear encoder (``encoder: linear``): a code of few dimensions from
    an MLP encoder spends them on what the decoder can use, noise included, and spreads a
    small tight group of rows (Waveform's rare class) that a projection keeps tight; from
    d = 8, with exact directions, the MLP's mean plus an affine map (``encoder:
    mlp+linear``). Where the directions are exact the fit starts the code's affine part at
    PCA's code along them (``vae_core.training.aim_at_principal_directions``): from a random
    start, fits at d = 16 ended a little below PCA on tables it nearly keeps whole; at
    least ``MIN_STEPS`` optimiser steps (a small table gets more epochs), and early
    stopping's patience at least ``MIN_PATIENCE_STEPS`` steps (unless it is off)."""
    # d: the dimensions embeddings read, and the stress holds (the ladder's top layer's)
    d = chosen["top_latent_dim"] if chosen["latent_layers"] == 2 else chosen["latent_dim"]
    setting: Setting = {"decoder_scale": "shared", "beta": 0.03, "hidden": [512],
                        "numeric_transform": "pooled" if shape.shared_unit else "standard",
                        "zero_one_columns": "binary", "distance_rest_share": 0.0,
                        "distance_weight": stress_weight(d)}
    if ((d >= 8 or shape.directions >= chosen["batch_size"])
            and shape.columns <= EXACT_DIRECTIONS_MAX_COLUMNS):
        setting["distance_directions"] = "exact"
    # the ladder's inference needs its hidden layers
    if chosen["latent_layers"] == 1:
        if d < 8:
            setting["encoder"] = "linear"
        elif "distance_directions" in setting:
            setting["encoder"] = "mlp+linear"  # starts at PCA's code (exact directions)
    batch, patience = chosen["batch_size"], chosen["early_stopping_patience"]
    setting["epochs"] = epochs_for_steps(shape.rows, batch, chosen["epochs"])
    if patience > 0:
        setting["early_stopping_patience"] = epochs_for_steps(shape.rows, batch, patience,
                                                              MIN_PATIENCE_STEPS)
    return setting


PRESETS: dict[str, Callable[[TableShape, Mapping[str, Any]], Setting]] = {
    "synthesis": synthesis, "anomaly": anomaly, "embedding": embedding}


def check_preset(name: str | None) -> str | None:
    """The name, or a ValueError listing the known presets."""
    if name is not None and name not in PRESETS:
        raise ValueError(f"preset '{name}' is not one of {', '.join(PRESETS)}")
    return name


@dataclass(frozen=True)
class PresetChoice:
    """A resolved preset: its name, the keys it filled (keys the user set are not among
    them) and the table shape its rule read."""

    name: str
    filled: dict[str, Any] = field(default_factory=dict)
    shape: TableShape | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "filled": dict(self.filled),
                "shape": self.shape.to_dict() if self.shape else None}

    @classmethod
    def from_dict(cls, d: Mapping) -> PresetChoice:
        return cls(str(d["name"]), dict(d.get("filled") or {}),
                   TableShape(**d["shape"]) if d.get("shape") else None)


def resolve_preset(name: str, shape: TableShape, current: Mapping[str, Any],
                   set_keys: Collection[str]) -> PresetChoice:
    """The preset's setting for this shape, less the keys in ``set_keys`` (the user's).

    ``current``: every model and training key's value as it stands (the user's or the
    default), which a rule may read (e.g. ``latent_dim``, ``batch_size``).
    """
    setting = PRESETS[check_preset(name)](shape, current)
    return PresetChoice(name, {k: v for k, v in setting.items() if k not in set_keys}, shape)


def apply_preset(name: str, shape: TableShape, model_config: ModelConfig,
                 train_config: TrainConfig, set_keys: Collection[str]
                 ) -> tuple[ModelConfig, TrainConfig, PresetChoice]:
    """Both configs with the preset filled in for this shape, and the choice it made."""
    model, train = model_config.to_dict(), train_config.to_dict()
    choice = resolve_preset(name, shape, {**model, **train}, set_keys)
    model |= {k: v for k, v in choice.filled.items() if k in model}
    train |= {k: v for k, v in choice.filled.items() if k not in model}
    model_config, train_config = ModelConfig.from_dict(model), TrainConfig.from_dict(train)
    check_compatible(model_config, train_config)
    return model_config, train_config, choice
