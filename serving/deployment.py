"""The Ray Serve application: an HTTP ingress in front of the model replicas.

``VAEIngress`` runs the FastAPI app (serving/app.py): it checks the token and the limits,
decodes the body with the model's schema (read from ``model.json``; it loads no weights),
and hands the table to ``VAEModel`` through a deployment handle, then encodes the answer.
``VAEModel`` (2 replicas by default) queues requests with ``@serve.batch``, which counts rows
(not requests) towards ``max_batch_rows``; the queued requests run together
(serving/batching.py) in a one-thread executor, so the event loop keeps taking requests
while the model computes. A request alone in the replica runs at once, without the
batcher's wait.

Why two deployments: a replica that dies (killed, out of memory, a CUDA fault) fails the
requests it holds, and Serve's proxy answers those with a 500, which a client cannot tell
from a bug. The ingress holds no model and does no model work; it sees the replica's death
as a ``RayActorError`` and sends the request again, to a live replica (every verb is a pure
function of the request and its seed, so a retry answers what the first try would have).
If that replica dies too, the answer is a 503 with ``Retry-After``. (A request sent to a
replica that dies before taking it is routed again by Serve's router itself; while no replica
is alive, requests wait in the router for the replacement.)

Which model: ``user_config = {"model_uri": ..., "version": ...}`` on both deployments. An
alias is pinned to a version when the app is built, so every replica loads the same one.
Changing the user config (``vae serve --reload``, or ``serve deploy`` after the alias moved)
calls ``reconfigure`` on each replica: the new model loads beside the old one and is swapped
in; requests in flight finish on the model they started with, and none are dropped. With
several replicas, a switch rolls from one to the next: until the last has switched, an answer
may come from either version (each answer is one model's, whole). The ingress reads requests
with the schema of the version it has loaded; where the two versions' columns differ, a
request read for one and computed by the other may be refused with a 422 naming the column.

Config file entry point: ``import_path: serving.deployment:build_app`` (deploy/serve_config.yaml).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.handle import DeploymentHandle

from model_refs import pin_version
from serving.app import Backend, create_app
from serving.batching import EmbedRequest, ScoreRequest, embed_batch, rows, score_batch
from serving.codecs import IpcTable, RequestError
from serving.service import Limits, ModelService, limits_from_env, request_schema

APP_NAME = "vae"
INGRESS, MODEL = "VAEIngress", "VAEModel"
REPLICAS = 2  # one may die and be replaced while the other answers
# Tries of one request whose replica dies: the first, then one more on another replica. A
# request that two replicas died holding may be what kills them (out of memory): it is not
# sent to a third, and gets a 503.
REPLICA_TRIES = 2
RETRY_AFTER_S = "1"
INGRESS_ARGS = ("limits", "tracking_uri")  # of build_app's args; the model takes them all

log = logging.getLogger("ray.serve")


def _ingress() -> Backend:
    # The routes are plain functions of the app (the same app serves tests without Ray); in
    # a replica they reach its deployment instance through Serve's replica context.
    ingress = serve.get_replica_context().servable_object
    if ingress.schema is None:
        raise RequestError(503, "no model is loaded yet", headers={"Retry-After": "5"})
    return ingress


app = create_app(_ingress)


def _settings(limits: dict | None, tracking_uri: str | None) -> Limits:
    """What both deployments do first: point MLflow at ``tracking_uri`` (to resolve the
    model), and take the request limits from args, else from the environment."""
    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    return Limits(**limits) if limits else limits_from_env()


@serve.deployment(
    num_replicas=REPLICAS,
    # ≥ the requests one batch can hold (Serve's default of 5 would starve the batcher).
    max_ongoing_requests=256,
    ray_actor_options={"num_cpus": 1},
    health_check_period_s=10,
)
class VAEModel:
    """The model: score, embed and generate on Arrow tables, concurrent requests batched."""

    def __init__(self, max_batch_rows: int = 8192, batch_wait_timeout_s: float = 0.005,
                 limits: dict | None = None, tracking_uri: str | None = None,
                 device: str | None = None) -> None:
        self.limits = _settings(limits, tracking_uri)
        self.max_batch_rows, self.device = max_batch_rows, device
        self.loaded: tuple[ModelService, dict] | None = None
        self._compute = ThreadPoolExecutor(1, thread_name_prefix="vae-forward")
        self._active = 0  # score/embed requests in this replica (_in_flight)
        self._score_batch.set_max_batch_size(max_batch_rows)
        self._score_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self._embed_batch.set_max_batch_size(max_batch_rows)
        self._embed_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)

    async def reconfigure(self, config: dict) -> None:
        if self.loaded and self.loaded[1] == config:
            return
        # Load off the event loop: requests keep running on the old model meanwhile.
        service = await asyncio.to_thread(ModelService.load, config["model_uri"], self.limits,
                                          self.device, config.get("version"))
        self.loaded = (service, dict(config))

    async def info(self) -> dict:
        return self.loaded[0].info()

    # The verbs answer an IpcTable: the ingress receives the pa.Table.
    async def score(self, request: ScoreRequest) -> IpcTable:
        with self._in_flight() as alone:
            if alone or request.table.num_rows > self.max_batch_rows:
                return IpcTable(await self._run(lambda s: s.score(
                    request.table, request.iwae_samples, request.seed, request.top_k)))
            return IpcTable(_raise_if_error(await self._score_batch(request)))

    async def embed(self, request: EmbedRequest) -> IpcTable:
        with self._in_flight() as alone:
            if alone or request.table.num_rows > self.max_batch_rows:
                return IpcTable(await self._run(lambda s: s.embed(request.table,
                                                                  request.return_std)))
            return IpcTable(_raise_if_error(await self._embed_batch(request)))

    @contextlib.contextmanager
    def _in_flight(self) -> Iterator[bool]:
        """Counts the score/embed requests in this replica; yields whether this one is alone.
        A request alone skips the batcher, whose wait for company (``batch_wait_timeout_s``)
        would only add to its latency; under load they queue and merge as before."""
        self._active += 1
        try:
            yield self._active == 1
        finally:
            self._active -= 1

    async def generate(self, n: int, conditions: dict | None, seed: int | None) -> IpcTable:
        # Not merged across requests: one request is already n rows in one pass.
        return IpcTable(await self._run(lambda s: s.generate(n, conditions, seed)))

    @serve.batch(max_batch_size=8192, batch_wait_timeout_s=0.005, batch_size_fn=rows)
    async def _score_batch(self, requests: list[ScoreRequest]) -> list[pa.Table | Exception]:
        return await self._run(lambda s: score_batch(s, requests))

    @serve.batch(max_batch_size=8192, batch_wait_timeout_s=0.005, batch_size_fn=rows)
    async def _embed_batch(self, requests: list[EmbedRequest]) -> list[pa.Table | Exception]:
        return await self._run(lambda s: embed_batch(s, requests))

    async def _run(self, work: Callable[[ModelService], Any]) -> Any:
        service = self.loaded[0]  # one model for the whole batch, even during a switch
        return await asyncio.get_running_loop().run_in_executor(self._compute, work, service)


@serve.deployment(
    # It only waits on the model replicas: many requests at once, no CPU reserved.
    max_ongoing_requests=1024,
    ray_actor_options={"num_cpus": 0},
    health_check_period_s=10,
)
@serve.ingress(app)
class VAEIngress:
    """The HTTP app, a ``Backend`` whose verbs run on the ``VAEModel`` replicas."""

    def __init__(self, model: DeploymentHandle, limits: dict | None = None,
                 tracking_uri: str | None = None) -> None:
        self.limits = _settings(limits, tracking_uri)
        # gRPC straight to the replica instead of through the object store. With the proxy
        # on gRPC too (pipelines/ray_runtime.py), 1-row score requests on 2 cores, an
        # interleaved A/B of 3 rounds: 27.8 → 23.5 ms at the median on an idle server,
        # 68 → 88 req/s from 64 clients.
        self.model = model.options(_by_reference=False)
        self.token = os.environ.get("VAE_SERVE_TOKEN") or None
        self.schema = None
        self._config: dict | None = None

    async def reconfigure(self, config: dict) -> None:
        if config != self._config:
            self.schema = await asyncio.to_thread(request_schema, config["model_uri"],
                                                  config.get("version"))
            self._config = dict(config)

    async def info(self) -> dict:
        return await self._on_a_replica("info")

    async def score(self, request: ScoreRequest) -> pa.Table:
        return await self._on_a_replica("score", request)

    async def embed(self, request: EmbedRequest) -> pa.Table:
        return await self._on_a_replica("embed", request)

    async def generate(self, n: int, conditions: dict | None, seed: int | None) -> pa.Table:
        return await self._on_a_replica("generate", n, conditions, seed)

    async def _on_a_replica(self, verb: str, *args: Any) -> Any:
        """``VAEModel.<verb>(*args)``, sent again when the replica holding it dies."""
        for attempt in range(1, REPLICA_TRIES + 1):
            try:
                answer = await getattr(self.model, verb).remote(*args)
                # Over Ray an IpcTable arrives as its table; Serve's local testing mode
                # hands it over unpickled.
                return answer.table if isinstance(answer, IpcTable) else answer
            except RayActorError as e:
                died = e
            except RayTaskError as e:  # the verb raised: its own error (a 4xx), or a death
                if not isinstance(e.cause, RayActorError):
                    raise e.cause from None
                died = e.cause
            log.warning("%s: a model replica died during try %d of %d (%s)", verb, attempt,
                        REPLICA_TRIES, type(died).__name__)
        raise RequestError(503, f"the model replicas failed {REPLICA_TRIES} times in a row; "
                                "try again", headers={"Retry-After": RETRY_AFTER_S})


def _raise_if_error(result: pa.Table | Exception) -> pa.Table:
    if isinstance(result, Exception):
        raise result
    return result


def build_app(args: dict) -> serve.Application:
    """The application for ``serve run/deploy`` (``import_path: serving.deployment:build_app``).

    args: ``model_uri`` (required; ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or a
    model folder), ``version`` (pin; default: where the alias points when the app is built),
    and the model deployment's ``max_batch_rows``, ``batch_wait_timeout_s``, ``limits``,
    ``tracking_uri``, ``device`` (the ingress takes ``limits`` and ``tracking_uri``). A config
    file's ``deployments: [{name: VAEIngress | VAEModel, user_config: {model_uri, version}}]``
    overrides the model: changing only that is a reconfigure, while changing ``args``
    restarts the replicas.
    """
    args = dict(args)
    model_uri = args.pop("model_uri", None)
    if not model_uri:
        raise ValueError("build_app needs args.model_uri (models:/NAME@ALIAS or a folder)")
    if args.get("tracking_uri"):
        os.environ.setdefault("MLFLOW_TRACKING_URI", args["tracking_uri"])
    user_config = {"model_uri": model_uri,
                   "version": args.pop("version", None) or pin_version(model_uri)}
    model = VAEModel.options(user_config=user_config).bind(**args)
    return VAEIngress.options(user_config=user_config).bind(
        model, **{k: v for k, v in args.items() if k in INGRESS_ARGS})


def serve_config(model_uri: str, version: str | None, host: str = "127.0.0.1",
                 port: int = 8000, replicas: int = REPLICAS, gpus_per_replica: float = 0,
                 token: str | None = None, **args: Any) -> dict:
    """A Serve config file's content (the format of deploy/serve_config.yaml).

    ``replicas`` and ``gpus_per_replica`` are the model deployment's; the ingress runs one
    replica and reserves no CPU. ``token`` reaches the replicas as VAE_SERVE_TOKEN in the
    app's runtime_env (they may run on a cluster that never saw this process's environment).
    Ray's dashboard shows runtime_envs to whoever can reach it, and anyone who can reach Ray
    can run code on it.
    """
    user_config = {"model_uri": model_uri, "version": version}
    application: dict[str, Any] = {
        "name": APP_NAME, "route_prefix": "/",
        "import_path": "serving.deployment:build_app",
        "args": {"model_uri": model_uri, **{k: v for k, v in args.items() if v is not None}},
        "deployments": [
            {"name": INGRESS, "user_config": user_config},
            {"name": MODEL, "num_replicas": replicas,
             "ray_actor_options": {"num_cpus": 1, "num_gpus": gpus_per_replica},
             "user_config": user_config}],
    }
    if token:
        application["runtime_env"] = {"env_vars": {"VAE_SERVE_TOKEN": token}}
    return {"proxy_location": "HeadOnly", "http_options": {"host": host, "port": port},
            "applications": [application]}


def deploy(config: dict) -> None:
    """Apply a Serve config on the Ray this process is connected to, and wait until it runs.

    The config path (not ``serve.run``) is what makes a model switch a reconfigure: Serve
    gives every ``serve.run`` a new code version and replaces the replicas, but keeps them
    when a config differs only in ``user_config``. Serve's public Python API has no config
    deploy, so this does what ``serve run config.yaml`` does.
    """
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(config)
    serve.start(proxy_location=schema.proxy_location,
                http_options=schema.http_options.model_dump())
    _get_global_client().deploy_apps(schema, _blocking=True)


__all__ = ["APP_NAME", "INGRESS", "MODEL", "REPLICAS", "VAEIngress", "VAEModel", "app",
           "build_app", "deploy", "serve_config"]
