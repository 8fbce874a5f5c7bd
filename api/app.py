"""`create_app(settings)`: the API service, and the one place where domain errors become HTTP.

Invariants:
- Every error response is RFC 9457 `application/problem+json` with a stable `code`; no
  traceback ever reaches a client (unexpected errors are logged and answered 500
  `internal_error`).
- Request bodies over `settings.max_body_bytes` (`code_max_bytes` for `POST /v1/code`) are
  refused with 413 before they are read.
- Requests over the per-token (or, without a working token, per-IP) rate limit are refused
  with 429 `rate_limited` and `Retry-After` before any route runs, so they never touch the
  database (api/ratelimit.py; /healthz, /readyz and /metrics are exempt).
- The app holds no state besides its settings, database handle and metrics registry (and,
  on PostgreSQL while it runs under its lifespan, the async connection pool of the submit
  path, `suanli.db.apool`), so any number of replicas may run.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import fastapi.routing
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.deps import get_principal
from api.ratelimit import EXEMPT_PATHS, RateLimitMiddleware, TokenBuckets
from api.routers import accounts, admin, billing, cluster, code, identity, jobs, nodes, programs, reports
from api.schemas.common import Problem
from api.schemas.jobs import JobSpecIn
from api.validation import validation_error
from scheduler.types import JobStatus
from suanli import __version__
from suanli.db.apool import AsyncPool, conninfo
from suanli.db.engine import Database
from suanli.db.store import jobs as job_store
from suanli.errors import Kind, SuanliError
from suanli.metrics import CenterCollector
from suanli.settings import Settings

log = logging.getLogger(__name__)

STATUS_OF_KIND = {
    Kind.INVALID: 422,
    Kind.UNAUTHENTICATED: 401,
    Kind.FORBIDDEN: 403,
    Kind.NOT_FOUND: 404,
    Kind.CONFLICT: 409,
    Kind.TOO_LARGE: 413,
}
# Malformed documents are 400 (the body could not be read at all); rule breaks are 422.
BAD_REQUEST_CODES = {"invalid_yaml", "invalid_json", "invalid_encoding"}
TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
          409: "Conflict", 413: "Content Too Large", 422: "Unprocessable Content", 429: "Too Many Requests",
          500: "Internal Server Error"}


def problem(status: int, code: str, detail: str, errors: list[dict[str, str]] | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body = Problem(
        type=f"https://suanli.dev/problems/{code}",
        title=TITLES.get(status, "Error"),
        status=status,
        detail=detail,
        code=code,
        errors=errors or [],  # type: ignore[arg-type]
    )
    return JSONResponse(body.model_dump(), status_code=status, media_type="application/problem+json", headers=headers)


def error_response(e: SuanliError) -> JSONResponse:
    status = 400 if e.code in BAD_REQUEST_CODES else STATUS_OF_KIND[e.kind]
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return problem(status, e.code, e.detail, [{"field": f.field, "message": f.message} for f in e.errors], headers)


class _JobsByStatus:
    """Scrape-time gauge of jobs per status: one GROUP BY per scrape."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self):  # type: ignore[no-untyped-def]
        g = GaugeMetricFamily("suanli_jobs", "Jobs by status", labels=["status"])
        try:
            with self.db.begin() as s:
                counts = job_store.count_by_status(s)
        except Exception:  # noqa: BLE001 - a scrape must not fail because the DB is busy
            log.exception("jobs gauge: database unavailable")
            return
        for st in JobStatus:
            g.add_metric([str(st)], counts.get(str(st), 0))
        yield g


