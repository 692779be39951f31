"""Presets: each fills the keys its docstring names, explicit keys win, the choice round-trips
through save/load, and the shape rules read sizes and kinds only."""

import numpy as np
import pyarrow as pa
import pytest

from vae_core import DataError, Kind, ModelConfig, TabularVAE, TrainConfig, infer_schema
from vae_core.data.statistics import TableStatistics
from vae_core.presets import (
    EXACT_DIRECTIONS_MAX_COLUMNS,
    MIN_PATIENCE_STEPS,
    MIN_STEPS,
    PRESETS,
    PresetChoice,
    TableShape,
    apply_preset,
    epochs_for_steps,
    resolve_preset,
    shares_unit,
    stress_weight,
)


def small_table(rows: int = 300, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=rows)
    return pa.table({"a": a, "b": a * 2 + rng.normal(size=rows) * 0.1,
                     "kind": rng.choice(["x", "y"], rows)})


def shape_of(table: pa.Table) -> TableShape:
    schema = infer_schema(table.schema)
    return TableShape.of(schema, TableStatistics.of(schema, table))


def current(**changes) -> dict:
    return {**ModelConfig().to_dict(), **TrainConfig().to_dict(), **changes}


def test_the_shape_counts_rows_and_kinds():
    shape = shape_of(small_table(300))
    assert (shape.rows, shape.numeric_columns, shape.categorical_columns,
            shape.binary_columns) == (300, 2, 1, 0)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_preset_fills_its_keys_unless_set(name):
    shape = shape_of(small_table())
    filled = resolve_preset(name, shape, current(), set_keys=()).filled
    assert filled, f"preset {name} fills nothing"
    some = next(iter(filled))
    again = resolve_preset(name, shape, current(), set_keys={some}).filled
    assert some not in again and set(again) == set(filled) - {some}


def test_anomaly_and_synthesis_settings():
    shape = shape_of(small_table())
    assert resolve_preset("synthesis", shape, current(), ()).filled == {
        "decoder": "autoregressive"}
    anomaly = resolve_preset("anomaly", shape, current(), ()).filled
    assert anomaly["numeric_transform"] == "standard" and anomaly["trim_fraction"] == 0.2


def test_the_anomaly_preset_lets_sigma_vary_by_row_only_with_enough_rows_per_column():
    shape = shape_of(small_table())  # 300 rows, 3 columns: 100 rows per column
    few = resolve_preset("anomaly", shape, current(), ()).filled
    assert (few["decoder_scale"], few["beta"]) == ("column", 8.0)
    many = TableShape(**{**shape.to_dict(), "rows": 600})  # 200 rows per column
    local = resolve_preset("anomaly", many, current(), ()).filled
    assert (local["decoder_scale"], local["beta"]) == ("row", 1.0)


def test_embedding_rule_follows_latent_dim_and_unit():
    shape = shape_of(small_table())
    low = resolve_preset("embedding", shape, current(latent_dim=2), ()).filled
    high = resolve_preset("embedding", shape, current(latent_dim=8), ()).filled
    assert 0 < low["distance_weight"] < high["distance_weight"]  # d = 2: a light pull
    assert low["distance_rest_share"] == high["distance_rest_share"] == 0.0  # PCA's distances
    # a projection below d = 8; from 8 an MLP plus the affine part the fit starts at PCA
    assert low["encoder"] == "linear" and high["encoder"] == "mlp+linear"
    # PCA's exact directions from d = 8; tracked ones below
    assert high["distance_directions"] == "exact" and "distance_directions" not in low
    for d in (2, 8):  # the ladder's inference needs its hidden layers
        ladder = resolve_preset("embedding", shape, current(latent_dim=d, latent_layers=2), ())
        assert "encoder" not in ladder.filled
    assert low["numeric_transform"] == "standard"  # 2 columns do not make a shared unit
    pooled = TableShape(**{**shape.to_dict(), "shared_unit": True})
    assert resolve_preset("embedding", pooled, current(), ()).filled[
        "numeric_transform"] == "pooled"


def test_the_embedding_stress_weight_rises_with_the_codes_dimensions():
    assert [stress_weight(d) for d in (1, 2, 7, 8, 15, 16, 64)] == [
        30.0, 30.0, 30.0, 1000.0, 1000.0, 10_000.0, 10_000.0]
    filled = resolve_preset("embedding", shape_of(small_table()), current(latent_dim=16),
                            ()).filled
    assert filled["distance_weight"] == 10_000.0 and filled["distance_directions"] == "exact"


