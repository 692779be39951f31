import numpy as np
import pyarrow as pa
import pytest

from tests.tables import OVERRIDES, mixed_table
from vae_core import DataError, Kind, SchemaError, TableStatistics, infer_schema
from vae_core.data.statistics import QuantileSketch, zero_one_as_binary


def test_schema_inference_and_overrides():
    t = mixed_table()
    schema = infer_schema(t.schema, OVERRIDES)
    kinds = {c.name: c.kind for c in schema.columns}
    assert kinds == {"id": Kind.ID, "price": Kind.CONTINUOUS, "count": Kind.INTEGER,
                     "flag": Kind.BINARY, "city": Kind.CATEGORICAL, "plain_city": Kind.CATEGORICAL,
                     "seen": Kind.DATETIME, "day": Kind.DATETIME, "segment": Kind.CATEGORICAL,
                     "blob": Kind.IGNORE}
    assert [c.name for c in schema.conditions] == ["segment"]
    assert "segment" not in [c.name for c in schema.features]


@pytest.mark.parametrize("overrides, column, words", [
    ({"nope": "id"}, "nope", "not in the table"),
    ({"price": "sometimes"}, "price", "unknown override"),
    ({"plain_city": "continuous"}, "plain_city", "cannot model"),
    ({}, "blob", "not supported"),
])
def test_schema_errors_name_the_column(overrides, column, words):
    with pytest.raises(SchemaError, match=words) as e:
        infer_schema(mixed_table().schema, overrides)
    assert e.value.column == column and f"'{column}'" in str(e.value)


def test_statistics_merge_equals_statistics_of_concatenation():
    t = mixed_table(900)
    schema = infer_schema(t.schema, OVERRIDES)
    whole = TableStatistics.of(schema, t)
    slices = ((0, 100), (100, 500), (600, 300))  # offset, length: three uneven parts
    parts = [TableStatistics.of(schema, t.slice(a, b)) for a, b in slices]
    merged = parts[0].merge(parts[1]).merge(parts[2])
    reverse = parts[2].merge(parts[1].merge(parts[0]))
    for m in (merged, reverse):
        for name, col in whole.columns.items():
            other = m.columns[name]
            assert (other.rows, other.nulls, other.categories) == (col.rows, col.nulls,
                                                                  col.categories), name
            assert other.sketch == col.sketch, name
            assert other.moments.count == col.moments.count
            for f in ("mean", "m2", "min", "max"):
                assert getattr(other.moments, f) == pytest.approx(getattr(col.moments, f),
                                                                  rel=1e-12, abs=1e-9), (name, f)
    # Ray Data blocks send their statistics as JSON (pipelines.dataset).
    import json

    restored = TableStatistics.from_dict(json.loads(json.dumps(whole.to_dict())))
    assert restored.to_dict() == whole.to_dict()
    # Each bucket knows its smallest and largest value: one value exactly, or a range.
    low, high = whole.columns["count"].sketch.bounds()
    assert (low == high).all() and set(low) == set(t.column("count").to_pylist())


def test_sketch_quantiles_have_the_promised_relative_accuracy():
    x = np.random.default_rng(1).lognormal(0, 2, 20000) * np.where(
        np.random.default_rng(2).random(20000) < 0.3, -1, 1)
    sketch = QuantileSketch()
    sketch.update(x)
    for q in (0.01, 0.1, 0.5, 0.9, 0.99):
        exact = np.quantile(x, q, method="lower")
        assert sketch.quantile(q) == pytest.approx(exact, rel=2 * sketch.relative_accuracy)


def test_fitting_refuses_empty_and_all_null_columns():
    t = mixed_table()
    schema = infer_schema(t.schema, OVERRIDES)
    with pytest.raises(DataError, match="empty"):
        TableStatistics.of(schema, t.slice(0, 0)).check_fittable()
    all_null = t.set_column(1, "price", pa.nulls(t.num_rows, pa.float64()))
    with pytest.raises(DataError, match="'price' is null in every row"):
        TableStatistics.of(schema, all_null).check_fittable()


def test_nan_and_inf_are_refused_with_the_column_name():
    t = mixed_table()
    schema = infer_schema(t.schema, OVERRIDES)
    for bad in (np.nan, np.inf):
        values = t.column("price").to_numpy(zero_copy_only=False).copy()
        values[3] = bad
        with pytest.raises(DataError, match="column 'price'"):
            TableStatistics.of(schema, t.set_column(1, "price", pa.array(values)))


def test_numeric_columns_of_0_and_1_become_flags_with_their_exact_counts():
    rng = np.random.default_rng(0)
    n = 200
    dummy = rng.integers(0, 2, n).astype(float)
    table = pa.table({
        "dummy": pa.array(np.where(np.arange(n) % 50 == 0, None, dummy).tolist(),
                          pa.float64()),  # 0.0/1.0 with nulls
        "flag01": rng.integers(0, 2, n).astype(float),  # 0.0/1.0, no nulls
        "count01": rng.integers(0, 2, n),  # 0/1 integers: a count, which may exceed 1 later
        "kept": rng.integers(0, 2, n).astype(float),  # 0/1, but the user named its kind
        "three": rng.integers(0, 3, n).astype(float),  # 0, 1 and 2: a number
        "zeros": np.zeros(n),  # never 1: constant, left as it is
        "price": rng.normal(size=n)})
    schema = infer_schema(table.schema, {"kept": "continuous"})
    parts = [TableStatistics.of(schema, table.slice(a, 100)) for a in (0, 100)]
    stats = parts[0].merge(parts[1])  # as the Ray Data statistics pass merges blocks
    flagged_schema, flagged = zero_one_as_binary(schema, stats, keep={"kept"})
    kinds = {c.name: c.kind for c in flagged_schema.columns}
    assert kinds == {"dummy": Kind.BINARY, "flag01": Kind.BINARY, "count01": Kind.INTEGER,
                     "kept": Kind.CONTINUOUS,
                     "three": Kind.CONTINUOUS, "zeros": Kind.CONTINUOUS,
                     "price": Kind.CONTINUOUS}
    present = dummy[np.arange(n) % 50 != 0]
    assert flagged.columns["dummy"].categories == {1: int(present.sum()),
                                                    0: int(len(present) - present.sum())}
    assert flagged.columns["dummy"].nulls == 4
    ones = int(table.column("flag01").to_numpy().sum())
    assert flagged.columns["flag01"].categories == {1: ones, 0: n - ones}
    # A flag's statistics equal those of the same column declared binary by the user.
    declared = infer_schema(table.schema, {"dummy": "binary", "kept": "continuous"})
    assert flagged.columns["dummy"].to_dict() == TableStatistics.of(
        declared, table).columns["dummy"].to_dict()
    # One block with a 2 in it makes the column a number for the whole table, also as JSON.
    import json

    two = table.set_column(1, "flag01", pa.array(np.full(n, 2.0)))
    merged = TableStatistics.from_dict(json.loads(json.dumps(
        stats.merge(TableStatistics.of(schema, two)).to_dict())))
    assert not merged.columns["flag01"].zero_one and merged.columns["dummy"].zero_one
    assert {c.name: c.kind for c in zero_one_as_binary(schema, merged)[0].columns}[
        "flag01"] is Kind.CONTINUOUS
