"""Authorization matrix: every operation of the app's OpenAPI document × every role.

Invariants:
- Every operation has an entry in tests/integration/authz_rules.py (a new route without one
  fails here, naming it), and every entry is still an operation of the document.
- Each role gets exactly what the operation's rule says (authz_rules.OUTCOMES): 401 without
  a token, 403 for a role that may not, 404 for another org's objects, and otherwise gets
  past authorization (any status below 500 but 401/403/404: a 409 or 422 about the request
  itself is "allowed past auth"; a 5xx fails unless the operation documents it, as /readyz
  does its 503 while no scheduler runs). The objects in paths are real (org A's job, org A, its
  members and tokens, a voucher, a node, the demo program), so a 404 for an allowed role is a
  visibility bug, not a missing object. Bodies are valid, so routes whose service decides
  who may act (members, tokens, jobs) are reached.
- Center-admin routes check the role before the body is validated: any other role sending
  a well-formed but invalid JSON body gets 401/403, never a 422 that would show the route's
  rules to them. (Rule tested: `AdminDep` is a FastAPI dependency, solved before path,
  query and body fields are validated. A body that is not JSON at all is refused 422 by
  FastAPI before any dependency runs; that answer reveals nothing and touches no data.)

One fresh SQLite center for the module (make_center: generous rate limits). Objects that an
allowed call uses up (a job to cancel, hold or release, an org to verify, a member to
remove, a token to revoke, a quota to delete) are made fresh for each call, so the allowed
roles' calls succeed rather than meet a 409.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from api.app import create_app
from suanli.db.engine import Database
from suanli.db.store import tenancy
from suanli.demo import DEMO_PROGRAM
from suanli.identity import Role, new_token
from suanli.settings import Settings
from tests.conftest import Center, make_center, unique
from tests.integration.authz_rules import ALLOWED, OUTCOMES, ROLES, RULES

HTTP_METHODS = {"get", "put", "post", "delete", "patch"}


def operations(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m.upper(), p) for p, item in doc["paths"].items() for m in item if m in HTTP_METHODS]


# The document does not depend on the database; it must be known at collection time.
DOCUMENT = create_app(Settings(), Database("sqlite://")).openapi()
OPERATIONS = operations(DOCUMENT)
NODE = "a100-0"
SOON = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()  # inside the demo program's window
TYPE = "nvidia-a100-80g"


@dataclass
class World:
    center: Center
    org: str  # org A: the objects in paths belong to it
    member_user: str
    tokens: dict[str, str | None]  # role -> token
    job_id: int
    voucher_id: int
    managed_user: str  # a member of A whose role the PATCH sets

    def call(self, role: str, method: str, url: str, body: Any = None) -> Any:
        token = self.tokens[role]
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.center.client.request(method, url, headers=headers, json=body)

    def admin(self, method: str, url: str, body: Any = None, expect: int = 200) -> Any:
        r = self.call("center_admin", method, url, body)
        assert r.status_code == expect, r.text
        return r.json() if r.content else None

    def fresh_member(self) -> str:
        name = unique("leaver")
        with self.center.db.begin() as s:
            org = tenancy.get_org(s, self.org)
            assert org is not None
            tenancy.create_user(s, name, Role.MEMBER, org.id, datetime.now(UTC))
        return name

    def fresh_job(self, held: bool = False) -> int:
        """A new pending (or held) job of org A's member."""
        r = self.call("member", "POST", "/v1/jobs", {"name": "matrix", "resources": {"accelerator": TYPE}, "command": "echo hi"})
        assert r.status_code == 201, r.text
        job_id: int = r.json()["id"]
        if held:
            assert self.call("member", "POST", f"/v1/jobs/{job_id}/hold").status_code == 200
        return job_id

    def fresh_applied_org(self) -> str:
        name = unique("applicant")
        self.admin("POST", "/v1/admin/orgs", {"name": name, "pool": "universities", "kind": "university", "status": "applied"},
                   expect=201)
        return name

    def fresh_token_id(self) -> int:
        with self.center.db.begin() as s:
            user = tenancy.get_user(s, self.member_user)
            assert user is not None
            return tenancy.add_token(s, user.id, new_token(), datetime.now(UTC), name="to-revoke").id


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    c = make_center("", Path(tmp_path_factory.mktemp("authz")), "sqlite")
    a, b = c.new_org(), c.new_org()
    now = datetime.now(UTC)
    org_admin_token = new_token()
    managed = unique("carol")
    with c.db.begin() as s:
        org = tenancy.get_org(s, a.org)
        assert org is not None
        admin_user = tenancy.create_user(s, unique("oadmin"), Role.ORG_ADMIN, org.id, now)
        tenancy.add_token(s, admin_user.id, org_admin_token, now)
        tenancy.create_user(s, managed, Role.MEMBER, org.id, now)
    tokens: dict[str, str | None] = {"anonymous": None, "member": a.token, "foreign": b.token,
                                     "org_admin": org_admin_token, "center_admin": c.tokens.admin, "agent": None}
    w = World(c, a.org, a.user, tokens, 0, 0, managed)
    tokens["agent"] = w.admin("POST", f"/v1/admin/nodes/{NODE}/token", expect=201)["token"]
    spec = {"name": "matrix", "resources": {"accelerator": TYPE}, "command": "echo hi"}
    r = w.call("member", "POST", "/v1/jobs", spec)
    assert r.status_code == 201, r.text
    w.job_id = r.json()["id"]
    w.voucher_id = w.admin("POST", f"/v1/admin/programs/{quote(DEMO_PROGRAM, safe='')}/vouchers",
                           {"org": a.org, "face_fen": 1000, "expires_at": SOON}, expect=201)["id"]
    yield w
    c.client.close()
    c.db.dispose()


