"""`vae submit` against a real Ray head started by the test (`ray start --head` on 127.0.0.1).

Named to run last: it starts a second Ray on this machine, stopped by killing its own
process group (never `ray stop`, which would also stop the session's Ray).
"""

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.integration.jobs import free_port

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


@pytest.fixture
def ray_head(tmp_path):
    import ray

    # The session's Ray is done by now (this module runs last); on 2 cores its idle workers
    # slowed the head's job agent past two minutes.
    ray.shutdown()
    dashboard = free_port()
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    log = open(tmp_path / "head.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
         "--port", str(free_port()), "--dashboard-host", "127.0.0.1",
         "--dashboard-port", str(dashboard), "--num-cpus", "4", "--disable-usage-stats"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.time() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{address}/api/version", timeout=2):
                break
        except urllib.error.HTTPError:  # an answer (401 under token auth) means it is up
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)  # no teardown runs after a failed setup
                raise RuntimeError((tmp_path / "head.log").read_text()[-3000:]) from None
            time.sleep(1)
    yield address
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


def test_submit_runs_the_job_on_the_cluster(mlflow_server, ray_head, adult_slice, tmp_path):
    vae = str(BIN / "vae")
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server}
    out = subprocess.run([vae, "submit", "--address", ray_head, "--data", str(adult_slice),
                          "--model-name", "adult-submitted", "--epochs", "2",
                          "--column", "income=condition"],
                         env=env, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-2000:]
    job_id = out.stdout.strip().splitlines()[-1]
    deadline, status = time.time() + 600, ""
    while time.time() < deadline:
        status = subprocess.run([vae, "jobs", "status", job_id, "--address", ray_head],
                                env=env, capture_output=True, text=True, timeout=60).stdout.strip()
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        time.sleep(3)
    logs = subprocess.run([vae, "jobs", "logs", job_id, "--address", ray_head], env=env,
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
