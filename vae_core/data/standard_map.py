"""The affine map z = (x − mean) / std for a numeric column: ``numeric_transform: standard``.

The quantile→normal map (the default) makes every marginal ≈ N(0, 1) by ranks, which is
what generation wants, but ranks forget distance: the most extreme tenth of the training
rows lands in the same z range however far out it lies. An anomaly detector trained on
contaminated data needs that distance: under this map a value k standard deviations out
is k units out, and the decoder's Gaussian scores it by how far it is. Values are points
(no atoms: an affine map has no CDF to give a tie its mass), and generated values are
held to the training range, as with the quantile map.

``numeric_transform: pooled`` uses the same map with one std for every numeric column
(the root mean of their variances), for tables whose columns share a unit, such as
pixels: z then keeps the table's own distances, as PCA on the raw columns does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from vae_core.data.statistics import ColumnStatistics


@dataclass(frozen=True)
class StandardScoreMap:
    mean: float
    std: float
    low: float  # the training range, for generated values
    high: float

    atoms = np.zeros((0, 3))  # same interface as QuantileNormalMap: no atoms

    @classmethod
    def fit(cls, stats: ColumnStatistics, std: float | None = None) -> StandardScoreMap:
        """``std``: a scale shared by every column (``pooled``) instead of the column's own."""
        m = stats.moments
        return cls(m.mean, std or (m.std if m.std > 0 else 1.0), m.min, m.max)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = (x - self.mean) / self.std
        return z, z

    def inverse(self, z: np.ndarray, generated: bool = False) -> np.ndarray:
        x = self.mean + z * self.std
        return np.clip(x, self.low, self.high) if generated else x

    def to_dict(self) -> dict:
        return {"kind": "standard", "mean": self.mean, "std": self.std, "low": self.low,
                "high": self.high}

    @classmethod
    def from_dict(cls, d: Mapping) -> StandardScoreMap:
        return cls(float(d["mean"]), float(d["std"]), float(d["low"]), float(d["high"]))
