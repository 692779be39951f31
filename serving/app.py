"""The HTTP interface (FastAPI), the same under Ray Serve and under plain uvicorn.

Routes (versioned): POST /v1/embed, /v1/score, /v1/generate; GET /v1/model, /healthz;
OpenAPI at /docs. Bodies are JSON ``{"rows": [...]}`` or an Arrow IPC stream
(Content-Type ``application/vnd.apache.arrow.stream``); the response uses the request's
format (for /v1/generate, the Accept header's). Every bad input is a 4xx whose body names
the problem: ``{"error": "...", "column": "..."}``. With a token configured
(``VAE_SERVE_TOKEN``), /v1/* require ``Authorization: Bearer <token>``.

The routes reach the model through a ``Backend``: ``DirectBackend`` runs each request on
its own (tests, notebooks); the Ray Serve deployment batches concurrent requests.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import Any, Protocol

import pyarrow as pa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from serving.batching import EmbedRequest, ScoreRequest
from serving.codecs import (
    ARROW_STREAM,
    RequestError,
    table_from_arrow,
    table_from_records,
    table_to_arrow,
    table_to_json,
)
from serving.service import ModelService


class Backend(Protocol):
    """What the routes need: the current model's service (limits, schema, info), the bearer
    token (None = open), and the three verbs."""

    token: str | None

    @property
    def service(self) -> ModelService: ...

    async def score(self, request: ScoreRequest) -> pa.Table: ...

    async def embed(self, request: EmbedRequest) -> pa.Table: ...

    async def generate(self, n: int, conditions: dict | None, seed: int | None) -> pa.Table: ...


class DirectBackend:
    """One request at a time, in the calling process."""

    def __init__(self, service: ModelService, token: str | None = None) -> None:
        self.service, self.token = service, token

    async def score(self, request: ScoreRequest) -> pa.Table:
        return self.service.score(request.table, request.iwae_samples, request.seed,
                                  request.top_k)

    async def embed(self, request: EmbedRequest) -> pa.Table:
        return self.service.embed(request.table, request.return_std)

    async def generate(self, n: int, conditions: dict | None, seed: int | None) -> pa.Table:
        return self.service.generate(n, conditions, seed)


def create_app(get_backend: Callable[[], Backend]) -> FastAPI:
    app = FastAPI(title="vae-tables", version="1",
                  description="Embeddings, ELBO anomaly scores and synthetic rows from a "
                              "tabular VAE.")

    @app.exception_handler(RequestError)
    async def _request_error(_: Request, e: RequestError) -> JSONResponse:
        return JSONResponse({"error": str(e), "column": e.column}, status_code=e.status)

    @app.exception_handler(ValueError)  # vae_core's SchemaError / DataError name the column
    async def _value_error(_: Request, e: ValueError) -> JSONResponse:
        return JSONResponse({"error": str(e), "column": getattr(e, "column", None)},
                            status_code=422)

    @app.middleware("http")
    async def _auth_and_size(request: Request, call_next):
        try:  # the exception handlers do not cover middleware
            backend = get_backend()
        except RequestError as e:
            return await _request_error(request, e)
        token = backend.token
        # Relative to the mount point: under a Serve route prefix the path carries it.
        path = request.scope["path"].removeprefix(request.scope.get("root_path", ""))
        if token and path.startswith("/v1/"):
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
        length = request.headers.get("content-length")
        limit = backend.service.limits.max_body_bytes
        if length and length.isdigit() and int(length) > limit:
            return JSONResponse({"error": f"body of {length} bytes is over the {limit}-byte "
                                          "limit"}, status_code=413)
        return await call_next(request)

    async def read_table(request: Request) -> tuple[pa.Table, bool]:
        service = get_backend().service
        body = await request.body()
        if len(body) > service.limits.max_body_bytes:  # chunked bodies have no length header
            raise RequestError(413, f"body over the {service.limits.max_body_bytes}-byte limit")
        if request.headers.get("content-type", "").startswith(ARROW_STREAM):
            return table_from_arrow(body, service.limits.max_rows), True
        payload = _json(body)
        if not isinstance(payload, dict) or "rows" not in payload:
            raise RequestError(400, "expected a JSON object with 'rows'")
        return table_from_records(payload["rows"], service.schema, service.limits.max_rows), False

    def respond(table: pa.Table, arrow: bool) -> Response:
        if arrow:
            return Response(table_to_arrow(table), media_type=ARROW_STREAM)
        return Response(table_to_json(table), media_type="application/json")

    @app.post("/v1/score", summary="Anomaly scores: elbo, log_px (IWAE), percentile, "
              "is_anomaly, top_columns")
    async def score(request: Request, iwae_samples: int | None = None, seed: int = 0,
                    top_k: int = 3) -> Response:
        table, arrow = await read_table(request)
        return respond(await get_backend().score(ScoreRequest(table, iwae_samples, seed, top_k)),
                       arrow)

    @app.post("/v1/embed", summary="Posterior means z_0… (and zstd_… with return_std)")
    async def embed(request: Request, return_std: bool = False) -> Response:
        table, arrow = await read_table(request)
        return respond(await get_backend().embed(EmbedRequest(table, return_std)), arrow)

    @app.post("/v1/generate", summary="Synthetic rows: {\"n\": 100, \"conditions\": {...}, "
              "\"seed\": 0}")
    async def generate(request: Request) -> Response:
        payload = _json(await request.body())
        if not isinstance(payload, dict) or not isinstance(payload.get("n"), int):
            raise RequestError(400, "expected a JSON object with an integer 'n'")
        unknown = sorted(set(payload) - {"n", "conditions", "seed"})
        if unknown:
            raise RequestError(400, f"unknown field '{unknown[0]}' (n, conditions, seed)")
        table = await get_backend().generate(payload["n"], payload.get("conditions"),
                                             payload.get("seed"))
        return respond(table, request.headers.get("accept", "").startswith(ARROW_STREAM))

    @app.get("/v1/model", summary="Name, version, alias, schema, thresholds, limits")
    async def model() -> dict:
        return get_backend().service.info()

    @app.get("/healthz")
    async def healthz() -> dict:
        get_backend().service  # noqa: B018 -- raises while no model is loaded
        return {"status": "ok"}

    return app


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestError(400, f"malformed JSON ({e})") from e
