"""Starting or joining Ray, with the settings measured to work on small machines."""

from __future__ import annotations

import os
import time

from ray.data._internal.execution.execution_callback import ExecutionCallback

# Worker groups took 14–31 s to start on a 2-core box; Ray's default timeout is 60 s.
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "300")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Serve's proxy hands requests to the ingress over gRPC instead of through the object store
# (read by the proxy, so it must be in the Ray processes' environment: set here for a local
# Ray, in the pods' environment on Kubernetes). Measured with the ingress's handle on gRPC
# too: see VAEIngress in serving/deployment.py.
os.environ.setdefault("RAY_SERVE_PROXY_USE_GRPC", "1")


class PacedScheduling(ExecutionCallback):
    """Ray Data's scheduling loop (2.60) spins while its consumer is the bottleneck: a
    finished task whose output backpressure holds back makes its ``ray.wait`` return at
    once. Feeding a consumer that takes 0.1 s per 8,192-row batch, it burnt 0.53 of a core
    in the driver, whose GIL and cores the local-mode training loop shares. Each step now
    sleeps PACE_S unless the consumer is waiting for data."""

    PACE_S = 0.02

    def on_execution_step(self, executor) -> None:
        consumer_waits = getattr(executor, "_consumer_idling", lambda: True)()
        if not consumer_waits:
            time.sleep(self.PACE_S)


def init(address: str | None = None, log_to_driver: bool = False,
         train_workers: int | None = None) -> None:
    """Join ``address`` (or RAY_ADDRESS), else start a local Ray. Never initialises twice.

    ``train_workers``: how many Train workers the job runs (0: Ray Train's local mode); a
    local Ray's logical CPUs follow from it (``local_cpus``).

    While the CLI is quiet (pipelines.logs), the workers' output stays in Ray's session logs
    and Ray Data shows no progress bars: the driver's own logs go to the job's log file.
    """
    import ray
    import ray.data

    from pipelines import logs

    context = ray.data.DataContext.get_current()
    if PacedScheduling not in context.custom_execution_callback_classes:
        context.custom_execution_callback_classes.append(PacedScheduling)
    if logs.capturing():
        log_to_driver = False  # Ray would print the workers' stdout on ours
        context.enable_progress_bars = False
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=log_to_driver)
    else:
        # address="local": always a new local Ray. A bare ray.init() would follow
        # /tmp/ray/ray_current_cluster to a cluster someone once ran `ray start` for.
        ray.init(address="local", num_cpus=local_cpus(train_workers), include_dashboard=False,
                 log_to_driver=log_to_driver)


def local_cpus(train_workers: int | None = None) -> int:
    """Logical CPUs of a local Ray. At least 4 even on 2 cores: train workers get fractions
    and Ray Data's read tasks still find a slot (whole-CPU workers on 2 CPUs starve the
    readers: a hang). With no train workers (``train_workers=0``, local mode), the cores,
    at least 2: Ray keeps up to that many idle workers, and each that Ray Data used holds
    ~0.2 GB of its own (1M rows on 2 cores: 4 idle workers at the memory peak with 4 logical
    CPUs, 2 with 2, and 0.5 GB less in all; benchmarks/RESULTS.md). Two, not one: a batch
    job run next on the same Ray (``vae demo``) needs a CPU for its model actor and half a
    one for its readers."""
    cores = os.cpu_count() or 1
    return max(2, cores) if train_workers == 0 else max(4, cores)


def cpus_per_worker(workers: int, requested: float | None) -> float:
    import ray

    if requested:
        return requested
    # One CPU per node stays free for Ray Data's tasks: a worker of (CPUs − 1)/N on each of
    # two 4-CPU nodes left half a CPU on each, and a read task (1 CPU) found no room.
    nodes = max(1, sum(1 for node in ray.nodes() if node["Alive"] and node["Resources"].get("CPU")))
    total = ray.cluster_resources().get("CPU", 1.0)
    return max(0.25, (total - nodes) / max(workers, 1))
