"""Batch jobs on real Ray Data with a model trained and registered by the pipeline in a real
MLflow server: outputs equal in-process vae_core row for row, ids and order kept, generation
reproducible and conditioned, and every bad input fails in one line leaving nothing behind."""

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipelines import registry
from pipelines.batch import SUCCESS, EmbedJob, GenerateJob, ScoreJob, run
from pipelines.train import train
from tests.integration.jobs import job
from vae_cli import main
from vae_core import DataError, SchemaError, TabularVAE

pytestmark = pytest.mark.integration

MODEL = "adult-batch"
CHAMPION = f"models:/{MODEL}@champion"


@pytest.fixture(scope="module")
def with_ids(adult_train, tmp_path_factory):
    """Adult rows with a person_id column (an id: passed through, not modelled)."""
    return adult_train.slice(0, 6000).append_column(
        "person_id", pa.array([f"p{i:05d}" for i in range(6000)]))


@pytest.fixture(scope="module")
def model(mlflow_server, ray_local, with_ids, tmp_path_factory) -> TabularVAE:
    """A CVAE (income is the condition) with an id column, registered @champion."""
    folder = tmp_path_factory.mktemp("batch-train-data")
    pq.write_table(with_ids.slice(0, 4000), folder / "train.parquet")
    with contextlib.chdir(tmp_path_factory.mktemp("batch-train")):
        train(job(folder, model_name=MODEL, epochs=2,
                  columns={"income": "condition", "person_id": "id"}))
    return TabularVAE.load(registry.model_folder(f"models:/{MODEL}/1"))


@pytest.fixture(scope="module")
def scoring_input(with_ids, tmp_path_factory) -> Path:
    """Three files, small row groups: batches span row groups and files."""
    folder = tmp_path_factory.mktemp("batch-input")
    pq.write_table(with_ids.slice(0, 2500), folder / "a.parquet", row_group_size=700)
    pq.write_table(with_ids.slice(2500, 1), folder / "b.parquet")
    pq.write_table(with_ids.slice(2501, 3499), folder / "c.parquet", row_group_size=1000)
    return folder


def read_output(path: Path) -> pa.Table:
    """The output in input order (files come in the order Ray finished them)."""
    assert (path / SUCCESS).is_file()
    table = pq.read_table(path)
    rows = table.column("row_index").to_numpy()
    np.testing.assert_array_equal(np.sort(rows), np.arange(len(rows)))  # each row once
    return table.take(np.argsort(rows)).drop_columns(["row_index"])


def test_score_equals_in_process_with_ids_kept(model, with_ids, scoring_input,
                                                         tmp_path):
    out = tmp_path / "scores"
    outcome = run(ScoreJob(model=CHAMPION, output=str(out), input=str(scoring_input), seed=3,
                           batch_rows=1000, top_k=2))
    got = read_output(out)
    expected = model.score(with_ids, seed=3, top_k=2)
    assert outcome.rows == got.num_rows == with_ids.num_rows
    assert "(version 1)" in outcome.model  # the alias, pinned for every actor
    assert got.column("person_id").equals(with_ids.column("person_id"))
    for name in ("elbo", "log_px", "percentile"):
        np.testing.assert_allclose(got.column(name).to_numpy(), expected.column(name).to_numpy(),
                                   rtol=1e-5, atol=1e-4, err_msg=name)
    assert got.column("is_anomaly").equals(expected.column("is_anomaly"))
    assert got.column("top_columns").to_pylist() == expected.column("top_columns").to_pylist()
    assert outcome.anomalies == pc.sum(expected.column("is_anomaly")).as_py()


def test_embed_equals_in_process_without_id_columns(
        model, with_ids, tmp_path):
    src = tmp_path / "no-ids.parquet"
    rows = with_ids.drop_columns(["person_id"]).slice(0, 3000)
    pq.write_table(rows, src, row_group_size=1100)
    out = tmp_path / "z"
    run(EmbedJob(model=CHAMPION, output=str(out), input=str(src), return_std=True,
                 batch_rows=512))
    got = read_output(out)
    mu, sigma = model.embed(rows, return_std=True)
    assert got.num_rows == 3000
    z = np.stack([got.column(f"z_{i}").to_numpy() for i in range(mu.shape[1])], axis=1)
    s = np.stack([got.column(f"zstd_{i}").to_numpy() for i in range(mu.shape[1])], axis=1)
    np.testing.assert_allclose(z, mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s, sigma, rtol=1e-5, atol=1e-6)


