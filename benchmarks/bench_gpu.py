"""The CUDA paths on one GPU, each beside a reference measured in the same run.

    python benchmarks/bench_gpu.py --json gpu.json --out benchmarks/RESULTS.md   (`make bench-gpu`)

Needs a CUDA GPU; ``--device cpu`` runs every stage on the CPU as a dry run of the script.
Stages, each recorded as it ends so that one that fails leaves the others' figures:

1. training: ``TabularVAE.fit(device="cuda")`` (rows and weights on the GPU, float32; its
   epoch is ``run_epoch``, which `vae train`'s loop shares) for the default model and the
   synthesis preset's autoregressive one, at the model's batch and at 16×: the last epoch's
   rows/s and held-out ELBO; against a plain CUDA loop on the same module (rows preloaded
   on the GPU, Adam, ELBO) at both batches, with bf16 autocast on and off;
2. inference: ``embed`` and ``score`` (IWAE, the model's K) in this process on 10,000 and
   100,000 rows, float32 and bf16 autocast, and how far bf16's scores move;
3. batch: ``pipelines.batch.run`` (`vae embed|score`) over Parquet with one actor on the
   GPU and with four on a quarter each, against the same job with CPU actors on this
   machine's cores and the in-process GPU forward on the same rows;
4. serving: the Serve app with one model replica on one GPU, 10,000-row Arrow requests from
   2 clients (bench_serving's workload c), and with two replicas on half of it each (4
   clients), against the in-process GPU forward;
5. ray-train: the training job's loop (`vae train --workers 1 --use-gpu`) on one Ray Train
   worker on the GPU, against one on half this machine's cores, MLflow left out.

``--json`` keeps every figure; ``--render gpu.json --out RESULTS.md`` writes the section
from a kept file (the GPU machine's results, rendered where the repository is).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from results_file import write_section  # noqa: E402

from vae_core import TabularVAE  # noqa: E402
from vae_core.datasets import load_adult  # noqa: E402

MODELS = {"default": {}, "synthesis (autoregressive)": {"preset": "synthesis"}}


def resampled(table: pa.Table, rows: int, seed: int) -> pa.Table:
    return table.take(np.random.default_rng(seed).integers(0, table.num_rows, rows))


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# -- 1. training ----------------------------------------------------------------------------
def product_fit(settings: dict, table: pa.Table, epochs: int, device: str
                ) -> tuple[TabularVAE, dict]:
    reports = []
    t0 = time.perf_counter()
    vae = TabularVAE(**settings, epochs=epochs, seed=0).fit(table, reports.append, device=device)
    return vae, {"rows_per_s": reports[-1].rows_per_second, "val_elbo": reports[-1].val_elbo,
                 "wall_s": time.perf_counter() - t0, "batch": vae.train_config.batch_size}


def plain_loop(vae: TabularVAE, table: pa.Table, batch_size: int, bf16: bool, device: str,
               seconds: float) -> dict:
    """The hand-written CUDA script: the same module (fresh weights), every row on the GPU,
    a random permutation per epoch; rows/s over ``seconds`` after a warm-up."""
    from vae_core.nn import build_module
    from vae_core.objectives import ELBO, TrainingModule

    enc = vae.transformer.transform(table)
    x = torch.from_numpy(enc.x).to(device)
    c = torch.from_numpy(enc.c).to(device)
    torch.manual_seed(0)
    step = TrainingModule(build_module(vae.transformer, vae.model_config).to(device), ELBO())
    opt = torch.optim.Adam(step.parameters(), lr=vae.train_config.learning_rate)

    def steps(n: int) -> int:
        done = 0
        while done < n:
            perm = torch.randperm(len(x), device=device)
            for s in range(0, len(x) - batch_size + 1, batch_size):
                idx = perm[s:s + batch_size]
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
                    loss = step(x[idx], c[idx]).loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                done += 1
                if done == n:
                    break
        return done

    if batch_size > len(x):
        raise ValueError(f"batch {batch_size} > {len(x)} rows")
    steps(20)
    sync(device)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += steps(50)
        sync(device)
    return {"rows_per_s": n * batch_size / (time.perf_counter() - t0), "batch": batch_size,
            "bf16": bf16}


def training(args: argparse.Namespace, record: Callable[[str, object], None]) -> None:
    table = resampled(load_adult("train"), args.train_rows, 0)
    for name, settings in MODELS.items():
        vae, product = product_fit(settings, table, args.epochs, args.device)
        batch = product["batch"]
        _, large = product_fit({**settings, "batch_size": 16 * batch}, table, args.epochs,
                               args.device)
        plain = [plain_loop(vae, table, b, bf16, args.device, args.seconds)
                 for b, bf16 in ((batch, True), (batch, False), (16 * batch, True),
                                 (16 * batch, False))]
        record(f"training/{name}", {"product": product, "product_16x": large, "plain": plain,
                                    "rows": args.train_rows})


# -- 2. inference ---------------------------------------------------------------------------
def timed(run: Callable[[], object], seconds: float, device: str) -> float:
    """Seconds per call, the mean over calls for ``seconds`` after one warm-up."""
    run()
    sync(device)
    n, t0 = 0, time.perf_counter()
    while n == 0 or time.perf_counter() - t0 < seconds:
        run()
        sync(device)
        n += 1
    return (time.perf_counter() - t0) / n


def autocast_call(verb: Callable[[pa.Table], object], table: pa.Table, bf16: bool) -> object:
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        return verb(table)


def inference(vae: TabularVAE, args: argparse.Namespace,
              record: Callable[[str, object], None]) -> None:
    test = load_adult("test")
    for rows in (10_000, 100_000):
        table = resampled(test, rows, 1)
        out = {}
        for bf16 in (False, True):
            label = "bf16" if bf16 else "float32"
            for verb in ("embed", "score"):
                run = partial(autocast_call, getattr(vae, verb), table, bf16)
                out[f"{verb} {label}"] = rows / timed(run, args.seconds, args.device)
            out[f"scores {label}"] = autocast_call(vae.score, table, bf16)["score"].to_numpy()
        exact, fast = out.pop("scores float32"), out.pop("scores bf16")
        out["bf16 max |Δscore|"] = float(np.max(np.abs(fast - exact)))
        out["bf16 max |Δscore| / |score|"] = float(np.max(np.abs(fast - exact)
                                                          / np.maximum(np.abs(exact), 1e-12)))
        record(f"inference/{rows}", out)


def require_gpus(device: str) -> float:
    """1 where the run is on CUDA (and Ray sees the GPU: an actor asking for one that Ray
    does not see waits for ever), 0 for a dry run on CPU."""
    import ray

    if device != "cuda":
        return 0.0
    if ray.cluster_resources().get("GPU", 0) < 1:
        raise RuntimeError(f"Ray sees no GPU: {ray.cluster_resources()}")
    return 1.0


# -- 3. batch jobs --------------------------------------------------------------------------
def batch(folder: str, args: argparse.Namespace, record: Callable[[str, object], None]) -> None:
    from pipelines import ray_runtime
    from pipelines.batch import job_for, run
    from vae_core.data.tables import read_parquet

    ray_runtime.init()
    gpus = require_gpus(args.device)
    with tempfile.TemporaryDirectory() as work:
        data = Path(work) / "rows"
        data.mkdir()
        test = load_adult("test")
        for i in range(0, args.batch_rows, 250_000):
            pq.write_table(resampled(test, min(250_000, args.batch_rows - i), i),
                           data / f"part-{i // 250_000:03d}.parquet")
        table = read_parquet(data)
        vae = TabularVAE.load(folder, device=args.device)
        for action in ("embed", "score"):
            rows = table if action == "embed" else table.slice(0, args.batch_rows // 4)
            seconds = timed(partial(getattr(vae, action), rows), 0, args.device)
            figures = {"in_process_gpu": rows.num_rows / seconds}
            source = data if action == "embed" else Path(work) / "quarter"
            if action == "score":
                source.mkdir()
                pq.write_table(rows, source / "part-000.parquet")
            for label, per_actor in (("gpu_actor", gpus), ("gpu_quarter_actors", gpus / 4),
                                     ("cpu_actors", 0.0)):
                t0 = time.perf_counter()
                outcome = run(job_for(action, model=folder, input=str(source),
                                      output=f"{work}/{action}-{label}",
                                      gpus_per_actor=per_actor),
                              log=lambda _: None)
                figures[label] = outcome.rows / (time.perf_counter() - t0)
            record(f"batch/{action}", {**figures, "rows": rows.num_rows})


# -- 4. serving -----------------------------------------------------------------------------
def serving(folder: str, args: argparse.Namespace, record: Callable[[str, object], None]) -> None:
    from bench_serving import in_process, load
    from ray import serve

    from pipelines import ray_runtime
    from serving.deployment import deploy, serve_config

    ray_runtime.init()
    gpus = require_gpus(args.device)
    vae = TabularVAE.load(folder, device=args.device)
    rows = load_adult("train").slice(0, 10_000)
    figures: dict[str, dict] = {verb: {} for verb in ("embed", "score")}
    for replicas, key in ((1, "served"), (2, "served_2")):  # 2: the GPU shared, half each
        deploy(serve_config(folder, None, port=8765, replicas=replicas,
                            gpus_per_replica=gpus / replicas))
        try:
            for verb in figures:
                figures[verb][key] = asyncio.run(load(f"http://127.0.0.1:8765/v1/{verb}", rows,
                                                      2 * replicas, "arrow", args.seconds))
        finally:
            serve.shutdown()
    for verb, served in figures.items():
        record(f"serving/{verb}", {**served,
                                   "in_process_gpu": in_process(vae, verb, rows, args.seconds)})


# -- 5. Ray Train ---------------------------------------------------------------------------
# What the job trains in this stage: the default model and the embedding preset at d = 8 (its
# stress's exact directions: a moments pass and PCA's start on the worker's device).
RAY_MODELS = {"default": None, "embedding preset, d = 8": "embedding"}


def ray_train(args: argparse.Namespace, record: Callable[[str, object], None]) -> None:
    """The training job's loop (``pipelines.train_loop``, what `vae train --workers 1
    [--use-gpu]` runs: Ray Data shards, DDP's backend, NCCL on a GPU) on one worker on the
    GPU and one on CPU cores, over the same encoded Adult rows and at the GPU's batch (4,096,
    the README's advice); MLflow left out (no run: the loop logs nothing). Each fit's last
    epoch's rows/s and held-out ELBO, and how far the GPU-trained checkpoint's embeddings,
    loaded on the CPU, are from the same checkpoint's on the GPU."""
    from ray.train import DataConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pipelines import dataset, ray_runtime
    from pipelines.train_loop import loop_config, train_loop
    from vae_core import ColumnTransformer, infer_schema
    from vae_core.config import ModelConfig, TrainConfig
    from vae_core.presets import TableShape, apply_preset

    threads = max(1, (os.cpu_count() or 2) // 2)
    with tempfile.TemporaryDirectory() as work:
        pq.write_table(resampled(load_adult("train"), args.train_rows, 0), f"{work}/rows.parquet")
        source = dataset.discover(f"{work}/rows.parquet")
        schema = infer_schema(source.schema, {})
        ray_runtime.init(train_workers=1)
        on_gpu = require_gpus(args.device) > 0
        ds = dataset.read(source)
        stats = dataset.distributed_statistics(ds, schema)
        held = load_adult("test").slice(0, 2_000)
        for name, preset in RAY_MODELS.items():
            model, train = ModelConfig(), TrainConfig(epochs=args.epochs, batch_size=4096)
            choice = None
            if preset:
                model, train, choice = apply_preset(preset, TableShape.of(schema, stats), model,
                                                    train, {"batch_size", "epochs"})
            transformer = ColumnTransformer.for_model(schema, stats, model)
            splits = dataset.encoded_splits(source, ds, transformer, train.validation_fraction,
                                            train.seed)
            figures = {}
            for label, use_gpu in (("gpu", on_gpu), ("cpu", False)):
                t0 = time.perf_counter()
                result = TorchTrainer(
                    train_loop,
                    train_loop_config=loop_config(transformer, model, train, source.rows,
                                                  threads, choice),
                    datasets={"train": splits.train, "val": splits.val},
                    dataset_config=DataConfig(datasets_to_split="all"),
                    scaling_config=ScalingConfig(num_workers=1, use_gpu=use_gpu,
                                                 resources_per_worker={"CPU": threads}),
                    run_config=RunConfig(name=f"{preset or 'default'}-{label}",
                                         storage_path=work)).fit()
                figures[label] = {"rows_per_s": result.metrics["rows_per_second"],
                                  "val_elbo": result.metrics["val_elbo"],
                                  "wall_s": time.perf_counter() - t0}
                if label == "gpu":
                    with result.checkpoint.as_directory() as folder:
                        here = TabularVAE.load(folder).embed(held)
                        there = TabularVAE.load(folder, device=args.device).embed(held)
                    figures["gpu_checkpoint_on_cpu_max_abs_diff"] = float(
                        np.max(np.abs(here - there)))
            record(f"ray-train/{name}", {**figures, "rows": args.train_rows,
                                         "batch": train.batch_size, "threads": threads})


# -- driver ---------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", type=Path, help="keep every figure here (written per stage)")
    parser.add_argument("--out", type=Path, help="rewrite this bench's section of this file")
    parser.add_argument("--render", type=Path, help="only render a kept --json file")
    parser.add_argument("--stages", default="training,inference,batch,serving,ray-train")
    parser.add_argument("--train-rows", type=int, default=300_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-rows", type=int, default=2_000_000)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of the script")
    args = parser.parse_args()
    if args.render:
        results = json.loads(args.render.read_text())
        if args.out:
            write_section(args.out, render(results))
        print(render(results))
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_gpu: no CUDA GPU here (torch.cuda.is_available() is False); "
                         "--device cpu runs the script as a dry run")
    results: dict[str, object] = {"device": environment(args.device), "args": vars(args) | {
        k: str(v) for k, v in vars(args).items() if isinstance(v, Path)}}

    def record(key: str, value: object) -> None:
        results[key] = value
        print(key, json.dumps(value), flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))

    stages = args.stages.split(",")
    with tempfile.TemporaryDirectory() as work:
        folder = str(Path(work) / "model")
        if {"inference", "batch", "serving"} & set(stages):  # they read a saved model
            TabularVAE(epochs=5, columns={"income": "condition"}, seed=0).fit(
                load_adult("train"), device=args.device).save(folder)
        for stage in stages:
            t0 = time.perf_counter()
            try:
                if stage == "training":
                    training(args, record)
                elif stage == "inference":
                    inference(TabularVAE.load(folder, device=args.device), args, record)
                elif stage == "batch":
                    batch(folder, args, record)
                elif stage == "serving":
                    serving(folder, args, record)
                elif stage == "ray-train":
                    ray_train(args, record)
            except Exception:  # one failed stage keeps the others' figures
                record(f"{stage}/failed", traceback.format_exc()[-3000:])
            record(f"{stage}/seconds", time.perf_counter() - t0)
    if args.out:
        write_section(args.out, render(results))


def environment(device: str) -> dict:
    import platform

    info = {"torch": torch.__version__, "python": platform.python_version(),
            "cpus": os.cpu_count()}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def table(caption: str, header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table under its caption; nothing where there are no rows."""
    if not rows:
        return []
    return [caption, "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows), ""]


def render(results: dict) -> str:
    env, args = results["device"], results["args"]
    k = lambda v: f"{v / 1000:,.1f} k"  # noqa: E731
    lines = ["", f"## GPU paths ({env.get('gpu', 'no GPU')}, {env['cpus']} CPUs, "
                 f"torch {env['torch']})", "",
             "Command: `python benchmarks/bench_gpu.py --json gpu.json` on the device machine, "
             "rendered here with `--render gpu.json --out benchmarks/RESULTS.md`. Rows/s; each "
             "table's references come from the same run as its figures.", ""]
    training = []
    for key in (key for key in results if key.startswith("training/")):
        if isinstance(f := results[key], dict):
            prod, large, plain = f["product"], f["product_16x"], f["plain"]
            training.append([key[9:], k(prod["rows_per_s"]), k(large["rows_per_s"]),
                             *(k(p["rows_per_s"]) for p in plain),
                             f"{prod['rows_per_s'] / plain[1]['rows_per_s']:.2f}; "
                             f"{large['rows_per_s'] / plain[3]['rows_per_s']:.2f}",
                             f"{prod['val_elbo']:.2f}; {large['val_elbo']:.2f}"])
    lines += table(
        f"**Training** on {args['train_rows']:,} Adult rows (resampled), {args['epochs']} "
        "epochs: `TabularVAE.fit(device=\"cuda\")` (float32), its last epoch's rows/s, "
        "against a plain CUDA loop on the same module, every row on the GPU; b = the model's "
        "batch (256).",
        ["model", "product, b", "product, 16 b", "plain, b, bf16", "plain, b, float32",
         "plain, 16 b, bf16", "plain, 16 b, float32", "product / plain float32 (b; 16 b)",
         "held-out ELBO (b; 16 b)"], training)
    inference = []
    for key in (key for key in results if key.startswith("inference/")):
        if key[10:].isdigit():
            f = results[key]
            inference.append([f"{int(key[10:]):,}", *(k(f[f"{verb} {dtype}"]) for verb in
                                                      ("embed", "score")
                                                      for dtype in ("float32", "bf16")),
                              f"{f['bf16 max |Δscore|']:.2g}",
                              f"{f['bf16 max |Δscore| / |score|']:.2g}"])
    lines += table(
        "**Inference in process**: `TabularVAE.embed` and `.score` (IWAE K = 16), float32 "
        "against bf16 autocast.",
        ["rows per call", "embed float32", "embed bf16", "score float32", "score bf16",
         "bf16 max abs Δscore", "bf16 max rel Δscore"], inference)
    lines += table(
        "**Batch jobs**: `pipelines.batch.run` (what `vae embed|score` runs), Parquet in and "
        "out, job start included, Ray started beforehand; the in-process forward on the same "
        "rows already in memory.",
        ["job", "rows", "1 actor × 1 GPU", "4 actors × ¼ GPU", "CPU actors (8 × 1 core)",
         "in-process GPU forward"],
        [[verb, f"{f['rows']:,}", *(k(f[how]) for how in ("gpu_actor", "gpu_quarter_actors",
                                                          "cpu_actors", "in_process_gpu"))]
         for verb in ("embed", "score") if (f := results.get(f"batch/{verb}"))])
    lines += table(
        "**Serving**: the Serve app, one model replica on the GPU, 10,000-row Arrow requests "
        "from 2 clients, against the in-process GPU forward on the same rows; in the last "
        "column two replicas on half the GPU each, from 4 clients.",
        ["verb", "served", "in-process GPU", "served / in-process", "p50 ms served",
         "of which model (queue + batch + forward)", "2 replicas × ½ GPU, 4 clients"],
        [[verb, k(f["served"]["rows_per_s"]), k(f["in_process_gpu"]["rows_per_s"]),
          f"{f['served']['rows_per_s'] / f['in_process_gpu']['rows_per_s']:.2f}",
          f"{f['served']['p50_ms']:.1f}",
          f"{f['served']['stages_p50_ms'].get('model', float('nan')):.1f}",
          k(f["served_2"]["rows_per_s"]) if "served_2" in f else "not run"]
         for verb in ("embed", "score") if (f := results.get(f"serving/{verb}"))])
    ray = [[key[10:], k(f["gpu"]["rows_per_s"]), k(f["cpu"]["rows_per_s"]),
            f"{f['gpu']['rows_per_s'] / f['cpu']['rows_per_s']:.1f}",
            f"{f['gpu']['val_elbo']:.2f}; {f['cpu']['val_elbo']:.2f}",
            f"{f['gpu_checkpoint_on_cpu_max_abs_diff']:.1g}"]
           for key in results if key.startswith("ray-train/")
           if isinstance(f := results[key], dict)]
    threads = next((results[key]["threads"] for key in results if key.startswith("ray-train/")
                    and isinstance(results[key], dict)), 0)
    lines += table(
        f"**Ray Train**: the training job's loop (`vae train --workers 1 [--use-gpu]`), one "
        f"worker, {args['train_rows']:,} Adult rows, {args['epochs']} epochs, batch 4,096, "
        "MLflow left out: the last epoch's rows/s and held-out ELBO; and the largest "
        "difference between the GPU-trained checkpoint's embeddings loaded on the CPU and "
        "on the GPU.",
        ["model", "1 worker on the GPU", f"1 worker on {threads} CPU threads", "GPU / CPU",
         "held-out ELBO (GPU; CPU)", "max abs Δ embedding"], ray)
    for key in (key for key in results if key.endswith("/failed")):
        lines.append(f"- {key[:-7]} did not finish: `{results[key].strip().splitlines()[-1]}`")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
