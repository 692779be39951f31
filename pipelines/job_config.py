"""The training job's configuration: a YAML file, and every key also a command-line flag.

    data: data/train.parquet            # file, folder, glob, or any pyarrow URI (s3://…)
    model_name: adult-vae               # registered model name in MLflow
    columns: {income: condition}        # schema overrides (see README, column kinds)
    preset: anomaly                     # synthesis | anomaly | embedding (vae_core.presets)
    model: {latent_dim: 8}              # any ModelConfig field
    train: {epochs: 30, beta: 1.0}      # any TrainConfig field
    workers: 0                          # 0 = Ray Train local mode (one process, no DDP)

The CLI (vae_cli.job_flags) makes every key a flag, with the field's help and default:
``--data``, ``--model-name``, ``--workers``, ... for the top-level keys, ``--latent-dim``,
``--epochs``, ... for model/train fields, ``--column NAME=KIND`` (repeatable); a flag
overrides the file. An unknown key is an error, not a silent no-op. A preset fills the
model/train keys that neither the file nor a flag set (``set_keys``), once the job's
statistics pass has seen the table's shape (pipelines.train).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from vae_core import ModelConfig, TrainConfig
from vae_core.config import check_compatible
from vae_core.presets import PRESETS

PLACEMENTS = {"pack": "PACK", "spread": "SPREAD"}  # → Ray's placement-group strategies


class ConfigError(ValueError):
    pass


def _field(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class JobConfig:
    """A training job. Each field's ``help`` is also the help of its ``vae train`` flag."""

    data: str = _field("", "training rows: Parquet file, folder, glob or pyarrow URI (s3://…)")
    model_name: str = _field("vae", "registered model name in MLflow")
    experiment: str = _field("vae-tables", "MLflow experiment of the run")
    columns: dict[str, str] = field(default_factory=dict, metadata={
        "help": "schema overrides, column name → kind"})
    preset: str | None = _field(None, "the job the model is for: " + ", ".join(PRESETS)
                                + "; fills the model and train keys you do not set with "
                                "that job's measured setting (README, presets)")
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # the model/train keys the file or a flag set: a preset leaves them as they are
    set_keys: frozenset[str] = field(default_factory=frozenset, repr=False, compare=False)
    workers: int = _field(0, "Ray Train workers: 0 = local mode (one process, no DDP), N ≥ 1 "
                          "= N workers (DDP when N ≥ 2)")
    use_gpu: bool = _field(False, "one GPU per worker (NCCL)")
    cpus_per_worker: float | None = _field(None, "CPUs per worker (default: what leaves one "
                                           "CPU per node to Ray Data's readers)")
    placement: str = _field("pack", "where workers go: pack (as few nodes as they fit on: "
                            "the fastest all-reduce) or spread (across nodes: a lost node "
                            "takes fewer workers with it)")
    torch_threads: int = _field(1, "torch threads per worker")
    address: str | None = _field(None, "Ray cluster to join (default: RAY_ADDRESS, else a "
                                 "local Ray); for submit, the dashboard http://HEAD:8265")
    storage_path: str | None = _field(None, "checkpoints and the run folder (default: "
                                      "./ray_results; on a multi-node cluster shared: "
                                      "s3://… or NFS)")
    run_name: str | None = _field(None, "run folder and MLflow run name (default: "
                                  "MODEL_NAME-TIMESTAMP)")
    resume: bool = _field(False, "continue run_name (or the model's latest run) from its last "
                          "checkpoint, in the same MLflow run")
    max_failures: int = _field(1, "worker failures tolerated, each restarting from the last "
                               "checkpoint")
    promote: str = _field("auto", "auto: @champion if held-out log p(x) beats the current "
                          "champion's; never; always")
    max_detection_roc_auc: float | None = _field(
        None, "a second gate for @champion: the synthetic rows' detection ROC-AUC (vae "
        "evaluate's, sampled vs validation rows; 0.5 = indistinguishable) must be at most "
        "this (default: none)")
    schedule: str | None = _field(None, "cron expression of the retraining CronJob that "
                                  "`vae schedule` renders, e.g. '0 3 * * *'")

    def to_dict(self) -> dict:
        """The job as a config file holds it (``vae submit`` and ``vae schedule`` write it
        for the cluster to read back): with a preset, model/train keep only the keys the
        job set, so that the preset is resolved there for the table it reads."""
        d = asdict(self)
        d["model"], d["train"] = self.model.to_dict(), self.train.to_dict()
        d["model"].pop("columns")  # kept once, at the top
        if self.preset:
            d["model"] = {k: v for k, v in d["model"].items() if k in self.set_keys}
            d["train"] = {k: v for k, v in d["train"].items() if k in self.set_keys}
        d.pop("set_keys")
        return d


_TOP = {f.name for f in fields(JobConfig)} - {"model", "train", "set_keys"}


def load_job_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None
                    ) -> JobConfig:
    raw: dict[str, Any] = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: no such config file")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML ({e})") from e
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: expected a mapping of keys at the top level")
    raw = {**raw}
    model, train = dict(raw.pop("model", None) or {}), dict(raw.pop("train", None) or {})
    unknown = sorted(set(raw) - _TOP)
    if unknown:
        raise ConfigError(f"unknown config key '{unknown[0]}' (known: {', '.join(sorted(_TOP))}, "
                          "model, train)")
    model_keys = {f.name for f in fields(ModelConfig)} - {"columns"}
    train_keys = {f.name for f in fields(TrainConfig)}
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key in model_keys:
            model[key] = value
        elif key in train_keys:
            train[key] = value
        elif key == "columns":
            raw["columns"] = {**raw.get("columns", {}), **value}
        elif key in _TOP:
            raw[key] = value
        else:
            raise ConfigError(f"unknown option '{key}'")
    try:
        columns = {str(k): str(v) for k, v in (raw.pop("columns", None) or {}).items()}
        model_cfg = ModelConfig.from_dict({**model, "columns": columns})
        train_cfg = TrainConfig.from_dict(train)
        check_compatible(model_cfg, train_cfg)
        job = JobConfig(**raw, columns=columns, model=model_cfg, train=train_cfg,
                        set_keys=frozenset(model) | frozenset(train))
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from e
    if job.preset is not None and job.preset not in PRESETS:
        raise ConfigError(f"preset '{job.preset}' is not one of {', '.join(PRESETS)}")
    if not job.data:
        raise ConfigError("no input data: set 'data' in the config or pass --data")
    if job.workers < 0 or job.promote not in ("auto", "never", "always"):
        raise ConfigError("workers must be ≥ 0 and promote one of auto, never, always")
    if job.placement not in PLACEMENTS:
        raise ConfigError(f"placement '{job.placement}' is not one of {', '.join(PLACEMENTS)}")
    return job