def test_generate_equals_in_process_sampling_and_honours_conditions(model, with_ids, tmp_path):
    n = 70_000  # two generate tasks
    run(GenerateJob(model=CHAMPION, output=str(tmp_path / "g"), n=n, seed=4))
    got = read_output(tmp_path / "g")
    assert got.equals(model.sample(n, seed=4))  # reproducible: a seed gives these rows

    run(GenerateJob(model=CHAMPION, output=str(tmp_path / "rich"), n=5000, seed=4,
                    conditions={"income": ">50K"}))
    rich = read_output(tmp_path / "rich")
    assert rich.column("income").unique().to_pylist() == [">50K"]
    assert rich.equals(model.sample(5000, conditions={"income": ">50K"}, seed=4))

    # Conditions on any column, as the CLI passes them (strings), in pieces of 700 rows.
    ranged = {"age": {">=": "30", "<": "40"}, "workclass": ["Private", "State-gov"]}
    run(GenerateJob(model=CHAMPION, output=str(tmp_path / "ranged"), n=3000, seed=5,
                    conditions=ranged, batch_rows=700))
    assert read_output(tmp_path / "ranged").equals(model.sample(
        3000, conditions={"age": {">=": 30, "<": 40}, "workclass": ["Private", "State-gov"]},
        seed=5))

    conditions = with_ids.select(["income"]).slice(0, 3000)  # one output row per input row
    pq.write_table(conditions, tmp_path / "conditions.parquet", row_group_size=900)
    run(GenerateJob(model=CHAMPION, output=str(tmp_path / "per-row"),
                    input=str(tmp_path / "conditions.parquet"), seed=6, batch_rows=700))
    per_row = read_output(tmp_path / "per-row")
    assert per_row.column("income").equals(conditions.column("income"))
    assert per_row.equals(model.sample(3000, conditions=conditions, seed=6))


def cli(*args: str, capsys) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err.strip()


def test_bad_inputs_fail_in_one_line_before_ray_work(model, scoring_input, with_ids, tmp_path,
                                                     capsys):
    out = tmp_path / "out"
    out.mkdir()
    code, err = cli("score", "--model", CHAMPION, "--input", str(scoring_input), "--output",
                    str(out), capsys=capsys)
    assert code == 2 and "already exists (pass --overwrite" in err

    missing = tmp_path / "missing-column.parquet"
    pq.write_table(with_ids.drop_columns(["age"]).slice(0, 10), missing)
    code, err = cli("score", "--model", CHAMPION, "--input", str(missing), "--output",
                    str(tmp_path / "o1"), capsys=capsys)
    assert code == 2 and "missing-column.parquet" in err and "'age' is missing" in err

    wrong = tmp_path / "wrong-type.parquet"
    pq.write_table(with_ids.slice(0, 10).set_column(
        with_ids.schema.get_field_index("age"), "age",
        pc.cast(with_ids.column("age").slice(0, 10), pa.string())), wrong)
    code, err = cli("embed", "--model", CHAMPION, "--input", str(wrong), "--output",
                    str(tmp_path / "o2"), capsys=capsys)
    assert code == 2 and "wrong-type.parquet" in err and "'age'" in err

    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 this is not parquet")
    code, err = cli("score", "--model", CHAMPION, "--input", str(corrupt), "--output",
                    str(tmp_path / "o3"), capsys=capsys)
    assert code == 2 and "corrupt.parquet" in err and "not a readable Parquet file" in err

    empty = tmp_path / "empty.parquet"
    pq.write_table(with_ids.slice(0, 0), empty)
    code, err = cli("score", "--model", CHAMPION, "--input", str(empty), "--output",
                    str(tmp_path / "o4"), capsys=capsys)
    assert code == 2 and "no rows" in err

    code, err = cli("score", "--model", f"models:/{MODEL}@nope", "--input", str(scoring_input),
                    "--output", str(tmp_path / "o5"), capsys=capsys)
    assert code == 2 and "nope" in err
    code, err = cli("score", "--model", str(tmp_path / "no-model"), "--input",
                    str(scoring_input), "--output", str(tmp_path / "o6"), capsys=capsys)
    assert code == 2 and "no-model" in err

    code, err = cli("generate", "--model", CHAMPION, "--n", "10", "--condition", "colour=red",
                    "--output", str(tmp_path / "o7"), capsys=capsys)
    assert code == 2 and "'colour': it is not a column of this model" in err
    code, err = cli("generate", "--model", CHAMPION, "--n", "10", "--condition", "age>=200",
                    "--output", str(tmp_path / "o9"), capsys=capsys)
    assert code == 2 and "age >= 200.0: the model draws no such value" in err
    code, err = cli("generate", "--model", CHAMPION, "--n", "10", "--condition", "income=lots",
                    "--output", str(tmp_path / "o8"), capsys=capsys)
    assert code == 2 and "'lots' was not seen" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["out", "missing-column.parquet", "wrong-type.parquet", "corrupt.parquet",
         "empty.parquet"])  # nothing written by any failed job


