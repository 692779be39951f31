"""MLflow pyfunc wrapper of a vae_core model folder ("models from code": nothing pickled).

``mlflow.pyfunc.load_model("models:/NAME@champion").predict(df, params={"mode": ...})``
with mode ``score`` (default; params ``iwae_samples``, ``seed``, ``top_k``), ``embed``
(``return_std``) or ``generate`` (``n``, ``seed``, ``conditions``: JSON text of the object
``TabularVAE.sample`` takes, since MLflow's params are scalars). The served app's
``/invocations`` takes the same params and answers the same rows. Serving and batch jobs do
not go through this wrapper: they load the vae_core folder directly.
"""

from __future__ import annotations

import json

import mlflow.pyfunc
import pyarrow as pa
from mlflow.models import set_model


class VAEPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from vae_core import TabularVAE

        self.vae = TabularVAE.load(context.artifacts["vae_model"])

    def predict(self, context, model_input, params: dict | None = None):
        params = params or {}
        mode = params.get("mode", "score")
        if mode == "generate":
            n = int(params.get("n") or len(model_input))
            conditions = json.loads(params["conditions"]) if params.get("conditions") else None
            return self.vae.sample(n, conditions=conditions, seed=params.get("seed")).to_pandas()
        table = pa.Table.from_pandas(model_input, preserve_index=False)
        if mode == "embed":
            from vae_core.embedding_table import embedding_table

            return embedding_table(self.vae, table,
                                   str(params.get("return_std")).lower() == "true").to_pandas()
        if mode == "score":
            k = params.get("iwae_samples")
            return self.vae.score(table, iwae_samples=int(k) if k else None,
                                  seed=int(params.get("seed") or 0),
                                  top_k=int(params.get("top_k", 3))).to_pandas()
        raise ValueError(f"unknown mode '{mode}' (score, embed, generate)")


set_model(VAEPyfunc())
