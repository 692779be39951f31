"""An invertible, monotone map from a numeric column to roughly N(0, 1).

Knots come from the quantile sketch: each bucket's representative value is sent to the
normal quantile of its mid-CDF, so a tie (e.g. the 92 % zeros of a capital-gain column)
gets one point in the middle of its mass. Between knots the map is linear; beyond the
outermost knots it continues linearly with slope 1/std, so a value k standard deviations
past the training maximum lands k units past the top knot. Nothing is clipped: an
out-of-range value stays out of range, and the decoder's Gaussian gives it a low density.

Generated rows are decoded with ``inverse(z, generated=True)``: a value drawn inside the
z-interval of a point mass (a value holding ≥ 1 % of the rows, such as those zeros) is
snapped to that value, and values stay within the training range, as SDV's
``enforce_min_max_values`` does. Without this, the Gaussian around a point mass would
spill into the gap next to it (capital gains of 3 or −700).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from vae_core.statistics import ColumnStatistics


def _normal_quantile(p: np.ndarray) -> np.ndarray:
    return torch.special.ndtri(torch.from_numpy(p)).numpy()


@dataclass(frozen=True)
class QuantileNormalMap:
    x_knots: np.ndarray  # strictly increasing
    z_knots: np.ndarray  # strictly increasing
    slope: float  # dz/dx beyond the outermost knots
    spikes: np.ndarray  # [m, 3]: (z_low, z_high, value) of each point mass

    SPIKE_MASS = 0.01

    @classmethod
    def fit(cls, stats: ColumnStatistics, max_knots: int = 512) -> QuantileNormalMap:
        values, counts = stats.sketch.buckets()
        total = counts.sum()
        cdf = np.cumsum(counts) / total
        mid_cdf = cdf - counts / (2 * total)
        heavy = np.flatnonzero(counts >= cls.SPIKE_MASS * total)
        spike_value = values[heavy].copy()
        spike_value[heavy == 0] = stats.moments.min
        spike_value[heavy == len(values) - 1] = stats.moments.max
        # CDF kept off 0 and 1 so that the interval ends stay finite (and JSON-storable).
        lo, hi = np.clip(cdf[heavy] - counts[heavy] / total, 1e-12, 1 - 1e-12), \
            np.clip(cdf[heavy], 1e-12, 1 - 1e-12)
        spikes = np.stack([_normal_quantile(lo), _normal_quantile(hi), spike_value], axis=1)
        if len(values) > max_knots:  # keep the buckets nearest evenly spaced CDF levels
            keep = np.unique(np.searchsorted(mid_cdf, np.linspace(0, 1, max_knots)).clip(
                0, len(values) - 1))
            keep = np.union1d(keep, [0, len(values) - 1])
            values, mid_cdf = values[keep], mid_cdf[keep]
        # The sketch's bucket representatives are within 0.5 % of the truth; the extremes
        # are known exactly, so use them (keeps integer columns exact at their ends).
        values = values.copy()
        values[0], values[-1] = stats.moments.min, stats.moments.max
        if len(values) > 1 and values[0] >= values[1]:
            values[0] = np.nextafter(values[1], -np.inf)
        if len(values) > 1 and values[-1] <= values[-2]:
            values[-1] = np.nextafter(values[-2], np.inf)
        z = _normal_quantile(mid_cdf.astype(np.float64)) if len(values) > 1 else np.zeros(1)
        std = stats.moments.std
        return cls(values.astype(np.float64), z.astype(np.float64), 1.0 / std if std > 0 else 1.0,
                   spikes.reshape(-1, 3))

    def forward(self, x: np.ndarray) -> np.ndarray:
        xk, zk = self.x_knots, self.z_knots
        z = np.interp(x, xk, zk)
        z = np.where(x < xk[0], zk[0] + (x - xk[0]) * self.slope, z)
        return np.where(x > xk[-1], zk[-1] + (x - xk[-1]) * self.slope, z)

    def inverse(self, z: np.ndarray, generated: bool = False) -> np.ndarray:
        xk, zk = self.x_knots, self.z_knots
        if generated:
            x = np.interp(z, zk, xk)  # np.interp holds the end values: the training range
            for z_low, z_high, value in self.spikes:
                x = np.where((z >= z_low) & (z <= z_high), value, x)
            return x
        x = np.interp(z, zk, xk)
        x = np.where(z < zk[0], xk[0] + (z - zk[0]) / self.slope, x)
        return np.where(z > zk[-1], xk[-1] + (z - zk[-1]) / self.slope, x)

    def to_dict(self) -> dict:
        return {"x_knots": self.x_knots.tolist(), "z_knots": self.z_knots.tolist(),
                "slope": self.slope, "spikes": self.spikes.tolist()}

    @classmethod
    def from_dict(cls, d: Mapping) -> QuantileNormalMap:
        return cls(np.asarray(d["x_knots"], np.float64), np.asarray(d["z_knots"], np.float64),
                   float(d["slope"]), np.asarray(d["spikes"], np.float64).reshape(-1, 3))
