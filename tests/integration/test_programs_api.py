"""Subsidy programs and vouchers through the admin API — create, list, show, grant, list,
revoke — on SQLite and the PostgreSQL server, and the `suanli admin program|voucher` CLI over
HTTP (SQLite only).

The database is shared by the session: every test makes its own programs (unique names)
and orgs (`center.new_org()`), and compares counts before and after instead of absolutes.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from quota import programs as quota_programs
from quota.settlement import NOTHING, meter, place_hold, settle
from suanli.cli import app as cli_app
from suanli.db.models import AuditRow, LedgerEntryRow, LedgerTxnRow, OrgRow, ProgramRow, VoucherRow
from suanli.db.store import tenancy
from tests.conftest import free_port, unique

A100, B910 = "nvidia-a100-80g", "ascend-910b"


def admin(center) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return center.headers(center.tokens.admin)


def counts(center) -> tuple[int, ...]:  # type: ignore[no-untyped-def]
    """Rows of everything a program or voucher change may write."""
    with center.db.begin() as s:
        return tuple(int(s.scalar(select(func.count()).select_from(t)) or 0)
                     for t in (ProgramRow, VoucherRow, LedgerTxnRow, LedgerEntryRow, AuditRow))


def audits(center) -> int:  # type: ignore[no-untyped-def]
    with center.db.begin() as s:
        return int(s.scalar(select(func.count()).select_from(AuditRow)) or 0)


def last_audit(center) -> AuditRow:  # type: ignore[no-untyped-def]
    with center.db.begin() as s:
        row = s.scalar(select(AuditRow).order_by(AuditRow.id.desc()).limit(1))
        assert row is not None
        s.expunge(row)
        return row


def now() -> datetime:
    return datetime.now(UTC)


def program_body(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": unique("prog"), "budget_fen": 100_000, "rate": "0.3",
                            "valid_from": (now() - timedelta(days=1)).isoformat(),
                            "valid_until": (now() + timedelta(days=365)).isoformat()}
    body.update(over)
    return body


def url(name: str) -> str:
    return f"/v1/admin/programs/{quote(name, safe='')}"


def create(center, **over: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    r = center.client.post("/v1/admin/programs", json=program_body(**over), headers=admin(center))
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def grant(center, program: str, org: str, face_fen: int, days: int = 30, **over: Any):  # type: ignore[no-untyped-def]
    body: dict[str, Any] = {"org": org, "face_fen": face_fen, "expires_at": (now() + timedelta(days=days)).isoformat()}
    body.update(over)
    return center.client.post(f"{url(program)}/vouchers", json=body, headers=admin(center))


def show(center, name: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    r = center.client.get(url(name), headers=admin(center))
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def check_money(p: dict[str, Any]) -> None:
    """The program's money adds up: every fen of the budget is left, in a voucher, held by a
    running job, or redeemed; and left = budget − granted + returned."""
    assert p["budget_fen"] == p["left_fen"] + p["outstanding_fen"] + p["held_fen"] + p["redeemed_fen"], p
    assert p["left_fen"] == p["budget_fen"] - p["granted_fen"] + p["returned_fen"], p
    assert min(p["left_fen"], p["outstanding_fen"], p["held_fen"], p["granted_fen"], p["returned_fen"]) >= 0, p


def voucher(center, voucher_id: int, **filters: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    r = center.client.get("/v1/admin/vouchers", params=filters, headers=admin(center))
    assert r.status_code == 200, r.text
    return next(v for v in r.json() if v["id"] == voucher_id)  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------- programs


def test_create_list_show_a_program(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: a new program is funded once — its whole budget is left, nothing granted —
    its rate is kept exactly as typed (string or JSON number), a name with spaces and CJK
    works in the URL, and the create writes exactly one audit row."""
    name = unique("2026 算力券 第一批")
    before = audits(center)
    p = create(center, name=name, budget_fen=123_456, rate="0.3", cap_per_org_year_fen=50_000,
               org_kinds=["sme", "enterprise", "sme"], accelerator_types=[B910, A100])
    assert audits(center) == before + 1
    a = last_audit(center)
    assert (a.action, a.target, a.actor, a.before) == ("program.create", f"program:{name}", "admin", None)
    assert a.after is not None and a.after["rate"] == "0.3" and a.after["budget_fen"] == 123_456
    assert p["name"] == name and p["rate"] == "0.3" and p["cap_per_org_year_fen"] == 50_000
    assert p["org_kinds"] == ["enterprise", "sme"] and p["accelerator_types"] == [B910, A100]
    assert (p["budget_fen"], p["left_fen"], p["granted_fen"], p["outstanding_fen"], p["held_fen"], p["redeemed_fen"],
            p["returned_fen"], p["vouchers"]) == (123_456, 123_456, 0, 0, 0, 0, 0, 0)
    assert show(center, name) == p
    listed = center.client.get("/v1/admin/programs", headers=admin(center)).json()
    assert p in listed
    for q in listed:
        check_money(q)

    assert create(center, rate=0.25)["rate"] == "0.25"  # a JSON number, read through its text
    assert create(center, rate="1")["rate"] == "1"
    assert create(center, rate="0.1234")["rate"] == "0.1234"
    naive = create(center, valid_from="2026-01-01", valid_until="2027-01-01T00:00:00")  # no zone: UTC
    assert naive["valid_from"].startswith("2026-01-01T00:00:00") and naive["valid_from"].endswith(("Z", "+00:00"))
    assert center.client.get(url(unique("nope")), headers=admin(center)).json()["code"] == "program_not_found"


