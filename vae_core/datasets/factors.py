"""A table generated from known independent factors, for measuring disentanglement.

Four discrete factors, drawn independently and uniformly (seeded), in the spirit of
dSprites' shape / scale / colour / orientation:

    shape ∈ {0, 1, 2}    scale ∈ {0, …, 5}    hue ∈ {0, …, 4}    tilt ∈ {0, …, 3}

and eight observed columns of mixed types, each a noisy, non-linear function of one or two
factors, so that a model sees the factors only through entangled measurements:

    area       float   exp(0.3·scale) · (1 + 0.2·shape) + N(0, 0.05)
    perimeter  float   (scale + 1) · (3.5, 4.0, 3.1)[shape] + N(0, 0.1)
    red        float   hue / 4 + N(0, 0.05)
    green      float   1 − (hue / 4)² + N(0, 0.05)
    angle      float   15·tilt + N(0, 2)
    count      int64   Poisson(1 + scale)
    kind       string  ("disc", "square", "star")[shape], 5 % replaced by a random kind
    band       string  f"h{hue}-{'odd' if tilt % 2 else 'even'}"

``independent_factors(n, seed)`` returns the table and the factors [n, 4] (int64).

Every factor is ordinal and every column a monotone function of it (given the other
factor), so that one latent dimension can hold one factor. An earlier version put hue on
a circle (red, green = cos, sin of 2π·hue/5): no single dimension can hold a circular
factor without a cut, MIG is low for hue whatever the model (≈ 0.1 for VAE, β-VAE and
β-TCVAE alike), and the total-correlation penalty fights the circle's dependent axes.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

FACTORS = ("shape", "scale", "hue", "tilt")
FACTOR_SIZES = (3, 6, 5, 4)
KINDS = ("disc", "square", "star")


def independent_factors(n: int, seed: int = 0) -> tuple[pa.Table, np.ndarray]:
    rng = np.random.default_rng(seed)
    f = np.stack([rng.integers(0, size, n) for size in FACTOR_SIZES], axis=1)
    shape, scale, hue, tilt = f.T
    kind = np.where(rng.random(n) < 0.05, rng.integers(0, 3, n), shape)
    table = pa.table({
        "area": np.exp(0.3 * scale) * (1 + 0.2 * shape) + rng.normal(0, 0.05, n),
        "perimeter": (scale + 1) * np.array([3.5, 4.0, 3.1])[shape] + rng.normal(0, 0.1, n),
        "red": hue / 4 + rng.normal(0, 0.05, n),
        "green": 1 - (hue / 4) ** 2 + rng.normal(0, 0.05, n),
        "angle": 15.0 * tilt + rng.normal(0, 2, n),
        "count": rng.poisson(1 + scale).astype(np.int64),
        "kind": pa.array(np.array(KINDS)[kind]),
        "band": pa.array([f"h{h}-{'odd' if t % 2 else 'even'}" for h, t in zip(hue, tilt,
                                                                               strict=True)]),
    })
    return table, f.astype(np.int64)
