"""Tables the unit tests share (a module, not a test file: test modules do not import
each other)."""

import datetime as dt

import numpy as np
import pyarrow as pa


def mixed_table(n: int = 300, seed: int = 0) -> pa.Table:
    """Every column kind, with nulls, datetimes (tz-aware and dates) and rare categories."""
    rng = np.random.default_rng(seed)
    null = rng.random(n) < 0.1
    cats = rng.choice(["a", "b", "c", "rare-1", "rare-2"], n, p=[0.5, 0.3, 0.18, 0.01, 0.01])
    ts = (1_600_000_000 + rng.integers(0, 10**7, n)) * 10**6  # microseconds (int64)
    return pa.table({
        "id": pa.array([f"row-{i}" for i in range(n)]),
        "price": pa.array(rng.lognormal(3, 1, n), mask=null),
        "count": pa.array(rng.poisson(4, n).astype(np.int32)),
        "flag": pa.array(rng.random(n) < 0.3, mask=rng.random(n) < 0.05),
        "city": pa.array(cats, mask=rng.random(n) < 0.05).dictionary_encode(),
        "plain_city": pa.array(cats),
        "seen": pa.array(ts, pa.timestamp("us", tz="UTC"), mask=rng.random(n) < 0.05),
        "day": pa.array([dt.date(2020, 1, 1) + dt.timedelta(days=int(d))
                         for d in rng.integers(0, 900, n)], pa.date32()),
        "segment": pa.array(rng.choice([1, 2, 3], n).astype(np.int64)),
        "blob": pa.array([b"x"] * n, pa.binary()),
    })


OVERRIDES = {"id": "id", "segment": "condition:categorical", "blob": "ignore"}
