"""`create_app(settings)`: the API service, and the one place where domain errors become HTTP.

Invariants:
- Every error response is RFC 9457 `application/problem+json` with a stable `code`; no
  traceback ever reaches a client (unexpected errors are logged and answered 500
  `internal_error`).
- Request bodies over `settings.max_body_bytes` are refused with 413 before they are read.
- The app holds no state besides its settings, database handle and metrics registry, so
  any number of replicas may run.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.routers import accounts, admin, billing, cluster, identity, jobs, nodes, programs, reports
from api.schemas.common import Problem
from api.schemas.jobs import JobSpecIn
from api.validation import validation_error
from scheduler.types import JobStatus
from suanli import __version__
from suanli.db.engine import Database
from suanli.db.store import jobs as job_store
from suanli.errors import Kind, SuanliError
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
          409: "Conflict", 413: "Content Too Large", 422: "Unprocessable Content", 500: "Internal Server Error"}


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


def create_app(settings: Settings | None = None, db: Database | None = None) -> FastAPI:
    settings = settings or Settings()
    db = db or Database(settings.effective_database_url)
    app = FastAPI(
        title="suanli",
        version=__version__,
        description="Public AI compute center: jobs, nodes, billing and the fair-share model. Errors are RFC 9457 problem+json.",
    )
    app.state.settings = settings
    app.state.db = db
    registry = CollectorRegistry()
    requests = Counter("suanli_http_requests", "HTTP requests", ["method", "route", "status"], registry=registry)
    latency = Histogram("suanli_http_request_duration_seconds", "HTTP request latency", ["method", "route"], registry=registry)
    registry.register(_JobsByStatus(db))  # type: ignore[arg-type]
    app.state.registry = registry

    @app.middleware("http")
    async def limits_and_metrics(request: Request, call_next: Any) -> Response:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > settings.max_body_bytes):
            return problem(413, "body_too_large", f"request bodies are limited to {settings.max_body_bytes} bytes")
        t0 = time.perf_counter()
        response: Response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        requests.labels(request.method, route, str(response.status_code)).inc()
        latency.labels(request.method, route).observe(time.perf_counter() - t0)
        return response

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
    app.include_router(nodes.router)
    app.include_router(billing.router)
    app.include_router(admin.router)
    app.include_router(accounts.router)
    app.include_router(programs.router)
    app.include_router(reports.router)
    app.include_router(identity.router)
    app.include_router(cluster.router)
    _document_raw_bodies(app)
    return app


def _document_raw_bodies(app: FastAPI) -> None:
    """Job submission reads its body itself (JSON or YAML), so FastAPI does not see the
    schema; add `JobSpecIn` (and the models it uses) to the OpenAPI components."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schema = JobSpecIn.model_json_schema(ref_template="#/components/schemas/{model}")
            components = doc.setdefault("components", {}).setdefault("schemas", {})
            components.update(schema.pop("$defs", {}))
            components["JobSpecIn"] = schema
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory api.app:app_from_env` (settings from SUANLI_*)."""
    return create_app(Settings())
