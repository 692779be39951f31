"""`vae`'s entry point: parse, run the command quietly (or not), and turn any failure into
one line on stderr with exit status 2 (VAE_DEBUG=1 shows the traceback instead)."""

from __future__ import annotations

import os
import sys
import warnings


def main(argv: list[str] | None = None) -> int:
    from vae_cli.commands import COMMANDS
    from vae_cli.parser import build_parser

    # MLflow's advice on type hints and integer columns is for notebook users, not job logs.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow\..*")
    warnings.filterwarnings("ignore", message=r".*(type hints|Integer columns).*")
    args = build_parser().parse_args(argv)
    from pipelines import logs

    if not args.verbose:
        logs.capture()
    failure = None
    try:
        COMMANDS[args.command](args)
    except Exception as e:
        # vae_core's errors are ValueErrors naming the culprit; MLflow and Ray failures get
        # the same one line.
        if os.environ.get("VAE_DEBUG"):
            logs.release()
            raise
        failure = e
    finally:
        logs.release()
    if failure is not None:
        print(f"vae: error: {one_line(failure)}", file=sys.stderr)
        return 2
    return 0


def one_line(failure: Exception) -> str:
    """The failure's first line; an OSError that names no file (os.getcwd() in a deleted
    folder, say) says which one it could be."""
    text = str(failure).strip()
    first = text.splitlines()[0] if text else type(failure).__name__
    if isinstance(failure, OSError) and failure.filename is None:
        try:
            os.getcwd()
        except OSError:
            return f"{first}: the working directory was removed"
    return first


def console() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console()
