import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tests.tables import OVERRIDES, mixed_table
from vae_core import ColumnTransformer, DataError, SchemaError, TableStatistics, infer_schema


def fitted(t: pa.Table, numeric_transform: str = "quantile") -> ColumnTransformer:
    schema = infer_schema(t.schema, OVERRIDES)
    return ColumnTransformer.fit(schema, TableStatistics.of(schema, t),
                                 numeric_transform=numeric_transform)


def modelled(t: pa.Table, transformer: ColumnTransformer) -> pa.Table:
    names = [c.name for c in transformer.schema.columns if c.kind.modelled]
    return t.select(names)


@pytest.mark.parametrize("numeric_transform", ["quantile", "standard", "pooled"])
def test_inverse_of_transform_is_identity_on_a_mixed_table(numeric_transform):
    t = mixed_table(500)
    transformer = fitted(t, numeric_transform)
    enc = transformer.transform(t)
    assert enc.x.dtype == np.float32 and enc.x.shape == (500, transformer.x_dim)
    back = transformer.inverse(enc.x.astype(np.float64), enc.c.astype(np.float64))
    assert back.schema == t.schema  # every column, every dtype (dictionary, tz, date32)
    assert (enc.unseen == 0).all()
    for name in modelled(t, transformer).column_names:
        want, got = t.column(name), back.column(name)
        assert got.null_count == want.null_count, name
        # Continuous values pass through float32 z: equal to float32 precision
        # (integers, dates, categories and flags come back exactly).
        if name == "price":
            np.testing.assert_allclose(got.to_numpy(zero_copy_only=False),
                                       want.to_numpy(zero_copy_only=False), rtol=1e-5)
        elif name == "seen":
            seconds = [pc.cast(a, pa.int64()).to_numpy(zero_copy_only=False) / 1e6
                       for a in (got.combine_chunks(), want.combine_chunks())]
            np.testing.assert_allclose(seconds[0], seconds[1], atol=1.0)
        else:
            assert got.equals(want), name


def test_the_pooled_transform_keeps_the_tables_own_units():
    # One scale for every numeric column: differences in z are differences in x over the
    # same s, so distances between rows weigh columns as the data does.
    t = mixed_table(500)
    transformer = fitted(t, "pooled")
    numeric = [n for n, e in transformer.encoders.items() if hasattr(e, "qmap")]
    assert len(numeric) >= 2
    maps = [transformer.encoders[n].qmap for n in numeric]
    scales = {m.std for m in maps}
    assert len(scales) == 1
    standard = fitted(t, "standard")
    own = np.array([standard.encoders[n].qmap.std for n in numeric])
    np.testing.assert_allclose(scales.pop(), np.sqrt(np.mean(own ** 2)))
    for m in maps:
        z, _ = m.forward(np.array([m.mean, m.mean + 1.0]))
        np.testing.assert_allclose(z, [0.0, 1.0 / m.std])


def test_transform_is_monotone_and_extrapolates_instead_of_clipping():
    t = mixed_table(500)
    transformer = fitted(t)
    qmap = transformer.encoders["price"].qmap
    x = np.linspace(-50, 500, 2000)  # far beyond both ends of the training range
    z, high = qmap.forward(x)
    np.testing.assert_array_equal(z, high)  # a continuous column: points, no atoms
    assert (np.diff(z) > 0).all()
    np.testing.assert_allclose(qmap.inverse(z), x, rtol=1e-9, atol=1e-9)
    top = qmap.forward(np.array([qmap.x_knots[-1]]))[0][0]
    assert qmap.forward(np.array([qmap.x_knots[-1] * 3]))[0][0] > top + 1
    # Generated values, by contrast, stay inside the training range.
    gen = qmap.inverse(np.array([-40.0, 40.0]), generated=True)
    assert gen[0] == qmap.x_knots[0] and gen[1] == qmap.x_knots[-1]


