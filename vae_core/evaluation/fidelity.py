"""How close a synthetic table's columns and column pairs are to the real table's
(1 = identical; SDMetrics' definitions, computed here without it).

Column shapes: numbers, 1 − the Kolmogorov–Smirnov statistic sup_x |F_real(x) − F_syn(x)|
over the values present; categories and flags, 1 − the total-variation distance
½ Σ_v |p_real(v) − p_syn(v)| (a missing value is a level of its own).
Pair trends: two numbers, 1 − |ρ_real − ρ_syn| / 2 with Pearson's ρ; any other pair,
1 − the total-variation distance between the joint frequency tables, numbers cut at the
real column's deciles (missing = a bin of its own). Tables with more than ``MAX_PAIRS``
pairs are measured on that many pairs drawn at random.
"""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa

from vae_core.evaluation.columns import Column, values

MAX_PAIRS = 1000


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """sup_x |F_a(x) − F_b(x)| of two samples' empirical CDFs (NaN dropped)."""
    a, b = np.sort(a[~np.isnan(a)]), np.sort(b[~np.isnan(b)])
    if len(a) == 0 or len(b) == 0:
        return float(len(a) != len(b))
    grid = np.concatenate([a, b])
    return float(np.max(np.abs(np.searchsorted(a, grid, "right") / len(a)
                               - np.searchsorted(b, grid, "right") / len(b))))


def total_variation(a: np.ndarray, b: np.ndarray) -> float:
    """½ Σ_v |p_a(v) − p_b(v)| between the frequency tables of two samples of labels."""
    levels, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
    p = np.bincount(inverse[:len(a)], minlength=len(levels)) / len(a)
    q = np.bincount(inverse[len(a):], minlength=len(levels)) / len(b)
    return float(0.5 * np.abs(p - q).sum())


def column_shapes(real: pa.Table, synthetic: pa.Table, columns: list[Column]) -> dict[str, float]:
    shapes = {}
    for c in columns:
        a, b = values(real, c), values(synthetic, c)
        shapes[c.name] = 1 - (ks_statistic(a, b) if c.numeric else total_variation(a, b))
    return shapes


def _labels(real: np.ndarray, other: np.ndarray, numeric: bool) -> tuple[np.ndarray, np.ndarray]:
    """Both samples as integer labels: numbers by the real deciles, categories by value."""
    if numeric:
        present = real[~np.isnan(real)]
        edges = np.unique(np.quantile(present, np.linspace(0.1, 0.9, 9))) if len(present) \
            else np.array([])
        return tuple(np.where(np.isnan(v), -1, np.searchsorted(edges, v, "right"))
                     for v in (real, other))
    _, inverse = np.unique(np.concatenate([real, other]), return_inverse=True)
    return inverse[:len(real)], inverse[len(real):]


def pair_trends(real: pa.Table, synthetic: pa.Table, columns: list[Column],
                seed: int = 0) -> dict[tuple[str, str], float]:
    pairs = list(itertools.combinations(range(len(columns)), 2))
    if len(pairs) > MAX_PAIRS:
        rng = np.random.default_rng(seed)
        pairs = [pairs[i] for i in np.sort(rng.choice(len(pairs), MAX_PAIRS, replace=False))]
    cache = {c.name: (values(real, c), values(synthetic, c)) for c in columns}
    trends = {}
    for i, j in pairs:
        ci, cj = columns[i], columns[j]
        (ri, si), (rj, sj) = cache[ci.name], cache[cj.name]
        if ci.numeric and cj.numeric:
            rho_r, rho_s = _pearson(ri, rj), _pearson(si, sj)
            if not (np.isnan(rho_r) or np.isnan(rho_s)):
                trends[ci.name, cj.name] = 1 - abs(rho_r - rho_s) / 2
            continue
        (li_r, li_s), (lj_r, lj_s) = _labels(ri, si, ci.numeric), _labels(rj, sj, cj.numeric)
        width = max(li_r.max(initial=0), li_s.max(initial=0)) + 2
        trends[ci.name, cj.name] = 1 - total_variation((lj_r + 1) * width + li_r + 1,
                                                       (lj_s + 1) * width + li_s + 1)
    return trends


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    both = ~(np.isnan(x) | np.isnan(y))
    x, y = x[both], y[both]
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])