@pytest.mark.parametrize(("over", "status", "code", "field"), [
    ({"budget_fen": 0}, 422, "bad_amount", "budget_fen"),
    ({"budget_fen": -100}, 422, "bad_amount", "budget_fen"),
    ({"budget_fen": "100"}, 422, "invalid_request", "budget_fen"),
    ({"budget_fen": 100.0}, 422, "invalid_request", "budget_fen"),
    ({"rate": "0"}, 422, "bad_rate", "rate"),
    ({"rate": 0}, 422, "bad_rate", "rate"),
    ({"rate": "-0.1"}, 422, "bad_rate", "rate"),
    ({"rate": "1.5"}, 422, "bad_rate", "rate"),
    ({"rate": "0.12345"}, 422, "bad_rate", "rate"),
    ({"rate": 0.30000000000000004}, 422, "bad_rate", "rate"),
    ({"rate": "thirty"}, 422, "bad_rate", "rate"),
    ({"rate": "NaN"}, 422, "bad_rate", "rate"),
    ({"rate": True}, 422, "invalid_request", "rate"),
    ({"cap_per_org_year_fen": 0}, 422, "bad_amount", "cap_per_org_year_fen"),
    ({"valid_from": "2026-06-01", "valid_until": "2026-05-01"}, 422, "bad_window", "valid_until"),
    ({"valid_from": "2026-06-01", "valid_until": "2026-06-01"}, 422, "bad_window", "valid_until"),
    ({"accelerator_types": [A100, "tpu-v9"]}, 422, "unknown_accelerator_type", "accelerator_types"),
    ({"org_kinds": ["university", "government"]}, 422, "unknown_org_kind", "org_kinds"),
    ({"name": "a/b"}, 422, "bad_name", "name"),
    ({"name": " padded"}, 422, "bad_name", "name"),
    ({"name": "x" * 129}, 422, "invalid_request", "name"),
    ({"surprise": 1}, 422, "invalid_request", "surprise"),
])
def test_bad_program_input_is_refused_and_writes_nothing(center, over, status, code, field) -> None:  # type: ignore[no-untyped-def]
    """Invariant: each bad program is refused with its code naming the field, and no program,
    ledger transaction or audit row is written."""
    before = counts(center)
    r = center.client.post("/v1/admin/programs", json=program_body(**over), headers=admin(center))
    assert (r.status_code, r.json()["code"]) == (status, code), r.text
    assert field in [e["field"] for e in r.json()["errors"]], r.text
    assert counts(center) == before