def test_the_ladders_embedding_rule_reads_its_top_layer_the_code_it_embeds_from():
    shape = shape_of(small_table())
    for top, weight in ((4, 30.0), (8, 1000.0), (16, 10_000.0)):
        filled = resolve_preset("embedding", shape, current(latent_dim=16, latent_layers=2,
                                                            top_latent_dim=top), ()).filled
        assert filled["distance_weight"] == weight
        assert (filled.get("distance_directions") == "exact") == (top >= 8)


def directions_at(shape: TableShape, **chosen) -> str | None:
    return resolve_preset("embedding", shape, current(**chosen), ()).filled.get(
        "distance_directions")


def test_a_table_wider_than_a_batch_gets_exact_directions_at_any_d():
    wide = TableShape(rows=2000, numeric_columns=3, binary_columns=300, categorical_columns=0,
                      shared_unit=False)  # 303 directions, 256 rows a batch
    assert directions_at(wide, latent_dim=2) == "exact"
    assert directions_at(wide, latent_dim=2, batch_size=512) is None
    assert directions_at(TableShape(**{**wide.to_dict(), "binary_columns": 253}),
                         latent_dim=2) == "exact"  # 256 directions: a batch spans < 256
    assert directions_at(TableShape(**{**wide.to_dict(), "binary_columns": 252}),
                         latent_dim=2) is None


def test_a_categorical_column_spans_its_levels_less_one_directions():
    levels = TableShape(rows=2000, numeric_columns=2, binary_columns=0, categorical_columns=30,
                        shared_unit=False, categorical_levels=600)
    assert levels.columns == 32 and levels.directions == 2 + 600 - 30
    assert directions_at(levels, latent_dim=2) == "exact"
    seen = shape_of(pa.table({"city": ["a", "b", "c", "a"] * 50, "x": [0.5, 1.5] * 100}))
    assert (seen.categorical_levels, seen.directions) == (3, 1 + 2)


def test_exact_directions_are_left_out_on_a_table_too_wide_to_decompose():
    huge = TableShape(rows=2000, numeric_columns=EXACT_DIRECTIONS_MAX_COLUMNS + 1,
                      binary_columns=0, categorical_columns=0, shared_unit=False)
    assert directions_at(huge, latent_dim=16) is None
    # no exact directions, no PCA code to start at: the plain MLP encoder
    assert "encoder" not in resolve_preset("embedding", huge, current(latent_dim=16), ()).filled
    assert directions_at(TableShape(**{**huge.to_dict(), "numeric_columns": 16}),
                         latent_dim=16) == "exact"


def test_epochs_are_raised_to_a_minimum_of_steps_on_small_tables():
    assert epochs_for_steps(100_000, 256, 40) == 40  # a large table keeps its epochs
    small = epochs_for_steps(1000, 256, 40)  # 4 steps an epoch
    assert small * 4 >= MIN_STEPS and (small - 1) * 4 < MIN_STEPS
    assert epochs_for_steps(10, 256, 40) == MIN_STEPS  # one step an epoch


def test_early_stopping_waits_a_minimum_of_steps_on_small_tables():
    def patience(rows: int, **chosen) -> int | None:
        shape = TableShape(rows=rows, numeric_columns=4, binary_columns=0,
                           categorical_columns=0, shared_unit=False)
        return resolve_preset("embedding", shape, current(**chosen), ()).filled.get(
            "early_stopping_patience")

    assert patience(80) == MIN_PATIENCE_STEPS  # one step an epoch
    assert patience(1000) * 4 >= MIN_PATIENCE_STEPS  # four steps an epoch
    assert patience(100_000) == TrainConfig().early_stopping_patience  # 391 steps an epoch
    assert patience(80, early_stopping_patience=0) is None  # off stays off
    assert patience(80, early_stopping_patience=500) == 500


def test_a_shared_unit_is_pixels_not_prices_beside_ages():
    rng = np.random.default_rng(0)
    pixels = pa.table({f"p{i}": rng.integers(0, 17, 200) for i in range(16)})
    mixed = pa.table({**{f"p{i}": rng.integers(0, 17, 200) for i in range(15)},
                      "price": rng.integers(0, 100_000, 200)})
    for table, expected in ((pixels, True), (mixed, False), (small_table(), False)):
        schema = infer_schema(table.schema)
        assert shares_unit(schema, TableStatistics.of(schema, table)) is expected


def test_explicit_config_fields_win_over_the_preset():
    model, train, choice = apply_preset("anomaly", shape_of(small_table()),
                                        ModelConfig(), TrainConfig(beta=2.0), {"beta"})
    assert train.beta == 2.0 and "beta" not in choice.filled
    assert model.numeric_transform == "standard"


def test_an_unknown_preset_is_refused_naming_the_known_ones():
    with pytest.raises(ValueError, match="preset 'anomalies' is not one of synthesis, anomaly, "
                                         "embedding"):
        TabularVAE(preset="anomalies")


