"""An invertible, monotone map from a numeric column to roughly N(0, 1), with atoms.

The map is the column's CDF F from the quantile sketch, followed by the normal quantile
function: z = Φ⁻¹(F(x)). Two kinds of values are told apart:

* **Atoms**: values that hold probability mass of their own: any exact value with ≥ 1 %
  of the rows (the 92 % zeros of a capital-gain column, the 47 % of "40" hours a week),
  and, in an integer column, every value (ages, counts, codes), unless the column has more
  than ``max_knots`` of them (then it is treated as continuous but for its ≥ 1 % values).
  "Exact" is known from the sketch: a bucket whose smallest and largest value are equal.
  An atom is encoded as its interval [Φ⁻¹(F(x⁻)), Φ⁻¹(F(x))] of z: the width is its mass.
  The likelihood of an atom is then the decoder Gaussian's *probability* of that interval
  (vae_core.nn.heads), not a density at one point, which a model could push to infinity by
  predicting the value exactly.
* **Continuous values** are encoded as a point (low = high): between knots the map is
  linear; beyond the outermost knots it continues linearly with slope 1/std, so a value k
  standard deviations past the training maximum lands k units past the top knot. Nothing
  is clipped: an out-of-range value stays out of range, and the decoder's Gaussian gives
  it a low density.

Decoding ``z`` (a draw of the decoder, or the middle of an encoded interval) gives the
atom whose interval holds it, else the linear map's inverse. With ``generated=True``
values also stay within the training range, as SDV's ``enforce_min_max_values`` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from vae_core.data.statistics import ColumnStatistics

CDF_FLOOR = 1e-12  # F kept off 0 and 1 so that interval ends stay finite (JSON-storable)


def _normal_quantile(p: np.ndarray) -> np.ndarray:
    return torch.special.ndtri(torch.from_numpy(np.clip(p, CDF_FLOOR, 1 - CDF_FLOOR))).numpy()


@dataclass(frozen=True)
class QuantileNormalMap:
    x_knots: np.ndarray  # strictly increasing; an atom contributes both ends of its interval
    z_knots: np.ndarray  # strictly increasing
    slope: float  # dz/dx beyond the outermost knots
    atoms: np.ndarray  # [m, 3]: (value, z_low, z_high), ascending by value

    ATOM_MASS = 0.01

    @classmethod
    def fit(cls, stats: ColumnStatistics, max_knots: int = 512, integer: bool = False
            ) -> QuantileNormalMap:
        values, counts = stats.sketch.buckets()
        low, high = stats.sketch.bounds()
        total = counts.sum()
        cdf_high = np.cumsum(counts) / total
        cdf_low = np.r_[0.0, cdf_high[:-1]]  # exactly the previous bucket's end
        exact = low == high  # the bucket holds one value: that value, exactly
        values = np.where(exact, low, values)
        # The sketch's bucket representatives are within its relative accuracy of the
        # truth; the extremes are known exactly, so use them.
        values[0], values[-1] = stats.moments.min, stats.moments.max
        is_atom = exact & (counts >= cls.ATOM_MASS * total)
        if integer and exact.sum() <= max_knots:
            is_atom |= exact  # every value of a discrete column is an atom
        keep = is_atom.copy()
        keep[[0, -1]] = True
        continuous = np.flatnonzero(~is_atom)
        if len(continuous) > max_knots:  # the continuous buckets nearest even CDF levels
            mid = (cdf_low + cdf_high)[continuous] / 2
            picks = np.searchsorted(mid, np.linspace(0, 1, max_knots)).clip(0, len(mid) - 1)
            keep[continuous[picks]] = True
        else:
            keep[continuous] = True
        values, cdf_low, cdf_high = values[keep], cdf_low[keep], cdf_high[keep]
        is_atom = is_atom[keep]

        # Knots: a continuous bucket at its mid-CDF, an atom at both ends of its interval,
        # a hair (δ) to either side of its value: a value in the gap next to an atom is not
        # that atom and maps outside its interval; x stays increasing.
        gaps = np.diff(values)
        room = np.minimum(np.r_[np.inf, gaps], np.r_[gaps, np.inf]) / 3
        delta = np.minimum(np.maximum(np.abs(values), 1.0) * 1e-9, room)
        x = np.where(is_atom[:, None], values[:, None] + delta[:, None] * [-1, 1],
                     values[:, None]).ravel()
        p = np.where(is_atom[:, None], np.stack([cdf_low, cdf_high], 1),
                     ((cdf_low + cdf_high) / 2)[:, None]).ravel()
        take = np.repeat(is_atom, 2) | np.tile([True, False], len(values))  # 2 knots or 1
        x, p = x[take], p[take]
        x, z = _merge_equal_levels(x, _normal_quantile(p))
        atoms = np.stack([values[is_atom], _normal_quantile(cdf_low[is_atom]),
                          _normal_quantile(cdf_high[is_atom])], axis=1)
        std = stats.moments.std
        return cls(x.astype(np.float64), z.astype(np.float64), 1.0 / std if std > 0 else 1.0,
                   atoms.reshape(-1, 3))

    def _atom_of(self, x: np.ndarray) -> np.ndarray:
        """Index of the atom each value is (exactly), or −1."""
        values = self.atoms[:, 0]
        if len(values) == 0:
            return np.full(x.shape, -1)
        i = np.searchsorted(values, x).clip(0, len(values) - 1)
        return np.where(values[i] == x, i, -1)

    def _linear(self, x: np.ndarray) -> np.ndarray:
        xk, zk = self.x_knots, self.z_knots
        z = np.interp(x, xk, zk)
        z = np.where(x < xk[0], zk[0] + (x - xk[0]) * self.slope, z)
        return np.where(x > xk[-1], zk[-1] + (x - xk[-1]) * self.slope, z)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(z_low, z_high) per value: an atom's interval, or a point for other values."""
        z = self._linear(x)
        atom = self._atom_of(x)
        hit = atom >= 0
        low, high = z.copy(), z.copy()
        low[hit], high[hit] = self.atoms[atom[hit], 1], self.atoms[atom[hit], 2]
        return low, high

    def inverse(self, z: np.ndarray, generated: bool = False) -> np.ndarray:
        """The value at z: the atom whose interval holds z, else the linear map's inverse
        (beyond the knots extrapolated, or with ``generated`` held at the training range)."""
        xk, zk = self.x_knots, self.z_knots
        x = np.interp(z, zk, xk)  # np.interp holds the end values: the training range
        if not generated:
            x = np.where(z < zk[0], xk[0] + (z - zk[0]) / self.slope, x)
            x = np.where(z > zk[-1], xk[-1] + (z - zk[-1]) / self.slope, x)
        if len(self.atoms):
            i = np.searchsorted(self.atoms[:, 2], z).clip(0, len(self.atoms) - 1)
            inside = (z >= self.atoms[i, 1]) & (z <= self.atoms[i, 2])
            x = np.where(inside, self.atoms[i, 0], x)
        return x

    def to_dict(self) -> dict:
        return {"kind": "quantile", "x_knots": self.x_knots.tolist(),
                "z_knots": self.z_knots.tolist(),
                "slope": self.slope, "atoms": self.atoms.tolist()}

    @classmethod
    def from_dict(cls, d: Mapping) -> QuantileNormalMap:
        return cls(np.asarray(d["x_knots"], np.float64), np.asarray(d["z_knots"], np.float64),
                   float(d["slope"]), np.asarray(d["atoms"], np.float64).reshape(-1, 3))


def _merge_equal_levels(x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One knot per z level: two atoms side by side share an interval end, and a map needs
    z strictly increasing to be inverted. The shared end sits halfway between them in x."""
    levels, start = np.unique(z, return_index=True)
    counts = np.diff(np.r_[start, len(z)])
    sums = np.add.reduceat(x, start)
    return sums / counts, levels
