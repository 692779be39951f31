"""The HTTP interface (FastAPI), the same under Ray Serve and under plain uvicorn.

Routes (versioned): POST /v1/embed, /v1/score, /v1/generate; GET /v1/model, /healthz;
OpenAPI at /docs. Bodies are JSON ``{"rows": [...]}`` or an Arrow IPC stream
(Content-Type ``application/vnd.apache.arrow.stream``); the response uses the request's
format (for /v1/generate, the Accept header's). MLflow's scoring protocol is a second door
to the same verbs: POST /invocations, GET /ping and /health (serving/scoring_protocol.py).
Answers carry a ``Server-Timing`` header: decode, model and encode milliseconds.
Every bad input is a 4xx whose body names the problem: ``{"error": "...", "column":
"..."}``, query parameters included (an unknown one too); while no model is loaded, a 503
with ``Retry-After``. With a token configured (``VAE_SERVE_TOKEN``), /v1/* and /invocations
require ``Authorization: Bearer <token>``.

The routes reach the model through a ``Backend``: ``DirectBackend`` runs each request on
its own (tests, notebooks); under Ray Serve the ingress deployment hands requests to the
model replicas, which batch them (serving/deployment.py).
"""

from __future__ import annotations

import contextlib
import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Protocol

import pyarrow as pa
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from serving.batching import EmbedRequest, ScoreRequest
from serving.codecs import (
    ARROW_STREAM,
    RequestError,
    parse_json,
    read_body,
    table_from_arrow,
    table_from_records,
    table_to_arrow,
    table_to_json,
)
from serving.scoring_protocol import parse_invocation
from serving.service import Limits, ModelService
from vae_core import TableSchema

# An oversized body is read and dropped up to this many times the limit before its 413.
DRAIN_FACTOR = 16
SEED = Query(ge=0, le=2**63 - 1, description="seed of the sampling (IWAE, z)")


class Backend(Protocol):
    """What the routes need: the limits and schema requests are read with, the bearer token
    (None = open), the model's description, and the three verbs."""

    token: str | None
    limits: Limits
    schema: TableSchema

    async def info(self) -> dict: ...

    async def score(self, request: ScoreRequest) -> pa.Table: ...

    async def embed(self, request: EmbedRequest) -> pa.Table: ...

    async def generate(self, n: int, conditions: dict | None, seed: int | None) -> pa.Table: ...


class DirectBackend:
    """One request at a time, in the calling process."""

    def __init__(self, service: ModelService, token: str | None = None) -> None:
        self.service, self.token = service, token
        self.limits, self.schema = service.limits, service.schema

    async def info(self) -> dict:
        return self.service.info()

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
        return JSONResponse({"error": str(e), "column": e.column}, status_code=e.status,
                            headers=e.headers)

    @app.exception_handler(ValueError)  # vae_core's SchemaError / DataError name the column
    async def _value_error(_: Request, e: ValueError) -> JSONResponse:
        return JSONResponse({"error": str(e), "column": getattr(e, "column", None)},
                            status_code=422)

    @app.exception_handler(RequestValidationError)  # FastAPI's check of query parameters
    async def _bad_parameter(_: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0]
        where, name = first["loc"][0], ".".join(str(p) for p in first["loc"][1:])
        return JSONResponse({"error": f"{where} parameter '{name}': {first['msg']}",
                             "column": None}, status_code=422)

    app.add_middleware(RequestGate, get_backend=get_backend, on_error=_request_error)

    async def body_of(request: Request) -> bytes:
        limit = get_backend().limits.max_body_bytes
        return await read_body(request.stream(), limit, DRAIN_FACTOR * limit)

    async def read_table(request: Request) -> tuple[pa.Table, bool]:
        backend = get_backend()
        body = await body_of(request)
        if request.headers.get("content-type", "").startswith(ARROW_STREAM):
            return table_from_arrow(body, backend.limits.max_rows), True
        payload = parse_json(body)
        if not isinstance(payload, dict) or "rows" not in payload:
            raise RequestError(400, "expected a JSON object with 'rows'")
        return table_from_records(payload["rows"], backend.schema, backend.limits.max_rows), False

    def respond(table: pa.Table, arrow: bool, watch: Stopwatch, key: str = "rows") -> Response:
        if arrow:
            response = Response(table_to_arrow(table), media_type=ARROW_STREAM)
        else:
            response = Response(table_to_json(table, key), media_type="application/json")
        watch.lap("encode")
        response.headers["Server-Timing"] = watch.header()
        return response

    @app.post("/v1/score", summary="Anomaly scores: elbo, log_px (IWAE), percentile, "
              "is_anomaly, top_columns")
    async def score(request: Request,
                    iwae_samples: Annotated[int | None, Query(ge=1)] = None,
                    seed: Annotated[int, SEED] = 0,
                    top_k: Annotated[int, Query(ge=0, le=10_000)] = 3) -> Response:
        _only_parameters(request, "iwae_samples", "seed", "top_k")
        watch = Stopwatch()
        table, arrow = await read_table(request)
        watch.lap("decode")
        scores = await get_backend().score(ScoreRequest(table, iwae_samples, seed, top_k))
        watch.lap("model")
        return respond(scores, arrow, watch)

    @app.post("/v1/embed", summary="Posterior means z_0… (and zstd_… with return_std)")
    async def embed(request: Request, return_std: bool = False) -> Response:
        _only_parameters(request, "return_std")
        watch = Stopwatch()
        table, arrow = await read_table(request)
        watch.lap("decode")
        codes = await get_backend().embed(EmbedRequest(table, return_std))
        watch.lap("model")
        return respond(codes, arrow, watch)

    @app.post("/v1/generate", summary="Synthetic rows: {\"n\": 100, \"conditions\": {...}, "
              "\"seed\": 0}")
    async def generate(request: Request) -> Response:
        _only_parameters(request)
        watch = Stopwatch()
        payload = parse_json(await body_of(request))
        if not isinstance(payload, dict) or not isinstance(payload.get("n"), int):
            raise RequestError(400, "expected a JSON object with an integer 'n'")
        unknown = sorted(set(payload) - {"n", "conditions", "seed"})
        if unknown:
            raise RequestError(400, f"unknown field '{unknown[0]}' (n, conditions, seed)")
        if not isinstance(payload.get("conditions", {}), dict | None):  # never a path to read
            raise RequestError(400, "'conditions' must be an object: {column: value | "
                               "[values] | {\">=\": low, \"<\": high}}")
        watch.lap("decode")
        table = await get_backend().generate(payload["n"], payload.get("conditions"),
                                             payload.get("seed"))
        watch.lap("model")
        return respond(table, request.headers.get("accept", "").startswith(ARROW_STREAM), watch)

    @app.post("/invocations", summary="MLflow's scoring protocol: dataframe_split, "
              "dataframe_records, instances, inputs or CSV; params.mode score | embed | "
              "generate; answers {\"predictions\": [...]}")
    async def invocations(request: Request) -> Response:
        _only_parameters(request)
        watch, backend = Stopwatch(), get_backend()
        call = parse_invocation(await body_of(request), request.headers.get("content-type", ""),
                                backend.schema, backend.limits.max_rows)
        watch.lap("decode")
        options = call.options
        if call.mode == "score":
            table = await backend.score(ScoreRequest(
                call.table, options.get("iwae_samples"), options.get("seed", 0),
                options.get("top_k", 3)))
        elif call.mode == "embed":
            table = await backend.embed(EmbedRequest(call.table, options.get("return_std",
                                                                             False)))
        else:
            table = await backend.generate(options.get("n") or call.rows_sent,
                                           options.get("conditions"), options.get("seed"))
        watch.lap("model")
        return respond(table, False, watch, key="predictions")

    @app.get("/v1/model", summary="Name, version, alias, schema, thresholds, limits")
    async def model() -> dict:
        return await get_backend().info()

    async def health() -> dict:
        get_backend()  # a 503 while no model is loaded
        return {"status": "ok"}

    for path in ("/healthz", "/ping", "/health"):  # ours, and MLflow's two names
        app.add_api_route(path, health, methods=["GET"], summary="200 once a model is loaded")

    return app


