"""Serving over HTTP (Ray Serve on 127.0.0.1) against its two references, same model, same rows.

    .venv/bin/python benchmarks/bench_serving.py --seconds 15 --out benchmarks/RESULTS.md

Workloads: POST /v1/score (IWAE K = 16, the model's default: 16 decoder passes per row)
  (idle) single-row requests from 1 client, one after the other: the latency of one request
         on an idle server;
  (a) single-row requests from 64 concurrent clients;
  (b) 1 000-row JSON requests from 4 clients;
  (b-inv) the same rows through MLflow's scoring protocol (POST /invocations,
         dataframe_split, as MLflow's clients send a DataFrame);
  (c) 10 000-row Arrow requests from 2 clients;
and POST /v1/embed (one encoder pass per row, so HTTP and decoding costs show):
  (b-embed) 1 000-row JSON requests from 4 clients; (c-embed) 10 000-row Arrow, 2 clients.
Faults: 100-row JSON score requests from 8 clients for 30 s; one model replica is SIGKILLed
at 5 s; with --replicas (default 2), then with 1. Reported: requests, answers that were not
200 (by status), the longest gap between two answers, p99.
Where a served request's time goes: the medians of its Server-Timing stages (decode, model =
queue + batch + forward, encode); the rest of the client's median is the way there and back.
References measured in the same run:
  * in-process: TabularVAE.score on the same rows in this process (1 torch thread) — the
    ceiling, no HTTP, no Ray;
  * naive Serve: a FastAPI ingress that calls the same TabularVAE.score once per request,
    JSON only, no @serve.batch, Serve's default max_ongoing_requests — the floor.
The load generator (httpx, asyncio) runs in this process, on the same 2 cores as Ray.
"""

import argparse
import asyncio
import itertools
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from fastapi import FastAPI, Request

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results_file import write_section  # noqa: E402

from serving.codecs import ARROW_STREAM, table_to_arrow  # noqa: E402
from serving.deployment import REPLICAS  # noqa: E402
from vae_core import TabularVAE  # noqa: E402
from vae_core.datasets import load_adult  # noqa: E402

WORKLOADS = {  # name: (verb, rows per request, concurrent clients, body format)
    "idle": ("score", 1, 1, "json"),
    "a": ("score", 1, 64, "json"),
    "b": ("score", 1000, 4, "json"),
    "b-inv": ("score", 1000, 4, "invocations"),
    "c": ("score", 10_000, 2, "arrow"),
    "b-embed": ("embed", 1000, 4, "json"),
    "c-embed": ("embed", 10_000, 2, "arrow"),
}


def naive_app(model_dir: str):
    """The floor: what a first Serve script looks like — one forward per request."""
    from ray import serve

    app = FastAPI()

    @serve.deployment(ray_actor_options={"num_cpus": 1})
    @serve.ingress(app)
    class NaiveVAE:
        def __init__(self, folder: str) -> None:
            self.vae = TabularVAE.load(folder)

        @app.post("/v1/score")
        async def score(self, request: Request) -> dict:
            rows = (await request.json())["rows"]
            return {"rows": self.vae.score(pa.Table.from_pylist(rows)).to_pylist()}

        @app.post("/v1/embed")
        async def embed(self, request: Request) -> dict:
            rows = (await request.json())["rows"]
            z = self.vae.embed(pa.Table.from_pylist(rows))
            return {"rows": [{f"z_{i}": float(v) for i, v in enumerate(r)} for r in z]}

    return NaiveVAE.bind(model_dir)


def request_body(rows: pa.Table, fmt: str) -> tuple[bytes, dict]:
    if fmt == "arrow":
        return table_to_arrow(rows), {"content-type": ARROW_STREAM}
    if fmt == "invocations":  # what mlflow.utils.proto_json_utils.dump_input_data sends
        split = {"columns": rows.column_names,
                 "data": [list(r.values()) for r in rows.to_pylist()]}
        return json.dumps({"dataframe_split": split}).encode(), {"content-type": "application/json"}
    return json.dumps({"rows": rows.to_pylist()}).encode(), {"content-type": "application/json"}


def server_timing(header: str) -> dict[str, float]:
    """``decode;dur=1.20, model;dur=3.10`` → {"decode": 1.2, "model": 3.1} (ms)."""
    stages = {}
    for part in filter(None, header.split(",")):
        name, _, duration = part.strip().partition(";dur=")
        stages[name] = float(duration)
    return stages


