"""The training job against real Ray (2 workers and local mode) and a real MLflow server."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipelines.job_config import ConfigError, load_job_config
from pipelines.train import train
from tests.integration.jobs import has_registered_checkpoint, job
from vae_core import DataError, SchemaError, TabularVAE

pytestmark = pytest.mark.integration


FRESH_PROCESS_SCORE = """
import json, sys
import mlflow, numpy as np, pyarrow.parquet as pq
from pipelines.registry import model_folder
from vae_core import TabularVAE
rows = pq.read_table(sys.argv[2]).slice(0, 50)
vae = TabularVAE.load(model_folder(sys.argv[1]))
pyfunc = mlflow.pyfunc.load_model(sys.argv[1])
via_pyfunc = pyfunc.predict(rows.to_pandas(), params={"mode": "score"})
print(json.dumps({"log_px": vae.score(rows).column("log_px").to_pylist(),
                  "pyfunc_log_px": via_pyfunc["log_px"].tolist()}))
"""


def test_two_workers_register_a_champion_that_a_fresh_process_can_score(
        mlflow_server, ray_local, adult_slice, workdir):
    outcome = train(job(adult_slice, workers=2, model_name="adult-two"))
    assert outcome.version == "1" and outcome.champion
    assert outcome.epochs == 3 and np.isfinite(outcome.val_log_px)
    assert outcome.val_log_px >= outcome.val_elbo  # IWAE ≥ ELBO on the same rows

    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server)
    run = client.get_run(outcome.run_id)
    assert run.data.params["train.epochs"] == "3" and run.data.params["workers"] == "2"
    history = client.get_metric_history(outcome.run_id, "val_elbo")
    assert [m.step for m in history] == [1, 2, 3]  # one run, one point per epoch
    # Where the wall time went: every driver stage and the loop's own stages are logged
    # (what they measure goes to benchmarks/bench_training.py, not here).
    times = {k[5:-2]: v for k, v in run.data.metrics.items() if k.startswith("time.")}
    driver = ["mlflow_connect", "input", "ray_start", "statistics", "encoding", "mlflow_run",
              "training", "finalise", "registry"]
    assert set(times) == set(driver) | {"loop_setup", "first_batch", "epochs"}
    assert all(np.isfinite(v) and v >= 0 for v in times.values())
    artifacts = {a.path for a in client.list_artifacts(outcome.run_id, "plots")}
    assert {"plots/loss_curves.png", "plots/latent_2d.png", "plots/marginals.png",
            "plots/anomaly_scores.png"} <= artifacts
    # vae evaluate's report of sampled rows against the validation rows
    assert {"evaluation/report.json", "evaluation/report.html"} <= {
        a.path for a in client.list_artifacts(outcome.run_id, "evaluation")}
    shapes, detection = (run.data.metrics[f"synthetic.{k}"] for k in ("column_shapes",
                                                                     "detection_roc_auc"))
    assert 0.5 < shapes <= 1 and 0.4 < detection <= 1

    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server,
           "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}
    out = subprocess.run([sys.executable, "-c", FRESH_PROCESS_SCORE, "models:/adult-two@champion",
                          str(adult_slice / "part-0.parquet")], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    scores = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(scores["log_px"]) == 50 and all(np.isfinite(scores["log_px"]))
    np.testing.assert_allclose(scores["pyfunc_log_px"], scores["log_px"], rtol=1e-6)


def test_the_champion_moves_only_for_a_better_model(mlflow_server, ray_local, adult_slice,
                                                    workdir):
    first = train(job(adult_slice, model_name="adult-gate", epochs=4))
    worse = train(job(adult_slice, model_name="adult-gate", epochs=1, learning_rate=1e-4))
    assert first.champion and not worse.champion
    assert "≤ champion v1" in worse.promotion
    from pipelines import registry

    listed = {r["version"]: r["aliases"] for r in registry.list_versions("adult-gate")}
    assert listed == {"1": ["champion"], "2": ["candidate"]}
    registry.promote("adult-gate", "2")
    listed = {r["version"]: r["aliases"] for r in registry.list_versions("adult-gate")}
    assert listed["2"] == ["candidate", "champion"]
    # A second gate: the synthetic rows' detection ROC-AUC (no model reaches 0.0).
    gated = train(job(adult_slice, model_name="adult-gate", epochs=4,
                      max_detection_roc_auc=0.0))
    assert not gated.champion and "detection ROC-AUC" in gated.promotion
    listed = {r["version"]: r["aliases"] for r in registry.list_versions("adult-gate")}
    assert listed["3"] == ["candidate"] and listed["2"] == ["champion"]


def test_a_tcvae_job_logs_each_kl_term_and_serves_from_the_registry(mlflow_server, ray_local,
                                                                      adult_slice, workdir):
    """β-TCVAE by a config switch: the same job, registry and pyfunc; MI, TC and dim-wise
    KL logged per epoch, adding up to the logged KL."""
    outcome = train(job(adult_slice, model_name="adult-tcvae", epochs=2, workers=1,
                        objective="tcvae", tc_beta=4.0))
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    history = {name: [m.value for m in sorted(client.get_metric_history(outcome.run_id, name),
                                              key=lambda m: m.step)]
               for name in ("train_mi", "train_tc", "train_dim_kl", "train_kl")}
    assert all(len(v) == 2 for v in history.values())
    for mi, tc, dim_kl, kl in zip(*history.values(), strict=True):
        assert abs(mi + tc + dim_kl - kl) < 0.1 * abs(kl) + 0.3  # Monte Carlo vs closed form
    from pipelines.registry import model_folder

    vae = TabularVAE.load(model_folder("models:/adult-tcvae@champion"))
    assert vae.train_config.objective == "tcvae" and vae.train_config.tc_beta == 4.0


def test_the_embedding_preset_trains_0_1_columns_as_flags_towards_every_rows_directions(
        mlflow_server, ray_local, adult_slice, workdir, monkeypatch):
    """The job's statistics pass (Ray Data, merged over blocks) finds the 0/1 column, the
    preset models it as a flag, and the registered model keeps it so; at d = 8 the loop
    aims the stress at PCA's directions of every row, both splits (local mode: the loop
    runs in this process, where the objective's hook is watched)."""
    import torch

    from vae_core.nn import VAEModule
    from vae_core.objectives import row_moments
    from vae_core.objectives.distances import WithDistanceStress

    seen, starts = [], []
    fix, start = WithDistanceStress.fix_directions, VAEModule.start_mean_at
    monkeypatch.setattr(WithDistanceStress, "fix_directions",
                        lambda self, module, moments: seen.append(moments) or fix(self, module,
                                                                                 moments))
    monkeypatch.setattr(VAEModule, "start_mean_at",
                        lambda self, w, b: starts.append(w) or start(self, w, b))
    folder = workdir / "with-dummy"
    folder.mkdir()
    for part in sorted(adult_slice.glob("*.parquet")):
        t = pq.read_table(part)
        male = pc.equal(t.column("sex"), "Male").cast(pa.float64())  # a 0.0/1.0 dummy
        pq.write_table(t.append_column("male", male), folder / part.name)
    outcome = train(job(folder, model_name="adult-dummy", preset="embedding", latent_dim=8,
                        epochs=1, workers=0))
    from mlflow.tracking import MlflowClient

    from pipelines.registry import model_folder

    vae = TabularVAE.load(model_folder("models:/adult-dummy@champion"))
    kinds = {c.name: c.kind.value for c in vae.transformer.schema.columns}
    assert kinds["male"] == "binary" and kinds["age"] == "integer"
    params = MlflowClient().get_run(outcome.run_id).data.params
    assert params["preset.filled.zero_one_columns"] == "binary"
    assert params["preset.filled.distance_directions"] == "exact"
    (moments,) = seen  # once, before the first epoch
    x = torch.from_numpy(vae.transformer.transform(pq.read_table(folder)).x)
    assert moments[0, 0] == len(x) == 4000
    torch.testing.assert_close(moments, row_moments([x], x.shape[1]))
    # the code's affine part started at PCA's code, and the registered model has that part
    assert params["preset.filled.encoder"] == vae.model_config.encoder == "mlp+linear"
    assert len(starts) == 1 and starts[0].shape == (8, x.shape[1])


