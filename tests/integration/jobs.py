"""Helpers the integration test modules share (a plain module: test modules do not import
each other, and conftest.py holds only fixtures and hooks)."""

import json
import socket
from pathlib import Path

from pipelines.job_config import load_job_config


def job(data, **overrides):
    """A short training job on ``data``: income as the condition, keys overridable."""
    base = {"data": str(data), "model_name": "adult-it", "epochs": 3, "batch_size": 256,
            "columns": {"income": "condition"}}
    return load_job_config(None, {**base, **overrides})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def has_registered_checkpoint(run_dir: Path) -> bool:
    """Whether Ray Train has registered a checkpoint of the run in ``run_dir``: a restart
    resumes from it. (A checkpoint's folder appears before it is registered; a worker killed
    in between restarts the run from scratch.)"""
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    try:
        return json.loads(snapshot.read_text()).get("latest_checkpoint_result") is not None
    except (OSError, ValueError):  # not written yet, or being written
        return False
