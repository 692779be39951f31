"""Submitting the training job to a Ray cluster through the Ray Jobs API.

The job's config travels as the runtime env's ``working_dir`` (a folder holding
``job.yaml``); the cluster's image must have this package installed (see Dockerfile), so
the entrypoint is simply ``vae train --config job.yaml``. MLflow settings are passed as
environment variables, so the job logs to the same server as the submitter.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import yaml

from pipelines.job_config import JobConfig

AGENT_WAIT_S = 300
FORWARDED_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME",
                 "MLFLOW_TRACKING_PASSWORD")


def _client(address: str):
    # Ray ≥ 2.59 turns token auth on for local clusters; the client must say so to send it.
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address)


def submit(job: JobConfig, address: str) -> str:
    """Submit; returns the Ray job id."""
    config = job.to_dict()
    config["model"] = {**config["model"]}
    config.pop("address")  # inside the cluster the job joins its own Ray
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    client = _client(address)
    deadline = time.monotonic() + AGENT_WAIT_S
    with tempfile.TemporaryDirectory() as d:
        Path(d, "job.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        while True:
            try:
                return client.submit_job(entrypoint="vae train --config job.yaml",
                                         runtime_env={"working_dir": d, "env_vars": env},
                                         metadata={"model_name": job.model_name})
            except RuntimeError as e:
                # A head that has just started answers before its job agent is up.
                if "No available agent" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(3)


def status(address: str, job_id: str) -> str:
    return str(_client(address).get_job_status(job_id).value)


def logs(address: str, job_id: str) -> str:
    return _client(address).get_job_logs(job_id)


def stop(address: str, job_id: str) -> bool:
    return _client(address).stop_job(job_id)