def test_the_preset_is_applied_at_fit_and_round_trips(tmp_path):
    vae = TabularVAE(preset="anomaly", beta=2.0, epochs=2, seed=0).fit(small_table())
    assert vae.train_config.beta == 2.0  # set by the caller
    assert vae.train_config.trim_fraction == vae.preset.filled["trim_fraction"] > 0
    assert vae.model_config.numeric_transform == "standard"
    assert vae.preset.shape.rows == 300
    loaded = TabularVAE.load(vae.save(tmp_path / "m"))
    assert loaded.preset == vae.preset and loaded.model_config == vae.model_config
    assert loaded.train_config == vae.train_config


def test_no_preset_keeps_the_defaults(tmp_path):
    vae = TabularVAE(epochs=1).fit(small_table())
    assert vae.preset is None and vae.model_config == ModelConfig()
    assert TabularVAE.load(vae.save(tmp_path / "m")).preset is None


def test_a_second_fit_resolves_the_preset_for_the_new_table():
    vae = TabularVAE(preset="embedding", seed=0)
    vae.fit(small_table(300))
    few = vae.train_config.epochs
    vae.fit(small_table(3000))
    assert vae.train_config.epochs < few  # fewer epochs reach the steps on more rows
    assert vae.preset.shape.rows == 3000


def test_the_choice_serialises_to_json_types():
    choice = resolve_preset("embedding", shape_of(small_table()), current(), ())
    d = choice.to_dict()
    assert d["filled"]["hidden"] == [512]
    assert PresetChoice.from_dict(d).shape == choice.shape


def test_a_job_with_a_preset_is_written_back_with_only_the_keys_it_set(tmp_path):
    """vae submit / vae schedule write the job for the cluster to read back: the preset must
    still fill what the job did not set there."""
    import yaml

    from pipelines.job_config import load_job_config

    job = load_job_config(None, {"data": "x.parquet", "preset": "anomaly", "epochs": 5})
    written = job.to_dict()
    assert written["preset"] == "anomaly" and written["train"] == {"epochs": 5}
    assert written["model"] == {}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(written))
    again = load_job_config(path)
    assert again.set_keys == {"epochs"} and again.train == job.train
    plain = load_job_config(None, {"data": "x.parquet"}).to_dict()
    assert plain["train"]["beta"] == 1.0  # without a preset every key is written, as before


def test_the_training_job_fills_the_preset_around_the_keys_it_set():
    from pipelines.job_config import JobConfig, load_job_config
    from pipelines.train import with_preset

    shape = shape_of(small_table())  # 100 rows per column: the global anomaly model
    job, choice = with_preset(load_job_config(None, {"data": "x", "preset": "anomaly",
                                                     "beta": 1.0}), shape)
    assert job.train.beta == 1.0 and "beta" not in choice.filled  # set, though the default
    assert job.model.decoder_scale == "column" == choice.filled["decoder_scale"]
    built = JobConfig(data="x", preset="anomaly", train=TrainConfig(trim_fraction=0.1))
    job, choice = with_preset(built, shape)  # a config built in code: its changed fields win
    assert job.train.trim_fraction == 0.1 and job.train.beta == 8.0
    assert with_preset(JobConfig(data="x"), shape) == (JobConfig(data="x"), None)


def test_the_embedding_preset_models_0_1_columns_as_flags_unless_told_otherwise(tmp_path):
    rng = np.random.default_rng(0)
    table = small_table().append_column("dummy", pa.array(rng.integers(0, 2, 300)
                                                          .astype(float)))
    vae = TabularVAE(preset="embedding", latent_dim=2, epochs=1, seed=0).fit(table)
    assert vae.preset.filled["zero_one_columns"] == "binary"
    assert vae.transformer.schema["dummy"].kind is Kind.BINARY
    assert vae.transformer.schema["a"].kind is Kind.CONTINUOUS
    loaded = TabularVAE.load(vae.save(tmp_path / "m"))
    assert loaded.transformer.schema["dummy"].kind is Kind.BINARY
    np.testing.assert_array_equal(loaded.embed(table), vae.embed(table))
    with pytest.raises(DataError, match="column 'dummy'.*other than 0/1"):
        vae.embed(table.set_column(3, "dummy", pa.array(np.full(300, 2.0))))
    as_numbers = TabularVAE(preset="embedding", zero_one_columns="numeric", epochs=1,
                            seed=0).fit(table)
    assert "zero_one_columns" not in as_numbers.preset.filled
    assert as_numbers.transformer.schema["dummy"].kind is Kind.CONTINUOUS
    named = TabularVAE(preset="embedding", columns={"dummy": "integer"}, epochs=1,
                       seed=0).fit(table)
    assert named.transformer.schema["dummy"].kind is Kind.INTEGER
