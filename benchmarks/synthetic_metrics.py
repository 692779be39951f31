"""How good a synthetic table is (Adult, diamonds): fidelity, ML efficacy and privacy.

* ``quality``: SDMetrics' single-table QualityReport (overall, Column Shapes, Column Pair
  Trends), with the numeric / categorical metadata of ../shared/data/adult/README.md.
* ``tstr``: train on synthetic, test on real. A HistGradientBoostingClassifier fitted on
  the synthetic rows predicts the target (Adult: ``income``; diamonds: ``cut``, five
  classes, ROC-AUC one-vs-rest) on the real test split: ROC-AUC and macro-F1.
* ``detection``: can gradient-boosted trees tell the rows from real train rows (ROC-AUC)?
* ``dcr``: distance to the closest train record, as ``vae evaluate`` measures it: Euclidean,
  with numbers min-max scaled by the train column's range and categories one-hot over the
  train levels (the space of TabSyn-style DCR; it gives the real test rows the issue's median
  of ≈ 0.10). Compared with the real test rows' own DCR: lower than theirs means copying,
  not privacy. Also the share of rows that are exact copies of a train row (distance 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa


@dataclass(frozen=True)
class TableSpec:
    """A table's columns as the metrics see them, and the TSTR target: ``positive`` is a
    binary target's positive class; without it the target is multiclass (ROC-AUC one
    class against the rest, averaged)."""

    name: str
    numeric: list[str]
    categorical: list[str]
    target: str
    positive: str | None = None


ADULT = TableSpec("Adult", ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss",
                            "hours-per-week"],
                  ["workclass", "education", "marital-status", "occupation", "relationship",
                   "race", "sex", "native-country", "income"], "income", ">50K")
DIAMONDS = TableSpec("diamonds", ["carat", "depth", "table", "price", "x", "y", "z"],
                     ["cut", "color", "clarity"], "cut")


def metadata(spec: TableSpec) -> dict:
    return {"columns": {**{c: {"sdtype": "numerical"} for c in spec.numeric},
                        **{c: {"sdtype": "categorical"} for c in spec.categorical}}}


def quality(real: pd.DataFrame, synthetic: pd.DataFrame, spec: TableSpec) -> dict[str, float]:
    import warnings

    with warnings.catch_warnings():  # the single-table report is the protocol
        warnings.simplefilter("ignore", FutureWarning)
        from sdmetrics.reports.single_table import QualityReport

    report = QualityReport()
    report.generate(real, synthetic[real.columns], metadata(spec), verbose=False)
    props = report.get_properties().set_index("Property")["Score"]
    return {"quality": float(report.get_score()), "shapes": float(props["Column Shapes"]),
            "pairs": float(props["Column Pair Trends"])}


def detection(real: pd.DataFrame, synthetic: pd.DataFrame, seed: int = 0) -> dict[str, float]:
    """Classifier two-sample test, as ``vae evaluate`` runs it (vae_core.evaluation.detection:
    gradient-boosted trees, balanced samples, stratified 5-fold ROC-AUC); 0.5 = the rows
    cannot be told apart."""
    from vae_core.evaluation.detection import detection_auc

    real_rows = pa.Table.from_pandas(real, preserve_index=False)
    rows = pa.Table.from_pandas(synthetic[list(real.columns)], preserve_index=False)
    return {"detection": detection_auc(real_rows, rows, _columns(real_rows), seed)}


def _features(frames: list[pd.DataFrame], spec: TableSpec) -> list[np.ndarray]:
    """Numbers as they are, categories as codes over the union of all frames' values."""
    categorical = [c for c in spec.categorical if c != spec.target]
    out = [np.empty((len(f), len(spec.numeric) + len(categorical))) for f in frames]
    for j, col in enumerate(spec.numeric):
        for o, f in zip(out, frames, strict=True):
            o[:, j] = f[col].to_numpy(np.float64)
    for j, col in enumerate(categorical, start=len(spec.numeric)):
        levels = sorted(set().union(*(set(f[col].dropna().astype(str)) for f in frames)))
        code = {v: i for i, v in enumerate(levels)}
        for o, f in zip(out, frames, strict=True):
            o[:, j] = f[col].astype(str).map(code).fillna(-1).to_numpy(np.float64)
    return out


def tstr(synthetic: pd.DataFrame, test: pd.DataFrame, spec: TableSpec,
         seed: int = 0) -> dict[str, float]:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import f1_score, roc_auc_score

    x_syn, x_test = _features([synthetic, test], spec)
    y_syn, y_test = (f[spec.target].astype(str).to_numpy() for f in (synthetic, test))
    if spec.positive is not None:
        y_syn, y_test = y_syn == spec.positive, y_test == spec.positive
    if len(set(y_syn)) < 2:
        return {"roc_auc": 0.5, "macro_f1": 0.0}
    categorical = np.arange(x_syn.shape[1]) >= len(spec.numeric)
    clf = HistGradientBoostingClassifier(categorical_features=categorical, random_state=seed)
    # Codes of levels the synthetic rows never use would be unknown to the model: mapped
    # to the missing-value bin by marking them NaN.
    x_test = x_test.copy()
    for j in np.flatnonzero(categorical):
        x_test[~np.isin(x_test[:, j], x_syn[:, j]), j] = np.nan
    clf.fit(x_syn, y_syn)
    known = np.isin(y_test, clf.classes_)  # test rows of a class never generated: left out
    proba, y_test = clf.predict_proba(x_test[known]), y_test[known]
    auc = (roc_auc_score(y_test, proba[:, 1]) if spec.positive is not None else
           roc_auc_score(y_test, proba, multi_class="ovr", labels=clf.classes_))
    return {"roc_auc": float(auc), "macro_f1": float(f1_score(
        y_test, clf.classes_[proba.argmax(1)], average="macro"))}


def dcr(rows: pd.DataFrame, train: pd.DataFrame) -> dict[str, float]:
    """Median DCR of ``rows`` to ``train`` and the share of exact copies of a train row,
    measured as ``vae evaluate`` does (vae_core.evaluation.privacy)."""
    from vae_core.evaluation.privacy import closest_distances

    reference = pa.Table.from_pandas(train, preserve_index=False)
    distances = closest_distances(pa.Table.from_pandas(rows[list(train.columns)],
                                                       preserve_index=False),
                                  reference, _columns(reference))
    return {"median_dcr": float(np.median(distances)),
            "exact_copies": float(np.mean(distances == 0))}


def _columns(real: pa.Table) -> list:
    from vae_core.data.schema import infer_schema
    from vae_core.evaluation.columns import modelled_columns

    return modelled_columns(infer_schema(real.schema))
