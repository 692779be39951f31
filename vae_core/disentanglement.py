"""The Mutual Information Gap (MIG, Chen et al. 2018) of a code against known factors.

For each factor v_k, the mutual information I(z_j; v_k) with every latent dimension z_j
(each z_j discretised into equal-width bins, as in disentanglement_lib); the gap between
the largest and the second largest, divided by H(v_k), averaged over factors. 1: each
factor is captured by one dimension alone; 0: the best dimension for a factor is tied.
"""

from __future__ import annotations

import numpy as np


def _entropy(labels: np.ndarray) -> float:
    p = np.bincount(labels) / len(labels)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def _mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1.0)
    joint /= joint.sum()
    pa, pb = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / (pa @ pb)[nz])).sum())


def discretise(codes: np.ndarray, bins: int = 20) -> np.ndarray:
    """Each column cut into ``bins`` equal-width bins over its range: int [rows, dims]."""
    lo, hi = codes.min(0), codes.max(0)
    scaled = (codes - lo) / np.where(hi > lo, hi - lo, 1.0)
    return np.minimum((scaled * bins).astype(np.int64), bins - 1)


def mutual_information_gap(codes: np.ndarray, factors: np.ndarray, bins: int = 20
                           ) -> tuple[float, np.ndarray]:
    """(MIG, the gap of each factor). ``codes`` [rows, dims] float; ``factors`` [rows, K] int."""
    if codes.shape[1] < 2:
        raise ValueError("MIG needs at least two code dimensions")
    binned = discretise(codes, bins)
    gaps = []
    for k in range(factors.shape[1]):
        mi = sorted((_mutual_information(binned[:, j], factors[:, k])
                     for j in range(binned.shape[1])), reverse=True)
        gaps.append((mi[0] - mi[1]) / _entropy(factors[:, k]))
    gaps_array = np.array(gaps)
    return float(gaps_array.mean()), gaps_array
