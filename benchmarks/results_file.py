"""benchmarks/RESULTS.md, one section per benchmark, each rewritten in place.

Every benchmark renders one Markdown section that starts with a ``## `` heading;
``write_section`` replaces the section with that heading (or appends it), so that
``make bench`` and ``make bench-variants`` each refresh their own figures and leave the
others' alone, and a rerun never duplicates a section.
"""

from __future__ import annotations

import re
from pathlib import Path

TITLE = "# Benchmark results\n"


def write_section(path: Path, section: str) -> None:
    section = section.strip("\n") + "\n"
    heading = next(line for line in section.splitlines() if line.startswith("## "))
    text = path.read_text() if path.exists() else TITLE
    # A section runs from its heading to the next "## " heading or the end of the file.
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")
