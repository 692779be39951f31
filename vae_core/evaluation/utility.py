"""Machine-learning utility: a model of one column trained on synthetic rows, tested on real
rows it never saw (TSTR), beside the same model trained on real rows (TRTR).

Gradient-boosted trees (scikit-learn's HistGradientBoosting, defaults) on every other
modelled column. A category or flag target is scored by ROC-AUC (one-vs-rest, macro, when
it has more than two levels); a numeric target by R².
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from vae_core.evaluation.columns import Column, encode, values


def train_test_score(train: pa.Table, test: pa.Table, columns: list[Column], target: Column,
                     seed: int = 0) -> float:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.metrics import r2_score, roc_auc_score

    features = [c for c in columns if c.name != target.name]
    (x_train, x_test), categorical = encode([train, test], features)
    y_train, y_test = values(train, target), values(test, target)
    if target.numeric:
        keep_train, keep_test = ~np.isnan(y_train), ~np.isnan(y_test)
        model = HistGradientBoostingRegressor(categorical_features=categorical,
                                              random_state=seed)
        model.fit(x_train[keep_train], y_train[keep_train])
        return float(r2_score(y_test[keep_test], model.predict(x_test[keep_test])))
    classes = np.unique(y_test)
    if len(classes) < 2:
        raise ValueError(f"target '{target.name}' has one value in the test rows; ROC-AUC "
                         "needs two")
    if len(np.unique(y_train)) < 2:
        return 0.5  # one class to learn from: no better than chance
    model = HistGradientBoostingClassifier(categorical_features=categorical, random_state=seed)
    model.fit(x_train, y_train)
    proba = np.zeros((len(x_test), len(classes)))
    learned = model.predict_proba(x_test)
    for j, label in enumerate(model.classes_):  # classes the training rows lack stay at 0
        if label in classes:
            proba[:, np.searchsorted(classes, label)] = learned[:, j]
    if len(classes) == 2:
        return float(roc_auc_score(y_test == classes[1], proba[:, 1]))
    proba = (proba + 1e-12) / (proba + 1e-12).sum(1, keepdims=True)
    return float(roc_auc_score(y_test, proba, multi_class="ovr", labels=classes))
