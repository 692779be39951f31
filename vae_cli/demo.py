"""`vae demo`: the product end to end on the bundled Adult table, in about two minutes.

Part 1, the library: fit a conditional VAE (income as the condition), save and reload
it, score clean and corrupted held-out rows, generate rows for a given income, embed rows.
Part 2, the job: train the same model with Ray Train (local Ray) over the Parquet file,
log it to MLflow (local SQLite under ./mlruns unless MLFLOW_TRACKING_URI is set), register
it, and load ``models:/adult-demo@champion`` back from the registry to score rows.
Part 3, serving: the champion on Ray Serve at http://127.0.0.1:8000, a few real requests.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from pipelines.progress import epoch_line
from vae_core import TabularVAE
from vae_core.datasets import adult_path, load_adult


def _print_epoch(report) -> None:  # a vae_core EpochReport
    print("  " + epoch_line(report.to_dict()), flush=True)


def run(out: Path, epochs: int, log_file: Path | None = None) -> None:
    torch.set_num_threads(1)  # see README: one thread per process is fastest for this model
    train, test = load_adult("train"), load_adult("test")
    print(f"1. fit on {adult_path('train')} ({train.num_rows} rows, {train.num_columns} columns),"
          " conditional on income" + (f" (Ray and MLflow logs: {log_file})" if log_file else ""))
    t0 = time.perf_counter()
    vae = TabularVAE(epochs=epochs, columns={"income": "condition"}, seed=0)
    vae.fit(train, progress=_print_epoch)
    print(f"   fitted in {time.perf_counter() - t0:.1f} s; anomaly threshold "
          f"(99th pct of held-out −log p(x)) = {vae.calibration.threshold():.2f} nats")

    folder = vae.save(out)
    vae = TabularVAE.load(folder)
    print(f"2. saved to {folder}/ (model.json + weights.pt) and loaded back")

    clean = vae.score(test)
    ages = test.column("age").to_numpy()
    broken = test.set_column(0, "age", pa.array(ages * 3))  # a unit error upstream
    corrupted = vae.score(broken)
    rate = [np.mean(s.column("is_anomaly").to_numpy(zero_copy_only=False))
            for s in (clean, corrupted)]
    print(f"3. scored {test.num_rows} held-out rows: {100 * rate[0]:.1f} % flagged; with ages ×3:"
          f" {100 * rate[1]:.1f} % flagged; top column of the first corrupted row: "
          f"{corrupted.column('top_columns')[0].as_py()[0]}")

    synthetic = vae.sample(5, conditions={"income": ">50K"}, seed=0)
    print("4. five synthetic rows with income >50K:")
    for row in synthetic.select(["age", "education", "occupation", "hours-per-week",
                                 "income"]).to_pylist():
        print("  ", row)
    big = vae.sample(test.num_rows, seed=0)
    share = [pc.mean(pc.equal(t.column("income"), ">50K")).as_py() for t in (big, test)]
    print(f"   unconditional: >50K in {100 * share[0]:.1f} % of {big.num_rows} synthetic rows "
          f"(real: {100 * share[1]:.1f} %)")

    z = vae.embed(test)
    print(f"5. embedded {z.shape[0]} rows into {z.shape[1]} dimensions "
          f"(per-dimension std {' '.join(f'{s:.2f}' for s in z.std(0))})")


def run_job(epochs: int) -> None:
    import model_refs
    from pipelines.job_config import load_job_config
    from pipelines.train import train

    job = load_job_config(None, {"data": str(adult_path("train")), "model_name": "adult-demo",
                                 "epochs": epochs, "columns": {"income": "condition"}})
    print(f"6. training job: Ray Train over {job.data}, logged to MLflow")
    outcome = train(job, log=lambda s: print("  ", s, flush=True), progress=True)
    folder = model_refs.model_folder("models:/adult-demo@champion")
    champion = TabularVAE.load(folder)
    scores = champion.score(load_adult("test").slice(0, 5))
    print("7. loaded models:/adult-demo@champion from the registry; scores of 5 test rows: "
          f"{[round(v, 2) for v in scores.column('score').to_pylist()]}")
    print(f"   MLflow run {outcome.run_id}; `vae models list` shows the versions")
    run_batch()


def run_batch() -> None:
    from pipelines.batch import ScoreJob, run

    out = "out/demo-scores"
    print(f"8. batch job (Ray Data): vae score --model models:/adult-demo@champion --input "
          f"{adult_path('test')} --output {out}")
    outcome = run(ScoreJob(model="models:/adult-demo@champion", output=out,
                           input=str(adult_path("test")), overwrite=True), log=lambda s: None)
    print("  ", outcome.summary())


def run_serving(port: int = 8000) -> None:
    from ray import serve

    from model_refs import pin_version
    from pipelines import tracking
    from serving import deployment

    uri = "models:/adult-demo@champion"
    version = pin_version(uri)
    t0 = time.perf_counter()
    deployment.deploy(deployment.serve_config(uri, version, port=port,
                                              tracking_uri=tracking.tracking_uri()))
    url = f"http://127.0.0.1:{port}"
    print(f"9. serving {uri} (version {version}) at {url} with Ray Serve "
          f"(up in {time.perf_counter() - t0:.0f} s)")
    try:
        rows = load_adult("test").slice(0, 3).to_pylist()
        rows[2]["age"] = 400  # a typo upstream
        scored = _post(f"{url}/v1/score", {"rows": rows})["rows"]
        print("   POST /v1/score (3 rows, the last with age 400): score "
              f"{[round(r['score'], 2) for r in scored]}, is_anomaly "
              f"{[r['is_anomaly'] for r in scored]}")
        z = _post(f"{url}/v1/embed", {"rows": rows[:1]})["rows"][0]
        print(f"   POST /v1/embed: z = {[round(v, 2) for v in z.values()]}")
        generated = _post(f"{url}/v1/generate", {"n": 2, "conditions": {"income": ">50K"},
                                                 "seed": 0})["rows"]
        picked = [{k: r[k] for k in ("age", "occupation", "income")} for r in generated]
        print(f"   POST /v1/generate (n=2, income >50K): {picked}")
    finally:
        serve.shutdown()
    print("   (stopped; `vae serve --model models:/adult-demo@champion` keeps it running)")


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(),
                                     {"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)