HEARTBEAT = {"accelerator_type": TYPE, "cpus": 64, "memory_mb": 1024 * 1024, "agent_version": "matrix",
             "devices": [{"index": i, "uuid": f"GPU-{NODE}-{i}", "model": "NVIDIA A100-SXM4-80GB", "memory_mb": 81920}
                         for i in range(8)]}

# Valid bodies (names made unique per call, so an allowed call is not a 409 by accident).
BODIES: dict[tuple[str, str], Callable[[World], Any]] = {
    ("POST", "/v1/jobs"): lambda w: {"name": "matrix", "resources": {"accelerator": TYPE}, "command": "echo hi"},
    ("PUT", "/v1/nodes/{name}/heartbeat"): lambda w: HEARTBEAT,
    ("POST", "/v1/admin/nodes/{name}/drain"): lambda w: {"reason": "authorization matrix"},
    ("POST", "/v1/tokens"): lambda w: {"name": unique("t"), "expires_in": "1d"},
    ("POST", "/v1/orgs/{org}/members"): lambda w: {"name": unique("newbie"), "role": "member", "expires_in": "1d"},
    ("PATCH", "/v1/orgs/{org}/members/{user}"): lambda w: {"role": "member"},
    ("POST", "/v1/admin/pools"): lambda w: {"name": unique("pool"), "shares": 1},
    ("POST", "/v1/orgs/{org}/topups"): lambda w: {"amount_fen": 100, "key": unique("k")},
    ("POST", "/v1/admin/orgs"): lambda w: {"name": unique("org"), "pool": "universities", "kind": "university"},
    ("POST", "/v1/admin/orgs/{org}/status"): lambda w: {"status": "verified"},
    ("PUT", "/v1/admin/orgs/{org}/credit-limit"): lambda w: {"credit_limit_fen": 0},
    ("PUT", "/v1/admin/prices/{accelerator_type}"): lambda w: {"fen_per_device_hour": 1000},
    ("PUT", "/v1/admin/quotas/{scope}/{name}/{accelerator_type}"): lambda w: {"guaranteed": 0, "limit": 8},
    ("PUT", "/v1/admin/shares/{kind}/{name}"): lambda w: {"shares": 1},
    ("PUT", "/v1/admin/priority-classes/{name}"): lambda w: {"value": 0.5},
    ("POST", "/v1/admin/projects"): lambda w: {"org": w.org, "name": unique("proj")},
    ("POST", "/v1/admin/programs"): lambda w: {"name": unique("prog"), "budget_fen": 1000, "rate": "0.5",
                                               "valid_from": "2026-01-01", "valid_until": "2099-01-01"},
    ("POST", "/v1/admin/programs/{name}/vouchers"): lambda w: {"org": w.org, "face_fen": 100, "expires_at": SOON},
    ("POST", "/v1/admin/vouchers/{voucher_id}/revoke"): lambda w: {"reason": "authorization matrix"},
}
QUERIES = {("GET", "/v1/balance"): lambda w: f"?org={quote(w.org)}"}


