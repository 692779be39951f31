"""The `vae` command line. Errors from bad input print as one line and exit non-zero."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    from pipelines.job_config import add_job_flags

    parser = argparse.ArgumentParser(prog="vae", description="Variational autoencoders for tables.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="fit, score, generate and embed on the bundled Adult table")
    demo.add_argument("--out", type=Path, default=Path("out/demo-model"),
                      help="where to save the model folder (default: out/demo-model)")
    demo.add_argument("--epochs", type=int, default=25)
    demo.add_argument("--library-only", action="store_true",
                      help="skip the Ray/MLflow training job and serving (parts 2, 3)")

    train = sub.add_parser("train", help="train on Parquet with Ray Train; log and register in "
                           "MLflow (every config key is also a flag)")
    add_job_flags(train)

    submit = sub.add_parser("submit", help="submit the training job to a Ray cluster (Jobs API)")
    add_job_flags(submit)

    jobs = sub.add_parser("jobs", help="submitted jobs: status, logs, stop")
    jobs.add_argument("action", choices=["status", "logs", "stop"])
    jobs.add_argument("job_id")
    jobs.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                      help="Ray dashboard address, e.g. http://HEAD:8265 (default: RAY_ADDRESS)")

    serve = sub.add_parser("serve", help="serve /v1/embed, /v1/score, /v1/generate over HTTP "
                           "with Ray Serve (Ctrl-C stops); VAE_SERVE_TOKEN sets a bearer token")
    serve.add_argument("--model", required=True,
                       help="models:/NAME@ALIAS, models:/NAME/VERSION or a model folder")
    serve.add_argument("--host", default="127.0.0.1",
                       help="bind address (default 127.0.0.1; 0.0.0.0 exposes it)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--replicas", type=int, default=1)
    serve.add_argument("--gpus-per-replica", type=float, default=0)
    serve.add_argument("--max-batch-rows", type=int, default=8192,
                       help="rows of concurrent requests merged into one forward pass")
    serve.add_argument("--batch-wait-ms", type=float, default=5.0,
                       help="how long a batch waits to fill")
    serve.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                       help="join this Ray cluster instead of starting a local one")
    serve.add_argument("--reload", action="store_true",
                       help="switch the running app to the version the alias points at now "
                            "(reconfigure: no restart, no dropped request)")

    for action, text in (("embed", "posterior means z_* of every row of a Parquet input"),
                         ("score", "anomaly scores (ELBO, IWAE log p(x), percentile, flag) of "
                                   "every row of a Parquet input"),
                         ("generate", "synthetic rows with the training schema")):
        batch = sub.add_parser(action, help=f"batch job on Ray Data: {text} → a Parquet folder")
        add_batch_flags(batch, action)

    models = sub.add_parser("models", help="registered models: list, promote")
    models_sub = models.add_subparsers(dest="action", required=True)
    listing = models_sub.add_parser("list", help="versions, aliases and held-out log p(x)")
    listing.add_argument("name", nargs="?")
    listing.add_argument("--json", action="store_true")
    promote = models_sub.add_parser("promote", help="point @champion at a version")
    promote.add_argument("name")
    promote.add_argument("version")
    return parser


def add_batch_flags(parser: argparse.ArgumentParser, action: str) -> None:
    parser.add_argument("--model", required=True,
                        help="models:/NAME@ALIAS, models:/NAME/VERSION or a model folder")
    parser.add_argument("--input", required=action != "generate",
                        help="Parquet file, folder or glob" + (
                            "; for generate, condition rows (one output row each)"
                            if action == "generate" else ""))
    parser.add_argument("--output", required=True,
                        help="Parquet folder to write (refused if it exists, see --overwrite)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --output once the new output is complete")
    parser.add_argument("--seed", type=int, default=0)
    if action == "score":
        parser.add_argument("--iwae-samples", type=int, default=None,
                            help="K for the IWAE log p(x) (default: the model's)")
        parser.add_argument("--top-k", type=int, default=3,
                            help="columns listed in top_columns")
    if action == "embed":
        parser.add_argument("--return-std", action="store_true",
                            help="also write the posterior standard deviations zstd_*")
    if action == "generate":
        parser.add_argument("--n", type=int, default=None, help="rows to generate")
        parser.add_argument("--condition", action="append", default=[], metavar="COL=VALUE",
                            help="fix a condition column (repeatable)")
    parser.add_argument("--actors", type=int, default=None,
                        help="model actors (default: half the cluster's CPUs)")
    parser.add_argument("--gpus-per-actor", type=float, default=0.0)
    parser.add_argument("--batch-rows", type=int, default=8192,
                        help="rows per model call")
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                        help="join this Ray cluster instead of starting a local one")


def _batch(args: argparse.Namespace) -> None:
    from pipelines.batch import BatchJob, run

    conditions = {}
    for item in getattr(args, "condition", []):
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--condition {item!r}: expected COL=VALUE")
        conditions[name] = value
    job = BatchJob(args.command, args.model, args.output, args.input, getattr(args, "n", None),
                   conditions, args.seed, getattr(args, "iwae_samples", None),
                   getattr(args, "top_k", 3), getattr(args, "return_std", False),
                   args.overwrite, args.actors, args.gpus_per_actor, args.batch_rows,
                   args.address)
    run(job, log=lambda s: print(s, flush=True))


def _models(args: argparse.Namespace) -> None:
    from pipelines import registry, tracking

    tracking.use()
    if args.action == "promote":
        registry.promote(args.name, args.version)
        print(f"{args.name} v{args.version} is now @champion")
        return
    rows = registry.list_versions(args.name)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"{'name':24} {'version':>7}  {'aliases':22} {'held-out log p(x)':>18}")
    for r in rows:
        print(f"{r['name']:24} {r['version']:>7}  {','.join(r['aliases']) or '-':22} "
              f"{r['val_log_px'] or '-':>18}")


def _serve(args: argparse.Namespace) -> None:
    from pipelines import ray_runtime, tracking
    from serving import deployment
    from serving.service import is_local, resolve_model
    from vae_core import TabularVAE

    model_uri, extra = args.model, {}
    if is_local(model_uri):
        model_uri = str(Path(model_uri).resolve())  # replicas run in another directory
    else:
        extra["tracking_uri"] = tracking.use()
    # Fail here, in one line, rather than in a replica: unknown model, alias or folder.
    folder, info = resolve_model(model_uri)
    TabularVAE.load(folder)
    version = info["version"]
    config = deployment.serve_config(
        model_uri, version, args.host, args.port, args.replicas, args.gpus_per_replica,
        token=os.environ.get("VAE_SERVE_TOKEN"), max_batch_rows=args.max_batch_rows,
        batch_wait_timeout_s=args.batch_wait_ms / 1000, **extra)
    ray_runtime.init(args.address or ("auto" if args.reload else None))
    deployment.deploy(config)
    served = model_uri + (f" (version {version})" if version else "")
    if args.reload:
        print(f"reloaded: now serving {served}")
        return
    print(f"serving {served} at http://{args.host}:{args.port} (OpenAPI: /docs); Ctrl-C stops",
          flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        from ray import serve

        serve.shutdown()


def main(argv: list[str] | None = None) -> int:
    # MLflow's advice on type hints and integer columns is for notebook users, not job logs.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow\..*")
    warnings.filterwarnings("ignore", message=r".*(type hints|Integer columns).*")
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            from pipelines.demo import run

            run(args.out, args.epochs)
            if not args.library_only:
                from pipelines.demo import run_job, run_serving

                run_job(args.epochs)
                run_serving()
        elif args.command == "train":
            from pipelines.job_config import job_from_args
            from pipelines.train import train

            train(job_from_args(args), log=lambda s: print(s, flush=True), progress=True)
        elif args.command == "submit":
            from pipelines import submit
            from pipelines.job_config import job_from_args

            job = job_from_args(args)
            address = job.address or os.environ.get("RAY_ADDRESS")
            if not address:
                raise ValueError("vae submit needs --address http://HEAD:8265 (or RAY_ADDRESS)")
            print(submit.submit(job, address))
        elif args.command == "jobs":
            from pipelines import submit

            if not args.address:
                raise ValueError("vae jobs needs --address http://HEAD:8265 (or RAY_ADDRESS)")
            action = {"status": submit.status, "logs": submit.logs, "stop": submit.stop}
            print(action[args.action](args.address, args.job_id))
        elif args.command == "serve":
            _serve(args)
        elif args.command in ("embed", "score", "generate"):
            _batch(args)
        elif args.command == "models":
            _models(args)
    except Exception as e:
        # vae_core's errors are ValueErrors naming the culprit; MLflow and Ray failures get
        # the same one line. VAE_DEBUG=1 shows the traceback.
        if os.environ.get("VAE_DEBUG"):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"vae: error: {first}", file=sys.stderr)
        return 2
    return 0


def console() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console()