def test_duplicate_program_name_is_a_conflict(center) -> None:  # type: ignore[no-untyped-def]
    """Invariant: a name is used once (409 program_exists, nothing written)."""
    p = create(center)
    before = counts(center)
    r = center.client.post("/v1/admin/programs", json=program_body(name=p["name"]), headers=admin(center))
    assert (r.status_code, r.json()["code"]) == (409, "program_exists")
    assert counts(center) == before


# ---------------------------------------------------------------------------- vouchers


def test_grant_and_revoke_move_the_ledger_exactly(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: a grant moves exactly its face value from the program's budget to the
    voucher; the member sees it in GET /v1/balance; a revocation moves exactly what the
    voucher has left back; revoking twice is 409 and writes nothing; each change writes one
    audit row."""
    m = center.new_org()
    p = create(center, budget_fen=100_000)
    before = audits(center)
    r = grant(center, p["name"], m.org, 30_000)
    assert r.status_code == 201, r.text
    v = r.json()
    assert audits(center) == before + 1 and last_audit(center).action == "voucher.grant"
    assert (v["program"], v["org"], v["face_fen"], v["remaining_fen"], v["held_fen"], v["status"], v["revoked_at"]) == (
        p["name"], m.org, 30_000, 30_000, 0, "active", None)
    q = show(center, p["name"])
    assert (q["left_fen"], q["granted_fen"], q["outstanding_fen"], q["vouchers"]) == (70_000, 30_000, 30_000, 1)
    check_money(q)
    mine = center.client.get("/v1/balance", headers=center.headers(m.token)).json()["vouchers"]
    assert [(x["id"], x["remaining_fen"]) for x in mine] == [(v["id"], 30_000)]
    assert voucher(center, v["id"], org=m.org, program=p["name"]) == v

    before = audits(center)
    r = center.client.post(f"/v1/admin/vouchers/{v['id']}/revoke", json={"reason": "left the program"}, headers=admin(center))
    assert r.status_code == 200, r.text
    rv = r.json()
    assert (rv["returned_fen"], rv["remaining_fen"], rv["held_fen"], rv["status"]) == (30_000, 0, 0, "revoked")
    assert rv["revoked_at"] is not None
    assert audits(center) == before + 1
    a = last_audit(center)
    assert (a.action, a.target) == ("voucher.revoke", f"voucher:{v['id']}") and a.after and a.after["reason"] == "left the program"
    q = show(center, p["name"])
    assert (q["left_fen"], q["granted_fen"], q["returned_fen"], q["outstanding_fen"]) == (100_000, 30_000, 30_000, 0)
    check_money(q)

    before_all = counts(center)
    r = center.client.post(f"/v1/admin/vouchers/{v['id']}/revoke", json={}, headers=admin(center))
    assert (r.status_code, r.json()["code"]) == (409, "voucher_revoked")
    r = center.client.post("/v1/admin/vouchers/2000000000/revoke", headers=admin(center))
    assert (r.status_code, r.json()["code"]) == (404, "voucher_not_found")
    assert counts(center) == before_all


def new_job(center, member) -> int:  # type: ignore[no-untyped-def]
    r = center.client.post("/v1/jobs", json={"name": "subsidized", "resources": {"accelerator": A100}, "command": "true"},
                           headers=center.headers(member.token))
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def test_money_adds_up_while_jobs_hold_redeem_and_vouchers_are_revoked(center) -> None:  # type: ignore[no-untyped-def]
    """Invariant: budget = left + outstanding + held + redeemed after every step — a hold
    moves voucher money to held, a meter redeems, a revocation returns only what is not held
    (held money stays held), settlement redeems the rest and releases to the revoked voucher,
    the expiry sweep returns that too, and a center-fault refund un-redeems."""
    m = center.new_org()
    p = create(center, budget_fen=50_000, rate="0.3", accelerator_types=[A100])
    vid = grant(center, p["name"], m.org, 10_000).json()["id"]
    with center.db.begin() as s:
        org_id = tenancy.get_org(s, m.org).id
    job = new_job(center, m)
    t = now()

    def step() -> dict[str, Any]:
        q = show(center, p["name"])
        check_money(q)
        return q

    with center.db.begin() as s:  # 1 device × 1 h × 10,000 fen: vouchers hold 30 % = 3,000
        hold = place_hold(s, org_id=org_id, job_id=job, run=0, devices=1, device_milli=1000, time_limit_s=3600, price=10_000,
                          accelerator_type=A100, now=t)
    assert hold.voucher_fen == 3000
    q = step()
    assert (q["outstanding_fen"], q["held_fen"], q["redeemed_fen"]) == (7000, 3000, 0)
    with center.db.begin() as s:
        charged = meter(s, org_id=org_id, job_id=job, run=0, seq=1, hold=hold, charged=NOTHING, cost=2000, now=t)
    q = step()
    assert (q["held_fen"], q["redeemed_fen"]) == (2400, 600)

    r = center.client.post(f"/v1/admin/vouchers/{vid}/revoke", json={"reason": "test"}, headers=admin(center))
    assert (r.json()["returned_fen"], r.json()["held_fen"]) == (7000, 2400)
    q = step()
    assert (q["left_fen"], q["outstanding_fen"], q["held_fen"], q["returned_fen"]) == (47_000, 0, 2400, 7000)

    with center.db.begin() as s:  # final cost 5,000: the voucher pays 1,500, 1,500 is released to it
        settle(s, org_id=org_id, job_id=job, run=0, hold=hold, charged=charged, cost=5000, now=t)
    q = step()
    assert (q["outstanding_fen"], q["held_fen"], q["redeemed_fen"]) == (1500, 0, 1500)
    with center.db.begin() as s:
        quota_programs.expire_vouchers(s, now())
    q = step()
    assert (q["left_fen"], q["outstanding_fen"], q["returned_fen"], q["redeemed_fen"]) == (48_500, 0, 8500, 1500)
    assert voucher(center, vid)["status"] == "revoked"

    v2 = grant(center, p["name"], m.org, 10_000).json()["id"]
    job2 = new_job(center, m)
    with center.db.begin() as s:
        hold2 = place_hold(s, org_id=org_id, job_id=job2, run=0, devices=1, device_milli=1000, time_limit_s=3600,
                           price=10_000, accelerator_type=A100, now=now())
        charged2 = meter(s, org_id=org_id, job_id=job2, run=0, seq=1, hold=hold2, charged=NOTHING, cost=1000, now=now())
    assert step()["redeemed_fen"] == 1500 + 300
    with center.db.begin() as s:  # the center's fault: the run costs nothing, its meter is refunded
        settle(s, org_id=org_id, job_id=job2, run=0, hold=hold2, charged=charged2, cost=1000, now=now(), center_fault=True)
    q = step()
    assert (q["redeemed_fen"], q["held_fen"], q["outstanding_fen"]) == (1500, 0, 10_000)
    assert voucher(center, v2)["remaining_fen"] == 10_000


def test_voucher_status_and_filters(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: status is revoked, expired, used_up (nothing left and nothing held) or
    active; `active=true` lists exactly the active ones, `active=false` the others."""
    m = center.new_org()
    p = create(center, budget_fen=50_000, rate="0.3")
    ids = [grant(center, p["name"], m.org, face).json()["id"] for face in (300, 1000, 1000, 1000)]
    used, expired, revoked, active = ids
    with center.db.begin() as s:
        org_id = tenancy.get_org(s, m.org).id
        s.execute(update(VoucherRow).where(VoucherRow.id.in_([expired, revoked, active]))
                  .values(expires_at=now() + timedelta(days=60)))  # `used` expires first: holds take it first
    job = new_job(center, m)
    with center.db.begin() as s:  # a 1,000-fen run: 30 % is exactly the 300 the first voucher has
        hold = place_hold(s, org_id=org_id, job_id=job, run=0, devices=1, device_milli=1000, time_limit_s=360, price=10_000,
                          accelerator_type=A100, now=now())
    assert hold.voucher_parts == ((used, 300),)
    assert voucher(center, used)["status"] == "active"  # its money is held, not spent yet
    with center.db.begin() as s:
        settle(s, org_id=org_id, job_id=job, run=0, hold=hold, charged=NOTHING, cost=1000, now=now())
        s.execute(update(VoucherRow).where(VoucherRow.id == expired).values(
            valid_from=now() - timedelta(hours=2), expires_at=now() - timedelta(hours=1)))
    center.client.post(f"/v1/admin/vouchers/{revoked}/revoke", headers=admin(center))
    listed = {v["id"]: v["status"] for v in center.client.get("/v1/admin/vouchers", params={"org": m.org},
                                                              headers=admin(center)).json()}
    assert listed == {used: "used_up", expired: "expired", revoked: "revoked", active: "active"}
    only = center.client.get("/v1/admin/vouchers", params={"org": m.org, "active": "true"}, headers=admin(center)).json()
    assert [v["id"] for v in only] == [active]
    rest = center.client.get("/v1/admin/vouchers", params={"program": p["name"], "active": "false"}, headers=admin(center))
    assert [v["id"] for v in rest.json()] == [used, expired, revoked]
    check_money(show(center, p["name"]))
    for params, code in (({"org": unique("nope")}, "org_not_found"), ({"program": unique("nope")}, "program_not_found")):
        r = center.client.get("/v1/admin/vouchers", params=params, headers=admin(center))
        assert (r.status_code, r.json()["code"]) == (404, code)


def test_bad_grants_are_refused_and_write_nothing(center) -> None:  # type: ignore[no-untyped-def]
    """Invariant: every refused grant (its code and status below) writes no voucher, no ledger
    transaction and no audit row: bad amounts and windows, beyond the budget or the org's
    yearly cap, an org of another kind or not verified, outside the program's window, a
    program that ended, unknown program or org."""
    m = center.new_org()
    p = create(center, budget_fen=10_000, cap_per_org_year_fen=1000,
               valid_until=(now() + timedelta(days=100)).isoformat())
    assert grant(center, p["name"], m.org, 600).status_code == 201
    enterprises = create(center, org_kinds=["enterprise", "sme"])
    ended = create(center, valid_from=(now() - timedelta(days=10)).isoformat(), valid_until=(now() - timedelta(days=1)).isoformat())
    later = create(center, valid_from=(now() + timedelta(days=10)).isoformat())
    rich = center.new_org()
    with center.db.begin() as s:
        s.execute(update(OrgRow).where(OrgRow.name == rich.org).values(status="applied"))
    past = {"valid_from": (now() - timedelta(days=5)).isoformat(), "expires_at": (now() - timedelta(days=2)).isoformat()}
    cases: list[tuple[str, str, int, dict[str, Any], int, str]] = [
        (p["name"], m.org, 0, {}, 422, "bad_amount"),
        (p["name"], m.org, -5, {}, 422, "bad_amount"),
        (p["name"], m.org, 100, {"valid_from": (now() + timedelta(days=40)).isoformat()}, 422, "bad_window"),
        (p["name"], m.org, 100, {"expires_at": (now() - timedelta(minutes=1)).isoformat()}, 422, "bad_window"),
        (p["name"], m.org, 500, {}, 409, "org_cap_exceeded"),  # 600 + 500 > 1,000 this year
        (p["name"], center.new_org().org, 10_001, {}, 409, "program_budget_exceeded"),
        (p["name"], m.org, 100, {"expires_at": (now() + timedelta(days=101)).isoformat()}, 422, "outside_program_window"),
        (later["name"], m.org, 100, {"valid_from": now().isoformat()}, 422, "outside_program_window"),
        (enterprises["name"], m.org, 100, {}, 409, "org_not_eligible"),  # a university
        (p["name"], rich.org, 100, {}, 409, "org_not_active"),
        (ended["name"], m.org, 100, past, 409, "program_ended"),
        (unique("nope"), m.org, 100, {}, 404, "program_not_found"),
        (p["name"], unique("nope"), 100, {}, 404, "org_not_found"),
        (p["name"], m.org, "100", {}, 422, "invalid_request"),
    ]
    for program, org, face, over, status, code in cases:
        before = counts(center)
        r = grant(center, program, org, face, **over)  # type: ignore[arg-type]
        assert (r.status_code, r.json()["code"]) == (status, code), (program, face, over, r.text)
        assert counts(center) == before, code
    # the later program's default start is its own start, so that grant is fine once it fits the window
    assert grant(center, later["name"], m.org, 100, days=20).status_code == 201
    assert show(center, p["name"])["granted_fen"] == 600


def test_members_get_403_and_nothing_is_written(center) -> None:  # type: ignore[no-untyped-def]
    """Invariant: only center admins reach the program and voucher routes."""
    m = center.new_org()
    p = create(center)
    vid = grant(center, p["name"], m.org, 100).json()["id"]
    before = counts(center)
    for method, path, body in (
        ("POST", "/v1/admin/programs", program_body()),
        ("GET", "/v1/admin/programs", None),
        ("GET", url(p["name"]), None),
        ("POST", f"{url(p['name'])}/vouchers", {"org": m.org, "face_fen": 100, "expires_at": "2099-01-01"}),
        ("GET", "/v1/admin/vouchers", None),
        ("POST", f"/v1/admin/vouchers/{vid}/revoke", {"reason": "mine now"}),
    ):
        for token in (m.token, center.tokens.member):
            r = center.client.request(method, path, json=body, headers=center.headers(token))
            assert (r.status_code, r.json()["code"]) == (403, "forbidden"), (method, path, r.text)
    assert center.client.get("/v1/admin/programs", headers={}).status_code == 401
    assert counts(center) == before
    assert voucher(center, vid)["status"] == "active"


# ---------------------------------------------------------------------------- CLI over HTTP




def test_programs_cli_over_http(center, server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Invariants: `suanli admin program create|list|show` and `voucher grant|list|revoke`
    work through the real API; `--json` prints only JSON; tables show money in fen and yuan;
    exit codes are 0 ok, 2 bad input naming the field or option, 3 for a member, 4 not
    found, 5 conflict, 6 unreachable; never a traceback."""
    m = center.new_org()

    def run(*args: str, token: str = center.tokens.admin, expect: int = 0, to: str = server) -> Any:
        env = {"SUANLI_SERVER": to, "SUANLI_TOKEN": token, "XDG_CONFIG_HOME": str(tmp_path / "cfg"), "COLUMNS": "250"}
        result = CliRunner().invoke(cli_app, ["admin", *args], env=env)
        assert result.exit_code == expect, (args, result.exit_code, result.output)
        assert "Traceback" not in result.output
        return result

    name = unique("cli 算力券")
    until = (now() + timedelta(days=200)).strftime("%Y-%m-%d")
    p = json.loads(run("program", "create", name, "--budget-fen", "123456", "--rate", "0.3", "--cap-per-org-year-fen", "50000",
                       "--org-kind", "university", "--org-kind", "sme", "--type", A100, "--from", "2026-01-01",
                       "--until", until, "--json").stdout)
    assert (p["name"], p["rate"], p["budget_fen"], p["org_kinds"], p["accelerator_types"]) == (
        name, "0.3", 123456, ["sme", "university"], [A100])
    assert p["valid_from"].startswith("2026-01-01T00:00:00") and p["valid_until"].startswith(until)
    assert "1234.56" in run("program", "create", unique("cli"), "--budget-fen", "123456", "--rate", "1",
                            "--from", "2026-01-01T08:00:00+08:00", "--until", until).stdout
    bad = run("program", "create", unique("cli"), "--budget-fen", "100", "--rate", "1.5", "--from", "2026-01-01",
              "--until", until, expect=2)
    assert "bad_rate" in bad.output and "rate:" in bad.output
    assert "--from" in run("program", "create", unique("cli"), "--budget-fen", "100", "--rate", "0.3", "--from", "someday",
                           "--until", until, expect=2).output
    assert "program_exists" in run("program", "create", name, "--budget-fen", "100", "--rate", "0.3", "--from", "2026-01-01",
                                   "--until", until, expect=5).output
    run("program", "create", unique("cli"), "--budget-fen", "100", "--rate", "0.3", "--from", "2026-01-01", "--until", until,
        token=m.token, expect=3)

    assert p in json.loads(run("program", "list", "--json").stdout)
    assert name in run("program", "list").stdout and "¥1234.56" in run("program", "list").stdout
    assert json.loads(run("program", "show", name, "--json").stdout) == p
    shown = run("program", "show", name).stdout
    assert "Budget:" in shown and "123456 (¥1234.56)" in shown
    run("program", "show", unique("nope"), expect=4)

    expires = (now() + timedelta(days=30)).strftime("%Y-%m-%d")
    v = json.loads(run("voucher", "grant", name, m.org, "--face-fen", "20000", "--expires", expires, "--json").stdout)
    assert (v["program"], v["org"], v["face_fen"], v["remaining_fen"], v["status"]) == (name, m.org, 20000, 20000, "active")
    assert v["expires_at"].startswith(expires)
    text = run("voucher", "grant", name, m.org, "--face-fen", "10000", "--expires", expires, "--from",
               now().strftime("%Y-%m-%dT%H:%M:%S")).stdout
    assert "granted voucher" in text and "10000 (¥100.00)" in text
    assert "org_cap_exceeded" in run("voucher", "grant", name, m.org, "--face-fen", "30000", "--expires", expires, expect=5).output
    run("voucher", "grant", name, unique("nope"), "--face-fen", "1", "--expires", expires, expect=4)
    assert "--expires" in run("voucher", "grant", name, m.org, "--face-fen", "1", "--expires", "31/12/2026", expect=2).output
    assert "face_fen" in run("voucher", "grant", name, m.org, "--face-fen", "0", "--expires", expires, expect=2).output

    listed = json.loads(run("voucher", "list", "--org", m.org, "--program", name, "--json").stdout)
    assert [x["face_fen"] for x in listed] == [20000, 10000] and listed[0] == v
    table = run("voucher", "list", "--org", m.org).stdout
    assert str(v["id"]) in table and "active" in table and "20000 (¥200.00)" in table
    run("voucher", "list", "--org", unique("nope"), expect=4)
    run("voucher", "list", token=m.token, expect=3)

    r = json.loads(run("voucher", "revoke", str(v["id"]), "--reason", "test", "--json").stdout)
    assert (r["returned_fen"], r["status"]) == (20000, "revoked")
    assert [x["id"] for x in json.loads(run("voucher", "list", "--org", m.org, "--active", "--json").stdout)] == [listed[1]["id"]]
    assert "voucher_revoked" in run("voucher", "revoke", str(v["id"]), expect=5).output
    assert "back to" in run("voucher", "revoke", str(listed[1]["id"])).stdout
    run("voucher", "revoke", "2000000000", expect=4)
    shown = json.loads(run("program", "show", name, "--json").stdout)
    assert (shown["granted_fen"], shown["returned_fen"], shown["left_fen"]) == (30000, 30000, 123456)
    run("program", "list", to=f"http://127.0.0.1:{free_port()}", expect=6)
