"""vae_core.evaluation: the fidelity measures against closed forms and scipy, each measure
against tables whose answer is known (a table against itself, its columns shuffled apart,
its copies, a shifted column), and the report on disk."""

import json

import numpy as np
import pyarrow as pa
import pytest
import torch
from scipy import stats

from vae_core.data.schema import infer_schema
from vae_core.evaluation import evaluate
from vae_core.evaluation.columns import modelled_columns
from vae_core.evaluation.detection import detection_auc
from vae_core.evaluation.fidelity import (
    column_shapes,
    ks_statistic,
    pair_trends,
    total_variation,
)
from vae_core.evaluation.privacy import dcr, nearest_distance
from vae_core.evaluation.utility import train_test_score


def test_ks_statistic_is_scipys_and_total_variation_its_closed_form():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=500), rng.normal(0.3, 1.2, size=700)
    assert ks_statistic(a, b) == pytest.approx(stats.ks_2samp(a, b).statistic)
    assert ks_statistic(a, a.copy()) == 0
    # p = (1/2, 1/2, 0), q = (0, 1/2, 1/2): ½ (1/2 + 0 + 1/2) = 1/2
    assert total_variation(np.array(["x", "y"]), np.array(["y", "z"])) == pytest.approx(0.5)
    assert total_variation(np.array(["x"] * 3), np.array(["z"] * 2)) == 1.0


@pytest.fixture(scope="module")
def table():
    """Two correlated numbers, a category that follows one of them, a flag, some gaps."""
    rng = np.random.default_rng(1)
    n = 2000
    x = rng.normal(size=n)
    y = 2 * x + rng.normal(0, 0.5, n)
    group = np.where(x > 0.3, "high", np.where(x < -0.3, "low", "mid"))
    income = np.where(y + rng.normal(0, 1, n) > 0, ">50K", "<=50K")
    x_with_gaps = [None if i % 50 == 0 else v for i, v in enumerate(x)]
    return pa.table({"x": pa.array(x_with_gaps, pa.float64()), "y": y, "group": group,
                     "income": income})


@pytest.fixture(scope="module")
def schema(table):
    return infer_schema(table.schema)


def shuffled(table: pa.Table, seed: int) -> pa.Table:
    """Each column permuted on its own: the same marginals, no relation between columns."""
    rng = np.random.default_rng(seed)
    return pa.table({name: table.column(name).take(rng.permutation(table.num_rows))
                     for name in table.column_names})


def test_a_table_against_itself_is_perfect_and_shuffling_keeps_shapes_not_pairs(table, schema):
    columns = modelled_columns(schema)
    assert set(column_shapes(table, table, columns).values()) == {1.0}
    assert set(pair_trends(table, table, columns).values()) == {1.0}
    apart = shuffled(table, 2)
    assert min(column_shapes(table, apart, columns).values()) == 1.0
    trends = pair_trends(table, apart, columns)
    # x and y: ρ ≈ 0.97 in the real table, ≈ 0 shuffled → 1 − 0.97/2 ≈ 0.51
    assert trends["x", "y"] == pytest.approx(1 - abs(np.corrcoef(
        table.column("y").to_numpy(), np.nan_to_num(table.column("x").to_numpy(
            zero_copy_only=False)))[0, 1]) / 2, abs=0.05)
    assert trends["x", "group"] < 0.7 and trends["group", "income"] < 0.9


def test_detection_is_chance_for_real_halves_and_certain_for_a_shifted_column(table, schema):
    columns = modelled_columns(schema)
    a, b = table.slice(0, 1000), table.slice(1000)
    assert detection_auc(a, b, columns) == pytest.approx(0.5, abs=0.06)
    moved = b.set_column(1, "y", pa.compute.add(b.column("y"), 3.0))
    assert detection_auc(a, moved, columns) > 0.95


def test_copies_have_distance_zero_and_new_rows_do_not(table, schema):
    columns = modelled_columns(schema)
    reference, holdout = table.slice(0, 1000), table.slice(1000)
    copied = dcr(reference.slice(0, 300), holdout, reference, columns)
    assert copied["exact_copies_synthetic"] == 1.0 and copied["dcr_synthetic_median"] == 0
    assert copied["exact_copies_holdout"] == 0 and copied["dcr_holdout_median"] > 0


def test_nearest_distance_is_the_brute_force_minimum_and_finds_copies_exactly():
    g = torch.Generator().manual_seed(0)
    b = (torch.rand(3000, 40, generator=g) < 0.1).float()
    b[:, :5] = torch.rand(3000, 5, generator=g)  # one-hot-like columns beside numbers
    a = torch.cat([b[:200], b[200:300] + 1e-4, torch.rand(700, 40, generator=g)])
    brute = torch.cdist(a.double(), b.double()).min(1).values
    got = nearest_distance(a, b)
    assert (got[:200] == 0).all()  # copies: exactly 0, which the matrix-product form misses
    assert torch.allclose(got.double(), brute, atol=1e-6)


def test_tstr_on_real_rows_is_trtr_and_on_shuffled_rows_is_chance(table, schema):
    columns = modelled_columns(schema)
    target = next(c for c in columns if c.name == "income")
    train, test = table.slice(0, 1000), table.slice(1000)
    real = train_test_score(train, test, columns, target)
    assert real > 0.8
    assert train_test_score(shuffled(train, 3), test, columns, target) == pytest.approx(
        0.5, abs=0.08)
    y = next(c for c in columns if c.name == "y")
    assert train_test_score(train, test, columns, y) > 0.8  # R² of y from x (and the rest)


def test_the_report_names_its_figures_and_writes_json_html_and_plots(table, schema, tmp_path):
    real, synthetic = table.slice(0, 1200), shuffled(table.slice(1200), 4)
    report = evaluate(real, synthetic, schema, target="income")
    s = report.summary
    assert s["rows_holdout"] == 600 and s["column_shapes"] > 0.9 and s["pair_trends"] < 0.9
    assert s["detection_roc_auc"] > 0.7 and s["tstr"] < s["trtr"]
    page = report.write(tmp_path, real, synthetic, schema)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["summary"]["tstr"] == pytest.approx(s["tstr"])
    text = page.read_text()
    assert text.count("data:image/png;base64,") == 2 and "income" in text
    assert (tmp_path / "plots" / "marginals.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_input_names_the_culprit(table, schema):
    with pytest.raises(ValueError, match="the synthetic rows: column 'group' is missing"):
        evaluate(table, table.drop(["group"]), schema)
    with pytest.raises(ValueError, match="target 'salary' is not a modelled column"):
        evaluate(table, table, schema, target="salary")
    with pytest.raises(ValueError, match="the real rows holds no rows"):
        evaluate(table.slice(0, 0), table, schema)


def test_tabular_vae_evaluate_samples_when_given_no_rows(adult_cvae, adult_test):
    report = adult_cvae.evaluate(adult_test.slice(0, 1000), seed=1)
    s = report.summary
    assert s["rows_synthetic"] == 1000 and 0.5 < s["column_shapes"] <= 1
    assert 0.5 <= s["detection_roc_auc"] <= 1 and s["dcr_synthetic_median"] > 0
