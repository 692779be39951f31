"""Anomaly scores as a table: the id columns of the input, then ``elbo``, ``log_px``,
``score``, ``percentile``, ``is_anomaly``, ``top_columns``, ``unseen_categories`` and, on
request, ``nll_<column>``. The one place these columns are made (TabularVAE.score, which
the HTTP routes, the batch jobs and the MLflow pyfunc call)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from vae_core.calibration import Calibration
from vae_core.data.transform import ColumnTransformer


def score_table(transformer: ColumnTransformer, table: pa.Table, log_px: np.ndarray,
                elbo: np.ndarray, nll: np.ndarray, unseen: np.ndarray,
                calibration: Calibration | None, top_k: int = 3,
                per_column: bool = False) -> pa.Table:
    """One row per input row; ``nll`` [rows, columns] is −log p(x_col|z) per modelled column,
    from which ``top_columns`` lists the ``top_k`` largest."""
    score = -log_px
    names = [s.name for s in transformer.feature_spans]
    top = np.argsort(-nll, axis=1, kind="stable")[:, :min(top_k, len(names))]
    top_columns = pa.ListArray.from_arrays(
        pa.array(np.arange(0, top.size + 1, top.shape[1], dtype=np.int32)),
        pa.array(names).take(pa.array(top.ravel())))
    columns = {s.name: table.column(s.name) for s in transformer.schema.ids
               if s.name in table.schema.names}
    columns |= {
        "elbo": pa.array(elbo), "log_px": pa.array(log_px), "score": pa.array(score),
        "percentile": pa.array(calibration.percentile(score) if calibration
                               else np.full(len(score), np.nan)),
        "is_anomaly": pa.array(score > calibration.threshold() if calibration
                               else np.zeros(len(score), bool)),
        "top_columns": top_columns,
        "unseen_categories": pa.array(unseen),
    }
    if per_column:
        columns |= {f"nll_{n}": pa.array(nll[:, i]) for i, n in enumerate(names)}
    return pa.table(columns)
