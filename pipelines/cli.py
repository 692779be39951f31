"""The `vae` command line. Errors from bad input print as one line and exit non-zero."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    from pipelines.job_config import add_job_flags

    parser = argparse.ArgumentParser(prog="vae", description="Variational autoencoders for tables.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="fit, score, generate and embed on the bundled Adult table")
    demo.add_argument("--out", type=Path, default=Path("out/demo-model"),
                      help="where to save the model folder (default: out/demo-model)")
    demo.add_argument("--epochs", type=int, default=25)

    train = sub.add_parser("train", help="train on Parquet with Ray Train; log and register in "
                           "MLflow (every config key is also a flag)")
    add_job_flags(train)

    models = sub.add_parser("models", help="registered models: list, promote")
    models_sub = models.add_subparsers(dest="action", required=True)
    listing = models_sub.add_parser("list", help="versions, aliases and held-out log p(x)")
    listing.add_argument("name", nargs="?")
    listing.add_argument("--json", action="store_true")
    promote = models_sub.add_parser("promote", help="point @champion at a version")
    promote.add_argument("name")
    promote.add_argument("version")
    return parser


def _models(args: argparse.Namespace) -> None:
    from pipelines import registry, tracking

    tracking.connect("vae-tables")
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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            from pipelines.demo import run

            run(args.out, args.epochs)
        elif args.command == "train":
            from pipelines.job_config import job_from_args
            from pipelines.train import train

            train(job_from_args(args), log=lambda s: print(s, flush=True))
        elif args.command == "models":
            _models(args)
    except (ValueError, OSError, RuntimeError) as e:
        # vae_core's errors are ValueErrors naming the culprit; MLflow/Ray failures get the
        # same one line. The first line only: a traceback is for the logs, not the user.
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"vae: error: {first}", file=sys.stderr)
        return 2
    return 0


def console() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console()