def test_a_bad_row_found_by_a_worker_names_the_file_and_keeps_the_old_output(
        model, with_ids, tmp_path):
    """NaN in the second file: the job fails naming it; --overwrite had kept the old output."""
    src = tmp_path / "in"
    src.mkdir()
    table = with_ids.slice(0, 3000)
    table = table.set_column(table.schema.get_field_index("age"), "age",
                             pc.cast(table.column("age"), pa.float64()))
    pq.write_table(table.slice(0, 2000), src / "a.parquet")
    ages = table.column("age").to_numpy()[2000:].copy()
    ages[123] = np.nan
    bad = table.slice(2000).set_column(table.schema.get_field_index("age"), "age", pa.array(ages))
    pq.write_table(bad, src / "b.parquet")
    out = tmp_path / "out"
    run(ScoreJob(model=CHAMPION, output=str(out), input=str(src / "a.parquet")))
    before = read_output(out)
    with pytest.raises(DataError, match=r"b\.parquet \(rows .*column 'age': 1 value\(s\) are NaN"):
        run(ScoreJob(model=CHAMPION, output=str(out), input=str(src), overwrite=True,
                     batch_rows=4096))
    assert read_output(out).equals(before)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no leftovers

    corrupt = src / "b.parquet"  # a valid footer over a damaged data page
    data = bytearray(corrupt.read_bytes())
    data[200:4200] = os.urandom(4000)
    corrupt.write_bytes(bytes(data))
    with pytest.raises((DataError, SchemaError), match=r"b\.parquet"):
        run(ScoreJob(model=CHAMPION, output=str(out), input=str(src), overwrite=True))
    assert read_output(out).equals(before)


def test_cli_score_from_a_fresh_process_prints_a_summary(model, scoring_input, mlflow_server,
                                                         tmp_path):
    out = tmp_path / "scores"
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server}
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("vae")), "score", "--model", CHAMPION, "--input",
         str(scoring_input), "--output", str(out), "--iwae-samples", "4"],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert summary.startswith("scored 6,000 rows in ") and "anomalies" in summary
    assert read_output(out).num_rows == 6000


def test_a_hierarchical_model_trained_on_ray_train_runs_every_batch_job(
        mlflow_server, ray_local, with_ids, scoring_input, tmp_path):
    """latent_layers: 2 through the whole pipeline: a Ray Train worker fits the ladder VAE
    (with the autoregressive decoder and the standard transform, so that those options
    ride the same path), the registry carries it, and score / embed / generate jobs equal
    it in process."""
    data = tmp_path / "train"
    data.mkdir()
    pq.write_table(with_ids.slice(0, 4000), data / "train.parquet")
    with contextlib.chdir(tmp_path):
        outcome = train(job(data, model_name="adult-ladder", epochs=2, workers=1,
                            latent_layers=2, top_latent_dim=3, decoder="autoregressive",
                            numeric_transform="standard",
                            columns={"income": "condition", "person_id": "id"}))
    assert outcome.val_log_px >= outcome.val_elbo
    uri = "models:/adult-ladder@champion"
    ladder = TabularVAE.load(registry.model_folder(uri))
    assert (ladder.model_config.latent_layers, ladder.embedding_dim) == (2, 3)
    assert ladder.module.autoregression is not None
    assert ladder.transformer.encoders["age"].qmap.to_dict()["kind"] == "standard"

    run(ScoreJob(model=uri, output=str(tmp_path / "s"), input=str(scoring_input), seed=1,
                 batch_rows=1000))
    got, expected = read_output(tmp_path / "s"), ladder.score(with_ids, seed=1)
    np.testing.assert_allclose(got.column("log_px").to_numpy(),
                               expected.column("log_px").to_numpy(), rtol=1e-5, atol=1e-4)
    run(EmbedJob(model=uri, output=str(tmp_path / "z"), input=str(scoring_input),
                 batch_rows=1000))
    z = read_output(tmp_path / "z")
    assert [n for n in z.column_names if n.startswith("z_")] == ["z_0", "z_1", "z_2"]
    np.testing.assert_allclose(np.stack([z.column(f"z_{i}").to_numpy() for i in range(3)], 1),
                               ladder.embed(with_ids), rtol=1e-5, atol=1e-6)
    run(GenerateJob(model=uri, output=str(tmp_path / "g"), n=3000, seed=2))
    assert read_output(tmp_path / "g").equals(ladder.sample(3000, seed=2))
