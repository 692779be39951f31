"""Training throughput and memory of the Ray pipeline against a plain PyTorch loop, same
model, same rows.

One size (`make bench`):

    .venv/bin/python benchmarks/bench_training.py --rows 1000000 --epochs 2

* reference: a single-process loop over preloaded tensors (the hand-written script);
* `vae train` in Ray Train local mode (workers: 0) and with 2 DDP workers.

Several sizes (`make bench-scale`, Parquet larger than memory):

    .venv/bin/python benchmarks/bench_training.py --rows 1M,10M,30M --epochs 1 --object-store-gb 3

* `vae train` in local mode at each size, with Ray's object store capped so that the inputs
  whose encoded rows exceed a quarter of it stream (read → encode → train every epoch)
  instead of being materialised once; the plain loop at the smallest size for reference.

Input: Adult resampled into Parquet files of 250,000 rows, written once under
$VAE_BENCH_CACHE (default ~/.cache/vae-bench) and reused. Steady-state rows/s = the last
epoch's rows/s (rank 0's report); start-up = wall time of the whole job minus the time spent
in epochs. Memory: peak PSS summed over this process and every Ray process (shared pages,
the object store's among them, counted once), sampled every second, and the object store's
own peak use.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
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

CACHE = Path(os.environ.get("VAE_BENCH_CACHE", Path.home() / ".cache" / "vae-bench"))
PLASMA_USE = re.compile(r"Plasma memory usage (\d+) MiB")


def _is_ray(cmdline: str) -> bool:
    return "ray" in cmdline or "raylet" in cmdline or "gcs_server" in cmdline


def _pss_of_tree() -> dict[str, int]:
    """PSS of this process, its children and every Ray process, by process (pid and the
    start of its command line): a shared page counts once in their sum."""
    import psutil

    by_process, ours = {}, {os.getpid()} | {c.pid for c in
                                            psutil.Process().children(recursive=True)}
    for p in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(p.info["cmdline"] or [])
        if p.pid not in ours and not _is_ray(cmdline):
            continue
        try:
            rollup = Path(f"/proc/{p.pid}/smaps_rollup").read_text()
        except OSError:  # the process has gone
            continue
        found = re.search(r"^Pss:\s+(\d+) kB", rollup, re.M)
        by_process[f"{p.pid} {cmdline[:60]}"] = int(found.group(1)) * 1024 if found else 0
    return by_process


def _object_store_use() -> int:
    import ray

    if not ray.is_initialized():
        return 0
    from ray._private.internal_api import memory_summary

    found = PLASMA_USE.search(memory_summary(stats_only=True))
    return int(found.group(1)) * 2**20 if found else 0


class PeakMemory:
    def __enter__(self):
        self.pss = self.store = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        self.by_process = {}
        while not self._stop.is_set():
            by_process = _pss_of_tree()
            if sum(by_process.values()) > self.pss:  # the processes at the peak, for the log
                self.pss, self.by_process = sum(by_process.values()), by_process
            with contextlib.suppress(Exception):  # Ray starting or stopping: no sample
                self.store = max(self.store, _object_store_use())
            time.sleep(1.0)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def parse_rows(text: str) -> list[int]:
    """"1000000" or "1M,10M,30M" → row counts."""
    scale = {"k": 10**3, "m": 10**6}
    return [int(float(part[:-1]) * scale[part[-1].lower()]) if part[-1].lower() in scale
            else int(part) for part in text.split(",")]


def cached_data(rows: int) -> Path:
    folder = CACHE / f"adult-{rows}"
    if not (folder / "_COMPLETE").exists():
        folder.mkdir(parents=True, exist_ok=True)
        make_data(rows, folder)
        (folder / "_COMPLETE").touch()
    return folder


def make_data(rows: int, folder: Path) -> Path:
    from vae_core.datasets import load_adult

    t = load_adult("train")
    rng = np.random.default_rng(0)
    per_file = 250_000
    for i, start in enumerate(range(0, rows, per_file)):
        n = min(per_file, rows - start)
        pq.write_table(t.take(rng.integers(0, t.num_rows, n)), folder / f"part-{i:03d}.parquet")
    return folder


def plain_reference(folder: Path, epochs: int, rank: int = 0, world: int = 1,
                    port: int = 0) -> dict:
    """The hand-written loop over preloaded tensors; with ``world`` > 1, this is rank
    ``rank`` of a plain torch DDP job (gloo, every ``world``-th row, the batch per rank as
    `vae train`'s workers use it), which prices DDP on these cores without Ray."""
    from vae_core import ColumnTransformer, ModelConfig, TableStatistics, TrainConfig, infer_schema
    from vae_core.data.tables import read_parquet
    from vae_core.nn import build_module
    from vae_core.objectives import ELBO, TrainingModule

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    table = read_parquet(folder)
    schema = infer_schema(table.schema)
    transformer = ColumnTransformer.fit(schema, TableStatistics.of(schema, table))
    enc = transformer.transform(table)
    x, c = torch.from_numpy(enc.x)[rank::world], torch.from_numpy(enc.c)[rank::world]
    prep = time.perf_counter() - t0
    torch.manual_seed(0)
    module = build_module(transformer, ModelConfig())
    cfg = TrainConfig()
    opt = torch.optim.Adam(module.parameters(), lr=cfg.learning_rate)
    step = TrainingModule(module, ELBO())
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
        step = torch.nn.parallel.DistributedDataParallel(step)
    rates = []
    for _ in range(epochs):
        if world > 1:
            torch.distributed.barrier()
        t1 = time.perf_counter()
        perm = torch.randperm(len(x))
        for s in range(0, len(x), cfg.batch_size):
            idx = perm[s:s + cfg.batch_size]
            loss = step(x[idx], c[idx]).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        if world > 1:
            torch.distributed.barrier()
        rates.append(len(x) * world / (time.perf_counter() - t1))
    if world > 1:
        torch.distributed.destroy_process_group()
    return {"rows_per_s": rates[-1], "prep_s": prep, "wall_s": time.perf_counter() - t0}


def _ddp_rank(rank: int, folder: Path, epochs: int, port: int, results) -> None:
    results.put((rank, plain_reference(folder, epochs, rank, 2, port)))


def plain_ddp(folder: Path, epochs: int) -> dict:
    """Two processes of the plain loop under torch DDP: rank 0's figures."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    spawn = mp.get_context("spawn")
    results = spawn.Queue()
    ranks = [spawn.Process(target=_ddp_rank, args=(r, folder, epochs, port, results))
             for r in range(2)]
    for p in ranks:
        p.start()
    got = dict(results.get(timeout=3600) for _ in ranks)
    for p in ranks:
        p.join()
    return got[0]


def pipeline(folder: Path, epochs: int, workers: int, workdir: Path,
             object_store_gb: float | None) -> dict:
    from pipelines.job_config import load_job_config
    from pipelines.train import train

    os.chdir(workdir)
    ray_start = 0.0
    if object_store_gb:  # train() joins this Ray instead of starting its own; timed here
        import ray

        from pipelines.ray_runtime import local_cpus

        t0 = time.perf_counter()
        ray.init(address="local", num_cpus=local_cpus(workers), include_dashboard=False,
                 object_store_memory=int(object_store_gb * 2**30))
        ray_start = time.perf_counter() - t0
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
    run = client.get_run(outcome.run_id)
    stages = {k[5:-2]: v for k, v in run.data.metrics.items()
              if k.startswith("time.")}  # pipelines/stage_times.py
    stages["ray_start"] += ray_start
    return {"rows_per_s": rates[-1], "wall_s": wall + ray_start, "val_elbo": outcome.val_elbo,
            "startup_s": wall + ray_start - epoch_seconds, "stages": stages,
            "input_path": run.data.tags.get("vae.input_path")}


def run_child(which: str, folder: Path, args: argparse.Namespace) -> dict:
    """One measurement per process, so that peak memory is not inherited."""
    command = [sys.executable, __file__, "--child", which, "--folder", str(folder),
               "--epochs", str(args.epochs)]
    if args.object_store_gb and which != "plain":
        command += ["--object-store-gb", str(args.object_store_gb)]
    out = subprocess.run(command, capture_output=True, text=True)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode or not lines:
        raise SystemExit(f"{which} on {folder} failed:\n{out.stderr[-3000:]}")
    print(which, folder.name, lines[-1], flush=True)
    for line in out.stderr.splitlines():
        if line.startswith("peak PSS by process"):
            print(which, folder.name, line, flush=True)
    return json.loads(lines[-1])


def child(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as work, PeakMemory() as memory:
        folder = Path(args.folder)
        if args.child == "plain":
            result = plain_reference(folder, args.epochs)
        elif args.child == "plainddp":
            result = plain_ddp(folder, args.epochs)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work}/mlflow.db"
            workers = 0 if args.child == "local" else 2
            result = pipeline(folder, args.epochs, workers, Path(work), args.object_store_gb)
    top = sorted(memory.by_process.items(), key=lambda kv: -kv[1])[:12]
    print("peak PSS by process, MB:", json.dumps({k: round(v / 2**20) for k, v in top}),
          file=sys.stderr)
    print(json.dumps({**result, "peak_pss_gb": memory.pss / 2**30,
                      "object_store_peak_gb": memory.store / 2**30}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", default="1000000",
                        help="rows, or several sizes (1M,10M,30M): local mode at each")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--which", default="plain,plainddp,local,2workers",
                        help="one size only")
    parser.add_argument("--object-store-gb", type=float,
                        help="cap Ray's object store (default: Ray's own choice)")
    parser.add_argument("--out", type=Path, help="rewrite this bench's section of this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    sizes = parse_rows(args.rows)
    if len(sizes) == 1:
        folder = cached_data(sizes[0])
        results = {which: run_child(which, folder, args) for which in args.which.split(",")}
        section = render(results, args, sizes[0])
    else:
        results = {"plain": run_child("plain", cached_data(sizes[0]), args)}
        results |= {n: run_child("local", cached_data(n), args) for n in sizes}
        section = render_scale(results, args, sizes)
    print(json.dumps(results))
    if args.out:
        write_section(args.out, section)


def render(results: dict, args: argparse.Namespace, rows: int) -> str:
    names = {"plain": "plain PyTorch loop, preloaded tensors (reference)",
             "plainddp": "plain loop under torch DDP, 2 processes (reference: DDP without "
                         "Ray)",
             "local": "`vae train`, Ray Train local mode (workers: 0)",
             "2workers": "`vae train`, 2 DDP workers"}
    base = results.get("plain", {}).get("rows_per_s")
    lines = ["", f"## Training throughput ({rows:,} Adult rows resampled, {args.epochs} "
             "epochs, batch 512, 1 torch thread per process)", "",
             f"Command: `.venv/bin/python benchmarks/bench_training.py --rows {rows} "
             f"--epochs {args.epochs}`. Steady state = the last epoch. Start-up = wall time − "
             "time in epochs (Ray start, statistics pass, encoding, checkpoints, calibration, "
             "MLflow logging and registration). Peak PSS sums the driver and all Ray processes "
             "(shared pages, the object store's among them, counted once).",
             "", "| what | training cores | rows/s (steady) | vs plain | per core vs plain | "
             "start-up s | wall s | peak PSS GB | held-out ELBO |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    cores = {"plain": 1, "plainddp": 2, "local": 1, "2workers": 2}
    for key, r in results.items():
        ratio = r["rows_per_s"] / base if base else float("nan")
        startup = f"{r['startup_s']:.0f}" if "startup_s" in r else f"{r['prep_s']:.0f} (load)"
        elbo = f"{r['val_elbo']:.3f}" if "val_elbo" in r else "–"
        lines.append(f"| {names[key]} | {cores[key]} | {r['rows_per_s']:,.0f} | {ratio:.2f} | "
                     f"{ratio / cores[key]:.2f} | {startup} | {r['wall_s']:.0f} | "
                     f"{r['peak_pss_gb']:.1f} | {elbo} |")
    timed = {key: r["stages"] for key, r in results.items() if r.get("stages")}
    if timed:  # where the wall time of each `vae train` went (pipelines/stage_times.py)
        stages = ["mlflow_connect", "input", "ray_start", "statistics", "encoding", "mlflow_run",
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


def render_scale(results: dict, args: argparse.Namespace, sizes: list[int]) -> str:
    plain, runs = results["plain"], [results[n] for n in sizes]
    first, last = runs[0], runs[-1]
    kept = [r["rows_per_s"] for r in runs if r["input_path"] == "materialised"]
    streamed = [r["rows_per_s"] for r in runs if r["input_path"] == "streamed"]
    cap = f"{args.object_store_gb:g} GB" if args.object_store_gb else "Ray's default"
    lines = ["", f"## Training on Parquet larger than memory (Adult resampled, {args.epochs} "
             f"epoch(s), local mode, object store capped at {cap})", "",
             f"Command: `.venv/bin/python benchmarks/bench_training.py --rows "
             f"{','.join(str(n) for n in sizes)} --epochs {args.epochs} --object-store-gb "
             f"{args.object_store_gb:g}` (`make bench-scale`). Encoded rows under a quarter "
             "of the object store are materialised once; larger inputs stream (read → encode "
             "→ train, anew every epoch). Peak PSS sums this process and every Ray process; a "
             "shared page, the object store's among them, counts once. Rows/s is the last "
             "epoch's; start-up = wall time − time in epochs.", "",
             "| rows | input path | rows/s | start-up s | wall s | peak PSS GB | "
             "object store peak GB |", "| --- | --- | --- | --- | --- | --- | --- |",
             f"| {sizes[0]:,}, plain PyTorch loop, preloaded tensors (reference) | in memory | "
             f"{plain['rows_per_s']:,.0f} | {plain['prep_s']:.0f} (load) | {plain['wall_s']:.0f}"
             f" | {plain['peak_pss_gb']:.1f} | – |"]
    for n, r in zip(sizes, runs, strict=True):
        lines.append(f"| {n:,} | {r['input_path']} | {r['rows_per_s']:,.0f} | "
                     f"{r['startup_s']:.0f} | {r['wall_s']:.0f} | {r['peak_pss_gb']:.1f} | "
                     f"{r['object_store_peak_gb']:.1f} |")
    lines += ["", "Against the goals of issue 22:", "",
              f"- peak PSS at {sizes[-1]:,} rows / at {sizes[0]:,}: "
              f"{last['peak_pss_gb'] / first['peak_pss_gb']:.2f} (goal ≤ 1.25);",
              f"- peak PSS at {sizes[0]:,} rows / the plain loop's: "
              f"{first['peak_pss_gb'] / plain['peak_pss_gb']:.2f} (goal ≤ 2);"]
    if kept and streamed:
        lines.append(f"- streamed rows/s / materialised rows/s: "
                     f"{np.mean(streamed) / np.mean(kept):.2f} (goal ≥ 0.8).")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