class LimitsAndMetrics:
    """Refuses bodies over the limit (413, before they are read) and counts requests and their
    latency per route template. Pure ASGI: `@app.middleware("http")` would cost an extra task
    and a body stream per request, a large part of a small request's time."""

    def __init__(self, app: Any, max_body_bytes: int, requests: Counter, latency: Histogram, in_flight: Gauge,
                 auth_failures: Counter, large: dict[str, int] | None = None) -> None:
        self.app, self.max_body_bytes, self.requests, self.latency = app, max_body_bytes, requests, latency
        self.large = large or {}  # path -> its own body limit (code uploads)
        self.in_flight, self.auth_failures = in_flight, auth_failures

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.large.get(scope["path"], self.max_body_bytes)
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > limit:
                    refused = problem(413, "body_too_large", f"request bodies are limited to {limit} bytes")
                    await refused(scope, receive, send)
                    return
                break
        t0 = time.perf_counter()
        status = 500  # if nothing was sent, the error handler above us answers 500

        async def sending(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.in_flight.inc()
        try:
            await self.app(scope, receive, sending)
        finally:
            self.in_flight.dec()
            route = getattr(scope.get("route"), "path", "unmatched")  # the router sets it on this scope
            self.requests.labels(scope["method"], route, str(status)).inc()
            self.latency.labels(scope["method"], route).observe(time.perf_counter() - t0)
            if status == 401:
                self.auth_failures.inc()


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """On PostgreSQL, the submit path's async pool lives as long as the server (and on its
    loop); without a lifespan (a bare TestClient) submissions take the sync path."""
    info, size = conninfo(app.state.db.url), app.state.settings.submit_pool_size
    pool = AsyncPool(info, size) if info is not None and size > 0 else None
    app.state.submit_pool = pool
    try:
        yield
    finally:
        app.state.submit_pool = None
        if pool is not None:
            await pool.close()


def create_app(settings: Settings | None = None, db: Database | None = None) -> FastAPI:
    settings = settings or Settings()
    db = db or Database(settings.effective_database_url)
    app = FastAPI(
        title="suanli",
        version=__version__,
        description="Public AI compute center: jobs, nodes, billing and the fair-share model. Errors are RFC 9457 problem+json.",
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.submit_pool = None
    registry = CollectorRegistry()
    requests = Counter("suanli_http_requests", "HTTP requests", ["method", "route", "status"], registry=registry)
    latency = Histogram("suanli_http_request_duration_seconds", "HTTP request latency", ["method", "route"], registry=registry)
    in_flight = Gauge("suanli_http_requests_in_flight", "HTTP requests being served now", registry=registry)
    auth_failures = Counter("suanli_http_auth_failures", "Requests refused with 401 (no token, unknown, revoked or expired)",
                            registry=registry)
    registry.register(_JobsByStatus(db))  # type: ignore[arg-type]
    registry.register(CenterCollector(db, settings.node_heartbeat_timeout_s, settings.fairshare_half_life_s))  # type: ignore[arg-type]
    app.state.registry = registry

    app.add_middleware(LimitsAndMetrics, max_body_bytes=settings.max_body_bytes, requests=requests, latency=latency,
                       in_flight=in_flight, auth_failures=auth_failures, large={"/v1/code": settings.code_max_bytes})

    if settings.rate_limit_per_s > 0:
        limited = Counter("suanli_http_rate_limited", "Requests refused with 429, by the bucket that was empty",
                          ["by"], registry=registry)

        def refuse(retry_after: int, by: str) -> Response:
            limited.labels(by).inc()
            return problem(429, "rate_limited", f"too many requests; retry after {retry_after} s "
                           f"(limit {settings.rate_limit_per_s:g}/s, burst {settings.rate_limit_burst})",
                           headers={"Retry-After": str(retry_after)})

        # Added last, so it is the outermost of our middleware: a refused request reaches
        # neither the body-size check nor any route. The buckets are on app.state for tests.
        app.state.rate_limiter = TokenBuckets(settings.rate_limit_per_s, settings.rate_limit_burst)
        app.add_middleware(RateLimitMiddleware, buckets=app.state.rate_limiter, refuse=refuse)

    @app.exception_handler(SuanliError)
    async def _domain(_: Request, e: SuanliError) -> JSONResponse:
        return error_response(e)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, e: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(e.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        return problem(e.status_code, code, str(e.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, e: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, "internal_error", "internal error; the operators have the details in the API log")

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        """Liveness, and the database answers."""
        with db.begin() as s:
            s.execute(text("SELECT 1"))
        return {"status": "ok", "version": __version__}

    @app.get("/metrics", tags=["ops"], response_class=Response)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(jobs.router)
    app.include_router(code.router)
    app.include_router(nodes.router)
    app.include_router(billing.router)
    app.include_router(admin.router)
    app.include_router(accounts.router)
    app.include_router(programs.router)
    app.include_router(reports.router)
    app.include_router(identity.router)
    app.include_router(cluster.router)
    _customise_openapi(app)
    return app


# The problems an operation may answer, documented on every operation they apply to (RFC 9457
# problem+json, `Problem`); 5xx are bugs and are deliberately not documented.
PROBLEM_DOCS = {
    400: "The body could not be read at all (invalid_json, invalid_yaml, invalid_encoding)",
    401: "No token, or an unknown, revoked or expired one (`WWW-Authenticate: Bearer`)",
    403: "Signed in, but this role may not do it (forbidden)",
    404: "Absent, or not visible to the caller: another org's objects are 404, never 403",
    409: "The current state forbids it (a stable code says which rule)",
    413: "The request body is over the size limit (body_too_large)",
    422: "Input breaks a rule; `errors` names each field",
    429: "Over the rate limit (rate_limited); retry after `Retry-After` seconds",
}


def _needs_token(dependant: Any) -> bool:
    return any(d.call is get_principal or _needs_token(d) for d in dependant.dependencies)


def _api_routes(app: FastAPI) -> list[Any]:
    """The app's API routes with their effective path, methods and dependencies (FastAPI ≥ 0.16x
    keeps included routers as branches; `iter_route_contexts` resolves them)."""
    iter_contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    if iter_contexts is None:
        return [r for r in app.routes if isinstance(r, APIRoute)]
    return [c for c in iter_contexts(app.routes) if isinstance(c.original_route, APIRoute)]


def _problems_for(route: Any, has_body: bool) -> list[int]:
    """Which problems a route may answer: a rule per status, from what the route takes."""
    if route.path in EXEMPT_PATHS:
        return []
    codes = {422, 429}
    if _needs_token(route.dependant):
        codes |= {401, 403, 404}
    if has_body:
        codes |= {400, 409, 413}
    elif route.methods - {"GET", "HEAD"}:
        codes |= {409}
    return sorted(codes)


def _customise_openapi(app: FastAPI) -> None:
    """The OpenAPI document, completed where FastAPI cannot see:
    - Job submission reads its body itself (JSON or YAML), so `JobSpecIn` (and the models it
      uses) is added to the components.
    - Every operation documents the problem+json responses it may give (`PROBLEM_DOCS`),
      replacing FastAPI's default 422 schema, which is not what this API answers.
    - Operations that need a token carry the `bearer` security requirement."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            components = doc.setdefault("components", {})
            schemas = components.setdefault("schemas", {})
            for model in (JobSpecIn, Problem):
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(schema.pop("$defs", {}))
                schemas[model.__name__] = schema
            components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer",
                                                        "description": "An API token (`suanli login`)"}}
            problem_ref = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
            for route in _api_routes(app):
                if not route.include_in_schema:
                    continue
                path = doc["paths"].get(route.path_format, {})
                for method in route.methods:
                    op = path.get(method.lower())
                    if op is None:
                        continue
                    responses = op.setdefault("responses", {})
                    for status in _problems_for(route, "requestBody" in op):
                        # A route's own `responses=` wins, except FastAPI's default 422 schema.
                        own = responses.get(str(status))
                        if own is None or "HTTPValidationError" in json.dumps(own):
                            responses[str(status)] = {"description": PROBLEM_DOCS[status], "content": problem_ref}
                    if _needs_token(route.dependant):
                        op["security"] = [{"bearer": []}]
            if '"#/components/schemas/HTTPValidationError"' not in json.dumps(doc["paths"]):
                schemas.pop("HTTPValidationError", None)
                schemas.pop("ValidationError", None)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory api.app:app_from_env` (settings from SUANLI_*)."""
    return create_app(Settings())
