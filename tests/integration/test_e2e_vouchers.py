"""End to end on the local Ray cluster: a compute-voucher program, a grant, a real job on an
eligible type metered while it runs and settled at its end, then the org's statement and the
program's report for the funder — all through the public API, as an admin and a member do.
"""

from __future__ import annotations

import csv
import io
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from quota.vouchers import round_half_up
from tests.conftest import unique

pytestmark = [pytest.mark.ray, pytest.mark.slow]

A100 = "nvidia-a100-80g"


def test_voucher_pays_its_share_and_the_run_appears_in_statement_and_report(ray_center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: a job on an eligible type started with a voucher is held, metered while it
    runs and settled at its end with the subsidy `round_half_up(rate × cost)` paid by the
    voucher and the rest by the org's account, exactly; nothing stays held; the run appears
    once in the org's statement for the month it settled (totals = its line) and in the
    program's report (JSON and CSV evidence) with the same device-hours, cost and subsidy."""
    from decimal import Decimal

    from suanli.db.store import tenancy

    rc, admin = ray_center, ray_center.headers(ray_center.tokens.admin)
    m = rc.new_org(prepaid_fen=1_000_000)
    with rc.db.begin() as s:
        kind = tenancy.get_org(s, m.org).kind
    now = datetime.now(UTC)
    program = unique("算力券-e2e")
    r = rc.client.post("/v1/admin/programs", headers=admin, json={
        "name": program, "budget_fen": 10_000_000, "rate": "0.3", "cap_per_org_year_fen": 2_000_000,
        "org_kinds": [kind], "accelerator_types": [A100],
        "valid_from": (now - timedelta(days=1)).isoformat(), "valid_until": (now + timedelta(days=365)).isoformat()})
    assert r.status_code == 201, r.text
    r = rc.client.post(f"/v1/admin/programs/{program}/vouchers", headers=admin, json={
        "org": m.org, "face_fen": 500_000, "expires_at": (now + timedelta(days=90)).isoformat()})
    assert r.status_code == 201, r.text
    voucher_id = r.json()["id"]
    start = rc.client.get("/v1/balance", headers=rc.headers(m.token)).json()

    loop = rc.loop
    old_interval = loop.config.meter_interval_s  # type: ignore[attr-defined]
    loop.config.meter_interval_s = 0.5  # type: ignore[attr-defined]
    try:
        job = rc.client.post("/v1/jobs", headers=rc.headers(m.token), json={
            "name": "subsidized", "resources": {"accelerator": A100, "devices_per_node": 2, "cpus_per_node": 1,
                                                "memory_per_node": 256},
            "command": "sleep 3; echo done", "time_limit": "1h"}).json()
        deadline, seen_held = time.time() + 90, False
        while time.time() < deadline:
            got = rc.client.get(f"/v1/jobs/{job['id']}", headers=rc.headers(m.token)).json()
            if got["status"] == "RUNNING":
                bal = rc.client.get("/v1/balance", headers=rc.headers(m.token)).json()
                seen_held = seen_held or bal["held_fen"] > 0
            if got["status"] in ("SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT"):
                break
            time.sleep(0.2)
    finally:
        loop.config.meter_interval_s = old_interval  # type: ignore[attr-defined]
    assert got["status"] == "SUCCEEDED", got["reason"]
    assert seen_held, "the hold was never visible while the job ran"
    cost, subsidy = got["cost_fen"], got["subsidy_fen"]
    assert cost > 0 and subsidy == round_half_up(Decimal("0.3"), cost)

    end = rc.client.get("/v1/balance", headers=rc.headers(m.token)).json()
    assert end["held_fen"] == 0
    assert start["balance_fen"] - end["balance_fen"] == cost - subsidy
    v = next(v for v in end["vouchers"] if v["id"] == voucher_id)
    assert v["remaining_fen"] == 500_000 - subsidy and v["held_fen"] == 0
    kinds = {t["kind"] for t in end["recent"] if t["job_id"] == job["id"]}
    assert {"hold", "charge", "release"} <= kinds

    month = datetime.fromisoformat(got["ended_at"]).astimezone(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m")
    stmt = rc.client.get(f"/v1/orgs/{m.org}/statements/{month}", headers=rc.headers(m.token))
    assert stmt.status_code == 200, stmt.text
    lines = [ln for ln in stmt.json()["lines"] if ln["job_id"] == job["id"]]
    assert len(lines) == 1
    line = lines[0]
    assert (line["cost_fen"], line["subsidy_fen"], line["paid_fen"]) == (cost, subsidy, cost - subsidy)
    assert line["accelerator_type"] == A100 and line["user"] == m.user
    totals = stmt.json()["totals"]
    assert (totals["cost_fen"], totals["subsidy_fen"]) == (cost, subsidy)  # the org's only run this month

    rep = rc.client.get(f"/v1/admin/programs/{program}/report", params={"month": month}, headers=admin)
    assert rep.status_code == 200, rep.text
    rows = [row for row in rep.json()["rows"] if row["org"] == m.org]
    assert len(rows) == 1
    row = rows[0]["totals"]
    assert (row["subsidy_fen"], row["cost_fen"], row["device_hours"]) == (subsidy, cost, line["device_hours"])
    evidence = rc.client.get(f"/v1/admin/programs/{program}/report", params={"month": month, "format": "csv"},
                             headers=admin)
    assert evidence.status_code == 200 and evidence.headers["content-type"].startswith("text/csv")
    ev = [row for row in csv.DictReader(io.StringIO(evidence.text)) if row.get("job_id") == str(job["id"])]
    assert len(ev) == 1 and int(ev[0]["subsidy_fen"]) == subsidy and int(ev[0]["cost_fen"]) == cost
