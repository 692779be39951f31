"""MIG on codes whose answer is known, and the factor generator's promises."""

import numpy as np
import pyarrow as pa

from vae_core.datasets.factors import FACTOR_SIZES, independent_factors
from vae_core.disentanglement import mutual_information_gap


def test_mig_is_one_for_the_factors_themselves_and_low_for_a_rotation():
    _, f = independent_factors(20_000, seed=0)
    rng = np.random.default_rng(0)
    codes = f + rng.normal(0, 0.01, f.shape)  # one dimension per factor, nothing else
    mig, gaps = mutual_information_gap(codes, f)
    assert mig > 0.99 and gaps.min() > 0.99
    rotated = codes @ np.linalg.qr(rng.normal(size=(4, 4)))[0]  # every dim mixes factors
    assert mutual_information_gap(rotated, f)[0] < 0.35
    duplicated = np.concatenate([codes, codes[:, :1]], axis=1)  # shape captured twice
    _, gaps = mutual_information_gap(duplicated, f)
    assert gaps[0] < 1e-9 and gaps[1:].min() > 0.99  # a tie is no gap


def test_the_factor_table_is_seeded_mixed_type_and_its_factors_independent():
    table, f = independent_factors(30_000, seed=3)
    again, f_again = independent_factors(30_000, seed=3)
    assert table.equals(again) and np.array_equal(f, f_again)
    assert table.schema.field("kind").type == pa.string()
    assert table.schema.field("count").type == pa.int64()
    for k, size in enumerate(FACTOR_SIZES):
        assert set(np.unique(f[:, k])) == set(range(size))
    # independence: the empirical joint of two factors is the product of their marginals
    joint = np.histogram2d(f[:, 1], f[:, 2], bins=(6, 5))[0] / len(f)
    product = np.outer(np.bincount(f[:, 1]), np.bincount(f[:, 2])) / len(f) ** 2
    assert np.abs(joint - product).max() < 0.005
