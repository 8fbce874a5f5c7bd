"""schemathesis against the app's own OpenAPI document: every operation, bounded examples.

Invariants checked for every generated request (valid and deliberately invalid ones), sent
as the center admin (so authorization lets the request through to validation and the
services), except job submission, sent as a member (center admins belong to no org and may
not submit; the member's jobs then give the job routes something to find):
- no 5xx (`not_a_server_error`);
- the status code is one the operation documents (`status_code_conformance`), the content
  type is documented (`content_type_conformance`) and the body matches the documented
  schema for that status (`response_schema_conformance`), problems included.

Bounded: a fixed seed, deterministic generation, a few examples per operation and mode, no
shrinking, no coverage or stateful phase, so the file takes well under a minute on 2 cores.
Runs on a fresh SQLite center (make_center in a temporary folder). Each case gets a fresh
token, because generated requests may revoke tokens (DELETE /v1/tokens/{id}).

Exceptions, both deliberate:
- /readyz answers 503 by design while no scheduler holds a fresh lease (none runs here); its
  503 is documented and still has to conform, so only `not_a_server_error` is skipped for it.
- GET /v1/jobs/{job_id}/logs is sent with `follow=false`: following a job that never ends
  (nothing runs jobs here) streams until the client leaves, and this client never does. The
  endpoint itself is tested, only its streaming mode is not.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from suanli.db.engine import Database
from suanli.db.store import tenancy
from suanli.identity import new_token
from suanli.settings import Settings
from tests.conftest import Center, make_center

pytestmark = pytest.mark.slow

EXAMPLES_PER_OPERATION = 8
CONFIG = {
    "seed": 20260601,
    "generation": {
        "max-examples": EXAMPLES_PER_OPERATION,
        "no-shrink": True,
        "deterministic": True,
        # Authorization comes from the test (a live admin token), not generated headers.
        "with-security-parameters": False,
        # No NUL bytes: PostgreSQL text cannot hold them and the center's names never do.
        "allow-x00": False,
    },
    "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
}
DOCUMENTED_503 = {("GET", "/readyz")}
AS_MEMBER = {("POST", "/v1/jobs")}


@pytest.fixture(scope="module")
def st_center(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Center]:
    c = make_center("", Path(tmp_path_factory.mktemp("schemathesis")), "sqlite")
    yield c
    c.client.close()
    c.db.dispose()


def openapi_document() -> dict[str, Any]:
    """The document `create_app` serves; it does not depend on the database, so an in-memory
    one does (the document must be known when tests are collected, before any fixture)."""
    return create_app(Settings(), Database("sqlite://")).openapi()


DOCUMENT = openapi_document()
schema = schemathesis.openapi.from_dict(DOCUMENT, config=SchemathesisConfig.from_dict(CONFIG))


def test_the_tested_document_is_the_served_one(st_center: Center) -> None:
    """Invariant: what schemathesis generates from is exactly GET /openapi.json of the app."""
    assert st_center.client.get("/openapi.json").json() == DOCUMENT


def fresh_token(center: Center, user: str) -> str:
    token = new_token()
    with center.db.begin() as s:
        row = tenancy.get_user(s, user)
        assert row is not None
        tenancy.add_token(s, row.id, token, datetime.now(UTC))
    return token


@schema.parametrize()
def test_api_conforms_to_its_openapi(case: schemathesis.Case, st_center: Center) -> None:
    """See the module docstring: no 5xx, documented statuses, conforming bodies."""
    if case.path == "/v1/jobs/{job_id}/logs" and isinstance(case.query, dict) and "follow" in case.query:
        case.query["follow"] = "false"
    user = "alice" if (case.method.upper(), case.path) in AS_MEMBER else "admin"  # demo users (suanli.demo)
    response = case.call(app=st_center.client.app, headers={"Authorization": f"Bearer {fresh_token(st_center, user)}"})
    checks = [status_code_conformance, content_type_conformance, response_schema_conformance]
    if not ((case.method.upper(), case.path) in DOCUMENTED_503 and response.status_code == 503):
        checks.append(schemathesis.checks.not_a_server_error)
    case.validate_response(response, checks=checks)


@pytest.mark.parametrize("path", ["/v1/jobs/9223372036854775808", "/v1/jobs/2147483648/events",
                                  "/v1/jobs/1/logs?offset=18446744073709551616"])
def test_out_of_range_numbers_are_422_not_500(st_center: Center, path: str) -> None:
    """Regression (found by schemathesis): ids beyond the 32-bit id columns and log offsets
    beyond any file are refused as invalid input, never a database or seek overflow (500)."""
    r = st_center.client.get(path, headers=st_center.headers(st_center.tokens.admin))
    assert r.status_code == 422 and r.json()["code"] == "invalid_request", r.text
