"""Scheduled retraining: the Kubernetes manifests that run a job config on a cron schedule.

``vae schedule --config job.yaml`` renders a ConfigMap holding the job config and a CronJob
that runs ``vae submit --config /etc/vae/job.yaml --address …`` against a long-lived Ray
cluster (deploy/k8s/raycluster.yaml), on the config's ``schedule:`` (or ``--cron``). The
shape is deploy/k8s/cronjob-retrain.yaml's; MLflow settings and tokens come from the
``vae-tables`` ConfigMap and Secret (deploy/k8s/configmap.yaml, secret.example.yaml).
"""

from __future__ import annotations

import yaml

from pipelines.job_config import ConfigError, JobConfig

DEFAULT_IMAGE = "ghcr.io/example/vae-tables:0.1.0"
DEFAULT_ADDRESS = "http://vae-ray-head-svc:8265"
CRON_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


def check_cron(cron: str | None) -> str:
    if not cron:
        raise ConfigError("no schedule: set 'schedule' in the config or pass --cron "
                          "(e.g. '0 3 * * *')")
    if cron.strip() not in CRON_MACROS and len(cron.split()) != 5:
        raise ConfigError(f"schedule '{cron}': expected five cron fields (minute hour "
                          "day-of-month month day-of-week) or one of " + ", ".join(CRON_MACROS))
    return cron.strip()


def manifests(job: JobConfig, cron: str | None = None, name: str = "vae-retrain",
              image: str = DEFAULT_IMAGE, address: str | None = None) -> list[dict]:
    """[ConfigMap with job.yaml, CronJob running `vae submit` on the schedule]."""
    cron = check_cron(cron or job.schedule)
    config = job.to_dict()
    config.pop("address")  # inside the cluster the job joins its own Ray
    config["schedule"] = cron
    labels = {"app.kubernetes.io/name": "vae-tables",
              "app.kubernetes.io/component": "retraining"}
    config_map = {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": f"{name}-job", "labels": labels},
                  "data": {"job.yaml": yaml.safe_dump(config, sort_keys=False)}}
    container = {
        "name": "submit", "image": image,
        "args": ["submit", "--config", "/etc/vae/job.yaml", "--address",
                 address or job.address or DEFAULT_ADDRESS],
        "envFrom": [{"configMapRef": {"name": "vae-tables"}},
                    {"secretRef": {"name": "vae-tables"}}],
        "env": [{"name": "RAY_AUTH_MODE", "value": "token"}],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"},
                      "limits": {"cpu": "500m", "memory": "512Mi"}},
        "volumeMounts": [{"name": "job", "mountPath": "/etc/vae"}]}
    cron_job = {
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": name, "labels": labels},
        "spec": {"schedule": cron, "concurrencyPolicy": "Forbid",
                 "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 3,
                 "jobTemplate": {"spec": {"backoffLimit": 1, "template": {"spec": {
                     "restartPolicy": "Never",
                     "securityContext": {"runAsNonRoot": True, "runAsUser": 1000},
                     "containers": [container],
                     "volumes": [{"name": "job",
                                  "configMap": {"name": f"{name}-job"}}]}}}}}}
    return [config_map, cron_job]


def render(job: JobConfig, **options) -> str:
    """The manifests as one multi-document YAML (for ``kubectl apply -f -``)."""
    return "---\n".join(yaml.safe_dump(d, sort_keys=False) for d in manifests(job, **options))