async def load(url: str, rows: pa.Table, clients: int, fmt: str, seconds: float) -> dict:
    import httpx

    body, headers = request_body(rows, fmt)
    latencies: list[float] = []
    stages: dict[str, list[float]] = {}
    errors = 0
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(
            max_connections=clients, max_keepalive_connections=clients)) as client:
        for _ in range(2):  # warm-up
            await client.post(url, content=body, headers=headers)
        deadline = time.perf_counter() + seconds
        start = time.perf_counter()

        async def one_client() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                r = await client.post(url, content=body, headers=headers)
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    errors += 1
                for name, ms in server_timing(r.headers.get("server-timing", "")).items():
                    stages.setdefault(name, []).append(ms)

        await asyncio.gather(*(one_client() for _ in range(clients)))
        wall = time.perf_counter() - start
    lat = np.asarray(latencies)
    return {"requests": len(lat), "errors": errors, "req_per_s": len(lat) / wall,
            "rows_per_s": len(lat) * rows.num_rows / wall,
            "p50_ms": 1000 * np.percentile(lat, 50), "p99_ms": 1000 * np.percentile(lat, 99),
            "stages_p50_ms": {k: float(np.median(v)) for k, v in stages.items()}}


def model_replicas() -> list[int]:
    """PIDs of the VAEModel replicas (Ray titles an actor's process ray::<class name>)."""
    import psutil

    return sorted(p.pid for p in psutil.process_iter(["cmdline"])
                  if "ServeReplica:vae:VAEModel" in " ".join(p.info["cmdline"] or []))


async def kill_under_load(url: str, rows: pa.Table, clients: int = 8, seconds: float = 30,
                          kill_at: float = 5) -> dict:
    """``clients`` clients for ``seconds``; one model replica SIGKILLed at ``kill_at``."""
    import os
    import signal

    import httpx

    body, headers = request_body(rows, "json")
    done, latencies, statuses = [], [], {}
    async with httpx.AsyncClient(timeout=300) as client:
        start = time.perf_counter()

        async def one_client() -> None:
            while time.perf_counter() - start < seconds:
                t0 = time.perf_counter()
                r = await client.post(url, content=body, headers=headers)
                done.append(time.perf_counter() - start)
                latencies.append(done[-1] + start - t0)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

        async def kill() -> None:
            await asyncio.sleep(kill_at)
            os.kill(model_replicas()[0], signal.SIGKILL)

        await asyncio.gather(kill(), *(one_client() for _ in range(clients)))
    done.sort()
    return {"requests": len(done), "statuses": statuses,
            "longest_gap_s": max(b - a for a, b in itertools.pairwise(done)),
            "p99_ms": 1000 * np.percentile(latencies, 99)}


