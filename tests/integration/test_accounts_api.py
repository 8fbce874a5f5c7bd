"""Orgs (kind, pool, status), prices, credit limits, top-ups and the audit log through the API,
on SQLite and the PostgreSQL server, and `suanli admin org|price|credit|topup|audit` and
`suanli prices` over real HTTP (SQLite only).

The database is shared by the whole session: tests make their own orgs, pools and
accelerator types (prices of the demo types stay as other tests expect them), and compare row
counts and audit rows before and after rather than assuming absolute numbers.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from scheduler.types import Vendor
from suanli.cli import app as cli_app
from suanli.db.models import AuditRow, JobRow, LedgerEntryRow, LedgerTxnRow, OrgRow, PoolRow, PriceRow, ProjectRow
from suanli.db.store import tenancy
from tests.conftest import unique

A100 = "nvidia-a100-80g"
TABLES = (OrgRow, ProjectRow, PoolRow, PriceRow, AuditRow, LedgerTxnRow, LedgerEntryRow, JobRow)


def admin(center) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return center.headers(center.tokens.admin)


def state(center) -> tuple[Any, ...]:  # type: ignore[no-untyped-def]
    """Everything these routes may write: row counts of the tables, and each org's status and
    credit limit."""
    with center.db.begin() as s:
        counts = {t.__tablename__: s.scalar(select(func.count()).select_from(t)) for t in TABLES}
        orgs = sorted(s.execute(select(OrgRow.name, OrgRow.status, OrgRow.credit_limit_fen)).all())
    return counts, orgs


def last_audit_id(center) -> int:  # type: ignore[no-untyped-def]
    with center.db.begin() as s:
        return int(s.scalar(select(func.coalesce(func.max(AuditRow.id), 0))) or 0)


def audit_since(center, after_id: int) -> list[AuditRow]:  # type: ignore[no-untyped-def]
    with center.db.begin() as s:
        return list(s.scalars(select(AuditRow).where(AuditRow.id > after_id).order_by(AuditRow.id)))


def new_pool(center) -> str:  # type: ignore[no-untyped-def]
    name = unique("pool")
    with center.db.begin() as s:
        tenancy.get_or_create_pool(s, name)
    return name


def new_type(center) -> str:  # type: ignore[no-untyped-def]
    """An accelerator type of this test only, so its prices affect no other test."""
    name = unique("test-gpu")
    with center.db.begin() as s:
        tenancy.ensure_accelerator_type(s, name, Vendor.NVIDIA)
    return name


def set_status_in_db(center, org: str, status: str) -> None:  # type: ignore[no-untyped-def]
    with center.db.begin() as s:
        row = tenancy.get_org(s, org)
        assert row is not None
        row.status = status


def job() -> dict[str, Any]:
    return {"name": "job", "resources": {"accelerator": A100}, "command": "echo hi"}


# ---------------------------------------------------------------------------- orgs


def test_create_and_list_orgs(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: a new org is answered 201 as registered — "applied" unless asked "verified"
    — with its "default" project and an empty account; it is listed with kind, pool, status,
    credit limit and money, and the list filters by kind, pool and status; each creation
    writes exactly one audit row `org.create` (before: none; after: pool, kind, status)."""
    pool = new_pool(center)
    name, verified = unique("org"), unique("org")
    mark = last_audit_id(center)
    r = center.client.post("/v1/admin/orgs", json={"name": name, "pool": pool, "kind": "sme"}, headers=admin(center))
    assert r.status_code == 201, r.text
    body = r.json()
    assert {k: v for k, v in body.items() if k != "created_at"} == {
        "name": name, "pool": pool, "kind": "sme", "status": "applied", "credit_limit_fen": 0, "credit_limit_yuan": "0.00",
        "balance_fen": 0, "balance_yuan": "0.00", "held_fen": 0, "held_yuan": "0.00"}
    rows = audit_since(center, mark)
    assert [(a.actor, a.action, a.target, a.before, a.after) for a in rows] == [
        ("admin", "org.create", f"org:{name}", None, {"pool": pool, "kind": "sme", "status": "applied"})]
    r = center.client.post("/v1/admin/orgs", json={"name": verified, "pool": pool, "kind": "research-institute",
                                                   "status": "verified"}, headers=admin(center))
    assert r.status_code == 201 and r.json()["status"] == "verified", r.text
    assert len(audit_since(center, mark)) == 2
    with center.db.begin() as s:
        org = tenancy.get_org(s, name)
        assert org is not None and tenancy.get_project(s, org.id, "default") is not None
    listed = center.client.get("/v1/admin/orgs", headers=admin(center)).json()
    assert [o["name"] for o in listed] == sorted(o["name"] for o in listed)
    assert {"city-university", name, verified} <= {o["name"] for o in listed}
    demo = next(o for o in listed if o["name"] == "city-university")
    assert demo["kind"] == "university" and demo["status"] == "verified" and demo["balance_fen"] > 0
    mine = center.client.get("/v1/admin/orgs", params={"pool": pool}, headers=admin(center)).json()
    assert [(o["name"], o["kind"], o["status"]) for o in mine] == sorted([(name, "sme", "applied"),
                                                                          (verified, "research-institute", "verified")])
    only = center.client.get("/v1/admin/orgs", params={"pool": pool, "status": "applied", "kind": "sme"}, headers=admin(center))
    assert [o["name"] for o in only.json()] == [name]
    assert center.client.get("/v1/admin/orgs", params={"pool": pool, "kind": "startup"}, headers=admin(center)).json() == []
    r = center.client.get("/v1/admin/orgs", params={"kind": "guild"}, headers=admin(center))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "kind"


