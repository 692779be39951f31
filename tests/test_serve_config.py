"""The Serve configs we ship (and the one `vae serve` writes) are valid for this Ray version,
and every arg they pass is one the deployment accepts."""

import inspect
from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from serving.deployment import INGRESS_ARGS, REPLICAS, VAEIngress, VAEModel, serve_config

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def shipped_configs() -> dict[str, dict]:
    service = yaml.safe_load((DEPLOY / "k8s" / "rayservice.yaml").read_text())
    assert service["kind"] == "RayService" and service["apiVersion"] == "ray.io/v1"
    return {"serve_config.yaml": yaml.safe_load((DEPLOY / "serve_config.yaml").read_text()),
            "rayservice.yaml": yaml.safe_load(service["spec"]["serveConfigV2"]),
            "vae serve": serve_config("models:/m@champion", "3", token="t", max_batch_rows=64)}


@pytest.mark.parametrize("name", ["serve_config.yaml", "rayservice.yaml", "vae serve"])
def test_configs_validate_and_pass_known_args(name):
    config = ServeDeploySchema.model_validate(shipped_configs()[name])
    (app,) = config.applications
    assert app.import_path == "serving.deployment:build_app"
    accepted = set(inspect.signature(VAEModel.func_or_class.__init__).parameters)
    assert "max_batch_rows" in accepted
    assert set(app.args) - {"model_uri", "version"} <= accepted
    ingress = VAEIngress.func_or_class.__mro__[1]  # [0] is Serve's ingress wrapper
    assert set(INGRESS_ARGS) <= set(inspect.signature(ingress.__init__).parameters)
    deployments = {d.name: d.model_dump(exclude_unset=True) for d in app.deployments}
    assert set(deployments) == {"VAEIngress", "VAEModel"}
    for deployment in deployments.values():
        user_config = deployment.get("user_config")
        assert user_config is None or set(user_config) == {"model_uri", "version"}
    model = deployments["VAEModel"]
    assert model.get("num_replicas", REPLICAS) >= 2 or \
        model["autoscaling_config"]["min_replicas"] >= 2  # one may die while one answers


def test_vae_serve_config_defaults_to_loopback_and_carries_the_token():
    config = serve_config("models:/m@champion", "3", token="t")
    assert config["http_options"]["host"] == "127.0.0.1"
    assert config["applications"][0]["runtime_env"] == {"env_vars": {"VAE_SERVE_TOKEN": "t"}}
    assert "runtime_env" not in serve_config("m", None)["applications"][0]