def in_process(vae: TabularVAE, verb: str, rows: pa.Table, seconds: float) -> dict:
    run = getattr(vae, verb)
    run(rows)  # warm-up
    latencies = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        run(rows)
        latencies.append(time.perf_counter() - t0)
    lat = np.asarray(latencies)
    return {"requests": len(lat), "errors": 0, "req_per_s": 1 / lat.mean(),
            "rows_per_s": rows.num_rows / lat.mean(), "p50_ms": 1000 * np.percentile(lat, 50),
            "p99_ms": 1000 * np.percentile(lat, 99)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--replicas", type=int, default=REPLICAS, help="model replicas")
    parser.add_argument("--out", type=Path, help="rewrite this bench's section of this file")
    args = parser.parse_args()
    torch.set_num_threads(1)

    import ray
    from ray import serve

    from pipelines import ray_runtime
    from serving.deployment import deploy, serve_config

    train = load_adult("train")
    vae = TabularVAE(epochs=args.epochs, columns={"income": "condition"}, seed=0).fit(train)
    results: dict[str, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory() as work:
        folder = str(vae.save(Path(work) / "model"))
        vae = TabularVAE.load(folder)
        ray_runtime.init()
        deploy(serve_config(folder, None, port=8765, replicas=args.replicas))
        serve.run(naive_app(folder), name="naive", route_prefix="/naive")
        base = "http://127.0.0.1:8765"
        try:
            for key, (verb, n, clients, fmt) in WORKLOADS.items():
                rows = train.slice(0, n)  # test has only 6 513 rows
                route = "/invocations" if fmt == "invocations" else f"/v1/{verb}"
                results[key] = {
                    "in_process": in_process(vae, verb, rows, args.seconds),
                    "serve": asyncio.run(load(base + route, rows, clients, fmt, args.seconds)),
                    "naive": asyncio.run(load(f"{base}/naive/v1/{verb}", rows, clients, "json",
                                              args.seconds)),
                }
                print(key, json.dumps(results[key]), flush=True)
            faults = {}
            for replicas in dict.fromkeys([args.replicas, 1]):
                deploy(serve_config(folder, None, port=8765, replicas=replicas))
                while len(model_replicas()) != replicas:  # scaled down, the rest stopped
                    time.sleep(0.5)
                faults[replicas] = asyncio.run(kill_under_load(base + "/v1/score",
                                                               train.slice(0, 100)))
                print("kill", replicas, json.dumps(faults[replicas]), flush=True)
        finally:
            serve.shutdown()
            ray.shutdown()
    if args.out:
        write_section(args.out, render(results, faults, args))


def render(results: dict, faults: dict, args: argparse.Namespace) -> str:
    labels = {"idle": "(idle) score, 1-row JSON requests, 1 client",
              "a": "(a) score, 1-row JSON requests, 64 clients",
              "b": "(b) score, 1 000-row JSON requests, 4 clients",
              "b-inv": "(b-inv) as (b), through /invocations (naive: /v1 JSON)",
              "c": "(c) score, 10 000-row requests, 2 clients (Arrow; naive: JSON)",
              "b-embed": "embed, 1 000-row JSON requests, 4 clients",
              "c-embed": "embed, 10 000-row requests, 2 clients (Arrow; naive: JSON)"}
    lines = ["", "## Serving over HTTP (Ray Serve on 127.0.0.1; score = IWAE K = 16)",
             "",
             f"Command: `.venv/bin/python benchmarks/bench_serving.py --seconds {args.seconds:g}`"
             f" ({platform.machine()}, 2 cores; Ray, the ingress, {args.replicas} model "
             "replica(s), the proxy and the load generator share them). In-process = "
             "`TabularVAE.score` on the same rows in one process, no HTTP (the ceiling). "
             "Naive = a Serve deployment calling the same `score` once per request, JSON, no "
             "batching, default `max_ongoing_requests` (the floor).", "",
             "| workload | path | req/s | rows/s | p50 ms | p99 ms | errors | rows/s vs "
             "in-process | req/s vs naive |", "| --- | --- | --- | --- | --- | --- | --- | --- |"
             " --- |"]
    for key, paths in results.items():
        for path in ("in_process", "serve", "naive"):
            r = paths[path]
            lines.append(
                f"| {labels[key]} | {path.replace('_', '-')} | {r['req_per_s']:,.1f} | "
                f"{r['rows_per_s']:,.0f} | {r['p50_ms']:,.1f} | {r['p99_ms']:,.1f} | "
                f"{r['errors']} | {r['rows_per_s'] / paths['in_process']['rows_per_s']:.2f} | "
                f"{r['req_per_s'] / paths['naive']['req_per_s']:.1f} |")
    lines += ["", "Where a served request's time goes (medians, ms): the stages the ingress "
              "reports in `Server-Timing` (decode = read and parse the body and build the "
              "table; model = the hop to a model replica, its queue, batch and forward pass; "
              "encode = the answer's body), and "
              "the rest of the client's median (Serve's proxy hop, HTTP, the load generator).",
              "", "| workload | client p50 | decode | model | encode | rest |",
              "| --- | --- | --- | --- | --- | --- |"]
    for key, paths in results.items():
        r = paths["serve"]
        stages = [r["stages_p50_ms"].get(s, 0.0) for s in ("decode", "model", "encode")]
        lines.append(f"| {labels[key]} | {r['p50_ms']:,.1f} | "
                     + " | ".join(f"{x:,.1f}" for x in stages)
                     + f" | {r['p50_ms'] - sum(stages):,.1f} |")
    lines += ["", "A model replica SIGKILLed 5 s into 30 s of 100-row JSON score requests from "
              "8 clients (Serve starts a replacement):", "",
              "| model replicas | requests | not 200 | longest gap between answers s | p99 ms |",
              "| --- | --- | --- | --- | --- |"]
    for replicas, f in faults.items():
        failed = {code: n for code, n in f["statuses"].items() if code != 200}
        lines.append(f"| {replicas} | {f['requests']} | "
                     f"{', '.join(f'{n} × {code}' for code, n in failed.items()) or 0} | "
                     f"{f['longest_gap_s']:.2f} | {f['p99_ms']:,.0f} |")
    b, inv = results.get("b"), results.get("b-inv")
    if b and inv:
        lines += ["", "/invocations against /v1 for the same 1 000-row JSON score requests: "
                  f"{inv['serve']['rows_per_s'] / b['serve']['rows_per_s']:.2f} of the rows/s."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
