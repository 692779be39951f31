"""Where MLflow lives, and checking that it answers before any work starts.

Embedded default (no ``MLFLOW_TRACKING_URI``): a SQLite database and an artifact folder
under ``./mlruns`` in the working directory, with absolute paths so that Ray workers, whose
working directory differs, write to the same place. Otherwise any MLflow server.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path


class TrackingError(RuntimeError):
    pass


def tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    root = Path.cwd() / "mlruns"
    root.mkdir(exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def _default_artifact_location(uri: str) -> str | None:
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "artifacts").as_uri()
    return None  # a server decides (e.g. proxied mlflow-artifacts:)


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, naming the URI, rather than after an hour of training."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as r:
            if r.status != 200:
                raise TrackingError(f"MLflow server {uri} answered /health with {r.status}")
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise TrackingError(f"MLflow server {uri} is unreachable ({reason})") from e


def use() -> str:
    """Point MLflow at the tracking URI (checked reachable) without touching experiments."""
    import mlflow

    uri = tracking_uri()
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    return uri


def connect(experiment: str) -> tuple[str, str]:
    """Set the tracking URI, make sure the experiment exists; (uri, experiment id)."""
    from mlflow.tracking import MlflowClient

    uri = use()
    client = MlflowClient(uri)
    try:
        exp = client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else client.create_experiment(
            experiment, artifact_location=_default_artifact_location(uri))
    except Exception as e:  # MLflow raises many kinds; the user needs the URI and the cause
        raise TrackingError(f"MLflow at {uri}: {type(e).__name__}: {e}") from e
    return uri, exp_id
