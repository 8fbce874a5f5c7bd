"""The center admin's fair-share model through the API — quotas, shares, priority classes,
projects — on SQLite and the PostgreSQL server, and the `suanli admin` CLI over HTTP.

The database is shared by the whole session, so tests make their own orgs (and pools) with
`center.new_org()`, compute the room left under capacity instead of assuming it, and remove
the guarantees they set.
"""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from scheduler.types import Quota, Vendor
from suanli import admin as admin_service
from suanli.cli import app as cli_app
from suanli.db.models import JobRow, NodeRow, OrgRow, PoolRow, PriorityClassRow, ProjectRow, QuotaRow
from suanli.db.store import tenancy
from suanli.errors import SuanliError
from tests.conftest import unique

A100, B910 = "nvidia-a100-80g", "ascend-910b"




def admin(center) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return center.headers(center.tokens.admin)


def quota_url(scope: str, name: str, accelerator_type: str) -> str:
    return f"/v1/admin/quotas/{scope}/{name}/{accelerator_type}"


def state(center) -> tuple[list[Any], ...]:  # type: ignore[no-untyped-def]
    """Everything the admin routes may write: quotas, shares, classes, projects."""
    with center.db.begin() as s:
        return (
            sorted(s.execute(select(QuotaRow.scope, QuotaRow.scope_id, QuotaRow.accelerator_type, QuotaRow.guaranteed,
                                    QuotaRow.limit)).all()),
            sorted(s.execute(select(PoolRow.name, PoolRow.shares)).all()),
            sorted(s.execute(select(OrgRow.name, OrgRow.shares)).all()),
            sorted(s.execute(select(ProjectRow.org_id, ProjectRow.name, ProjectRow.shares)).all()),
            sorted((r.name, str(r.value), r.preemptible, r.description) for r in s.scalars(select(PriorityClassRow))),
        )


def room(center, scope: str, name: str, accelerator_type: str) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """(capacity, the most `name` could be guaranteed) for a type, from the API: each pool
    promises max(its guarantee, its orgs' guarantees summed); promises must fit the capacity."""
    nodes = center.client.get("/v1/nodes", headers=admin(center)).json()
    capacity = sum(n["device_count"] for n in nodes if n["accelerator_type"] == accelerator_type and n["status"] != "DRAINED")
    quotas = [q for q in center.client.get("/v1/admin/quotas", headers=admin(center)).json() if q["accelerator_type"] == accelerator_type]
    pool_of = {e["name"]: e["parent"] for e in center.client.get("/v1/admin/shares", headers=admin(center)).json() if e["kind"] == "org"}
    pool_g = {q["name"]: q["guaranteed"] for q in quotas if q["scope"] == "pool"}
    org_sum: dict[str, int] = {}
    for q in quotas:
        if q["scope"] == "org" and not (scope == "org" and q["name"] == name):
            org_sum[pool_of[q["name"]]] = org_sum.get(pool_of[q["name"]], 0) + q["guaranteed"]
    home = pool_of[name] if scope == "org" else name
    rest = sum(max(pool_g.get(p, 0), org_sum.get(p, 0)) for p in set(pool_g) | set(org_sum) if p != home)
    if scope == "org":
        most = capacity - rest - org_sum.get(home, 0) if rest + pool_g.get(home, 0) <= capacity else 0
    else:
        most = capacity - rest if rest + org_sum.get(home, 0) <= capacity else 0
    return capacity, max(most, 0)


def put_quota(center, scope: str, name: str, accelerator_type: str, guaranteed: Any, limit: Any = None):  # type: ignore[no-untyped-def]
    return center.client.put(quota_url(scope, name, accelerator_type), json={"guaranteed": guaranteed, "limit": limit},
                             headers=admin(center))


