"""The training job's configuration: a YAML file, and every key also a command-line flag.

    data: data/train.parquet            # file, folder, glob, or any pyarrow URI (s3://…)
    model_name: adult-vae               # registered model name in MLflow
    columns: {income: condition}        # schema overrides (see README, column kinds)
    model: {latent_dim: 8}              # any ModelConfig field
    train: {epochs: 30, beta: 1.0}      # any TrainConfig field
    workers: 0                          # 0 = Ray Train local mode (one process, no DDP)

Flags: ``--data``, ``--model-name``, ``--workers``, ... for the top-level keys,
``--latent-dim``, ``--epochs``, ... for model/train fields, ``--column NAME=KIND``
(repeatable). A flag overrides the file. An unknown key is an error, not a silent no-op.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from vae_core import ModelConfig, TrainConfig
from vae_core.config import check_compatible


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class JobConfig:
    data: str = ""
    model_name: str = "vae"
    experiment: str = "vae-tables"
    columns: dict[str, str] = field(default_factory=dict)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    workers: int = 0  # 0 = local mode; N ≥ 1 = N Ray Train workers (DDP when N ≥ 2)
    use_gpu: bool = False
    cpus_per_worker: float | None = None  # default leaves ≥ 1 CPU for Ray Data's readers
    torch_threads: int = 1
    address: str | None = None  # Ray cluster; default RAY_ADDRESS or a local Ray
    storage_path: str | None = None  # checkpoints; default ./ray_results (must be shared on
    #                                  a multi-node cluster: s3://… or NFS)
    run_name: str | None = None  # default: <model_name>-<timestamp>
    resume: bool = False  # continue run_name (or the model's latest run) from its checkpoint
    max_failures: int = 1  # worker failures tolerated (restart from the last checkpoint)
    promote: str = "auto"  # "auto": champion if it beats the current one; "never"; "always"
    schedule: str | None = None  # cron expression for deploy/k8s CronJob (not used here)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["model"], d["train"] = self.model.to_dict(), self.train.to_dict()
        d["model"].pop("columns")  # kept once, at the top
        return d


_TOP = {f.name for f in fields(JobConfig)} - {"model", "train"}


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
        job = JobConfig(**raw, columns=columns, model=model_cfg, train=train_cfg)
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from e
    if not job.data:
        raise ConfigError("no input data: set 'data' in the config or pass --data")
    if job.workers < 0 or job.promote not in ("auto", "never", "always"):
        raise ConfigError("workers must be ≥ 0 and promote one of auto, never, always")
    return job


def add_job_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config key; defaults are None so that only given flags override."""
    parser.add_argument("--config", type=Path, help="job YAML file")
    parser.add_argument("--column", action="append", default=[], metavar="NAME=KIND",
                        help="schema override, e.g. --column income=condition (repeatable)")
    typed = {"workers": int, "cpus_per_worker": float, "torch_threads": int, "max_failures": int}
    for name in sorted(_TOP - {"columns", "resume", "use_gpu"}):
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=typed.get(name, str))
    parser.add_argument("--resume", action="store_true", default=None)
    parser.add_argument("--use-gpu", action="store_true", default=None)
    for cfg_cls in (ModelConfig, TrainConfig):
        for f in fields(cfg_cls):
            if f.name == "columns":
                continue
            kind = {"int": int, "float": float}.get(str(f.type), str)
            if f.name == "hidden":
                parser.add_argument("--hidden", type=lambda s: [int(v) for v in s.split(",")],
                                    help="hidden layer sizes, e.g. 128,128")
            else:
                parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=kind)


def job_from_args(args: argparse.Namespace) -> JobConfig:
    overrides = {k: v for k, v in vars(args).items() if k not in ("config", "column", "command")}
    columns = {}
    for item in args.column:
        name, sep, kind = item.partition("=")
        if not sep:
            raise ConfigError(f"--column expects NAME=KIND, got '{item}'")
        columns[name] = kind
    overrides["columns"] = columns or None
    return load_job_config(args.config, overrides)
