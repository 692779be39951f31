"""What each `vae` command does: a thin layer over pipelines (jobs) and serving (the Serve
app). Heavy imports happen inside the commands, so each pays only for what it uses."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable

from vae_cli.job_flags import job_from_args


def say(line: str) -> None:
    print(line, flush=True)


def demo(args: argparse.Namespace) -> None:
    from pipelines import logs
    from vae_cli import demo as steps

    log_file = logs.attach(logs.beside(str(args.out)))
    steps.run(args.out, args.epochs, log_file)
    if not args.library_only:
        steps.run_job(args.epochs)
        steps.run_serving()


def train(args: argparse.Namespace) -> None:
    from pipelines.train import train as run

    run(job_from_args(args), log=say, progress=True)


def submit(args: argparse.Namespace) -> None:
    from pipelines import submit as jobs_api

    job = job_from_args(args)
    address = job.address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise ValueError("vae submit needs --address http://HEAD:8265 (or RAY_ADDRESS)")
    say(jobs_api.submit(job, address))


def schedule(args: argparse.Namespace) -> None:
    from pipelines import schedule as cron

    job = job_from_args(args, ignore=("cron", "name", "image"))
    options = {"cron": args.cron, "name": args.name, "address": job.address}
    print(cron.render(job, **options, **({"image": args.image} if args.image else {})),
          end="", flush=True)


def jobs(args: argparse.Namespace) -> None:
    from pipelines import submit as jobs_api

    if not args.address:
        raise ValueError("vae jobs needs --address http://HEAD:8265 (or RAY_ADDRESS)")
    action = {"status": jobs_api.status, "logs": jobs_api.logs, "stop": jobs_api.stop}
    say(str(action[args.action](args.address, args.job_id)))


def condition_flags(items: list[str]) -> dict:
    """``--condition`` flags as vae_core.conditions takes them: COL=VALUE (repeated: any of
    the values) or a bound COL>=X, COL>X, COL<=X, COL<X (two make a range). The operator is
    the first of < > = in the flag, so a value may hold them: income=>50K is '>50K'."""
    conditions: dict = {}
    for item in items:
        at = min((i for i in (item.find(ch) for ch in "<>=") if i >= 0), default=-1)
        op = item[at:at + 2] if item[at:at + 2] in (">=", "<=") else item[at:at + 1]
        name, value = item[:at].strip(), item[at + len(op):].strip()
        if at <= 0 or not name or value == "":
            raise ValueError(f"--condition {item!r}: expected COL=VALUE, COL>=X, COL>X, "
                             "COL<=X or COL<X")
        held = conditions.get(name)
        if op == "=" and (held is None or isinstance(held, list)):
            conditions[name] = [*(held or []), value]
        elif op != "=" and (held is None or isinstance(held, dict)) and op not in (held or {}):
            conditions[name] = {**(held or {}), op: value}
        else:
            raise ValueError(f"--condition {item!r}: '{name}' takes values or bounds, each "
                             "bound once")
    return {k: v[0] if isinstance(v, list) and len(v) == 1 else v
            for k, v in conditions.items()}


def batch(args: argparse.Namespace) -> None:
    from pipelines.batch import job_for, run

    conditions = condition_flags(getattr(args, "condition", []))
    common = {"model": args.model, "output": args.output, "input": args.input,
              "seed": args.seed, "overwrite": args.overwrite, "actors": args.actors,
              "gpus_per_actor": args.gpus_per_actor, "batch_rows": args.batch_rows,
              "address": args.address}
    own = {"score": {"iwae_samples": getattr(args, "iwae_samples", None),
                     "top_k": getattr(args, "top_k", 3)},
           "embed": {"return_std": getattr(args, "return_std", False)},
           "generate": {"n": getattr(args, "n", None), "conditions": conditions}}
    run(job_for(args.command, **common, **own[args.command]), log=say)


def models(args: argparse.Namespace) -> None:
    from pipelines import registry, tracking

    tracking.use()
    if args.action == "promote":
        registry.promote(args.name, args.version)
        say(f"{args.name} v{args.version} is now @champion")
        return
    rows = registry.list_versions(args.name)
    if args.json:
        say(json.dumps(rows, indent=1))
        return
    say(f"{'name':24} {'version':>7}  {'aliases':22} {'preset':10} {'held-out log p(x)':>18}")
    for r in rows:
        say(f"{r['name']:24} {r['version']:>7}  {','.join(r['aliases']) or '-':22} "
            f"{r['preset'] or '-':10} {r['val_log_px'] or '-':>18}")


def serve(args: argparse.Namespace) -> None:
    import model_refs
    from pipelines import logs, ray_runtime, tracking
    from serving import deployment
    from vae_core import TabularVAE

    ref, extra = model_refs.parse(args.model), {}
    model_uri = args.model
    if ref.local:
        model_uri = str(model_refs.local_path(args.model).resolve())  # replicas run elsewhere
    else:
        extra["tracking_uri"] = tracking.use()
    # Fail here, in one line, rather than in a replica: unknown model, alias or folder.
    resolved = model_refs.resolve(model_uri)
    TabularVAE.load(resolved.folder)
    config = deployment.serve_config(
        model_uri, resolved.version, args.host, args.port, args.replicas,
        args.gpus_per_replica, token=os.environ.get("VAE_SERVE_TOKEN"),
        max_batch_rows=args.max_batch_rows, batch_wait_timeout_s=args.batch_wait_ms / 1000,
        **extra)
    log_file = logs.attach(logs.in_logs_folder(f"serve-{args.port}"))
    where = f"; logs: {log_file}" if log_file else ""
    ray_runtime.init(args.address or ("auto" if args.reload else None))
    deployment.deploy(config)
    served = model_uri + (f" (version {resolved.version})" if resolved.version else "")
    if args.reload:
        say(f"reloaded: now serving {served}{where}")
        return
    say(f"serving {served} at http://{args.host}:{args.port} (OpenAPI: /docs); Ctrl-C "
        f"stops{where}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        from ray import serve as ray_serve

        ray_serve.shutdown()


def evaluate(args: argparse.Namespace) -> None:
    import model_refs
    from pipelines import tracking
    from vae_core import TabularVAE

    if args.synthetic and args.n:
        raise ValueError("give --synthetic or --n, not both")
    if not model_refs.parse(args.model).local:
        tracking.use()
    vae = TabularVAE.load(model_refs.resolve(args.model).folder)
    real = _read_parquet(args.real, "--real")
    synthetic = _read_parquet(args.synthetic, "--synthetic") if args.synthetic else \
        vae.sample(args.n or real.num_rows, seed=args.seed)
    holdout = _read_parquet(args.holdout, "--holdout") if args.holdout else None
    report = vae.evaluate(real, synthetic, holdout, args.target, args.seed)
    page = report.write(args.output, real, synthetic, vae.transformer.schema)
    say(f"{report.summary_line()}; report: {page}")


def _read_parquet(path: str, flag: str):
    """A Parquet file or folder as one table; a missing, empty or corrupt one is one line."""
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    if not Path(path).exists():
        raise ValueError(f"{flag} '{path}': no such file or folder")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise ValueError(f"{flag} '{path}' is not readable Parquet ({e})") from e
    if table.num_rows == 0:
        raise ValueError(f"{flag} '{path}' holds no rows")
    return table


COMMANDS: dict[str, Callable[[argparse.Namespace], None]] = {
    "demo": demo, "train": train, "submit": submit, "schedule": schedule, "jobs": jobs,
    "serve": serve, "embed": batch, "score": batch, "generate": batch, "models": models,
    "evaluate": evaluate}
