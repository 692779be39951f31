"""Helpers the integration test modules share (a plain module: test modules do not import
each other, and conftest.py holds only fixtures and hooks)."""

import socket

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
