"""Anomaly-score calibration on held-out rows.

Stores the empirical quantiles of the score (−log p̂(x)) on rows the model did not train
on. A new row's percentile is its position in that distribution, and the anomaly
threshold is one of the stored quantiles (99 % by default): a row is flagged when it is
less likely than 99 % of normal held-out rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

LEVELS = np.linspace(0.0, 1.0, 1001)


@dataclass(frozen=True)
class Calibration:
    scores: np.ndarray  # score at each of LEVELS
    rows: int
    threshold_quantile: float = 0.99

    @classmethod
    def fit(cls, scores: np.ndarray, threshold_quantile: float = 0.99) -> Calibration:
        if len(scores) == 0:
            raise ValueError("cannot calibrate on zero rows")
        return cls(np.quantile(scores, LEVELS), len(scores), threshold_quantile)

    def threshold(self, quantile: float | None = None) -> float:
        return float(np.interp(quantile or self.threshold_quantile, LEVELS, self.scores))

    def percentile(self, scores: np.ndarray) -> np.ndarray:
        """Share (in %) of held-out rows with a lower score; beyond the extremes: 0 / 100."""
        # np.interp needs increasing x; plateaus (ties) are fine.
        return 100.0 * np.interp(scores, self.scores, LEVELS)

    def to_dict(self) -> dict:
        return {"rows": self.rows, "threshold_quantile": self.threshold_quantile,
                "thresholds": {q: self.threshold(float(q)) for q in ("0.95", "0.99", "0.999")},
                "levels": len(LEVELS), "scores": self.scores.tolist()}

    @classmethod
    def from_dict(cls, d: Mapping) -> Calibration:
        return cls(np.asarray(d["scores"], np.float64), int(d["rows"]),
                   float(d["threshold_quantile"]))
