import numpy as np
import pyarrow as pa
import pytest

from tests.tables import OVERRIDES, mixed_table
from vae_core import DataError, Kind, SchemaError, TableStatistics, infer_schema
from vae_core.data.statistics import QuantileSketch


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