def test_unseen_category_goes_to_the_unknown_slot_and_is_counted():
    t = mixed_table(300)
    transformer = fitted(t)
    novel = t.set_column(t.schema.get_field_index("plain_city"), "plain_city",
                         pa.array(["a", "never-seen"] + ["b"] * 298))
    enc = transformer.transform(novel)
    span = next(s for s in transformer.feature_spans if s.name == "plain_city")
    block = enc.x[:, span.start:span.start + span.width]
    assert block[1, -1] == 1.0 and block[0, -1] == 0.0  # unknown is the last slot
    assert enc.unseen.tolist()[:3] == [0, 1, 0]


def test_bad_columns_are_named():
    t = mixed_table(100)
    transformer = fitted(t)
    with pytest.raises(SchemaError, match="'count' is missing"):
        transformer.transform(t.drop_columns(["count"]))
    as_text = t.set_column(t.schema.get_field_index("price"), "price",
                           pc.cast(t.column("price"), pa.string()))
    with pytest.raises(SchemaError, match="column 'price': expected a number"):
        transformer.transform(as_text)
    as_int = t.set_column(t.schema.get_field_index("plain_city"), "plain_city",
                          pa.array(np.arange(100)))
    with pytest.raises(SchemaError, match="column 'plain_city': expected string"):
        transformer.transform(as_int)
    nan = t.column("price").to_numpy(zero_copy_only=False).copy()
    nan[0] = np.nan
    with pytest.raises(DataError, match=r"column 'price'.*NaN"):
        transformer.transform(t.set_column(1, "price", pa.array(nan)))


def test_transformer_round_trips_through_json():
    import json

    t = mixed_table(200)
    transformer = fitted(t)
    again = ColumnTransformer.from_dict(json.loads(json.dumps(transformer.to_dict())))
    a, b = transformer.transform(t), again.transform(t)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.c, b.c)


def _map_of(values: np.ndarray, kind: str):
    from vae_core.data.quantile_map import QuantileNormalMap

    t = pa.table({"v": values})
    schema = infer_schema(t.schema, {"v": kind})
    stats = TableStatistics.of(schema, t).columns["v"]
    return QuantileNormalMap.fit(stats, integer=kind == "integer")


def test_every_value_of_an_integer_column_is_an_atom_whose_interval_holds_its_mass():
    import torch

    def normal_cdf(z):
        return torch.special.ndtr(torch.from_numpy(z)).numpy()

    rng = np.random.default_rng(0)
    values = rng.poisson(3, 5000)
    qmap = _map_of(values, "integer")
    seen, counts = np.unique(values, return_counts=True)
    np.testing.assert_array_equal(qmap.atoms[:, 0], seen)
    low, high = qmap.forward(seen.astype(float))
    np.testing.assert_allclose(normal_cdf(high) - normal_cdf(low), counts / len(values), atol=1e-9)
    # The intervals tile the line: z ~ N(0, 1) decodes to the training frequencies.
    draws = qmap.inverse(rng.standard_normal(200_000), generated=True)
    for v, c in zip(seen[:6], counts[:6], strict=True):
        assert np.mean(draws == v) == pytest.approx(c / len(values), abs=0.004)
    # Every encoded value comes back exactly from the middle of its interval.
    np.testing.assert_array_equal(qmap.inverse((low + high) / 2), seen)


def test_a_heavy_value_of_a_float_column_is_an_atom_and_its_neighbours_are_not():
    rng = np.random.default_rng(1)
    values = np.where(rng.random(4000) < 0.9, 0.0, rng.lognormal(5, 1, 4000))
    qmap = _map_of(values, "continuous")
    assert qmap.atoms[:, 0].tolist() == [0.0]  # the rare values are continuous points
    low, high = qmap.forward(np.array([0.0, 1e-3, 150.0]))
    assert high[0] > low[0] and low[1] == high[1] and low[2] == high[2]
    # A value never seen, in the gap just past the atom, stays outside its interval and
    # inverts to itself; the atom's middle inverts to the atom.
    assert low[1] > high[0]
    np.testing.assert_allclose(qmap.inverse(low[1:]), [1e-3, 150.0], rtol=1e-9)
    assert qmap.inverse(np.array([(low[0] + high[0]) / 2]))[0] == 0.0
