"""Holds, metering and settlement against the real database (SQLite and PostgreSQL): the
ledger moves exactly what `quota.settlement` promises, once, and the policy's funds check
counts vouchers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from quota import programs
from quota.settlement import InsufficientFunds, meter, place_hold, settle
from quota.types import org_cash, org_hold, voucher_account, voucher_hold
from quota.vouchers import round_half_up
from suanli.db.models import LedgerEntryRow, LedgerTxnRow
from suanli.db.store import billing as store
from suanli.db.store import tenancy

T0 = datetime(2026, 6, 1, tzinfo=UTC)
A100 = "nvidia-a100-80g"


def setup_org(center, prepaid: int, voucher_fen: int = 0, rate: str = "0.3"):  # type: ignore[no-untyped-def]
    m = center.new_org(prepaid_fen=prepaid)
    with center.db.begin() as s:
        org = tenancy.get_org(s, m.org)
        vid = None
        if voucher_fen:
            name = f"prog-{m.org}"
            programs.create_program(s, name=name, budget_fen=10 * voucher_fen, rate=Decimal(rate), cap_per_org_year_fen=None,
                                    org_kinds=[], accelerator_types=[A100], valid_from=T0 - timedelta(days=30),
                                    valid_until=T0 + timedelta(days=365), actor="test", now=T0 - timedelta(days=1))
            vid = programs.grant_voucher(s, program=name, org=org, face_fen=voucher_fen, valid_from=T0 - timedelta(days=1),
                                         expires_at=T0 + timedelta(days=30), actor="test", now=T0 - timedelta(days=1)).id
        return org.id, vid, m


def new_job(center, member) -> int:  # type: ignore[no-untyped-def]
    """A real (pending) job of the org, so ledger rows can name it."""
    r = center.client.post("/v1/jobs", json={"name": "billing", "resources": {"accelerator": A100}, "command": "true"},
                           headers=center.headers(member.token))
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def money(center, org_id: int, vid: int | None = None) -> dict[str, int]:  # type: ignore[no-untyped-def]
    accounts = [org_cash(org_id), org_hold(org_id)] + ([voucher_account(vid), voucher_hold(vid)] if vid else [])
    with center.db.begin() as s:
        return store.balances(s, accounts)


def test_hold_meter_settle_moves_exactly_the_cost_with_the_subsidy(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: the hold sets aside time limit × devices × price (vouchers pay 30 % of it,
    the account the rest); metering charges the cost so far from the holds; settlement charges
    the final cost with the voucher paying round_half_up(30 % × cost) and releases the rest:
    in the end the account lost cost − subsidy, the voucher lost the subsidy, nothing is held,
    and replaying any step changes nothing."""
    org_id, vid, m = setup_org(center, prepaid=1_000_000, voucher_fen=100_000)
    job = new_job(center, m)
    with center.db.begin() as s:
        hold = place_hold(s, org_id=org_id, job_id=job, run=0, devices=2, device_milli=1000, time_limit_s=3600, price=1200,
                          accelerator_type=A100, now=T0)
    assert hold.total_fen == 2400 and hold.voucher_fen == 720 and hold.cash_fen == 1680
    bal = money(center, org_id, vid)
    assert (bal[org_hold(org_id)], bal[voucher_hold(vid)]) == (1680, 720)
    with center.db.begin() as s:
        charged = meter(s, org_id=org_id, job_id=job, run=0, seq=1, hold=hold, charged=type(hold)((), 0), cost=1000, now=T0)
    assert charged.total_fen == 1000 and charged.voucher_fen == 300
    cost = 1235
    with center.db.begin() as s:
        final = settle(s, org_id=org_id, job_id=job, run=0, hold=hold, charged=charged, cost=cost, now=T0)
    assert final.total_fen == cost and final.voucher_fen == round_half_up(Decimal("0.3"), cost) == 371
    bal = money(center, org_id, vid)
    assert bal[org_cash(org_id)] == 1_000_000 - (cost - 371) and bal[org_hold(org_id)] == 0
    assert bal[voucher_account(vid)] == 100_000 - 371 and bal[voucher_hold(vid)] == 0
    with center.db.begin() as s:  # replays
        n = s.scalar(select(func.count()).select_from(LedgerTxnRow))
        settle(s, org_id=org_id, job_id=job, run=0, hold=hold, charged=charged, cost=cost, now=T0)
        assert s.scalar(select(func.count()).select_from(LedgerTxnRow)) == n
    assert money(center, org_id, vid) == bal


