"""The `vae` command line. Errors from bad input print as one line and exit non-zero."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vae", description="Variational autoencoders for tables.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="fit, score, generate and embed on the bundled Adult table")
    demo.add_argument("--out", type=Path, default=Path("out/demo-model"),
                      help="where to save the model folder (default: out/demo-model)")
    demo.add_argument("--epochs", type=int, default=25)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            from pipelines.demo import run

            run(args.out, args.epochs)
    except (ValueError, OSError) as e:  # vae_core's errors are ValueErrors naming the culprit
        print(f"vae: error: {e}", file=sys.stderr)
        return 2
    return 0


def console() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console()
