"""Every key of a training job as a flag: ``--data``, ``--workers``, … for JobConfig, and
``--latent-dim``, ``--epochs``, … for ModelConfig / TrainConfig. The help of each flag is
its field's ``metadata["help"]`` with the field's default: one source for both."""

from __future__ import annotations

import argparse
from dataclasses import MISSING, Field, fields
from pathlib import Path

from pipelines.job_config import ConfigError, JobConfig, load_job_config
from vae_core import ModelConfig, TrainConfig

_TYPES = {"int": int, "float": float, "float | None": float, "int | None": int}
_SWITCHES = {"resume", "use_gpu"}
_NOT_FLAGS = {"model", "train", "columns", "set_keys"}


def with_default(text: str, default: object) -> str:
    """``text (default: X)``, escaped for argparse's %-formatting; a text that already says
    its default is kept as it is."""
    if "(default:" in text:
        return text.replace("%", "%%")
    if default is None or default == "":
        shown = "none"
    elif default is False:
        shown = "off"
    elif isinstance(default, tuple | list):
        shown = ",".join(map(str, default))
    else:
        shown = str(default)
    return f"{text} (default: {shown})".replace("%", "%%")


def _default(f: Field) -> object:
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else None


def _add(parser: argparse.ArgumentParser, f: Field, help_text: str) -> None:
    flag = f"--{f.name.replace('_', '-')}"
    if f.name in _SWITCHES:
        parser.add_argument(flag, dest=f.name, action="store_true", default=None,
                            help=help_text)
    elif f.name == "hidden":
        parser.add_argument(flag, dest=f.name, metavar="N,N,…", help=help_text,
                            type=lambda s: [int(v) for v in s.split(",")])
    else:
        parser.add_argument(flag, dest=f.name, type=_TYPES.get(str(f.type), str),
                            help=help_text)


def add_job_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config key; their defaults are None so that only given flags override
    the config file (the help shows the field's own default)."""
    parser.add_argument("--config", type=Path, help="job YAML file, e.g. "
                        "deploy/job.example.yaml; flags override its keys (default: none)")
    parser.add_argument("--column", action="append", default=[], metavar="NAME=KIND",
                        help="schema override, e.g. --column income=condition; kinds: "
                             "continuous, integer, categorical, binary, datetime, id, ignore, "
                             "condition (repeatable; default: inferred from the Arrow types)")
    for f in sorted(fields(JobConfig), key=lambda f: f.name):
        if f.name not in _NOT_FLAGS:
            _add(parser, f, with_default(f.metadata["help"], _default(f)))
    for cfg_cls in (ModelConfig, TrainConfig):
        for f in fields(cfg_cls):
            if f.name not in _NOT_FLAGS:
                _add(parser, f, with_default(f.metadata["help"], _default(f)))


def job_from_args(args: argparse.Namespace, ignore: tuple[str, ...] = ()) -> JobConfig:
    """The job: the --config file, overridden by the flags given."""
    skip = {"config", "column", "command", "verbose", *ignore}
    overrides = {k: v for k, v in vars(args).items() if k not in skip}
    columns = {}
    for item in args.column:
        name, sep, kind = item.partition("=")
        if not sep:
            raise ConfigError(f"--column expects NAME=KIND, got '{item}'")
        columns[name] = kind
    overrides["columns"] = columns or None
    return load_job_config(args.config, overrides)
