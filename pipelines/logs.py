"""A quiet terminal: Ray's and MLflow's logs go to a file, the CLI's own lines to stdout.

``capture()`` (the CLI does it unless ``--verbose``) points this process's stderr — file
descriptor 2, so that Python loggers, warnings, MLflow's messages and the Ray processes
started from here all follow — at a buffer, and moves the lines Ray prints on stdout
(``(raylet) WARNING …``) to it. The job names the place once it knows it
(``attach``: the Ray Train run folder, ``OUTPUT.log`` beside a batch output, ``logs/``):
the buffer is copied there and stderr writes on into that file. ``release()`` gives the
terminal its stderr back (the CLI prints its one-line errors after that). Without
``capture()`` (library use, tests) every function here is a no-op.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

LOGS_FOLDER = Path("logs")


# How Ray prefixes what it prints on the driver's stdout even without log_to_driver: the
# raylet's warnings ("(raylet) WARNING: 8 PYTHON worker processes…"), workers' lines.
_RAY_LINE = re.compile(r"^(\x1b\[[0-9;]*m)?\((raylet|autoscaler|pid=\d+|\w+ pid=\d+)")


class _RayLinesToLog(io.TextIOBase):
    """stdout that sends Ray's prefixed lines to stderr (the log file), the rest through."""

    def __init__(self, stdout: IO[str]) -> None:
        self.stdout, self.pending = stdout, ""

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            sink = sys.stderr if _RAY_LINE.match(line) else self.stdout
            sink.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        if self.pending and not _RAY_LINE.match(self.pending):
            self.stdout.write(self.pending)
            self.pending = ""
        self.stdout.flush()

    def isatty(self) -> bool:
        return self.stdout.isatty()

    def fileno(self) -> int:
        return self.stdout.fileno()


class _Capture:
    def __init__(self) -> None:
        _flush()
        self.terminal = os.dup(2)
        self.buffer: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - see release()
        os.dup2(self.buffer.fileno(), 2)
        self.file: IO[bytes] | None = None
        self.path: Path | None = None
        self.stdout, sys.stdout = sys.stdout, _RayLinesToLog(sys.stdout)

    def attach(self, path: Path) -> Path:
        if self.path is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(path, "ab")  # noqa: SIM115 - closed in release()
            _flush()
            self.buffer.seek(0)
            shutil.copyfileobj(self.buffer, self.file)
            self.file.flush()
            os.dup2(self.file.fileno(), 2)
            self.path = path
        return self.path

    def release(self) -> None:
        _flush()
        sys.stdout = self.stdout
        os.dup2(self.terminal, 2)
        os.close(self.terminal)
        self.buffer.close()
        if self.file:
            self.file.close()


_capture: _Capture | None = None


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()


def capture() -> None:
    """From now on stderr goes to a buffer, then to the file ``attach`` names."""
    global _capture
    if _capture is None:
        _capture = _Capture()


def capturing() -> bool:
    return _capture is not None


def attach(path: Path | None) -> Path | None:
    """Write the captured logs to ``path`` (the first call wins); where they go, or None
    when nothing is captured (then nothing is created)."""
    if _capture is None or path is None:
        return None
    return _capture.attach(Path(path))


def release() -> None:
    """stderr back to the terminal; logs not yet attached to a file are dropped."""
    global _capture
    if _capture is not None:
        _capture.release()
        _capture = None


def beside(output: str) -> Path:
    """``OUTPUT.log`` next to a local output; ``logs/NAME-TIME.log`` for a remote one."""
    if "://" in output:
        return in_logs_folder(output.rstrip("/").rsplit("/", 1)[-1] or "output")
    path = Path(output).expanduser()
    return path.with_name(path.name + ".log")


def in_logs_folder(name: str) -> Path:
    """``logs/NAME-YYYYmmdd-HHMMSS.log`` under the working directory."""
    return LOGS_FOLDER / f"{name}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}.log"
