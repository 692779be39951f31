"""A real two-node Ray cluster on this machine: a head (`ray start --head` on 127.0.0.1) and
a second node joined to it (`ray start --address`). `vae submit` sends a job to it, and a
2-worker training job runs one worker on each node and loses one of them mid-run.

Named to run last: it starts a second Ray on this machine, stopped by killing its own
process groups (never `ray stop`, which would also stop the session's Ray).
"""

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.integration.jobs import free_port, has_registered_checkpoint

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent
NODE_CPUS = 3  # logical: room for one 2-CPU worker and a Ray Data task on each node


@dataclass
class Cluster:
    gcs: str  # what ray.init(address=...) and `ray start --address` take
    dashboard: str  # what the Jobs API (vae submit) takes
    head: subprocess.Popen
    node: subprocess.Popen

    def node_of(self, pid: int) -> str:
        """Which node a Ray process belongs to: each `ray start` runs in its own session,
        and the processes its raylet starts stay in it."""
        sid = os.getsid(pid)
        return {self.head.pid: "head", self.node.pid: "node"}.get(sid, f"session {sid}")


def _start(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)  # the token (RAY_AUTH_*) is the cluster fixture's
    with open(log, "w") as out:  # the child keeps its own descriptor
        return subprocess.Popen([str(BIN / "ray"), "start", "--block", "--node-ip-address",
                                 "127.0.0.1", "--num-cpus", str(NODE_CPUS),
                                 "--disable-usage-stats", *args],
                                env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)  # a node drains for up to 30 s: no need here
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def _wait_for(ready, procs: list[subprocess.Popen], logs: list[Path], what: str) -> None:
    deadline = time.time() + 180
    while not ready():
        if any(p.poll() is not None for p in procs) or time.time() > deadline:
            for p in procs:  # no teardown runs after a failed setup
                _stop(p)
            tails = "\n".join(log.read_text()[-2000:] for log in logs)
            raise RuntimeError(f"{what} did not come up:\n{tails}")
        time.sleep(1)


def _dashboard_up(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"{address}/api/version", timeout=2):
            return True
    except urllib.error.HTTPError:  # an answer (401 under token auth) means it is up
        return True
    except OSError:
        return False


def _alive_nodes(gcs: str) -> int:
    out = subprocess.run([str(BIN / "ray"), "status", "--address", gcs], capture_output=True,
                         text=True, timeout=60).stdout
    return out.count("node_")  # one "1 node_<id>" line per active node


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    import ray

    # The session's Ray is done by now (this module runs last); on 2 cores its idle workers
    # slowed the head's job agent past two minutes.
    ray.shutdown()
    # Ray ≥ 2.59 turns token auth on for clusters started by `ray start`: every node, the
    # drivers and the Jobs client of this module share one token.
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    saved = {key: os.environ.get(key) for key in auth}
    os.environ.update(auth)
    logs = tmp_path_factory.mktemp("cluster")
    port, dashboard = free_port(), free_port()
    head = _start(["--head", "--port", str(port), "--dashboard-host", "127.0.0.1",
                   "--dashboard-port", str(dashboard)], logs / "head.log")
    address = f"http://127.0.0.1:{dashboard}"
    _wait_for(lambda: _dashboard_up(address), [head], [logs / "head.log"], "the head")
    gcs = f"127.0.0.1:{port}"
    # Its own temp dir: two nodes on one machine would share /tmp/ray/session_*, and each
    # node's runtime-env agent unpacks, then deletes, a submitted job's working_dir there.
    node_tmp = tempfile.mkdtemp(prefix="ray-node-")  # short: Ray's socket paths live in it
    node = _start(["--address", gcs, "--temp-dir", node_tmp], logs / "node.log")
    _wait_for(lambda: _alive_nodes(gcs) == 2, [head, node],
              [logs / "head.log", logs / "node.log"], "the second node")
    yield Cluster(gcs, address, head, node)
    ray.shutdown()  # a test's driver, if one is still connected
    _stop(node)
    _stop(head)
    shutil.rmtree(node_tmp, ignore_errors=True)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@dataclass
class Run:
    run_id: str
    val_log_px: float
    nodes: list[str]  # the nodes of its Train workers at the first checkpoint
    replaced_on: list[str]  # the nodes of the workers started after a kill