def test_data_too_big_for_the_object_store_streams_and_trains_like_kept_data(
        mlflow_server, ray_local, adult_slice, workdir, monkeypatch):
    from mlflow.tracking import MlflowClient

    from pipelines import dataset

    kept = train(job(adult_slice, model_name="adult-kept", workers=0, epochs=2))
    monkeypatch.setattr(dataset, "MATERIALIZE_SHARE", 0.0)  # as if bigger than the store
    streamed = train(job(adult_slice, model_name="adult-streamed", workers=0, epochs=2))
    paths = {o.model_name: MlflowClient().get_run(o.run_id).data.tags["vae.input_path"]
             for o in (kept, streamed)}
    assert paths == {"adult-kept": "materialised", "adult-streamed": "streamed"}
    assert streamed.epochs == 2 and streamed.val_log_px >= streamed.val_elbo
    # The same rows, split the same way, read anew each epoch: the held-out ELBO lands
    # within noise of the kept run's (streaming nothing, or the wrong split, would not).
    assert abs(streamed.val_elbo - kept.val_elbo) < 0.05 * abs(kept.val_elbo)


def test_local_mode_resumes_from_its_last_checkpoint(mlflow_server, ray_local, adult_slice,
                                                      workdir, monkeypatch):
    from pipelines import dataset
    from vae_core.nn import VAEModule

    starts, start = [], VAEModule.start_mean_at
    monkeypatch.setattr(VAEModule, "start_mean_at",
                        lambda self, w, b: starts.append(w) or start(self, w, b))
    # the embedding preset at d = 8 starts the code at PCA's: only a fresh fit does
    first = train(job(adult_slice, model_name="adult-resume", run_name="resume-me", epochs=2,
                      preset="embedding", latent_dim=8))
    assert len(starts) == 1
    monkeypatch.setattr(dataset, "MATERIALIZE_SHARE", 0.0)  # as if the input had outgrown it
    again = train(job(adult_slice, model_name="adult-resume", run_name="resume-me", epochs=4,
                      preset="embedding", latent_dim=8, resume=True))
    assert len(starts) == 1  # the resumed fit kept its trained weights
    with pytest.raises(ValueError, match="checkpoint holds another model.*mean_skip"):
        train(job(adult_slice, model_name="adult-resume", run_name="resume-me", epochs=5,
                  preset="embedding", latent_dim=8, encoder="mlp", resume=True))
    assert first.epochs == 2 and again.epochs == 4
    with pytest.raises(ValueError, match="'resume-me' already exists.*--resume"):
        train(job(adult_slice, model_name="adult-resume", run_name="resume-me", epochs=5))
    assert again.run_id == first.run_id  # the same MLflow run continues
    from mlflow.tracking import MlflowClient

    steps = [m.step for m in MlflowClient().get_metric_history(again.run_id, "val_elbo")]
    assert steps == [1, 2, 3, 4]  # epochs 3 and 4 were trained, 1 and 2 were not redone
    assert MlflowClient().get_run(again.run_id).data.tags["vae.input_path"] == "streamed"