def url_for(w: World, method: str, path: str) -> str:
    """The path with real objects of org A in it."""
    if path.startswith("/v1/admin/programs/"):
        name = DEMO_PROGRAM
    elif "/nodes/" in path:
        name = NODE
    elif "/priority-classes/" in path:
        name = "matrix-class"
    else:  # quotas and shares of org A
        name = w.org
    params: dict[str, object] = {
        "job_id": w.job_id, "org": w.org, "month": "2026-06", "voucher_id": w.voucher_id, "scope": "org",
        "kind": "org", "accelerator_type": TYPE, "user": w.managed_user, "name": name,
    }
    if path in ("/v1/jobs/{job_id}/cancel", "/v1/jobs/{job_id}/hold", "/v1/jobs/{job_id}/release"):
        params["job_id"] = w.fresh_job(held=path.endswith("/release"))  # so an allowed call succeeds
    if path == "/v1/admin/orgs/{org}/status":
        params["org"] = w.fresh_applied_org()  # the body verifies it
    if (method, path) == ("DELETE", "/v1/orgs/{org}/members/{user}"):
        params["user"] = w.fresh_member()
    if path == "/v1/tokens/{token_id}":
        params["token_id"] = w.fresh_token_id()
    if (method, path) == ("DELETE", "/v1/admin/quotas/{scope}/{name}/{accelerator_type}"):
        w.admin("PUT", f"/v1/admin/quotas/org/{quote(w.org)}/{TYPE}", {"guaranteed": 0, "limit": 8})
    url = path
    for key, value in params.items():
        url = url.replace("{" + key + "}", quote(str(value), safe=""))
    assert "{" not in url, f"no value for a path parameter of {path}: add it to url_for"
    return url + QUERIES.get((method, path), lambda _: "")(w)


def verdict(expected: object, status: int, documented: set[str]) -> bool:
    if status >= 500 and str(status) not in documented:  # /readyz documents its 503 (no scheduler runs here)
        return False
    if expected == ALLOWED:
        return status not in (401, 403, 404)
    return status == expected


def test_every_operation_has_a_rule(world: World) -> None:
    """Invariant: the table and the live document list the same operations, and every rule
    has outcomes for every role."""
    live = set(operations(world.center.client.app.openapi()))
    missing = sorted(live - RULES.keys())
    stale = sorted(RULES.keys() - live)
    assert not missing, "operations without an entry in tests/integration/authz_rules.py RULES: " + \
        ", ".join(f"{m} {p}" for m, p in missing)
    assert not stale, "RULES entries that are no longer operations: " + ", ".join(f"{m} {p}" for m, p in stale)
    for rule, outcomes in OUTCOMES.items():
        assert set(outcomes) == set(ROLES), rule
    assert set(RULES.values()) <= OUTCOMES.keys()


@pytest.mark.parametrize("method,path", OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_access(world: World, method: str, path: str) -> None:
    """Invariant: every role gets what the operation's rule says (module docstring)."""
    rule = RULES.get((method, path))
    if rule is None:
        pytest.fail(f"{method} {path} has no entry in tests/integration/authz_rules.py RULES: give it its rule")
    wrong = []
    for role in ROLES:
        body = BODIES[(method, path)](world) if (method, path) in BODIES else None
        r = world.call(role, method, url_for(world, method, path), body)
        expected = OUTCOMES[rule][role]
        if not verdict(expected, r.status_code, set(DOCUMENT["paths"][path][method.lower()]["responses"])):
            wrong.append(f"  {role}: expected {expected}, got {r.status_code} {r.text[:200]}")
    assert not wrong, f"{method} {path} (rule {rule}):\n" + "\n".join(wrong)


ADMIN_BODY_OPERATIONS = [(m, p) for m, p in OPERATIONS
                         if RULES.get((m, p)) == "center-admin" and "requestBody" in DOCUMENT["paths"][p][m.lower()]]


@pytest.mark.parametrize("method,path", ADMIN_BODY_OPERATIONS, ids=[f"{m} {p}" for m, p in ADMIN_BODY_OPERATIONS])
def test_admin_routes_check_the_role_before_the_body(world: World, method: str, path: str) -> None:
    """Invariant: a center-admin route answers 401/403 to others even for a body that breaks
    every rule (auth before validation), and 422 only to the center admin."""
    url = url_for(world, method, path)
    bad = {"no such field": ["x"] * 3}
    got = {role: world.call(role, method, url, bad).status_code for role in ROLES}
    assert got == {"anonymous": 401, "member": 403, "foreign": 403, "org_admin": 403, "center_admin": 422, "agent": 403}