def _train_watching(cluster: Cluster, workdir: Path, flags: list[str],
                    kill_on: str | None = None) -> Run:
    """`vae train --address` the cluster with ``flags``, in a process of its own (a driver
    reads Ray's token from its environment when it starts). At the first checkpoint, note
    the node of each Train worker; ``kill_on``: SIGKILL the worker on that node then."""
    import psutil
    from mlflow.tracking import MlflowClient

    def train_workers() -> dict[int, str]:  # Ray titles actors' processes "ray::RayTrainWorker…"
        found = {}
        for p in psutil.process_iter(["cmdline"]):
            if "RayTrainWorker" in " ".join(p.info["cmdline"] or []):
                with contextlib.suppress(ProcessLookupError):
                    found[p.pid] = cluster.node_of(p.pid)
        return found

    run_name = flags[flags.index("--run-name") + 1]
    with open(workdir / f"{run_name}.log", "w") as log:
        proc = subprocess.Popen([str(BIN / "vae"), "train", "--address", cluster.gcs, *flags],
                                cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    output = lambda: (workdir / f"{run_name}.log").read_text()  # noqa: E731
    deadline = time.time() + 400
    while not has_registered_checkpoint(workdir / "ray_results" / run_name):
        if time.time() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail(f"the job ended or stalled before its first checkpoint:\n{output()}")
        time.sleep(0.2)
    first, replacements = train_workers(), {}
    if kill_on:
        os.kill(next(pid for pid, node in first.items() if node == kill_on), signal.SIGKILL)
    while proc.poll() is None:
        replacements.update({pid: node for pid, node in train_workers().items()
                             if pid not in first})
        time.sleep(0.5)
    assert proc.returncode == 0, output()[-3000:]
    run_id = re.search(r"\(MLflow run (\w+)\)", output()).group(1)
    val_log_px = MlflowClient().get_run(run_id).data.metrics["final_val_log_px"]
    return Run(run_id, val_log_px, sorted(first.values()), sorted(replacements.values()))


def _registered_versions(name: str) -> list[str]:
    from mlflow.tracking import MlflowClient

    return [v.version for v in MlflowClient().search_model_versions(f"name='{name}'")]


def test_two_nodes_train_a_worker_each_and_resume_when_one_is_killed(
        mlflow_server, cluster, adult_slice, workdir):
    from mlflow.tracking import MlflowClient

    from pipelines.registry import model_folder
    from vae_core import TabularVAE

    common = ["--data", str(adult_slice), "--column", "income=condition", "--batch-size",
              "256", "--epochs", "6", "--workers", "2", "--max-failures", "1"]
    spread = _train_watching(cluster, workdir, [
        *common, "--placement", "spread", "--model-name", "adult-two-nodes",
        "--run-name", "two-nodes"], kill_on="node")
    assert spread.nodes == ["head", "node"]  # one worker on each node
    assert spread.replaced_on  # the group was restarted after the kill ...
    steps = [m.step for m in MlflowClient().get_metric_history(spread.run_id, "val_elbo")]
    assert steps.count(1) == 1 and set(steps) == set(range(1, 7))  # ... from a checkpoint
    assert _registered_versions("adult-two-nodes") == ["1"]

    # The same job on one node of the same cluster: packed, with CPUs for two on a node.
    packed = _train_watching(cluster, workdir, [
        *common, "--placement", "pack", "--cpus-per-worker", "1", "--model-name",
        "adult-one-node", "--run-name", "one-node"])
    assert len(packed.nodes) == 2 and len(set(packed.nodes)) == 1
    assert abs(spread.val_log_px - packed.val_log_px) <= 0.05 * abs(packed.val_log_px)

    rows = pq.read_table(adult_slice).slice(0, 500)
    log_px = [TabularVAE.load(model_folder(f"models:/{name}@champion")).score(rows)
              .column("log_px").to_numpy() for name in ("adult-two-nodes", "adult-one-node")]
    assert all(np.isfinite(v).all() for v in log_px)
    two_nodes, one_node = (float(np.mean(v)) for v in log_px)
    assert abs(two_nodes - one_node) <= 0.05 * abs(one_node)


def test_submit_runs_the_job_on_the_cluster(mlflow_server, cluster, adult_slice, tmp_path):
    vae = str(BIN / "vae")
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server}
    out = subprocess.run([vae, "submit", "--address", cluster.dashboard, "--data", str(adult_slice),
                          "--model-name", "adult-submitted", "--epochs", "2",
                          "--column", "income=condition"],
                         env=env, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-2000:]
    job_id = out.stdout.strip().splitlines()[-1]
    deadline, status = time.time() + 600, ""
    while time.time() < deadline:
        status = subprocess.run([vae, "jobs", "status", job_id, "--address", cluster.dashboard],
                                env=env, capture_output=True, text=True, timeout=60).stdout.strip()
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        time.sleep(3)
    logs = subprocess.run([vae, "jobs", "logs", job_id, "--address", cluster.dashboard], env=env,
                          capture_output=True, text=True, timeout=60).stdout
    assert status == "SUCCEEDED", logs[-3000:]
    assert "registered adult-submitted v1 (@champion)" in logs
    from mlflow.tracking import MlflowClient

    version = MlflowClient(mlflow_server).get_model_version_by_alias("adult-submitted", "champion")
    assert version.version == "1"


def test_submit_without_an_address_is_one_line(adult_slice):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([str(BIN / "vae"), "submit", "--data", str(adult_slice)], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip() == "vae: error: vae submit needs --address http://HEAD:8265 (or " \
                                 "RAY_ADDRESS)"
