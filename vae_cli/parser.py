"""The `vae` command line's grammar: every command, every flag, each with its help, default
and unit. Nothing here imports Ray, MLflow or torch, so ``vae --help`` answers at once."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from vae_cli.job_flags import add_job_flags, with_default


class OneLineParser(argparse.ArgumentParser):
    """A usage error is one line naming the culprit, exit status 2 (as for bad input)."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _env(name: str) -> str | None:
    return os.environ.get(name)


def _common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("-v", "--verbose", action="store_true",
                        default=bool(_env("VAE_VERBOSE")),
                        help="show Ray's and MLflow's logs on the terminal instead of writing "
                             "them to the log file the first line names (default: off, or on "
                             "when VAE_VERBOSE is set)")
    return parser


def _address(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument("--address", default=_env("RAY_ADDRESS"),
                        help=with_default(text, "RAY_ADDRESS, else a local Ray"
                                          if not _env("RAY_ADDRESS") else _env("RAY_ADDRESS")))


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="vae", description="Variational autoencoders for tables: "
                           "train on Ray, register in MLflow, serve and run batch jobs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return _common(sub.add_parser(name, help=text, description=text))

    demo = command("demo", "fit, score, generate and embed on the bundled Adult table, then "
                   "the same through Ray Train, the MLflow registry and Ray Serve")
    demo.add_argument("--out", type=Path, default=Path("out/demo-model"),
                      help=with_default("where to save the model folder", "out/demo-model"))
    demo.add_argument("--epochs", type=int, default=25,
                      help=with_default("training epochs of each fit", 25))
    demo.add_argument("--library-only", action="store_true",
                      help=with_default("skip the Ray/MLflow training job and serving "
                                        "(parts 2, 3)", False))

    add_job_flags(command("train", "train on Parquet with Ray Train; log and register in "
                          "MLflow (every config key is also a flag)"))
    add_job_flags(command("submit", "submit the training job to a Ray cluster (Jobs API); "
                          "prints the job id"))
    schedule = command("schedule", "print the Kubernetes ConfigMap + CronJob that retrain "
                       "the job on a cron schedule (kubectl apply -f -)")
    add_job_flags(schedule)
    schedule.add_argument("--cron", help=with_default(
        "cron expression, e.g. '0 3 * * *' (03:00 daily, cluster time)",
        "the config's schedule key"))
    schedule.add_argument("--name", default="vae-retrain",
                          help=with_default("name of the CronJob (the ConfigMap gets -job)",
                                            "vae-retrain"))
    schedule.add_argument("--image", default=None, help=with_default(
        "container image with this package installed", "ghcr.io/example/vae-tables:0.1.0"))

    jobs = command("jobs", "submitted jobs: status, logs, stop")
    jobs.add_argument("action", choices=["status", "logs", "stop"],
                      help="status (PENDING, RUNNING, SUCCEEDED…), logs (its output so far) "
                           "or stop")
    jobs.add_argument("job_id", help="the id `vae submit` printed")
    jobs.add_argument("--address", default=_env("RAY_ADDRESS"), help=with_default(
        "Ray dashboard address, e.g. http://HEAD:8265", _env("RAY_ADDRESS") or "RAY_ADDRESS"))

    serve = command("serve", "serve /v1/embed, /v1/score, /v1/generate over HTTP with Ray "
                    "Serve (Ctrl-C stops); VAE_SERVE_TOKEN sets a bearer token")
    _model_flag(serve)
    serve.add_argument("--host", default="127.0.0.1",
                       help=with_default("bind address; 0.0.0.0 exposes it", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=8000, help=with_default("HTTP port", 8000))
    serve.add_argument("--replicas", type=int, default=2, help=with_default(
        "model replicas; with 2, one can die and be replaced while the other answers", 2))
    serve.add_argument("--gpus-per-replica", type=float, default=0,
                       help=with_default("GPUs per replica, fractions allowed", 0))
    serve.add_argument("--max-batch-rows", type=int, default=8192, help=with_default(
        "rows of concurrent requests merged into one forward pass", 8192))
    serve.add_argument("--batch-wait-ms", type=float, default=5.0, help=with_default(
        "milliseconds a batch waits to fill", 5.0))
    _address(serve, "join this Ray cluster instead of starting a local one")
    serve.add_argument("--reload", action="store_true", help=with_default(
        "switch the running app to the version the alias points at now (reconfigure: no "
        "restart, no dropped request)", False))

    for action, text in (("embed", "posterior means z_* of every row of a Parquet input"),
                         ("score", "anomaly scores (ELBO, IWAE log p(x), percentile, flag) of "
                                   "every row of a Parquet input"),
                         ("generate", "synthetic rows with the training schema")):
        add_batch_flags(command(action, f"batch job on Ray Data: {text} → a Parquet folder"),
                        action)

    evaluate = command("evaluate", "how good synthetic rows are: column shapes, pair trends, "
                       "detection ROC-AUC, privacy (DCR), and with --target train-synthetic-"
                       "test-real → report.json, report.html, plots/")
    _model_flag(evaluate)
    evaluate.add_argument("--real", required=True, help="Parquet file or folder of real rows: "
                          "the rows the model learned from, or rows like them (required)")
    evaluate.add_argument("--synthetic", help=with_default(
        "Parquet file or folder of synthetic rows to judge", "--n rows sampled from --model"))
    evaluate.add_argument("--n", type=int, help=with_default(
        "rows to sample from --model when --synthetic is not given", "as many as --real"))
    evaluate.add_argument("--holdout", help=with_default(
        "Parquet of real rows the model never saw (for DCR and TSTR)", "half of --real"))
    evaluate.add_argument("--target", help=with_default(
        "column to predict for train-synthetic-test-real (ROC-AUC, or R² for a number)",
        "none"))
    evaluate.add_argument("--output", type=Path, default=Path("out/evaluation"),
                          help=with_default("folder for the report", "out/evaluation"))
    evaluate.add_argument("--seed", type=int, default=0,
                          help=with_default("seed of sampling, splits and classifiers", 0))

    models = command("models", "registered models: list, promote")
    models_sub = models.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = _common(models_sub.add_parser("list", help="versions, aliases and held-out "
                                            "log p(x)"))
    listing.add_argument("name", nargs="?", help="one registered model (default: all)")
    listing.add_argument("--json", action="store_true",
                         help=with_default("print JSON instead of a table", False))
    promote = _common(models_sub.add_parser("promote", help="point @champion at a version"))
    promote.add_argument("name", help="registered model name")
    promote.add_argument("version", help="its version number")
    return parser


def _model_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="models:/NAME@ALIAS (pinned to the "
                        "version it points at now), models:/NAME/VERSION, runs:/…, s3://… or "
                        "a model folder (required)")


def add_batch_flags(parser: argparse.ArgumentParser, action: str) -> None:
    _model_flag(parser)
    generate = action == "generate"
    parser.add_argument("--input", required=not generate, help=(
        "condition rows, one output row each: Parquet file, folder or glob (default: none)"
        if generate else "Parquet file, folder or glob (required)"))
    parser.add_argument("--output", required=True, help="Parquet folder to write; refused if "
                        "it exists, see --overwrite (required)")
    parser.add_argument("--overwrite", action="store_true", help=with_default(
        "replace --output once the new output is complete", False))
    parser.add_argument("--seed", type=int, default=0, help=with_default(
        "random seed (IWAE noise, generated rows); the same seed gives the same rows", 0))
    if action == "score":
        parser.add_argument("--iwae-samples", type=int, default=None, help=with_default(
            "K, importance samples per row for the IWAE log p(x)", "the model's"))
        parser.add_argument("--top-k", type=int, default=3, help=with_default(
            "columns listed in top_columns", 3))
    if action == "embed":
        parser.add_argument("--return-std", action="store_true", help=with_default(
            "also write the posterior standard deviations zstd_*", False))
    if generate:
        parser.add_argument("--n", type=int, default=None, help=with_default(
            "rows to generate", "one per condition row of --input"))
        parser.add_argument("--condition", action="append", default=[], metavar="COL=VALUE",
                            help="a condition on any modelled column, repeatable: COL=VALUE "
                                 "(repeated for a column: any of the values) or a bound "
                                 "COL>=X, COL>X, COL<=X, COL<X (default: none)")
    parser.add_argument("--actors", type=int, default=None, help=with_default(
        "model actors", "half the cluster's CPUs, or one per GPU share"))
    parser.add_argument("--gpus-per-actor", type=float, default=0.0, help=with_default(
        "GPUs per model actor, fractions allowed", 0.0))
    parser.add_argument("--batch-rows", type=int, default=8192, help=with_default(
        "rows per model call", 8192))
    _address(parser, "join this Ray cluster instead of starting a local one")
