"""Statements and program reports through the API, on SQLite and the PostgreSQL server, built
from runs settled through the real path (hold → meter → settle → `record_run`), and the
`suanli statement` / `suanli admin report` commands over real HTTP (SQLite only).

Scenario (one per backend, months in Asia/Shanghai): org A (university) holds a small voucher
of program P1 (30 %, expires 1 July) and a large one of P2 (20 %); org B (a startup in
another pool) holds a P1 voucher.
  a1  A  settled 2026-05-31T15:00Z (May in Shanghai)   P1 pays 30 %
  a2  A  settled 2026-05-31T17:00Z (June in Shanghai)  P1 pays what it has left, P2 the rest of the cap
  a3  A  settled 2026-06-15, lost through the center's fault (metered, then refunded)
  a4  A  settled 2026-07-02, P1 expired: P2 pays
  b1  B  settled 2026-06-20                            P1 pays 30 %
  b2  B  settled 2026-06-21 on ascend-910b (P1 does not cover it): no subsidy
A is topped up on 1 May and again on 5 June; B on 1 May.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from quota import programs
from quota import service as quota
from quota.settlement import NOTHING, meter, place_hold, run_cost, settle
from quota.types import CENTER_REVENUE, org_cash, org_hold
from suanli.cli import app as cli_app
from suanli.db.models import AuditRow, BillingRunRow, LedgerEntryRow, LedgerTxnRow, VoucherRow
from suanli.db.store import billing as billing_store
from suanli.db.store import jobs as job_store
from suanli.db.store import tenancy
from suanli.identity import Role, new_token
from tests.conftest import Member, unique

A100, B910 = "nvidia-a100-80g", "ascend-910b"
MAY1 = datetime(2026, 5, 1, tzinfo=UTC)


@dataclass
class Scenario:
    a: Member
    b: Member
    a_admin: str  # token of an org admin of A
    p1: str
    p2: str
    jobs: dict[str, int]
    org_ids: dict[str, int]


def new_job(center, member: Member, name: str, accelerator: str, devices: int) -> int:  # type: ignore[no-untyped-def]
    r = center.client.post("/v1/jobs", json={"name": name, "resources": {"accelerator": accelerator, "devices_per_node": devices},
                                             "command": "true"}, headers=center.headers(member.token))
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def settle_run(center, member: Member, org_id: int, name: str, *, accelerator: str = A100, devices: int = 1,  # type: ignore[no-untyped-def]
               price: int = 1200, hours: float, settled: datetime, center_fault: bool = False) -> int:
    """A job's run the way the scheduler bills it: hold at start, a meter halfway (center-fault
    runs), settle at the end, then the billing_runs row."""
    job_id = new_job(center, member, name, accelerator, devices)
    started = settled - timedelta(hours=hours)
    cost = run_cost(devices, 1000, started, settled, price)
    with center.db.begin() as s:
        hold = place_hold(s, org_id=org_id, job_id=job_id, run=0, devices=devices, device_milli=1000, time_limit_s=7200,
                          price=price, accelerator_type=accelerator, now=started)
    charged = NOTHING
    if center_fault:
        with center.db.begin() as s:
            charged = meter(s, org_id=org_id, job_id=job_id, run=0, seq=1, hold=hold, charged=NOTHING, cost=cost // 2,
                            now=started + (settled - started) / 2)
        assert charged.total_fen > 0
    with center.db.begin() as s:
        final = settle(s, org_id=org_id, job_id=job_id, run=0, hold=hold, charged=charged, cost=0 if center_fault else cost,
                       now=settled, center_fault=center_fault)
        job = replace(job_store.get_job(s, job_id), accelerator_type=accelerator, price_fen_per_device_hour=price)
        job_store.record_run(s, job, started, settled, final, center_fault, settled)
    return job_id


@pytest.fixture(scope="module")
def scenario(center) -> Scenario:  # type: ignore[no-untyped-def]
    a, b = center.new_org(prepaid_fen=0, pool=unique("pool-a")), center.new_org(prepaid_fen=0, pool=unique("pool-b"))
    p1, p2 = unique("P1 算力券"), unique("P2")
    admin_token = new_token()
    with center.db.begin() as s:
        org_a, org_b = tenancy.get_org(s, a.org), tenancy.get_org(s, b.org)
        org_b.kind = "startup"
        for prog, rate in ((p1, "0.3"), (p2, "0.2")):
            programs.create_program(s, name=prog, budget_fen=10_000_000, rate=Decimal(rate), cap_per_org_year_fen=None,
                                    org_kinds=[], accelerator_types=[A100], valid_from=MAY1 - timedelta(days=30),
                                    valid_until=MAY1 + timedelta(days=365), actor="test", now=MAY1)
        programs.grant_voucher(s, program=p1, org=org_a, face_fen=500, valid_from=MAY1, expires_at=datetime(2026, 7, 1, tzinfo=UTC),
                               actor="test", now=MAY1)
        programs.grant_voucher(s, program=p2, org=org_a, face_fen=100_000, valid_from=MAY1,
                               expires_at=datetime(2026, 12, 1, tzinfo=UTC), actor="test", now=MAY1)
        programs.grant_voucher(s, program=p1, org=org_b, face_fen=100_000, valid_from=MAY1,
                               expires_at=datetime(2026, 12, 1, tzinfo=UTC), actor="test", now=MAY1)
        for org in (org_a, org_b):
            quota.top_up(s, org.id, 1_000_000, f"topup:{org.name}:may", "May", MAY1)
        quota.top_up(s, org_a.id, 50_000, f"topup:{a.org}:june", "June", datetime(2026, 6, 5, tzinfo=UTC))
        admin_user = tenancy.create_user(s, unique("orgadmin"), Role.ORG_ADMIN, org_a.id, MAY1)
        tenancy.add_token(s, admin_user.id, admin_token, MAY1)
        ids = {"A": org_a.id, "B": org_b.id}
    jobs = {
        "a1": settle_run(center, a, ids["A"], "a1", hours=1, settled=datetime(2026, 5, 31, 15, tzinfo=UTC)),
        "a2": settle_run(center, a, ids["A"], "a2", devices=2, hours=1.5, settled=datetime(2026, 5, 31, 17, tzinfo=UTC)),
        "a3": settle_run(center, a, ids["A"], "a3", hours=1, settled=datetime(2026, 6, 15, tzinfo=UTC), center_fault=True),
        "a4": settle_run(center, a, ids["A"], "a4", hours=0.5, settled=datetime(2026, 7, 2, tzinfo=UTC)),
        "b1": settle_run(center, b, ids["B"], "b1", hours=2, settled=datetime(2026, 6, 20, tzinfo=UTC)),
        "b2": settle_run(center, b, ids["B"], "b2", accelerator=B910, price=800, hours=1, settled=datetime(2026, 6, 21, tzinfo=UTC)),
    }
    return Scenario(a, b, admin_token, p1, p2, jobs, ids)


def admin(center) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return center.headers(center.tokens.admin)


def statement_url(org: str, month: str) -> str:
    return f"/v1/orgs/{quote(org, safe='')}/statements/{quote(month, safe='')}"


def report_url(program: str) -> str:
    return f"/v1/admin/programs/{quote(program, safe='')}/report"


def moved(center, job_ids: list[int], accounts: Any) -> int:  # type: ignore[no-untyped-def]
    """Net change to the accounts (a predicate on names) by every ledger transaction of the jobs."""
    with center.db.begin() as s:
        rows = s.execute(select(LedgerEntryRow.account, LedgerEntryRow.amount_fen)
                         .join(LedgerTxnRow, LedgerTxnRow.id == LedgerEntryRow.txn_id)
                         .where(LedgerTxnRow.job_id.in_(job_ids))).all()
    return sum(fen for account, fen in rows if accounts(account))


def voucher_accounts(center, program: str, org_id: int) -> set[str]:  # type: ignore[no-untyped-def]
    with center.db.begin() as s:
        pid = billing_store.get_program(s, program).id
        ids = s.scalars(select(VoucherRow.id).where(VoucherRow.program_id == pid, VoucherRow.org_id == org_id)).all()
    return {f"voucher:{v}" for v in ids} | {f"voucher:{v}:hold" for v in ids}


def written(center) -> tuple[int, int, int]:  # type: ignore[no-untyped-def]
    with center.db.begin() as s:
        return tuple(s.scalar(select(func.count()).select_from(t)) for t in (LedgerTxnRow, AuditRow, BillingRunRow))  # type: ignore[return-value]


# ---------------------------------------------------------------------------- statements


def test_statement_totals_equal_the_ledger_movements_of_the_month(center, scenario: Scenario) -> None:  # type: ignore[no-untyped-def]
    """Invariants: June's statement of A holds exactly the runs settled in June in Shanghai
    (a2, settled 2026-05-31T17:00Z, and the center-fault run a3 — not a1, settled two hours
    earlier); its totals add the lines; the cost equals what its runs' ledger transactions
    moved to center revenue, the paid part what left A's own money, the subsidy what left A's
    vouchers; closing − opening balance = June's top-up − what June's runs took."""
    sc, j = scenario, scenario.jobs
    r = center.client.get(statement_url(sc.a.org, "2026-06"), headers=center.headers(sc.a.token))
    assert r.status_code == 200, r.text
    st = r.json()
    assert (st["org"], st["month"], st["time_zone"]) == (sc.a.org, "2026-06", "Asia/Shanghai")
    assert datetime.fromisoformat(st["period_start"]) == datetime(2026, 5, 31, 16, tzinfo=UTC)
    lines = st["lines"]
    assert [ln["job_id"] for ln in lines] == [j["a2"], j["a3"]]
    a2, a3 = lines
    assert (a2["devices"], a2["device_hours"], a2["cost_fen"], a2["cost_yuan"]) == ("2", "3.0000", 3600, "36.00")
    assert a2["subsidy_fen"] == 140 + 720 and a2["paid_fen"] == 3600 - 860 and a2["job_name"] == "a2"
    assert (a3["center_fault"], a3["cost_fen"], a3["device_hours"]) == (True, 0, "0.0000")
    t = st["totals"]
    assert (t["runs"], t["jobs"]) == (2, 2)
    for k in ("cost_fen", "subsidy_fen", "paid_fen"):
        assert t[k] == sum(ln[k] for ln in lines)
    assert Decimal(t["device_hours"]) == sum(Decimal(ln["device_hours"]) for ln in lines)
    ids = [j["a2"], j["a3"]]
    a_id = sc.org_ids["A"]
    assert t["cost_fen"] == moved(center, ids, lambda acc: acc == CENTER_REVENUE)
    assert t["paid_fen"] == -moved(center, ids, lambda acc: acc in (org_cash(a_id), org_hold(a_id)))
    assert t["subsidy_fen"] == -moved(center, ids, lambda acc: acc.startswith("voucher:"))
    assert st["closing_balance_fen"] - st["opening_balance_fen"] == 50_000 - t["paid_fen"]
    may = center.client.get(statement_url(sc.a.org, "2026-05"), headers=center.headers(sc.a.token)).json()
    assert [ln["job_id"] for ln in may["lines"]] == [j["a1"]] and may["closing_balance_fen"] == st["opening_balance_fen"]
    assert may["opening_balance_fen"] == 0 and may["closing_balance_fen"] == 1_000_000 - may["totals"]["paid_fen"]
    assert center.client.get(statement_url(sc.a.org, "2026-08"), headers=center.headers(sc.a.token)).json()["lines"] == []


def test_statement_csv_rows_equal_the_json_lines(center, scenario: Scenario) -> None:  # type: ignore[no-untyped-def]
    """Invariants: `?format=csv` answers text/csv; charset=utf-8 with a header row, one row per
    JSON line with the same values, and a TOTAL row equal to the JSON totals."""
    sc = scenario
    h = center.headers(sc.b.token)
    st = center.client.get(statement_url(sc.b.org, "2026-06"), headers=h).json()
    r = center.client.get(statement_url(sc.b.org, "2026-06"), params={"format": "csv"}, headers=h)
    assert r.status_code == 200 and r.headers["content-type"] == "text/csv; charset=utf-8"
    assert "attachment" in r.headers["content-disposition"]
    *rows, total = list(csv.DictReader(io.StringIO(r.content.decode("utf-8"), newline="")))
    assert len(rows) == len(st["lines"]) == 2
    for row, ln in zip(rows, st["lines"], strict=True):
        for k in ("job_id", "run", "price_fen_per_device_hour", "cost_fen", "subsidy_fen", "paid_fen"):
            assert int(row[k]) == ln[k], k
        for k in ("job_name", "project", "user", "accelerator_type", "devices", "device_hours", "cost_yuan", "subsidy_yuan",
                  "paid_yuan"):
            assert row[k] == ln[k], k
        for k in ("started_at", "ended_at", "settled_at"):
            assert datetime.fromisoformat(row[k]) == datetime.fromisoformat(ln[k]), k
    assert [row["accelerator_type"] for row in rows] == [A100, B910] and int(rows[1]["subsidy_fen"]) == 0
    assert total["job_id"] == "TOTAL" and total["device_hours"] == st["totals"]["device_hours"]
    assert [int(total[k]) for k in ("cost_fen", "subsidy_fen", "paid_fen")] == \
        [st["totals"][k] for k in ("cost_fen", "subsidy_fen", "paid_fen")]


def test_statement_visibility(center, scenario: Scenario) -> None:  # type: ignore[no-untyped-def]
    """Invariants: members and org admins of the org and center admins read its statement;
    a member of another org, and the agent, are told it does not exist (404 org_not_found),
    exactly as for an org that does not exist; without a token, 401."""
    sc = scenario
    url = statement_url(sc.a.org, "2026-06")
    for token in (sc.a.token, sc.a_admin, center.tokens.admin):
        assert center.client.get(url, headers=center.headers(token)).status_code == 200
    for token in (sc.b.token, center.tokens.agent, center.tokens.member):
        r = center.client.get(url, headers=center.headers(token))
        assert r.status_code == 404 and r.json()["code"] == "org_not_found", r.text
    r = center.client.get(statement_url("no-such-org", "2026-06"), headers=admin(center))
    assert r.status_code == 404 and r.json()["code"] == "org_not_found"
    assert center.client.get(url).status_code == 401


@pytest.mark.parametrize("month", ["2026-13", "abc", "2026-6", "2026-00", "2026-06-01"])
def test_bad_statement_month_is_422_and_writes_nothing(center, scenario: Scenario, month: str) -> None:  # type: ignore[no-untyped-def]
    """Invariant: a malformed month is 422 `bad_month` naming the field `month`; nothing is
    written (ledger, audit log, billing runs)."""
    before = written(center)
    r = center.client.get(statement_url(scenario.a.org, month), headers=center.headers(scenario.a.token))
    assert r.status_code == 422 and r.json()["code"] == "bad_month", r.text
    assert [e["field"] for e in r.json()["errors"]] == ["month"]
    r = center.client.get(statement_url(scenario.a.org, "2026-06"), params={"format": "xml"}, headers=admin(center))
    assert r.status_code == 422 and "format" in [e["field"] for e in r.json()["errors"]]
    assert written(center) == before


# ---------------------------------------------------------------------------- program reports


def test_report_subsidy_per_org_equals_what_the_programs_vouchers_paid(center, scenario: Scenario) -> None:  # type: ignore[no-untyped-def]
    """Invariants: a program's report counts, per org and month, only what ITS vouchers paid:
    a2 was paid by P1 (what was left, 140 fen) and P2 (720 fen) and counts in each with its
    own part; per org, the report's subsidy equals the net movement out of that program's
    vouchers of the org in the org's ledger; runs the program paid nothing for (a3, a4, b2)
    are not in it; totals by org kind and by pool add up to the grand total."""
    sc, j = scenario, scenario.jobs
    r = center.client.get(report_url(sc.p1), headers=admin(center))
    assert r.status_code == 200, r.text
    rp = r.json()
    assert rp["program"]["name"] == sc.p1 and rp["program"]["rate"] == "0.3" and rp["program"]["budget_fen"] == 10_000_000
    assert (rp["from_month"], rp["to_month"]) == (None, None)
    cells = [(x["month"], x["org"], x["org_kind"], x["totals"]["runs"], x["totals"]["subsidy_fen"]) for x in rp["rows"]]
    assert cells == sorted(cells) and {(m, o, s) for m, o, _, _, s in cells} == {
        ("2026-05", sc.a.org, 360), ("2026-06", sc.a.org, 140), ("2026-06", sc.b.org, 720)}
    for name, who in (("A", sc.a), ("B", sc.b)):
        org_id = sc.org_ids[name]
        accounts = voucher_accounts(center, sc.p1, org_id)
        all_jobs = [v for k, v in j.items() if k.startswith(name.lower())]
        paid = -moved(center, all_jobs, lambda acc, accounts=accounts: acc in accounts)
        assert paid == sum(x["totals"]["subsidy_fen"] for x in rp["rows"] if x["org"] == who.org) > 0
    kinds = {g["key"]: (g["orgs"], g["totals"]["subsidy_fen"]) for g in rp["by_org_kind"]}
    assert kinds == {"university": (1, 500), "startup": (1, 720)}
    assert sorted(g["totals"]["subsidy_fen"] for g in rp["by_pool"]) == [500, 720]
    assert rp["total"]["subsidy_fen"] == 1220 and rp["total"]["runs"] == 3
    for k in ("runs", "cost_fen", "subsidy_fen", "paid_fen"):
        assert sum(x["totals"][k] for x in rp["rows"]) == rp["total"][k] == sum(g["totals"][k] for g in rp["by_pool"])
    p2 = center.client.get(report_url(sc.p2), headers=admin(center)).json()
    assert [(x["month"], x["totals"]["subsidy_fen"]) for x in p2["rows"]] == [("2026-06", 720), ("2026-07", 120)]
    june = center.client.get(report_url(sc.p1), params={"month": "2026-06"}, headers=admin(center)).json()
    assert (june["from_month"], june["to_month"]) == ("2026-06", "2026-06") and june["total"]["subsidy_fen"] == 860
    span = center.client.get(report_url(sc.p1), params={"from": "2026-06", "to": "2026-07"}, headers=admin(center)).json()
    assert span["rows"] == june["rows"]
    assert center.client.get(report_url(sc.p1), params={"to": "2026-05"}, headers=admin(center)).json()["total"]["subsidy_fen"] == 360


def test_report_csv_is_one_row_per_subsidized_run(center, scenario: Scenario) -> None:  # type: ignore[no-untyped-def]
    """Invariants: the CSV evidence has one row per run the program paid a part of, naming
    program, org, kind, pool, month, job and run, with THIS program's part as the subsidy;
    grouped by org and month it gives the JSON rows."""
    sc, j = scenario, scenario.jobs
    rp = center.client.get(report_url(sc.p2), headers=admin(center)).json()
    r = center.client.get(report_url(sc.p2), params={"format": "csv"}, headers=admin(center))
    assert r.status_code == 200 and r.headers["content-type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8"), newline="")))
    assert [(int(x["job_id"]), x["month"], int(x["subsidy_fen"])) for x in rows] == [(j["a2"], "2026-06", 720), (j["a4"], "2026-07", 120)]
    assert {x["program"] for x in rows} == {sc.p2} and {x["org"] for x in rows} == {sc.a.org}
    assert {(x["org_kind"], x["user"], x["project"]) for x in rows} == {("university", sc.a.user, "default")}
    grouped: dict[tuple[str, str], list[int]] = {}
    for x in rows:
        g = grouped.setdefault((x["org"], x["month"]), [0, 0, 0])
        g[0] += 1
        g[1] += int(x["cost_fen"])
        g[2] += int(x["subsidy_fen"])
    assert grouped == {(x["org"], x["month"]): [x["totals"]["runs"], x["totals"]["cost_fen"], x["totals"]["subsidy_fen"]]
                       for x in rp["rows"]}
    p1 = center.client.get(report_url(sc.p1), params={"format": "csv", "month": "2026-06"}, headers=admin(center))
    assert {int(x["job_id"]): int(x["subsidy_fen"]) for x in csv.DictReader(io.StringIO(p1.text))} == {j["a2"]: 140, j["b1"]: 720}


def test_report_roles_and_bad_input(center, scenario: Scenario) -> None:  # type: ignore[no-untyped-def]
    """Invariants: only center admins get a report (members and org admins 403 `forbidden`,
    even for a program that does not exist); an unknown program is 404 `program_not_found`;
    bad months are 422 `bad_month` naming the field (month, from, to), as is month together
    with from/to and `to` before `from`; nothing is written."""
    sc = scenario
    before = written(center)
    for token in (sc.a.token, sc.a_admin, center.tokens.agent):
        for program in (sc.p1, "no-such-program"):
            r = center.client.get(report_url(program), headers=center.headers(token))
            assert r.status_code == 403 and r.json()["code"] == "forbidden", r.text
    assert center.client.get(report_url(sc.p1)).status_code == 401
    r = center.client.get(report_url("no-such-program"), headers=admin(center))
    assert r.status_code == 404 and r.json()["code"] == "program_not_found"
    for params, field in (({"month": "2026-13"}, "month"), ({"month": "abc"}, "month"), ({"from": "2026-6"}, "from"),
                          ({"to": "x"}, "to"), ({"month": "2026-06", "from": "2026-05"}, "month"),
                          ({"from": "2026-07", "to": "2026-06"}, "to")):
        r = center.client.get(report_url(sc.p1), params=params, headers=admin(center))
        assert r.status_code == 422 and r.json()["code"] == "bad_month", (params, r.text)
        assert [e["field"] for e in r.json()["errors"]] == [field]
    assert written(center) == before


# ---------------------------------------------------------------------------- CLI over HTTP






def test_statement_and_report_cli_over_http(center, scenario: Scenario, server: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Invariants: `suanli statement` shows the caller's org by default (a table, `--json`
    equal to the API's JSON, `--csv -` the API's CSV, `--csv FILE` a file); `suanli admin
    report` likewise; exit codes 2 bad month (naming the field) or clashing options, 3 a
    member asking for a report, 4 another org or an unknown program; no traceback."""
    sc = scenario

    def run(*args: str, token: str = sc.a.token, expect: int = 0) -> Any:
        env = {"SUANLI_SERVER": server, "SUANLI_TOKEN": token, "XDG_CONFIG_HOME": str(tmp_path / "cfg"), "COLUMNS": "250"}
        result = CliRunner().invoke(cli_app, list(args), env=env)
        assert result.exit_code == expect, (args, result.exit_code, result.output)
        assert "Traceback" not in result.output
        return result

    api = center.client.get(statement_url(sc.a.org, "2026-06"), headers=center.headers(sc.a.token)).json()
    assert json.loads(run("statement", "2026-06", "--json").stdout) == api
    assert json.loads(run("statement", "2026-06", "--org", sc.a.org, "--json", token=center.tokens.admin).stdout) == api
    table = run("statement", "2026-06").stdout
    assert str(sc.jobs["a2"]) in table and "3.0000" in table and "¥36.00" in table and "Total: 2 run(s)" in table
    api_csv = center.client.get(statement_url(sc.a.org, "2026-06"), params={"format": "csv"}, headers=admin(center)).text
    assert run("statement", "2026-06", "--csv", "-").stdout_bytes == api_csv.encode("utf-8")
    target = tmp_path / "june.csv"
    run("statement", "2026-06", "--csv", str(target))
    assert target.read_bytes() == api_csv.encode("utf-8")
    bad = run("statement", "2026-13", expect=2)
    assert "bad_month" in bad.output and "month:" in bad.output
    run("statement", "2026-06", "--org", sc.a.org, token=sc.b.token, expect=4)
    assert "--org" in run("statement", "2026-06", token=center.tokens.admin, expect=2).output
    run("statement", "2026-06", "--csv", "-", "--json", expect=2)

    rp = center.client.get(report_url(sc.p1), params={"month": "2026-06"}, headers=admin(center)).json()
    assert json.loads(run("admin", "report", sc.p1, "--month", "2026-06", "--json", token=center.tokens.admin).stdout) == rp
    out = run("admin", "report", sc.p1, "--from", "2026-05", "--to", "2026-07", token=center.tokens.admin).stdout
    assert sc.a.org in out and sc.b.org in out and "startup" in out and "Total: 3 run(s)" in out
    ev = run("admin", "report", sc.p1, "--csv", "-", token=center.tokens.admin).stdout
    assert len(list(csv.DictReader(io.StringIO(ev)))) == 3
    run("admin", "report", sc.p1, token=sc.a.token, expect=3)
    run("admin", "report", "no-such-program", token=center.tokens.admin, expect=4)
    assert "from" in run("admin", "report", sc.p1, "--from", "June", token=center.tokens.admin, expect=2).output
    run("admin", "report", sc.p1, "--month", "2026-06", "--to", "2026-07", token=center.tokens.admin, expect=2)
