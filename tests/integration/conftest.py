"""Real components: an `mlflow server` process on 127.0.0.1 (its registry in a PostgreSQL
server started here when one is installed, else SQLite) and one local Ray per session."""

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.integration.jobs import free_port

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    """Every test under tests/integration/ is `integration` (a conftest's pytestmark would
    not be applied), so that `pytest -m "not integration"` deselects them all. This hook
    sees the whole session's items: only those below this folder are marked."""
    for item in items:
        if Path(str(item.path)).is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


def _postgres_bin() -> Path | None:
    for bindir in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (bindir / "postgres").is_file():
            return bindir
    found = shutil.which("postgres")
    return Path(found).parent if found else None


@pytest.fixture(scope="session")
def postgres_uri():
    """A throwaway PostgreSQL on 127.0.0.1 for MLflow's backend store; None if not installed.

    `.ci/run` installs PostgreSQL and sets VAE_TEST_POSTGRES=required, so CI never falls
    back to SQLite silently.
    """
    bindir = _postgres_bin()
    if bindir is None:
        if os.environ.get("VAE_TEST_POSTGRES") == "required":
            raise RuntimeError("VAE_TEST_POSTGRES=required but no PostgreSQL server is installed")
        yield None
        return
    data = Path(tempfile.mkdtemp(prefix="vae-pg-"))
    as_postgres = []
    if os.geteuid() == 0:  # the server refuses to run as root
        shutil.chown(data, "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    port = free_port()

    def run(*cmd) -> None:
        subprocess.run([*as_postgres, *map(str, cmd)], check=True, capture_output=True)

    run(bindir / "initdb", "-D", data / "db", "-U", "postgres", "--auth=trust", "-E", "UTF8")
    run(bindir / "pg_ctl", "-D", data / "db", "-l", data / "server.log", "-w", "-o",
        f"-p {port} -h 127.0.0.1 -k {data}", "start")
    run(bindir / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "mlflow")
    yield f"postgresql://postgres@127.0.0.1:{port}/mlflow"
    run(bindir / "pg_ctl", "-D", data / "db", "-m", "fast", "stop")
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory, postgres_uri):
    """`mlflow server` with served artifacts (clients see mlflow-artifacts: URIs)."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    log = open(root / "server.log", "w")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1",
         "--backend-store-uri", postgres_uri or f"sqlite:///{root / 'mlflow.db'}",
         "--serve-artifacts", "--artifacts-destination", str(root / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"mlflow server did not start: {(root / 'server.log').read_text()}")
        time.sleep(0.5)
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    yield uri
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old
    proc.terminate()
    proc.wait(30)
    log.close()


@pytest.fixture(scope="session")
def ray_local():
    import ray

    from pipelines import ray_runtime

    ray_runtime.init()
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def adult_slice(tmp_path_factory, adult_train):
    """4 000 Adult rows in two Parquet files (a folder input)."""
    folder = tmp_path_factory.mktemp("adult-slice")
    pq.write_table(adult_train.slice(0, 2000), folder / "part-0.parquet")
    pq.write_table(adult_train.slice(2000, 2000), folder / "part-1.parquet")
    return folder


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # ray_results/ lands here
    return tmp_path