BAD_ORGS = [
    # (body ("POOL": an existing pool, "DUP": an existing org), status, code, field)
    ({"name": "NEW", "pool": "POOL", "kind": "guild"}, 422, "invalid_request", "kind"),
    ({"name": "NEW", "pool": "no-such-pool", "kind": "sme"}, 422, "unknown_pool", "pool"),
    ({"name": "DUP", "pool": "POOL", "kind": "sme"}, 409, "org_exists", None),
    ({"name": "NEW", "pool": "POOL", "kind": "sme", "status": "suspended"}, 422, "invalid_request", "status"),
    ({"name": "bad/name", "pool": "POOL", "kind": "sme"}, 422, "invalid_request", "name"),
    ({"name": "x" * 65, "pool": "POOL", "kind": "sme"}, 422, "invalid_request", "name"),
    ({"name": "NEW", "pool": "POOL"}, 422, "invalid_request", "kind"),
    ({"name": "NEW", "pool": "POOL", "kind": "sme", "credit_limit_fen": 5}, 422, "invalid_request", "credit_limit_fen"),
]


@pytest.mark.parametrize(("body", "status", "code", "field"), BAD_ORGS)
def test_bad_org_is_refused_and_writes_nothing(center, body, status, code, field) -> None:  # type: ignore[no-untyped-def]
    """Invariant: an unknown kind or pool, a duplicate name, a new org that is not applied or
    verified, a bad name or a malformed body is refused with its code (naming the field),
    and writes nothing — no org, project, pool or audit row."""
    dup = center.new_org()
    pool = new_pool(center)
    body = {k: v.replace("POOL", pool).replace("DUP", dup.org).replace("NEW", unique("org")) if isinstance(v, str) else v
            for k, v in body.items()}
    before = state(center)
    r = center.client.post("/v1/admin/orgs", json=body, headers=admin(center))
    assert r.status_code == status, r.text
    assert r.json()["code"] == code
    if field:
        assert field in [e["field"] for e in r.json()["errors"]]
    assert state(center) == before