def test_center_fault_refunds_what_metering_took(center) -> None:  # type: ignore[no-untyped-def]
    """Invariant: a run lost through the center's fault costs nothing: metered charges are
    refunded and the hold released, leaving the account and the voucher as before."""
    org_id, vid, m = setup_org(center, prepaid=500_000, voucher_fen=50_000)
    job = new_job(center, m)
    before = money(center, org_id, vid)
    with center.db.begin() as s:
        hold = place_hold(s, org_id=org_id, job_id=job, run=0, devices=1, device_milli=1000, time_limit_s=7200, price=1200,
                          accelerator_type=A100, now=T0)
        charged = meter(s, org_id=org_id, job_id=job, run=0, seq=1, hold=hold, charged=type(hold)((), 0), cost=900, now=T0)
    with center.db.begin() as s:
        final = settle(s, org_id=org_id, job_id=job, run=0, hold=hold, charged=charged, cost=0, now=T0, center_fault=True)
    assert final.total_fen == 0
    assert money(center, org_id, vid) == before


def test_a_hold_that_cannot_be_covered_writes_nothing(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: a hold beyond the account plus its credit limit (vouchers included) raises
    InsufficientFunds and writes nothing; a credit limit makes the same hold possible."""
    org_id, _, m = setup_org(center, prepaid=1000)
    job = new_job(center, m)
    with center.db.begin() as s:
        n = s.scalar(select(func.count()).select_from(LedgerEntryRow))
    with pytest.raises(InsufficientFunds), center.db.begin() as s:
        place_hold(s, org_id=org_id, job_id=job, run=0, devices=8, device_milli=1000, time_limit_s=3600, price=1200,
                   accelerator_type=A100, now=T0)
    with center.db.begin() as s:
        assert s.scalar(select(func.count()).select_from(LedgerEntryRow)) == n
        s.get(tenancy.OrgRow, org_id).credit_limit_fen = 9000
    with center.db.begin() as s:
        hold = place_hold(s, org_id=org_id, job_id=job, run=0, devices=8, device_milli=1000, time_limit_s=3600, price=1200,
                          accelerator_type=A100, now=T0)
    assert hold.cash_fen == 9600 and money(center, org_id)[org_cash(org_id)] == 1000 - 9600


def test_expired_voucher_money_released_later_goes_back_to_the_program(center) -> None:  # type: ignore[no-untyped-def]
    """Invariant: what a voucher holds for a running job keeps paying after expiry; what is
    released to it afterwards is swept back to its program, once."""
    org_id, vid, m = setup_org(center, prepaid=100_000, voucher_fen=10_000)
    job = new_job(center, m)
    with center.db.begin() as s:
        hold = place_hold(s, org_id=org_id, job_id=job, run=0, devices=1, device_milli=1000, time_limit_s=36000, price=1200,
                          accelerator_type=A100, now=T0)
        program_id = store.lock_vouchers(s, [vid])[0].program_id
    after_expiry = T0 + timedelta(days=31)
    with center.db.begin() as s:
        programs.expire_vouchers(s, after_expiry)
        left_before = store.program_left(s, program_id)
    with center.db.begin() as s:
        settle(s, org_id=org_id, job_id=job, run=0, hold=hold, charged=type(hold)((), 0), cost=1200, now=after_expiry)
    with center.db.begin() as s:
        swept = dict(programs.expire_vouchers(s, after_expiry))
        again = dict(programs.expire_vouchers(s, after_expiry))
        left_after = store.program_left(s, program_id)
    released = hold.voucher_fen - 360  # 30 % of 1,200 was paid
    assert swept == {vid: released} and again in ({}, {vid: 0})
    assert left_after == left_before + released
    assert money(center, org_id, vid)[voucher_account(vid)] == 0