def test_a_killed_worker_is_restarted_from_the_last_checkpoint(mlflow_server, ray_local,
                                                               adult_slice, workdir):
    import psutil

    outcome = {}
    spec = job(adult_slice, workers=2, model_name="adult-kill", run_name="kill-me", epochs=12,
               max_failures=1)
    thread = threading.Thread(target=lambda: outcome.update(result=train(spec)), daemon=True)
    thread.start()
    deadline = time.time() + 400
    while not has_registered_checkpoint(workdir / "ray_results" / "kill-me"):
        if time.time() > deadline or not thread.is_alive():
            pytest.fail("the job ended or stalled before its first checkpoint")
        time.sleep(0.2)
    # Ray titles each actor's process "ray::RayTrainWorker…" (no dashboard needed to find it).
    workers = [p for p in psutil.process_iter(["cmdline"])
               if "RayTrainWorker" in " ".join(p.info["cmdline"] or [])]
    assert len(workers) == 2, [w.info["cmdline"] for w in workers]
    os.kill(workers[-1].pid, signal.SIGKILL)
    thread.join(600)
    result = outcome["result"]
    assert result.epochs == 12 and result.version == "1"
    from mlflow.tracking import MlflowClient

    steps = [m.step for m in MlflowClient().get_metric_history(result.run_id, "val_elbo")]
    assert steps.count(1) == 1 and set(steps) == set(range(1, 13))  # resumed, not restarted


def test_bad_inputs_fail_fast_with_the_culprit_named(mlflow_server, adult_slice, tmp_path,
                                                     monkeypatch, workdir):
    with pytest.raises(DataError, match="no such file"):
        train(job(tmp_path / "nowhere"))
    empty = tmp_path / "empty"
    empty.mkdir()
    pq.write_table(pa.table({"age": pa.array([], pa.int64())}), empty / "e.parquet")
    with pytest.raises(DataError, match="no rows"):
        train(job(empty))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for f in adult_slice.iterdir():
        (mixed / f.name).write_bytes(f.read_bytes())
    (mixed / "part-2.parquet").write_bytes(b"PAR1 garbage")
    with pytest.raises(DataError, match="part-2.parquet: not a readable Parquet file"):
        train(job(mixed))
    (mixed / "part-2.parquet").unlink()
    other = pq.read_table(adult_slice / "part-0.parquet").drop_columns(["age"])
    pq.write_table(other, mixed / "part-3.parquet")
    with pytest.raises(DataError, match="part-3.parquet: schema differs.*'age' is missing"):
        train(job(mixed))
    with pytest.raises(SchemaError, match="'salary', which is not in the table"):
        train(job(adult_slice, columns={"salary": "condition"}))
    with pytest.raises(ConfigError, match="unknown config key 'epochz'"):
        bad = tmp_path / "job.yaml"
        bad.write_text(f"data: {adult_slice}\nepochz: 3\n")
        load_job_config(bad)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens there
    from pipelines.tracking import TrackingError

    with pytest.raises(TrackingError, match=r"http://127\.0\.0\.1:9 is unreachable"):
        train(job(adult_slice))
    assert not (workdir / "ray_results").exists()  # it failed before any run was set up


def test_cli_train_prints_one_line_errors(mlflow_server, tmp_path, workdir):
    cli = Path(sys.executable).with_name("vae")
    out = subprocess.run([str(cli), "train", "--data", str(tmp_path / "missing")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [f"vae: error: {tmp_path / 'missing'}: "
                                               "no such file or folder"]
