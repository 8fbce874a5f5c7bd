"""A hypothesis state machine over the real billing services on a real database (SQLite):
grants, top-ups, credit limits, holds, meters, settlements (with center-fault refunds),
revocations and expiry sweeps, in any order, with replays. After every step the database's
ledger must satisfy every invariant of the issue: each transaction sums to zero; no voucher,
voucher hold, org hold or program budget below zero; no account below minus its credit
limit; replaying a settlement is a no-op. Refused operations must write nothing."""

from __future__ import annotations

import tempfile
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from sqlalchemy import func, select

from quota import programs
from quota import service as accounts
from quota.settlement import InsufficientFunds, bill_to_json, meter, place_hold, settle
from quota.types import Split
from scheduler.types import JobSubmission, Resources, Vendor
from suanli.db.engine import Database, migrate
from suanli.db.models import LedgerEntryRow, LedgerTxnRow, OrgRow
from suanli.db.store import jobs as job_store
from suanli.db.store import tenancy
from suanli.errors import SuanliError
from suanli.identity import Role

T0 = datetime(2026, 3, 1, tzinfo=UTC)
A100 = "nvidia-a100-80g"


class LedgerMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.dir = tempfile.mkdtemp()
        url = f"sqlite:///{Path(self.dir) / 'l.db'}"
        migrate(url)
        self.db = Database(url)
        self.now = T0
        with self.db.begin() as s:
            tenancy.ensure_accelerator_type(s, A100, Vendor.NVIDIA)
            org = tenancy.create_org(s, "o", "p", "university", T0)
            user = tenancy.create_user(s, "u", Role.MEMBER, org.id, T0)
            self.org_id = org.id
            self.jobs = []
            sub = JobSubmission("j", "default", Resources((A100,), 1), 3600, 1.0, "true", None, {})
            for _ in range(12):
                self.jobs.append(job_store.insert_job(s, org.id, tenancy.get_project(s, org.id, "default").id, user, sub, T0))
            programs.create_program(s, name="p1", budget_fen=50_000, rate=Decimal("0.3"), cap_per_org_year_fen=40_000,
                                    org_kinds=["university"], accelerator_types=[A100], valid_from=T0 - timedelta(days=1),
                                    valid_until=T0 + timedelta(days=400), actor="t", now=T0)
        self.holds: dict[int, Split] = {}
        self.charged: dict[int, Split] = {}
        self.settled: dict[int, tuple] = {}
        self.vouchers: list[int] = []

    def count(self) -> tuple[int, int]:
        with self.db.begin() as s:
            return (s.scalar(select(func.count()).select_from(LedgerTxnRow)),
                    s.scalar(select(func.count()).select_from(LedgerEntryRow)))

    def org(self, s) -> OrgRow:  # type: ignore[no-untyped-def]
        return s.get(OrgRow, self.org_id)

    @rule(days=st.integers(0, 20))
    def time_passes(self, days: int) -> None:
        self.now += timedelta(days=days)

    @rule(amount=st.integers(-5, 30_000), days=st.integers(1, 120))
    def grant(self, amount: int, days: int) -> None:
        before = self.count()
        try:
            with self.db.begin() as s:
                v = programs.grant_voucher(s, program="p1", org=self.org(s), face_fen=amount, valid_from=self.now,
                                           expires_at=self.now + timedelta(days=days), actor="t", now=self.now)
                self.vouchers.append(v.id)
        except SuanliError:
            assert self.count() == before  # refused: nothing written

    @rule(amount=st.integers(1, 20_000))
    def top_up(self, amount: int) -> None:
        key = f"t:{amount}:{self.count()[0]}"
        with self.db.begin() as s:
            accounts.top_up(s, self.org_id, amount, key, "", self.now)

    @rule(limit=st.integers(-10, 10_000))
    def credit(self, limit: int) -> None:
        before = self.count()
        try:
            with self.db.begin() as s:
                accounts.set_credit_limit(s, self.org(s), limit, "t", self.now)
        except SuanliError:
            assert self.count() == before

    @rule(i=st.integers(0, 11), devices=st.integers(1, 8), limit=st.integers(60, 36_000), price=st.sampled_from([0, 800, 1200]))
    def start(self, i: int, devices: int, limit: int, price: int) -> None:
        job = self.jobs[i]
        if job in self.holds or job in self.settled:
            return
        before = self.count()
        try:
            with self.db.begin() as s:
                hold = place_hold(s, org_id=self.org_id, job_id=job, run=0, devices=devices, device_milli=1000,
                                  time_limit_s=limit, price=price, accelerator_type=A100, now=self.now)
                job_store.set_bill(s, job, hold=bill_to_json(hold))
            self.holds[job] = hold
            self.charged[job] = Split((), 0)
            self.held_at = self.now
        except InsufficientFunds:
            assert self.count() == before

    @precondition(lambda self: bool(self.holds))
    @rule(data=st.data())
    def meter_some(self, data) -> None:  # type: ignore[no-untyped-def]
        job = data.draw(st.sampled_from(sorted(self.holds)))
        hold, charged = self.holds[job], self.charged[job]
        cost = data.draw(st.integers(charged.total_fen, hold.total_fen))
        with self.db.begin() as s:
            seq = job_store.get_job(s, job).meter_seq + 1
            self.charged[job] = meter(s, org_id=self.org_id, job_id=job, run=0, seq=seq, hold=hold, charged=charged,
                                      cost=cost, now=self.now)
            job_store.set_bill(s, job, run_charged=bill_to_json(self.charged[job]), meter_seq=seq)

    @precondition(lambda self: bool(self.holds))
    @rule(data=st.data(), fault=st.booleans())
    def finish(self, data, fault: bool) -> None:  # type: ignore[no-untyped-def]
        job = data.draw(st.sampled_from(sorted(self.holds)))
        hold, charged = self.holds.pop(job), self.charged.pop(job)
        cost = data.draw(st.integers(charged.total_fen, hold.total_fen))
        args = dict(org_id=self.org_id, job_id=job, run=0, hold=hold, charged=charged, cost=cost, now=self.now, center_fault=fault)
        with self.db.begin() as s:
            final = settle(s, **args)  # type: ignore[arg-type]
        assert final.total_fen == (0 if fault else cost)
        self.settled[job] = args
        before = self.count()
        with self.db.begin() as s:  # replaying the settlement changes nothing
            settle(s, **args)  # type: ignore[arg-type]
        assert self.count() == before

    @precondition(lambda self: bool(self.vouchers))
    @rule(data=st.data())
    def revoke(self, data) -> None:  # type: ignore[no-untyped-def]
        v = data.draw(st.sampled_from(self.vouchers))
        before = self.count()
        try:
            with self.db.begin() as s:
                programs.revoke_voucher(s, v, "t", self.now)
        except SuanliError:
            assert self.count() == before

    @rule()
    def sweep(self) -> None:
        with self.db.begin() as s:
            programs.expire_vouchers(s, self.now)

    @invariant()
    def ledger_holds(self) -> None:
        if not hasattr(self, "db"):
            return
        with self.db.begin() as s:
            sums = dict(s.execute(select(LedgerEntryRow.txn_id, func.sum(LedgerEntryRow.amount_fen))
                                  .group_by(LedgerEntryRow.txn_id)).all())
            assert all(v == 0 for v in sums.values()), "every transaction sums to zero"
            bal: dict[str, int] = defaultdict(int)
            for account, total in s.execute(select(LedgerEntryRow.account, func.sum(LedgerEntryRow.amount_fen))
                                            .group_by(LedgerEntryRow.account)).all():
                bal[account] = int(total)
            credit = s.get(OrgRow, self.org_id).credit_limit_fen
        for account, value in bal.items():
            if account.startswith(("voucher:", "program:")) or account.endswith(":hold"):
                assert value >= 0, (account, value)
        assert bal[f"org:{self.org_id}:cash"] >= -credit
        assert sum(bal.values()) == 0
        held = sum(h.total_fen - self.charged[j].total_fen for j, h in self.holds.items())
        vh = sum(v for a, v in bal.items() if a.startswith("voucher:") and a.endswith(":hold"))
        assert bal[f"org:{self.org_id}:hold"] + vh == held, "holds are exactly what running jobs still hold"

    def teardown(self) -> None:
        if hasattr(self, "db"):
            self.db.dispose()


TestLedgerMachine = LedgerMachine.TestCase
TestLedgerMachine.settings = settings(max_examples=40, stateful_step_count=25, deadline=None,
                                      suppress_health_check=[HealthCheck.too_slow])
