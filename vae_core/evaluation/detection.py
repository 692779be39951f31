"""A classifier two-sample test: can gradient-boosted trees tell real rows from synthetic?

The larger sample is cut to the smaller one's size (at most ``max_rows`` each), then a
HistGradientBoostingClassifier (scikit-learn's defaults) is scored by ROC-AUC in stratified
5-fold cross-validation. 0.5 means the rows cannot be told apart; 1.0, every row can.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from vae_core.evaluation.columns import Column, encode, sample_rows


def detection_auc(real: pa.Table, synthetic: pa.Table, columns: list[Column], seed: int = 0,
                  max_rows: int = 20_000) -> float:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    rng = np.random.default_rng(seed)
    n = min(real.num_rows, synthetic.num_rows, max_rows)
    (x_real, x_syn), categorical = encode([sample_rows(real, n, rng),
                                           sample_rows(synthetic, n, rng)], columns)
    x = np.vstack([x_real, x_syn])
    y = np.r_[np.ones(len(x_real)), np.zeros(len(x_syn))]
    classifier = HistGradientBoostingClassifier(categorical_features=categorical,
                                                random_state=seed)
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    return float(np.mean(cross_val_score(classifier, x, y, cv=folds, scoring="roc_auc")))
