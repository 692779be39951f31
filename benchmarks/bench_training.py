"""Training throughput of the Ray pipeline against a plain PyTorch loop, same model, same rows.

    .venv/bin/python benchmarks/bench_training.py --rows 1000000 --epochs 2

* reference: a single-process loop over preloaded tensors (the hand-written script);
* `vae train` in Ray Train local mode (workers: 0) and with 2 DDP workers, streaming the
  Parquet through Ray Data every epoch.
Steady-state rows/s = the last epoch's rows/s (rank 0's report); start-up = wall time of
the whole job minus the time spent in epochs. Peak RSS counts the driver and every Ray
process on the machine (sampled every 0.5 s).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results_file import write_section  # noqa: E402


def _rss_of_tree() -> int:
    import psutil

    total = 0
    for p in psutil.process_iter(["cmdline", "memory_info"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if p.pid == os.getpid() or "ray" in cmd or "raylet" in cmd or "gcs_server" in cmd:
            total += p.info["memory_info"].rss if p.info["memory_info"] else 0
    return total


class PeakRSS:
    def __enter__(self):
        self.peak, self._stop = 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_of_tree())
            time.sleep(0.5)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def make_data(rows: int, folder: Path) -> Path:
    from vae_core.datasets import load_adult

    t = load_adult("train")
    rng = np.random.default_rng(0)
    per_file = 250_000
    for i, start in enumerate(range(0, rows, per_file)):
        n = min(per_file, rows - start)
        pq.write_table(t.take(rng.integers(0, t.num_rows, n)), folder / f"part-{i:03d}.parquet")
    return folder


def plain_reference(folder: Path, epochs: int) -> dict:
    from vae_core import ColumnTransformer, ModelConfig, TableStatistics, TrainConfig, infer_schema
    from vae_core.data.tables import read_parquet
    from vae_core.nn import build_module
    from vae_core.objectives import ELBO

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    table = read_parquet(folder)
    schema = infer_schema(table.schema)
    transformer = ColumnTransformer.fit(schema, TableStatistics.of(schema, table))
    enc = transformer.transform(table)
    x, c = torch.from_numpy(enc.x), torch.from_numpy(enc.c)
    prep = time.perf_counter() - t0
    module = build_module(transformer, ModelConfig())
    cfg = TrainConfig()
    opt = torch.optim.Adam(module.parameters(), lr=cfg.learning_rate)
    elbo = ELBO()
    rates = []
    for _ in range(epochs):
        t1 = time.perf_counter()
        perm = torch.randperm(len(x))
        for s in range(0, len(x), cfg.batch_size):
            idx = perm[s:s + cfg.batch_size]
            loss = elbo(module, x[idx], c[idx]).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        rates.append(len(x) / (time.perf_counter() - t1))
    return {"rows_per_s": rates[-1], "prep_s": prep, "wall_s": time.perf_counter() - t0}


def pipeline(folder: Path, epochs: int, workers: int, workdir: Path) -> dict:
    from pipelines.job_config import load_job_config
    from pipelines.train import train

    os.chdir(workdir)
    job = load_job_config(None, {"data": str(folder), "model_name": f"bench-w{workers}",
                                 "epochs": epochs, "workers": workers,
                                 "early_stopping_patience": 0})
    t0 = time.perf_counter()
    outcome = train(job, log=lambda s: None)
    wall = time.perf_counter() - t0
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    history = client.get_metric_history(outcome.run_id, "rows_per_second")
    rates = [m.value for m in sorted(history, key=lambda m: m.step)]
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in folder.glob("*.parquet"))
    train_rows = rows * (1 - job.train.validation_fraction)
    epoch_seconds = sum(train_rows / r for r in rates)
    stages = {k[5:-2]: v for k, v in client.get_run(outcome.run_id).data.metrics.items()
              if k.startswith("time.")}  # pipelines/stage_times.py
    return {"rows_per_s": rates[-1], "wall_s": wall, "startup_s": wall - epoch_seconds,
            "stages": stages}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--which", default="plain,local,2workers")
    parser.add_argument("--out", type=Path, help="rewrite this bench's section of this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # one measurement per process, so peak RSS is not inherited
        with tempfile.TemporaryDirectory() as work, PeakRSS() as rss:
            folder = Path(args.folder)
            if args.child == "plain":
                result = plain_reference(folder, args.epochs)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work}/mlflow.db"
                workers = 0 if args.child == "local" else 2
                result = pipeline(folder, args.epochs, workers, Path(work))
        print(json.dumps({**result, "peak_rss_gb": rss.peak / 2**30}))
        return
    with tempfile.TemporaryDirectory() as d:
        folder = make_data(args.rows, Path(d))
        results = {}
        for which in args.which.split(","):
            out = subprocess.run([sys.executable, __file__, "--child", which, "--folder",
                                  str(folder), "--epochs", str(args.epochs)],
                                 capture_output=True, text=True)
            lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
            if out.returncode or not lines:
                raise SystemExit(f"{which} failed:\n{out.stderr[-3000:]}")
            results[which] = json.loads(lines[-1])
            print(which, results[which], flush=True)
    print(json.dumps(results))
    if args.out:
        write_section(args.out, render(results, args))


def render(results: dict, args: argparse.Namespace) -> str:
    names = {"plain": "plain PyTorch loop, preloaded tensors (reference)",
             "local": "`vae train`, Ray Train local mode (workers: 0)",
             "2workers": "`vae train`, 2 DDP workers"}
    base = results.get("plain", {}).get("rows_per_s")
    lines = ["", f"## Training throughput ({args.rows:,} Adult rows resampled, {args.epochs} "
             "epochs, batch 512, 1 torch thread per process)", "",
             f"Command: `.venv/bin/python benchmarks/bench_training.py --rows {args.rows} "
             f"--epochs {args.epochs}`. Steady state = the last epoch. Start-up = wall time − "
             "time in epochs (Ray start, statistics pass, encoding, checkpoints, calibration, "
             "MLflow logging and registration). Peak RSS sums the driver and all Ray processes.",
             "", "| what | training cores | rows/s (steady) | vs plain | per core vs plain | "
             "start-up s | wall s | peak RSS GB |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    cores = {"plain": 1, "local": 1, "2workers": 2}
    for key, r in results.items():
        ratio = r["rows_per_s"] / base if base else float("nan")
        startup = f"{r['startup_s']:.0f}" if "startup_s" in r else f"{r['prep_s']:.0f} (load)"
        lines.append(f"| {names[key]} | {cores[key]} | {r['rows_per_s']:,.0f} | {ratio:.2f} | "
                     f"{ratio / cores[key]:.2f} | {startup} | {r['wall_s']:.0f} | "
                     f"{r['peak_rss_gb']:.1f} |")
    timed = {key: r["stages"] for key, r in results.items() if r.get("stages")}
    if timed:  # where the wall time of each `vae train` went (pipelines/stage_times.py)
        stages = ["mlflow_connect", "input", "ray_start", "statistics", "mlflow_run",
                  "loop_setup", "first_batch", "epochs", "training", "finalise", "registry"]
        lines += ["", "Where the time went, seconds (the job's `time.*` metrics; `loop_setup`, "
                  "`first_batch` — the wait for Ray Data's first encoded batch — and `epochs` "
                  "are inside `training`, the rest of which is starting workers and Ray "
                  "Train's checkpoints and reports):", "",
                  "| what | " + " | ".join(stages) + " |",
                  "| --- |" + " --- |" * len(stages)]
        for key, t in timed.items():
            lines.append(f"| {names[key]} | "
                         + " | ".join(f"{t.get(s, float('nan')):.1f}" for s in stages) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
