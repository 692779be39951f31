"""How good synthetic rows are: fidelity (column shapes, pair trends), a classifier
two-sample test, privacy (distance to the closest real record) and, for a target column,
train-synthetic-test-real. ``TabularVAE.evaluate`` and ``vae evaluate`` call ``evaluate``.

    columns    the modelled columns as arrays; a shared encoding for scikit-learn
    fidelity   column shapes and pair trends
    detection  real vs synthetic by gradient-boosted trees (ROC-AUC)
    privacy    DCR of synthetic and of real holdout rows
    utility    TSTR beside TRTR
    report     evaluate(), EvaluationReport and its JSON / HTML / PNG files
"""

from vae_core.evaluation.report import EvaluationReport, evaluate, marginals_figure

__all__ = ["EvaluationReport", "evaluate", "marginals_figure"]