def job(**over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": "job", "resources": {"accelerator": A100}, "command": "echo hi"}
    spec.update(over)
    return spec


# ---------------------------------------------------------------------------- quotas


@pytest.mark.parametrize("scope", ["org", "pool"])
def test_quota_set_list_update_delete_round_trip(center, scope: str) -> None:  # type: ignore[no-untyped-def]
    """Invariants: a quota set for an org (or pool) is answered, listed and read by the
    scheduler's store exactly as set; a second PUT replaces it; DELETE removes it (204) and a
    second DELETE is 404 `quota_not_found`."""
    m = center.new_org(pool=unique("pool"))
    with center.db.begin() as s:
        name = m.org if scope == "org" else s.get(PoolRow, tenancy.get_org(s, m.org).pool_id).name
    _, free = room(center, scope, name, A100)
    g = max(0, min(2, free))
    r = put_quota(center, scope, name, A100, g, 8)
    assert r.status_code == 200, r.text
    want = {"scope": scope, "name": name, "accelerator_type": A100, "guaranteed": g, "limit": 8}
    assert r.json() == want
    try:
        listed = center.client.get("/v1/admin/quotas", headers=admin(center)).json()
        assert [q for q in listed if (q["scope"], q["name"]) == (scope, name)] == [want]
        keys = [(q["scope"], q["name"], q["accelerator_type"]) for q in listed]
        assert keys == sorted(keys)
        with center.db.begin() as s:
            by_org, by_pool = tenancy.quotas(s)
        assert (by_org if scope == "org" else by_pool)[(name, A100)] == Quota(g, 8)
        r = put_quota(center, scope, name, A100, 0, None)
        assert r.status_code == 200 and r.json() == {**want, "guaranteed": 0, "limit": None}
        r = put_quota(center, scope, name, B910, 0, 3)
        assert r.status_code == 200, r.text
        mine = [q for q in center.client.get("/v1/admin/quotas", headers=admin(center)).json() if q["name"] == name]
        assert [(q["accelerator_type"], q["guaranteed"], q["limit"]) for q in mine] == [(B910, 0, 3), (A100, 0, None)]
    finally:
        r = center.client.delete(quota_url(scope, name, A100), headers=admin(center))
        assert r.status_code == 204 and r.content == b""
    assert center.client.delete(quota_url(scope, name, B910), headers=admin(center)).status_code == 204
    assert not [q for q in center.client.get("/v1/admin/quotas", headers=admin(center)).json() if q["name"] == name]
    again = center.client.delete(quota_url(scope, name, A100), headers=admin(center))
    assert again.status_code == 404 and again.json()["code"] == "quota_not_found"


BAD_QUOTAS = [
    # (scope, name ("ORG"/"POOL": the test's own), type, body, status, code, field)
    ("org", "ORG", A100, {"guaranteed": 4, "limit": 2}, 422, "limit_below_guarantee", "limit"),
    ("pool", "POOL", A100, {"guaranteed": 1, "limit": 0}, 422, "limit_below_guarantee", "limit"),
    ("org", "no-such-org", A100, {"guaranteed": 0}, 404, "org_not_found", None),
    ("pool", "no-such-pool", A100, {"guaranteed": 0}, 404, "pool_not_found", None),
    ("org", "ORG", "tpu-v9", {"guaranteed": 0}, 422, "unknown_accelerator_type", "accelerator_type"),
    ("team", "ORG", A100, {"guaranteed": 0}, 422, "invalid_request", "scope"),
    ("org", "ORG", A100, {"guaranteed": -1}, 422, "invalid_request", "guaranteed"),
    ("org", "ORG", A100, {"guaranteed": "1"}, 422, "invalid_request", "guaranteed"),
    ("org", "ORG", A100, {"guaranteed": 0, "limit": True}, 422, "invalid_request", "limit"),
    ("org", "ORG", A100, {"limit": 3}, 422, "invalid_request", "guaranteed"),
    ("org", "ORG", A100, {"guaranteed": 0, "burst": 3}, 422, "invalid_request", "burst"),
]


@pytest.mark.parametrize(("scope", "name", "accelerator_type", "body", "status", "code", "field"), BAD_QUOTAS)
def test_bad_quota_input_is_refused_and_writes_nothing(center, scope, name, accelerator_type, body, status, code, field) -> None:  # type: ignore[no-untyped-def]
    """Invariant: a bad quota (limit below the guarantee, unknown org, pool or type, a wrong
    scope, a malformed body) is a problem+json with a stable code naming the field, and
    changes nothing — an existing quota keeps its values."""
    m = center.new_org(pool=unique("pool"))
    with center.db.begin() as s:
        pool = s.get(PoolRow, tenancy.get_org(s, m.org).pool_id).name
    name = {"ORG": m.org, "POOL": pool}.get(name, name)
    if name in (m.org, pool) and scope in ("org", "pool"):  # an existing quota must survive the bad update
        assert put_quota(center, scope, name, A100, 0, 5).status_code == 200
    before = state(center)
    r = center.client.put(quota_url(scope, name, accelerator_type), json=body, headers=admin(center))
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    p = r.json()
    assert (p["code"], p["status"]) == (code, status) and p["detail"]
    if field:
        assert field in [e["field"] for e in p["errors"]], p
    assert state(center) == before


def test_guarantees_beyond_capacity_are_refused(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: what guarantees promise for a type — per pool the larger of its own
    guarantee and its orgs' guarantees summed — never exceeds the devices of that type on
    servers that are not drained: one device more than the room left is a 409
    `guarantees_exceed_capacity` whose detail gives the numbers, and nothing is written;
    exactly the room left is accepted."""
    a, b = center.new_org(pool=unique("pool")), center.new_org(pool=unique("pool"))
    with center.db.begin() as s:
        pool_a = s.get(PoolRow, tenancy.get_org(s, a.org).pool_id).name
    for scope, name in (("org", a.org), ("pool", pool_a)):
        capacity, free = room(center, scope, name, A100)
        assert capacity >= 16  # the demo servers a100-0 and a100-1
        before = state(center)
        r = put_quota(center, scope, name, A100, free + 1, None)
        assert r.status_code == 409, r.text
        p = r.json()
        assert p["code"] == "guarantees_exceed_capacity" and r.headers["content-type"] == "application/problem+json"
        assert f"only {capacity} are registered" in p["detail"] and f"at most {free}" in p["detail"]
        assert state(center) == before
        if free <= 0:
            continue
        try:
            assert put_quota(center, scope, name, A100, free, None).status_code == 200
            assert room(center, scope, name, A100) == (capacity, free)  # its own promise does not count against it
            other = b.org if scope == "org" else unique("pool")
            if scope == "pool":
                center.new_org(pool=other)
            r = put_quota(center, scope, other, A100, 1, None)
            assert r.status_code == 409 and r.json()["code"] == "guarantees_exceed_capacity"
            # a limit is not a promise: any limit is fine
            assert put_quota(center, scope, other, A100, 0, capacity * 10).status_code == 200
            center.client.delete(quota_url(scope, other, A100), headers=admin(center))
        finally:
            center.client.delete(quota_url(scope, name, A100), headers=admin(center))


def test_drained_servers_do_not_count_and_lowering_is_always_allowed(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: capacity is the devices of servers that are not drained; once servers are
    drained below the guarantees, raising a guarantee is refused but lowering one (or changing
    only the limit) is accepted, so the admin can always move back toward keepable promises."""
    gpu = f"test-gpu-{uuid.uuid4().hex[:8]}"  # a private type: capacity known exactly
    with center.db.begin() as s:
        tenancy.ensure_accelerator_type(s, gpu, Vendor.NVIDIA)
    node = unique("node")
    hb = {"accelerator_type": gpu, "cpus": 8, "memory_mb": 4096, "devices": [{"index": i} for i in range(4)]}
    assert center.client.put(f"/v1/nodes/{node}/heartbeat", json=hb, headers=center.headers(center.tokens.agent)).status_code == 200
    a, b = center.new_org(), center.new_org()
    assert put_quota(center, "org", a.org, gpu, 4, None).status_code == 200
    assert put_quota(center, "org", b.org, gpu, 1, None).json()["code"] == "guarantees_exceed_capacity"
    with center.db.begin() as s:
        s.execute(update(NodeRow).where(NodeRow.name == node).values(status="DRAINED"))
    assert room(center, "org", b.org, gpu) == (0, 0)
    r = put_quota(center, "org", a.org, gpu, 4, 6)  # same guarantee, new limit
    assert r.status_code == 200 and r.json()["limit"] == 6
    assert put_quota(center, "org", a.org, gpu, 2, None).status_code == 200  # lower, still over: allowed
    r = put_quota(center, "org", a.org, gpu, 3, None)  # higher: refused
    assert r.status_code == 409 and "only 0 are registered" in r.json()["detail"]
    assert put_quota(center, "org", b.org, gpu, 0, 2).status_code == 200  # no promise: fine
    assert put_quota(center, "org", b.org, gpu, 1, 2).status_code == 409


def test_concurrent_guarantees_cannot_overcommit(center) -> None:  # type: ignore[no-untyped-def]
    """Invariant: guarantees raced from many threads at once still never total more than the
    capacity (the type's row lock serializes the check and the write): on 4 devices, six
    concurrent requests for 2 each admit exactly two, and the others get 409."""
    gpu = f"test-gpu-{uuid.uuid4().hex[:8]}"
    with center.db.begin() as s:
        tenancy.ensure_accelerator_type(s, gpu, Vendor.NVIDIA)
        who = tenancy.principal_for_token(s, center.tokens.admin, datetime.now(UTC))
    hb = {"accelerator_type": gpu, "cpus": 8, "memory_mb": 4096, "devices": [{"index": i} for i in range(4)]}
    assert center.client.put(f"/v1/nodes/{unique('node')}/heartbeat", json=hb,
                             headers=center.headers(center.tokens.agent)).status_code == 200
    orgs = [center.new_org(prepaid_fen=0).org for _ in range(6)]
    barrier = threading.Barrier(len(orgs))
    results: dict[str, str] = {}

    def ask(org: str) -> None:
        barrier.wait()
        try:
            admin_service.set_quota(center.db, who, admin_service.Scope.ORG, org, gpu, 2, None)
            results[org] = "ok"
        except SuanliError as e:
            results[org] = e.code

    threads = [threading.Thread(target=ask, args=(o,)) for o in orgs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(results.values()) == ["guarantees_exceed_capacity"] * 4 + ["ok"] * 2, results
    assert sum(room(center, "org", o, gpu)[1] for o in orgs if results[o] != "ok") == 0  # nothing left


# ---------------------------------------------------------------------------- roles


def admin_routes(center) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    doc = center.client.get("/openapi.json").json()
    routes = []
    for path, ops in doc["paths"].items():
        if path.startswith("/v1/admin"):
            concrete = path.replace("{scope}", "org").replace("{kind}", "org")
            while "{" in concrete:
                start, end = concrete.index("{"), concrete.index("}")
                concrete = concrete[:start] + "city-university" + concrete[end + 1:]
            routes += [(method.upper(), concrete) for method in ops]
    return routes


def test_only_center_admins_reach_admin_routes(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: every /v1/admin route (read from the OpenAPI document, so new routes are
    covered) answers 403 `forbidden` to a member and to the agent — even with a valid body —
    and 401 without a token; nothing is changed. Any signed-in user may list the priority
    classes."""
    routes = admin_routes(center)
    assert {p for _, p in routes} >= {"/v1/admin/quotas", "/v1/admin/shares", "/v1/admin/projects"} and len(routes) >= 7
    body = {"guaranteed": 0, "limit": 1, "shares": 9, "value": 0.1, "org": "city-university", "name": "x"}
    before = state(center)
    for method, path in routes:
        for token in (center.tokens.member, center.tokens.agent):
            for payload in ({}, body):
                r = center.client.request(method, path, json=payload, headers=center.headers(token))
                assert r.status_code == 403 and r.json()["code"] == "forbidden", (method, path, r.text)
        r = center.client.request(method, path, json=body)
        assert r.status_code == 401 and r.json()["code"] == "unauthenticated", (method, path)
    assert state(center) == before
    for token in (center.tokens.member, center.tokens.agent, center.tokens.admin):
        r = center.client.get("/v1/priority-classes", headers=center.headers(token))
        assert r.status_code == 200 and {"high", "normal", "low", "preemptible"} <= {c["name"] for c in r.json()}
    assert center.client.get("/v1/priority-classes").status_code == 401


# ---------------------------------------------------------------------------- shares


def test_shares_of_pools_orgs_and_projects(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: shares set on a pool, an org and a project (`ORG/PROJECT`, slash escaped
    or not) are answered and read back in the tree with each node's parent; 0 is allowed."""
    pool = unique("pool")
    m = center.new_org(pool=pool)
    h = admin(center)
    for kind, name, shares, parent in (("pool", pool, 3, None), ("org", m.org, 5, pool), ("project", f"{m.org}/default", 0, m.org)):
        r = center.client.put(f"/v1/admin/shares/{kind}/{name}", json={"shares": shares}, headers=h)
        assert r.status_code == 200, r.text
        assert r.json() == {"kind": kind, "name": name, "parent": parent, "shares": shares}
    r = center.client.put(f"/v1/admin/shares/project/{m.org}%2Fdefault", json={"shares": 2}, headers=h)
    assert r.status_code == 200 and r.json()["shares"] == 2
    tree = center.client.get("/v1/admin/shares", headers=h).json()
    mine = {(e["kind"], e["name"]): (e["parent"], e["shares"]) for e in tree}
    assert mine[("pool", pool)] == (None, 3)
    assert mine[("org", m.org)] == (pool, 5)
    assert mine[("project", f"{m.org}/default")] == (m.org, 2)
    kinds = [e["kind"] for e in tree]
    assert kinds == sorted(kinds, key=["pool", "org", "project"].index)  # parents before children
    parents = {e["name"] for e in tree if e["kind"] != "project"}
    assert all(e["parent"] in parents for e in tree if e["parent"] is not None)


BAD_SHARES = [
    # (kind, name ("ORG": the test's own org), body, status, code, field)
    ("team", "ORG", {"shares": 1}, 422, "invalid_request", "kind"),
    ("pool", "no-such-pool", {"shares": 1}, 404, "pool_not_found", None),
    ("org", "no-such-org", {"shares": 1}, 404, "org_not_found", None),
    ("project", "ORG/no-such-project", {"shares": 1}, 404, "project_not_found", None),
    ("project", "no-such-org/default", {"shares": 1}, 404, "project_not_found", None),
    ("project", "ORG", {"shares": 1}, 422, "bad_project_name", "name"),
    ("org", "ORG", {"shares": -1}, 422, "invalid_request", "shares"),
    ("org", "ORG", {"shares": "2"}, 422, "invalid_request", "shares"),
    ("org", "ORG", {"shares": 10**9}, 422, "invalid_request", "shares"),
    ("org", "ORG", {}, 422, "invalid_request", "shares"),
]


@pytest.mark.parametrize(("kind", "name", "body", "status", "code", "field"), BAD_SHARES)
def test_bad_shares_are_refused_and_write_nothing(center, kind, name, body, status, code, field) -> None:  # type: ignore[no-untyped-def]
    """Invariant: an unknown kind or node, a project not named ORG/PROJECT, or shares that
    are negative, too large or not an integer are refused with a code, and change nothing."""
    m = center.new_org()
    name = name.replace("ORG", m.org)
    before = state(center)
    r = center.client.put(f"/v1/admin/shares/{kind}/{name}", json=body, headers=admin(center))
    assert r.status_code == status, r.text
    assert r.json()["code"] == code
    if field:
        assert field in [e["field"] for e in r.json()["errors"]]
    assert state(center) == before


# ---------------------------------------------------------------------------- priority classes


def test_priority_class_upsert_list_and_use(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: a class the admin defines is listed for members and accepted on job
    submission; a PUT without description keeps the description; bad values (over 1, a bool,
    more than 4 decimal places, bad names) change nothing; an unknown class is refused
    `unknown_priority_class` and no job is written."""
    m = center.new_org()
    name = unique("cls")
    h = admin(center)
    r = center.client.put(f"/v1/admin/priority-classes/{name}", json={"value": 0.8, "preemptible": True, "description": "deadline"},
                          headers=h)
    assert r.status_code == 200, r.text
    assert r.json() == {"name": name, "value": 0.8, "preemptible": True, "description": "deadline"}
    r = center.client.put(f"/v1/admin/priority-classes/{name}", json={"value": 0.75}, headers=h)
    assert r.json() == {"name": name, "value": 0.75, "preemptible": False, "description": "deadline"}
    listed = center.client.get("/v1/priority-classes", headers=center.headers(m.token)).json()
    assert {"name": name, "value": 0.75, "preemptible": False, "description": "deadline"} in listed
    assert [c["name"] for c in listed] == sorted(c["name"] for c in listed)
    before = state(center)
    for cname, body, fld in ((name, {"value": 1.5}, "value"), (name, {"value": -0.1}, "value"), (name, {"value": True}, "value"),
                             (name, {"value": 0.12345}, "value"), (name, {}, "value"), (name, {"value": 0.5, "x": 1}, "x"),
                             (name, {"value": 0.5, "description": "d" * 201}, "description"),
                             ("bad name!", {"value": 0.5}, "name"), ("c" * 33, {"value": 0.5}, "name")):
        r = center.client.put(f"/v1/admin/priority-classes/{cname}", json=body, headers=h)
        assert r.status_code == 422 and fld in [e["field"] for e in r.json()["errors"]], (cname, body, r.text)
    assert state(center) == before
    r = center.client.post("/v1/jobs", json=job(priority_class=name), headers=center.headers(m.token))
    assert r.status_code == 201 and r.json()["priority_class"] == name, r.text
    with center.db.begin() as s:
        jobs_before = s.scalar(select(func.count()).select_from(JobRow))
    r = center.client.post("/v1/jobs", json=job(priority_class=unique("nope")), headers=center.headers(m.token))
    assert r.status_code == 422 and r.json()["code"] == "unknown_priority_class"
    assert "priority_class" in [e["field"] for e in r.json()["errors"]]
    with center.db.begin() as s:
        assert s.scalar(select(func.count()).select_from(JobRow)) == jobs_before


# ---------------------------------------------------------------------------- projects


def test_project_create_then_submit_to_it(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: a project the admin creates is a leaf of the share tree (shares 1) that the
    org's members can submit to, and only that org's; a duplicate is 409 `project_exists`; an
    unknown org is 404 and a bad name 422, writing nothing."""
    m, other = center.new_org(), center.new_org()
    h = admin(center)
    r = center.client.post("/v1/admin/projects", json={"org": m.org, "name": "nlp"}, headers=h)
    assert r.status_code == 201 and r.json() == {"org": m.org, "name": "nlp", "shares": 1}, r.text
    tree = center.client.get("/v1/admin/shares", headers=h).json()
    assert {"kind": "project", "name": f"{m.org}/nlp", "parent": m.org, "shares": 1} in tree
    r = center.client.post("/v1/jobs", json=job(project="nlp"), headers=center.headers(m.token))
    assert r.status_code == 201 and r.json()["project"] == "nlp", r.text
    r = center.client.post("/v1/jobs", json=job(project="nlp"), headers=center.headers(other.token))
    assert r.status_code == 422 and r.json()["code"] == "unknown_project"
    before = state(center)
    dup = center.client.post("/v1/admin/projects", json={"org": m.org, "name": "nlp"}, headers=h)
    assert dup.status_code == 409 and dup.json()["code"] == "project_exists"
    r = center.client.post("/v1/admin/projects", json={"org": "no-such-org", "name": "nlp"}, headers=h)
    assert r.status_code == 404 and r.json()["code"] == "org_not_found"
    for body, fld in (({"org": m.org, "name": "bad/name"}, "name"), ({"org": m.org, "name": "x" * 65}, "name"),
                      ({"org": m.org}, "name"), ({"org": m.org, "name": "ok", "shares": 2}, "shares")):
        r = center.client.post("/v1/admin/projects", json=body, headers=h)
        assert r.status_code == 422 and fld in [e["field"] for e in r.json()["errors"]], (body, r.text)
    assert state(center) == before


# ---------------------------------------------------------------------------- CLI over HTTP




def test_admin_cli_over_http(center, server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Invariants: `suanli admin quota|shares|class|project` change and list the model
    through the real API; `--json` prints only JSON; exit codes are 0 ok, 2 bad input naming
    the field, 3 for a member, 4 not found, 5 conflict."""
    m = center.new_org()

    def run(*args: str, token: str = center.tokens.admin, expect: int = 0) -> Any:
        env = {"SUANLI_SERVER": server, "SUANLI_TOKEN": token, "XDG_CONFIG_HOME": str(tmp_path / "cfg"), "COLUMNS": "200"}
        result = CliRunner().invoke(cli_app, ["admin", *args], env=env)
        assert result.exit_code == expect, (args, result.exit_code, result.output)
        assert "Traceback" not in result.output
        return result

    g = max(0, min(1, room(center, "org", m.org, A100)[1]))
    try:
        q = json.loads(run("quota", "set", m.org, "--type", A100, "--guaranteed", str(g), "--limit", "4", "--json").stdout)
        assert q == {"scope": "org", "name": m.org, "accelerator_type": A100, "guaranteed": g, "limit": 4}
        listed = json.loads(run("quota", "list", "--json").stdout)
        assert q in listed
        assert m.org in run("quota", "list").stdout
        bad = run("quota", "set", m.org, "--type", A100, "--guaranteed", "3", "--limit", "1", expect=2)
        assert "limit_below_guarantee" in bad.output and "limit:" in bad.output
        assert "unknown accelerator type" in run("quota", "set", m.org, "--type", "tpu", "--guaranteed", "0", expect=2).output
        run("quota", "set", m.org, "--type", A100, "--guaranteed", "0", token=m.token, expect=3)
        run("quota", "list", token=center.tokens.member, expect=3)
        assert json.loads(run("quota", "list", "--json").stdout) == listed
    finally:
        run("quota", "unset", m.org, "--type", A100)
    run("quota", "unset", m.org, "--type", A100, expect=4)

    cls = unique("cls")
    assert "value 0.3" in run("class", "set", cls, "--value", "0.3", "--preemptible", "--description", "cheap").stdout
    classes = json.loads(run("class", "list", "--json", token=m.token).stdout)
    assert {"name": cls, "value": 0.3, "preemptible": True, "description": "cheap"} in classes
    assert "value" in run("class", "set", cls, "--value", "2", expect=2).output
    assert cls in run("class", "list", token=m.token).stdout

    e = json.loads(run("shares", "set", "--org", m.org, "7", "--json").stdout)
    assert e == {"kind": "org", "name": m.org, "parent": "universities", "shares": 7}
    run("shares", "set", "--project", f"{m.org}/default", "2")
    tree = json.loads(run("shares", "list", "--json").stdout)
    assert e in tree and {"kind": "project", "name": f"{m.org}/default", "parent": m.org, "shares": 2} in tree
    assert "exactly one" in run("shares", "set", "7", expect=2).output
    assert "exactly one" in run("shares", "set", "--org", m.org, "--pool", "universities", "7", expect=2).output
    assert "shares" in run("shares", "set", "--org", m.org, "--", "-1", expect=2).output

    assert f"{m.org}/nlp" in run("project", "create", m.org, "nlp").stdout
    assert "already has a project nlp" in run("project", "create", m.org, "nlp", expect=5).output
    run("project", "create", m.org, "nlp2", token=m.token, expect=3)


def test_pool_guarantee_bounds_its_orgs_together(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: a pool's guarantee covers its orgs' guarantees (a pool promises the larger
    of the two), so orgs inside a guaranteed pool can be promised up to it without promising
    more; an org of another pool cannot be promised devices the pool already holds."""
    gpu = f"test-gpu-{uuid.uuid4().hex[:8]}"
    with center.db.begin() as s:
        tenancy.ensure_accelerator_type(s, gpu, Vendor.NVIDIA)
    hb = {"accelerator_type": gpu, "cpus": 8, "memory_mb": 4096, "devices": [{"index": i} for i in range(8)]}
    assert center.client.put(f"/v1/nodes/{unique('node')}/heartbeat", json=hb,
                             headers=center.headers(center.tokens.agent)).status_code == 200
    pool, other_pool = unique("pool"), unique("pool")
    a, b, c = center.new_org(pool=pool), center.new_org(pool=pool), center.new_org(pool=other_pool)
    assert put_quota(center, "pool", pool, gpu, 8, None).status_code == 200
    assert put_quota(center, "org", a.org, gpu, 5, None).status_code == 200  # inside the pool's 8
    assert put_quota(center, "org", b.org, gpu, 3, None).status_code == 200  # 5 + 3 = 8: still 8 promised
    r = put_quota(center, "org", b.org, gpu, 4, None)  # 9 > 8 devices
    assert r.status_code == 409 and "at most 3" in r.json()["detail"]
    assert put_quota(center, "org", c.org, gpu, 1, None).status_code == 409  # the pool holds all 8
    assert room(center, "org", c.org, gpu) == (8, 0)
