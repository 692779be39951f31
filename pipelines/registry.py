"""Registering trained models in MLflow, and the aliases that address them.

Every new version gets alias ``candidate``. It becomes ``champion`` when its mean
held-out log p(x) beats the current champion's on the *same* rows (the new job's
validation rows, scored by both models), or by ``vae models promote NAME VERSION``.
Reading a model back (``models:/NAME@ALIAS`` → folder) is model_refs' job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from model_refs import model_folder  # re-exported: the one resolver of model references

PYFUNC_CODE = Path(__file__).with_name("mlflow_pyfunc.py")
VAE_CORE_DIR = Path(__file__).resolve().parents[1] / "vae_core"
CANDIDATE, CHAMPION = "candidate", "champion"
VAL_LOG_PX_TAG = "val_log_px"
PRESET_TAG = "preset"  # the job the version was trained for (vae_core.presets), or "none"


def log_model(run_id: str, model_dir: Path, name: str, example: pa.Table,
              preset: str | None = None) -> str:
    """Log the model folder as a pyfunc model in ``run_id`` and register it; the version,
    tagged with its ``preset``."""
    import mlflow
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    frame = example.to_pandas()
    signature = infer_signature(frame, params={"mode": "score", "n": 0, "seed": 0,
                                               "iwae_samples": 0, "top_k": 3,
                                               "return_std": False, "conditions": ""})
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(PYFUNC_CODE),
            artifacts={"vae_model": str(model_dir)},
            code_paths=[str(VAE_CORE_DIR)],  # so `mlflow models serve` can import vae_core
            signature=signature, input_example=frame.head(3),
            pip_requirements=["torch", "numpy", "pyarrow", "pandas",
                              f"mlflow=={mlflow.__version__}"],
            registered_model_name=name)
    version = str(info.registered_model_version)
    MlflowClient().set_model_version_tag(name, version, PRESET_TAG, preset or "none")
    return version


def mean_log_px(folder: Path, rows: pa.Table) -> float:
    from vae_core import TabularVAE

    vae = TabularVAE.load(folder)
    return float(np.mean(vae.score(rows, seed=0).column("log_px").to_numpy()))


@dataclass
class Promotion:
    champion: bool
    reason: str
    previous_version: str | None = None
    previous_log_px: float | None = None


def promote_if_better(name: str, version: str, new_log_px: float, rows: pa.Table,
                      policy: str = "auto", blocked: str | None = None) -> Promotion:
    """@candidate always; @champion by ``policy`` (auto: the held-out log p(x) beats the
    champion's), unless ``blocked`` says why not (a quality gate the version failed)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    client.set_registered_model_alias(name, CANDIDATE, version)
    client.set_model_version_tag(name, version, VAL_LOG_PX_TAG, f"{new_log_px:.6f}")
    if policy == "never":
        return Promotion(False, "promotion disabled (promote: never)")
    if blocked:
        return Promotion(False, blocked)
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        current = None
    if policy == "always" or current is None:
        client.set_registered_model_alias(name, CHAMPION, version)
        return Promotion(True, "first version" if current is None else "promote: always")
    try:
        old = mean_log_px(model_folder(f"models:/{name}/{current.version}"), rows)
    except (ValueError, FileNotFoundError) as e:  # e.g. the champion expects other columns
        return Promotion(False, f"champion v{current.version} cannot score these rows ({e}); "
                         "promote by hand", current.version)
    if math.isfinite(new_log_px) and new_log_px > old:
        client.set_registered_model_alias(name, CHAMPION, version)
        return Promotion(True, f"held-out log p(x) {new_log_px:.3f} > champion v{current.version}"
                         f" {old:.3f}", current.version, old)
    return Promotion(False, f"held-out log p(x) {new_log_px:.3f} ≤ champion v{current.version} "
                     f"{old:.3f}", current.version, old)


def promote(name: str, version: str) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    client.get_model_version(name, version)  # raises with a clear message if it does not exist
    client.set_registered_model_alias(name, CHAMPION, version)


def list_versions(name: str | None = None) -> list[dict]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    names = [name] if name else [m.name for m in client.search_registered_models()]
    rows = []
    for n in names:
        # search_model_versions leaves `aliases` empty; the registered model has them.
        aliases: dict[str, list[str]] = {}
        for alias, version in client.get_registered_model(n).aliases.items():
            aliases.setdefault(str(version), []).append(alias)
        for v in client.search_model_versions(f"name='{n}'"):
            rows.append({"name": n, "version": v.version,
                         "aliases": sorted(aliases.get(str(v.version), [])),
                         "val_log_px": v.tags.get(VAL_LOG_PX_TAG),
                         "preset": v.tags.get(PRESET_TAG), "run_id": v.run_id,
                         "created": v.creation_timestamp})
    return sorted(rows, key=lambda r: (r["name"], -int(r["version"])))