def test_status_transitions_follow_the_table(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: exactly applied→verified, verified→suspended and suspended→verified are
    allowed, each writing one audit row `org.status` with the status before and after (and
    the reason); every other pair, including staying put, is 409 `bad_org_transition` and
    writes nothing. An unknown org is 404, an unknown status 422."""
    allowed = {("applied", "verified"), ("verified", "suspended"), ("suspended", "verified")}
    statuses = ("applied", "verified", "suspended")
    m = center.new_org()
    for frm in statuses:
        for to in statuses:
            set_status_in_db(center, m.org, frm)
            before, mark = state(center), last_audit_id(center)
            r = center.client.post(f"/v1/admin/orgs/{m.org}/status", json={"status": to, "reason": f"{frm} to {to}"},
                                   headers=admin(center))
            if (frm, to) in allowed:
                assert r.status_code == 200 and r.json()["status"] == to, (frm, to, r.text)
                rows = audit_since(center, mark)
                assert [(a.action, a.target, a.before, a.after) for a in rows] == [
                    ("org.status", f"org:{m.org}", {"status": frm}, {"status": to, "reason": f"{frm} to {to}"})]
            else:
                assert r.status_code == 409 and r.json()["code"] == "bad_org_transition", (frm, to, r.text)
                assert state(center) == before
    set_status_in_db(center, m.org, "verified")
    before = state(center)
    r = center.client.post("/v1/admin/orgs/no-such-org/status", json={"status": "verified"}, headers=admin(center))
    assert r.status_code == 404 and r.json()["code"] == "org_not_found"
    for body, fld in (({"status": "closed"}, "status"), ({}, "status"), ({"status": "verified", "reason": "r" * 501}, "reason"),
                      ({"status": "verified", "why": "x"}, "why")):
        r = center.client.post(f"/v1/admin/orgs/{m.org}/status", json=body, headers=admin(center))
        assert r.status_code == 422 and fld in [e["field"] for e in r.json()["errors"]], (body, r.text)
    assert state(center) == before


def test_suspended_org_cannot_submit_until_reinstated(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: a member of a suspended org is refused 409 `org_not_active` and no job is
    written; once the org is reinstated (verified again) the same submission is accepted."""
    m = center.new_org()
    assert center.client.post("/v1/jobs", json=job(), headers=center.headers(m.token)).status_code == 201
    r = center.client.post(f"/v1/admin/orgs/{m.org}/status", json={"status": "suspended", "reason": "unpaid"},
                           headers=admin(center))
    assert r.status_code == 200 and r.json()["status"] == "suspended"
    before = state(center)
    r = center.client.post("/v1/jobs", json=job(), headers=center.headers(m.token))
    assert r.status_code == 409 and r.json()["code"] == "org_not_active", r.text
    assert state(center) == before
    r = center.client.post(f"/v1/admin/orgs/{m.org}/status", json={"status": "verified", "reason": "paid"}, headers=admin(center))
    assert r.status_code == 200 and r.json()["status"] == "verified"
    r = center.client.post("/v1/jobs", json=job(), headers=center.headers(m.token))
    assert r.status_code == 201 and r.json()["org"] == m.org, r.text


# ---------------------------------------------------------------------------- credit limits and top-ups


def test_credit_limit_is_set_and_audited(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: a credit limit is answered and listed as set, each change writing one audit
    row `org.credit_limit` with the limit before and after; negative, non-integer or boolean
    limits and unknown orgs are refused and write nothing."""
    m = center.new_org(prepaid_fen=0)
    for old, new in ((0, 50_000), (50_000, 0)):
        mark = last_audit_id(center)
        r = center.client.put(f"/v1/admin/orgs/{m.org}/credit-limit", json={"credit_limit_fen": new}, headers=admin(center))
        assert r.status_code == 200, r.text
        assert (r.json()["credit_limit_fen"], r.json()["credit_limit_yuan"]) == (new, f"{new // 100}.00")
        assert [(a.action, a.target, a.before, a.after) for a in audit_since(center, mark)] == [
            ("org.credit_limit", f"org:{m.org}", {"credit_limit_fen": old}, {"credit_limit_fen": new})]
    center.client.put(f"/v1/admin/orgs/{m.org}/credit-limit", json={"credit_limit_fen": 700}, headers=admin(center))
    listed = center.client.get("/v1/admin/orgs", headers=admin(center)).json()
    assert next(o for o in listed if o["name"] == m.org)["credit_limit_fen"] == 700
    before = state(center)
    for body in ({"credit_limit_fen": -1}, {"credit_limit_fen": 1.5}, {"credit_limit_fen": "100"}, {"credit_limit_fen": True},
                 {}, {"credit_limit_fen": 10**14}):
        r = center.client.put(f"/v1/admin/orgs/{m.org}/credit-limit", json=body, headers=admin(center))
        assert r.status_code == 422 and "credit_limit_fen" in [e["field"] for e in r.json()["errors"]], (body, r.text)
    r = center.client.put("/v1/admin/orgs/no-such-org/credit-limit", json={"credit_limit_fen": 1}, headers=admin(center))
    assert r.status_code == 404 and r.json()["code"] == "org_not_found"
    assert state(center) == before


def test_topup_is_audited_once_and_replay_writes_nothing(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: a top-up posts its amount and writes one audit row `org.topup` with the
    account before and after; replaying its key answers as before (201, the same balance)
    and writes neither ledger nor audit rows; zero or negative amounts and unknown orgs are
    refused and write nothing."""
    m = center.new_org(prepaid_fen=500)
    key = unique("wire")
    mark = last_audit_id(center)
    r = center.client.post(f"/v1/orgs/{m.org}/topups", json={"amount_fen": 12345, "key": key, "memo": "bank"}, headers=admin(center))
    assert r.status_code == 201 and r.json()["balance_fen"] == 12845, r.text
    assert [(a.actor, a.action, a.target, a.before, a.after) for a in audit_since(center, mark)] == [
        ("admin", "org.topup", f"org:{m.org}", {"balance_fen": 500}, {"balance_fen": 12845, "amount_fen": 12345, "key": key})]
    before = state(center)
    again = center.client.post(f"/v1/orgs/{m.org}/topups", json={"amount_fen": 12345, "key": key}, headers=admin(center))
    assert again.status_code == 201 and again.json()["balance_fen"] == 12845
    assert state(center) == before
    for amount in (0, -5, "5", 1.5, True):
        r = center.client.post(f"/v1/orgs/{m.org}/topups", json={"amount_fen": amount, "key": unique("k")}, headers=admin(center))
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "amount_fen"
    r = center.client.post("/v1/orgs/no-such-org/topups", json={"amount_fen": 1, "key": unique("k")}, headers=admin(center))
    assert r.status_code == 404 and r.json()["code"] == "org_not_found"
    assert state(center) == before


# ---------------------------------------------------------------------------- prices


def test_prices_are_versioned_and_listed(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: a price set now is the type's price in effect (for the scheduler's lookup
    and in `GET /v1/prices` for any member); one set for later is listed as scheduled and
    does not change the price now; each version writes one audit row `price.set` with the
    price it replaces at that time (none for the first) and the new one."""
    t = new_type(center)
    mark = last_audit_id(center)
    r = center.client.put(f"/v1/admin/prices/{t}", json={"fen_per_device_hour": 1500}, headers=admin(center))
    assert r.status_code == 200, r.text
    now_price = r.json()
    assert (now_price["accelerator_type"], now_price["fen_per_device_hour"], now_price["yuan_per_device_hour"]) == (t, 1500, "15.00")
    started = datetime.fromisoformat(now_price["effective_from"])
    assert abs((started - datetime.now(UTC)).total_seconds()) < 60
    later = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    r = center.client.put(f"/v1/admin/prices/{t}", json={"fen_per_device_hour": 900, "effective_from": later.isoformat()},
                          headers=admin(center))
    assert r.status_code == 200 and datetime.fromisoformat(r.json()["effective_from"]) == later, r.text
    rows = audit_since(center, mark)
    assert [(a.action, a.target, a.before, a.after) for a in rows] == [
        ("price.set", f"price:{t}", None, {"fen_per_device_hour": 1500, "effective_from": started.isoformat()}),
        ("price.set", f"price:{t}", {"fen_per_device_hour": 1500, "effective_from": started.isoformat()},
         {"fen_per_device_hour": 900, "effective_from": later.isoformat()}),
    ]
    with center.db.begin() as s:
        current = tenancy.current_price(s, t, datetime.now(UTC))
        assert current is not None and current.fen_per_device_hour == 1500
        assert tenancy.current_price(s, t, later + timedelta(seconds=1)).fen_per_device_hour == 900  # type: ignore[union-attr]
    listed = center.client.get("/v1/prices", headers=center.headers(center.tokens.member))
    assert listed.status_code == 200
    mine = next(p for p in listed.json() if p["accelerator_type"] == t)
    assert mine["current"]["fen_per_device_hour"] == 1500
    assert [(p["fen_per_device_hour"], datetime.fromisoformat(p["effective_from"])) for p in mine["scheduled"]] == [(900, later)]
    demo = next(p for p in listed.json() if p["accelerator_type"] == "ascend-910b")
    assert demo["current"]["fen_per_device_hour"] > 0
    assert center.client.get("/v1/prices").status_code == 401


BAD_PRICES = [
    # (type ("TYPE": the test's own), body, status, code, field)
    ("TYPE", {"fen_per_device_hour": 0}, 422, "invalid_request", "fen_per_device_hour"),
    ("TYPE", {"fen_per_device_hour": -100}, 422, "invalid_request", "fen_per_device_hour"),
    ("TYPE", {"fen_per_device_hour": 12.5}, 422, "invalid_request", "fen_per_device_hour"),
    ("TYPE", {"fen_per_device_hour": "1200"}, 422, "invalid_request", "fen_per_device_hour"),
    ("TYPE", {"fen_per_device_hour": True}, 422, "invalid_request", "fen_per_device_hour"),
    ("TYPE", {}, 422, "invalid_request", "fen_per_device_hour"),
    ("TYPE", {"fen_per_device_hour": 100, "effective_from": "PAST"}, 422, "effective_from_in_past", "effective_from"),
    ("TYPE", {"fen_per_device_hour": 100, "effective_from": "2030-01-01T00:00:00"}, 422, "invalid_request", "effective_from"),
    ("TYPE", {"fen_per_device_hour": 100, "effective_from": "soon"}, 422, "invalid_request", "effective_from"),
    ("TYPE", {"fen_per_device_hour": 100, "currency": "CNY"}, 422, "invalid_request", "currency"),
    ("tpu-v9", {"fen_per_device_hour": 100}, 422, "unknown_accelerator_type", "accelerator_type"),
]


@pytest.mark.parametrize(("accelerator_type", "body", "status", "code", "field"), BAD_PRICES)
def test_bad_price_is_refused_and_writes_nothing(center, accelerator_type, body, status, code, field) -> None:  # type: ignore[no-untyped-def]
    """Invariant: a price that is not a positive whole number of fen, takes effect more than a
    minute ago, has no time zone, or is for an unknown type is refused with its code naming
    the field, and writes no price and no audit row."""
    t = new_type(center)
    accelerator_type = accelerator_type.replace("TYPE", t)
    if body.get("effective_from") == "PAST":
        body = {**body, "effective_from": (datetime.now(UTC) - timedelta(minutes=5)).isoformat()}
    before = state(center)
    r = center.client.put(f"/v1/admin/prices/{accelerator_type}", json=body, headers=admin(center))
    assert r.status_code == status, r.text
    assert r.json()["code"] == code
    assert field in [e["field"] for e in r.json()["errors"]]
    assert state(center) == before


def test_price_a_few_seconds_ago_counts_as_now(center) -> None:  # type: ignore[no-untyped-def]
    """Invariant: a client clock a little behind ours is tolerated — a price from 20 s ago is
    accepted (and in effect now), where one from 5 minutes ago is refused (see above)."""
    t = new_type(center)
    at = datetime.now(UTC) - timedelta(seconds=20)
    r = center.client.put(f"/v1/admin/prices/{t}", json={"fen_per_device_hour": 42, "effective_from": at.isoformat()},
                          headers=admin(center))
    assert r.status_code == 200, r.text
    with center.db.begin() as s:
        assert tenancy.current_price(s, t, datetime.now(UTC)).fen_per_device_hour == 42  # type: ignore[union-attr]


# ---------------------------------------------------------------------------- audit log and roles


def test_audit_log_filters_newest_first(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: the audit log lists changes newest first with who, what, when, before and
    after; `action`, `target`, `actor` and `since` each narrow it (exact matches) and `limit`
    caps it; a limit outside 1..500 or a time without zone is refused 422."""
    m = center.new_org()
    target = f"org:{m.org}"
    t0 = datetime.now(UTC) - timedelta(seconds=1)
    h = admin(center)
    center.client.post(f"/v1/admin/orgs/{m.org}/status", json={"status": "suspended"}, headers=h)
    center.client.put(f"/v1/admin/orgs/{m.org}/credit-limit", json={"credit_limit_fen": 100}, headers=h)
    center.client.post(f"/v1/admin/orgs/{m.org}/status", json={"status": "verified"}, headers=h)
    r = center.client.get("/v1/admin/audit", params={"target": target}, headers=h)
    assert r.status_code == 200, r.text
    rows = r.json()
    assert [(a["action"], a["after"].get("status", a["after"].get("credit_limit_fen"))) for a in rows] == [
        ("org.status", "verified"), ("org.credit_limit", 100), ("org.status", "suspended")]
    assert [a["id"] for a in rows] == sorted((a["id"] for a in rows), reverse=True)
    assert all(a["actor"] == "admin" and datetime.fromisoformat(a["at"]) >= t0 for a in rows)
    assert rows[0]["before"] == {"status": "suspended"}
    only = center.client.get("/v1/admin/audit", params={"target": target, "action": "org.credit_limit"}, headers=h).json()
    assert [a["id"] for a in only] == [rows[1]["id"]]
    assert center.client.get("/v1/admin/audit", params={"target": target, "limit": 2}, headers=h).json() == rows[:2]
    assert center.client.get("/v1/admin/audit", params={"target": target, "actor": "nobody"}, headers=h).json() == []
    late = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert center.client.get("/v1/admin/audit", params={"target": target, "since": late}, headers=h).json() == []
    assert len(center.client.get("/v1/admin/audit", params={"target": target, "since": t0.isoformat()}, headers=h).json()) == 3
    default = center.client.get("/v1/admin/audit", headers=h).json()
    assert 3 <= len(default) <= 100 and default[0]["id"] >= rows[0]["id"]
    for params, fld in (({"limit": 0}, "limit"), ({"limit": 501}, "limit"), ({"since": "2026-01-01T00:00:00"}, "since")):
        r = center.client.get("/v1/admin/audit", params=params, headers=h)
        assert r.status_code == 422 and fld in [e["field"] for e in r.json()["errors"]], (params, r.text)


def test_members_and_agents_get_403_on_account_admin_routes(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: every accounts admin route and the top-up route answer 403 `forbidden` to
    a member and to the agent — even with a valid body — and 401 without a token, writing
    nothing; members may read the prices."""
    m = center.new_org()
    t = new_type(center)
    routes = [
        ("POST", "/v1/admin/orgs", {"name": unique("org"), "pool": "universities", "kind": "sme"}),
        ("GET", "/v1/admin/orgs", None),
        ("POST", f"/v1/admin/orgs/{m.org}/status", {"status": "suspended"}),
        ("PUT", f"/v1/admin/orgs/{m.org}/credit-limit", {"credit_limit_fen": 5}),
        ("PUT", f"/v1/admin/prices/{t}", {"fen_per_device_hour": 5}),
        ("GET", "/v1/admin/audit", None),
        ("POST", f"/v1/orgs/{m.org}/topups", {"amount_fen": 5, "key": unique("k")}),
    ]
    before = state(center)
    for method, path, body in routes:
        for token in (m.token, center.tokens.member, center.tokens.agent):
            r = center.client.request(method, path, json=body, headers=center.headers(token))
            assert r.status_code == 403 and r.json()["code"] == "forbidden", (method, path, r.text)
        assert center.client.request(method, path, json=body).status_code == 401
    assert state(center) == before
    assert center.client.get("/v1/prices", headers=center.headers(m.token)).status_code == 200


# ---------------------------------------------------------------------------- CLI over HTTP






def test_accounts_cli_over_http(center, server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Invariants: `suanli admin org|price|credit|topup|audit` and `suanli prices` work through
    the real API; tables show money as yuan; `--json` prints only JSON; exit codes are 0 ok,
    2 bad input naming the field, 3 for a member, 4 not found, 5 conflict."""
    member = center.new_org(prepaid_fen=0)

    def run(*args: str, token: str = center.tokens.admin, expect: int = 0) -> Any:
        env = {"SUANLI_SERVER": server, "SUANLI_TOKEN": token, "XDG_CONFIG_HOME": str(tmp_path / "cfg"), "COLUMNS": "250"}
        result = CliRunner().invoke(cli_app, list(args), env=env)
        assert result.exit_code == expect, (args, result.exit_code, result.output)
        assert "Traceback" not in result.output
        return result

    name = unique("org")
    o = json.loads(run("admin", "org", "create", name, "--pool", "enterprises", "--kind", "startup", "--json").stdout)
    assert (o["name"], o["pool"], o["kind"], o["status"]) == (name, "enterprises", "startup", "applied")
    assert "verified" in run("admin", "org", "create", unique("org"), "--pool", "enterprises", "--kind", "sme",
                             "--status", "verified").stdout
    assert "already" in run("admin", "org", "create", name, "--pool", "enterprises", "--kind", "sme", expect=5).output
    bad = run("admin", "org", "create", unique("org"), "--pool", "enterprises", "--kind", "guild", expect=2)
    assert "kind:" in bad.output
    assert "pool:" in run("admin", "org", "create", unique("org"), "--pool", "nowhere", "--kind", "sme", expect=2).output
    run("admin", "org", "create", unique("org"), "--pool", "enterprises", "--kind", "sme", token=member.token, expect=3)

    assert "bad_org_transition" in run("admin", "org", "suspend", name, expect=5).output
    assert json.loads(run("admin", "org", "verify", name, "--reason", "papers ok", "--json").stdout)["status"] == "verified"
    assert "suspended" in run("admin", "org", "suspend", name, "--reason", "unpaid").stdout
    assert "verified" in run("admin", "org", "reinstate", name).stdout
    run("admin", "org", "verify", "no-such-org", expect=4)
    run("admin", "org", "suspend", name, token=member.token, expect=3)

    topped = json.loads(run("admin", "topup", name, "--amount-fen", "123456", "--key", unique("wire"), "--memo", "bank",
                            "--json").stdout)
    assert (topped["balance_fen"], topped["balance_yuan"]) == (123456, "1234.56")
    assert "account ¥1,234.57" in run("admin", "topup", name, "--amount-fen", "1", "--key", unique("wire")).stdout
    assert "amount_fen:" in run("admin", "topup", name, "--amount-fen", "0", "--key", "k", expect=2).output
    run("admin", "topup", "no-such-org", "--amount-fen", "1", "--key", unique("k"), expect=4)

    c = json.loads(run("admin", "credit", name, "--limit-fen", "50000", "--json").stdout)
    assert (c["credit_limit_fen"], c["credit_limit_yuan"]) == (50000, "500.00")
    assert "credit_limit_fen:" in run("admin", "credit", name, "--limit-fen", "-1", expect=2).output
    run("admin", "credit", name, "--limit-fen", "1", token=member.token, expect=3)

    listed = json.loads(run("admin", "org", "list", "--json").stdout)
    assert next(x for x in listed if x["name"] == name)["credit_limit_fen"] == 50000
    table = run("admin", "org", "list").stdout
    assert name in table and "¥500.00" in table and "startup" in table

    t = new_type(center)
    later = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0).isoformat()
    p = json.loads(run("admin", "price", "set", t, "--fen-per-hour", "1234", "--json").stdout)
    assert (p["accelerator_type"], p["fen_per_device_hour"], p["yuan_per_device_hour"]) == (t, 1234, "12.34")
    assert "¥5.00" in run("admin", "price", "set", t, "--fen-per-hour", "500", "--from", later).stdout
    assert "effective_from" in run("admin", "price", "set", t, "--fen-per-hour", "500", "--from", "2020-01-01T00:00:00Z",
                                   expect=2).output
    assert "fen_per_device_hour:" in run("admin", "price", "set", t, "--fen-per-hour", "0", expect=2).output
    assert "unknown accelerator type" in run("admin", "price", "set", "tpu-v9", "--fen-per-hour", "1", expect=2).output
    run("admin", "price", "set", t, "--fen-per-hour", "1", token=member.token, expect=3)
    schedule = next(x for x in json.loads(run("prices", "--json", token=member.token).stdout) if x["accelerator_type"] == t)
    assert schedule["current"]["fen_per_device_hour"] == 1234 and [x["fen_per_device_hour"] for x in schedule["scheduled"]] == [500]
    for args in (("prices",), ("admin", "price", "list")):
        out = run(*args, token=member.token if args == ("prices",) else center.tokens.admin).stdout
        line = next(x for x in out.splitlines() if t in x)
        assert "¥12.34" in line and "¥5.00" in line

    audit = json.loads(run("admin", "audit", "--target", f"org:{name}", "--json").stdout)
    assert [a["action"] for a in audit] == ["org.credit_limit", "org.topup", "org.topup", "org.status", "org.status", "org.status",
                                            "org.create"]
    assert len(json.loads(run("admin", "audit", "--target", f"org:{name}", "--action", "org.status", "--limit", "2",
                              "--json").stdout)) == 2
    text = run("admin", "audit", "--target", f"org:{name}").stdout
    assert "org.create" in text and '"status":"applied"' in text
    assert "limit" in run("admin", "audit", "--limit", "501", expect=2).output
    run("admin", "audit", token=member.token, expect=3)