class Stopwatch:
    """Milliseconds per stage of a request, for its ``Server-Timing`` header: ``decode``
    (read and parse the body), ``model`` (under Serve, the hop to a model replica; queue,
    batch and forward pass), ``encode``. What a client measures beyond their sum is the way
    there and back (Serve's proxy, HTTP)."""

    def __init__(self) -> None:
        self._last, self._laps = time.perf_counter(), []

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self._laps.append((stage, now - self._last))
        self._last = now

    def header(self) -> str:
        return ", ".join(f"{stage};dur={1000 * s:.2f}" for stage, s in self._laps)


class RequestGate:
    """The checks before a route: a model is loaded, the bearer token, and an oversized
    body announced with ``Expect: 100-continue``. A plain ASGI middleware: Starlette's
    ``@app.middleware("http")`` runs every request through a task group and memory streams,
    which cost more than these checks themselves."""

    def __init__(self, app: ASGIApp, get_backend: Callable[[], Backend],
                 on_error: Callable[[Request, RequestError], Awaitable[Response]]) -> None:
        self.app, self.get_backend, self.on_error = app, get_backend, on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope, receive)
            refusal = await self.refusal(request)
            if refusal is not None:
                return await refusal(scope, receive, send)
        await self.app(scope, receive, send)

    async def refusal(self, request: Request) -> Response | None:
        """The answer to a request refused here, else None (the route answers)."""
        try:  # the exception handlers do not cover middleware
            backend = self.get_backend()
        except RequestError as e:  # no model yet: drain as far as the default limit allows
            return await _answer_early(request, await self.on_error(request, e),
                                       Limits().max_body_bytes)
        token, limit = backend.token, backend.limits.max_body_bytes
        # Relative to the mount point: under a Serve route prefix the path carries it.
        path = request.scope["path"].removeprefix(request.scope.get("root_path", ""))
        if token and (path.startswith("/v1/") or path == "/invocations"):
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return await _answer_early(request, JSONResponse(
                    {"error": "missing or wrong bearer token"}, status_code=401,
                    headers={"WWW-Authenticate": "Bearer"}), limit)
        # A client that waits for "100 Continue" has sent nothing yet: refuse by the header.
        # Any other oversized body is read first (read_body), or the client sees a reset.
        length = request.headers.get("content-length", "")
        if "100-continue" in request.headers.get("expect", "").lower() and \
                length.isdigit() and int(length) > limit:
            return JSONResponse({"error": f"body of {length} bytes is over the {limit}-byte "
                                          "limit"}, status_code=413)
        return None


async def _answer_early(request: Request, response: Response, limit: int) -> Response:
    """``response``, after reading the body the client is sending (see read_body)."""
    if "100-continue" not in request.headers.get("expect", "").lower():
        with contextlib.suppress(RequestError):  # past the drain limit: answer anyway
            await read_body(request.stream(), DRAIN_FACTOR * limit, DRAIN_FACTOR * limit)
    return response


def _only_parameters(request: Request, *known: str) -> None:
    """A 422 naming a query parameter the route does not take (a typo must not be ignored)."""
    unknown = sorted(set(request.query_params) - set(known))
    if unknown:
        raise RequestError(422, f"unknown query parameter '{unknown[0]}'"
                                f" ({', '.join(known) or 'this route takes none'})")
