"""Data sets bundled with the package, for the demo, the tests and the benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq

ADULT_DIR = Path(__file__).parent / "adult"


def adult_path(split: Literal["train", "test"] = "train") -> Path:
    """The UCI Adult census table (see adult/README.md for provenance and cleaning)."""
    if split not in ("train", "test"):
        raise ValueError("split must be 'train' or 'test'")
    return ADULT_DIR / f"{split}.parquet"


def load_adult(split: Literal["train", "test"] = "train") -> pa.Table:
    return pq.read_table(adult_path(split))
