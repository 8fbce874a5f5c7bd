"""16 workers at once against ONE program and ONE org, on SQLite and on the real PostgreSQL:
grants racing for a program's budget and an org's yearly cap, hold + settle cycles racing
for an org's account, credit and vouchers, and all of it mixed with revocations and expiry
sweeps. Every worker has its own sessions; a `threading.Barrier` releases them together.

How correctness under concurrency is obtained (and why not SERIALIZABLE): every billing
write takes row locks — `SELECT … FOR NO KEY UPDATE` on PostgreSQL — in one global order,
program → org → vouchers by id (`suanli.db.store.billing.lock_*`), and runs its checks
after taking them, under READ COMMITTED. Compared with SERIALIZABLE transactions:
- no caller needs a retry loop: the scheduler, the API and the CLI would all have to catch
  serialization failures and redo their whole unit of work (including non-database steps);
  with locks a conflicting writer simply waits;
- refusals are deterministic: a grant or a hold that does not fit is refused because it
  does not fit once the earlier writers committed, never because of an abort by timing;
- no deadlocks: every writer takes the locks in the same order. The lock on program and
  org rows is FOR NO KEY UPDATE (not FOR UPDATE) because PostgreSQL's foreign-key checks
  take FOR KEY SHARE on the referenced row: a revocation holding a voucher lock and posting
  a ledger transaction that references the org must not wait for a hold that holds the org
  and waits for that voucher (the order would be broken by the implicit lock).
SQLite has no row locks: every transaction starts with BEGIN IMMEDIATE (`suanli.db.engine`),
so writers are serialized outright and wait (busy timeout) instead of failing.

Invariants checked after each race (and, for overdraft, sampled throughout it by an
observer thread reading balances in single-statement snapshots): no program budget overrun
and budget = left + vouchers + voucher holds + redeemed; no org account below minus its
credit limit; no voucher or hold below zero; every ledger transaction sums to zero; refused
grants and holds wrote nothing; replaying a settlement afterwards is a no-op.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from quota import programs
from quota.settlement import NOTHING, InsufficientFunds, place_hold, settle
from quota.types import CENTER_REVENUE, Split, org_cash, org_hold, program_budget, voucher_account, voucher_hold
from scheduler.types import JobSubmission, Resources
from suanli.db.models import AuditRow, LedgerEntryRow, LedgerTxnRow, OrgRow, ProgramRow, VoucherRow
from suanli.db.store import billing as store
from suanli.db.store import jobs as job_store
from suanli.db.store import tenancy
from suanli.errors import SuanliError

WORKERS = 16
T0 = datetime(2026, 6, 1, tzinfo=UTC)
A100 = "nvidia-a100-80g"
HOLD = 1200  # fen: one A100 for its one-hour time limit at 1,200 fen per device-hour


def race(work: Callable[[int], Any], n: int = WORKERS, observe: Callable[[], None] | None = None) -> list[Any]:
    """Run work(0) … work(n−1) in n threads released together by a barrier; returns each
    result or the exception it raised. `observe` runs in a loop in one more thread meanwhile."""
    barrier = threading.Barrier(n + (observe is not None))
    results: list[Any] = [None] * n
    done = threading.Event()

    def run(i: int) -> None:
        barrier.wait(timeout=60)
        try:
            results[i] = work(i)
        except BaseException as e:  # noqa: B036 — handed to the test, which re-raises the unexpected
            results[i] = e

    def watch() -> None:
        barrier.wait(timeout=60)
        while not done.is_set():
            observe()  # type: ignore[misc]
            time.sleep(0.002)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    watcher = threading.Thread(target=watch, daemon=True) if observe else None
    for t in threads + ([watcher] if watcher else []):
        t.start()
    for t in threads:
        t.join(timeout=120)
    done.set()
    if watcher:
        watcher.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a worker is stuck (deadlock?)"
    return results


def unexpected(results: list[Any], *allowed: type[BaseException]) -> None:
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, allowed):
            raise r


def counts(center) -> dict[str, int]:  # type: ignore[no-untyped-def]
    with center.db.begin() as s:
        return {t.__name__: s.scalar(select(func.count()).select_from(t)) for t in (LedgerTxnRow, LedgerEntryRow, AuditRow, VoucherRow)}


def unbalanced(center) -> list[Any]:  # type: ignore[no-untyped-def]
    with center.db.begin() as s:
        return list(s.execute(select(LedgerEntryRow.txn_id, func.sum(LedgerEntryRow.amount_fen)).group_by(LedgerEntryRow.txn_id)
                              .having(func.sum(LedgerEntryRow.amount_fen) != 0)).all())


def setup(center, *, cash: int, credit: int, budget: int, cap: int | None = None, vouchers: tuple[int, ...] = (),
          jobs: int = 0) -> tuple[int, int, list[int], list[int]]:  # type: ignore[no-untyped-def]
    """One fresh org (account `cash`, credit limit `credit`), one program (`budget`, 30 %,
    yearly cap `cap`) granting it `vouchers` (earliest-expiring first), and `jobs` pending
    jobs of the org. Returns (org id, program id, voucher ids, job ids)."""
    m = center.new_org(prepaid_fen=cash)
    name = f"prog-{m.org}"
    with center.db.begin() as s:
        org = tenancy.get_org(s, m.org)
        org.credit_limit_fen = credit
        prog = programs.create_program(s, name=name, budget_fen=budget, rate=Decimal("0.3"), cap_per_org_year_fen=cap,
                                       org_kinds=[], accelerator_types=[A100], valid_from=T0 - timedelta(days=30),
                                       valid_until=T0 + timedelta(days=365), actor="test", now=T0 - timedelta(days=1))
        vids = [programs.grant_voucher(s, program=name, org=org, face_fen=f, valid_from=T0 - timedelta(days=1),
                                       expires_at=T0 + timedelta(days=30 + i), actor="test", now=T0 - timedelta(days=1)).id
                for i, f in enumerate(vouchers)]
        user = tenancy.get_user(s, m.user)
        project = tenancy.get_project(s, org.id, "default").id
        sub = JobSubmission("race", "default", Resources((A100,), 1), 3600, 1.0, "true", None, {})
        job_ids = [job_store.insert_job(s, org.id, project, user, sub, T0) for _ in range(jobs)]
        return org.id, prog.id, vids, job_ids


def grant(center, program: str, org_id: int, face: int, now: datetime = T0) -> int:  # type: ignore[no-untyped-def]
    with center.db.begin() as s:
        return programs.grant_voucher(s, program=program, org=s.get(OrgRow, org_id), face_fen=face, valid_from=now,
                                      expires_at=now + timedelta(days=60), actor="race", now=now).id


def cost_of(job: int) -> int:
    """A deterministic final cost for a job, 0–20 % of its hold (so many cycles fit)."""
    return (job * 37) % (HOLD // 5 + 1)


def hold_and_settle(center, org_id: int, job: int) -> tuple[Split, Split] | None:  # type: ignore[no-untyped-def]
    """One job's whole run: its hold (None if refused), then its settlement at `cost_of`."""
    try:
        with center.db.begin() as s:
            hold = place_hold(s, org_id=org_id, job_id=job, run=0, devices=1, device_milli=1000, time_limit_s=3600, price=HOLD,
                              accelerator_type=A100, now=T0)
    except InsufficientFunds:
        return None
    with center.db.begin() as s:
        final = settle(s, org_id=org_id, job_id=job, run=0, hold=hold, charged=NOTHING, cost=cost_of(job), now=T0)
    return hold, final


class Observer:
    """Reads the org's account and the vouchers' balances in one statement (one snapshot)
    again and again during a race, recording any moment an invariant was broken."""

    def __init__(self, center, org_id: int, credit: int, program_id: int) -> None:  # type: ignore[no-untyped-def]
        self.center, self.org_id, self.credit, self.program_id = center, org_id, credit, program_id
        self.samples = 0
        self.broken: list[str] = []

    def __call__(self) -> None:
        with self.center.db.begin() as s:
            vids = list(s.scalars(select(VoucherRow.id).where(VoucherRow.program_id == self.program_id)))
            accounts = [org_cash(self.org_id), org_hold(self.org_id), program_budget(self.program_id)]
            accounts += [a for v in vids for a in (voucher_account(v), voucher_hold(v))]
            b = store.balances(s, accounts)
        self.samples += 1
        if b[org_cash(self.org_id)] < -self.credit:
            self.broken.append(f"account {b[org_cash(self.org_id)]} below −{self.credit}")
        self.broken += [f"{a} = {fen}" for a, fen in b.items() if a != org_cash(self.org_id) and fen < 0]


@pytest.mark.parametrize("binding", ["budget", "cap"])
def test_racing_grants_get_exactly_what_fits(center, binding: str) -> None:  # type: ignore[no-untyped-def]
    """Invariants: 16 grants of different sizes racing for one program's budget (or one
    org's yearly cap, the smaller of the two) never overrun it; every refusal says which
    limit (program_budget_exceeded / org_cap_exceeded) and is a grant that does not fit even
    after all the successful ones (so nothing that fitted was refused); the program's budget
    left is exactly the budget minus what was granted; a refused grant wrote nothing (no
    voucher, no ledger transaction, no audit row)."""
    limit = 6_000
    budget, cap = (limit, None) if binding == "budget" else (10 * limit, limit)
    org_id, prog_id, _, _ = setup(center, cash=0, credit=0, budget=budget, cap=cap)
    with center.db.begin() as s:
        name = s.scalar(select(ProgramRow.name).where(ProgramRow.id == prog_id))
    faces = [300 + 100 * (i % 8) for i in range(WORKERS)]  # 9,600 fen asked in all
    before = counts(center)
    results = race(lambda i: grant(center, name, org_id, faces[i]))
    unexpected(results, SuanliError)
    granted = [faces[i] for i, r in enumerate(results) if isinstance(r, int)]
    refused = [(faces[i], r.code) for i, r in enumerate(results) if isinstance(r, SuanliError)]
    code = "program_budget_exceeded" if binding == "budget" else "org_cap_exceeded"
    assert granted and refused and len(granted) + len(refused) == WORKERS
    assert {c for _, c in refused} == {code}
    assert sum(granted) <= limit
    assert all(sum(granted) + face > limit for face, _ in refused), "a grant that fits was refused"
    with center.db.begin() as s:
        assert store.program_left(s, prog_id) == budget - sum(granted)
        vids = [r for r in results if isinstance(r, int)]
        assert store.balances(s, [voucher_account(v) for v in vids]) == {voucher_account(v): f for v, f in zip(vids, granted)}
    after = counts(center)
    n = len(granted)  # one voucher, one transaction of two entries and one audit row each
    assert after == {"LedgerTxnRow": before["LedgerTxnRow"] + n, "LedgerEntryRow": before["LedgerEntryRow"] + 2 * n,
                     "AuditRow": before["AuditRow"] + n, "VoucherRow": before["VoucherRow"] + n}
    assert unbalanced(center) == []


def test_racing_holds_and_settlements_never_overdraw(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: 16 workers each running 10 jobs of ONE org (hold, then settle at 0–20 % of
    the hold, the vouchers paying 30 %) whose account + credit + vouchers cannot cover all
    their holds at once: the account never goes below minus the credit limit and no voucher
    or hold below zero (at the end and in every snapshot the observer took); refused holds
    wrote nothing; in the end nothing is held, the account lost exactly the cash parts and
    each voucher exactly its parts; budget = left + vouchers + voucher holds + redeemed; every
    transaction sums to zero; replaying each settlement is a no-op."""
    cycles, cash, credit, faces = 10, 6_000, 2_000, (1_800, 1_200)
    budget = 20_000
    org_id, prog_id, vids, jobs = setup(center, cash=cash, credit=credit, budget=budget, vouchers=faces,
                                        jobs=WORKERS * cycles)
    with center.db.begin() as s:
        revenue0 = store.balances(s, [CENTER_REVENUE])[CENTER_REVENUE]
    observer = Observer(center, org_id, credit, prog_id)
    results = race(lambda i: [(j, hold_and_settle(center, org_id, j)) for j in jobs[i * cycles:(i + 1) * cycles]],
                   observe=observer)
    unexpected(results)
    runs = dict(r for rs in results for r in rs)
    settled = {j: hf for j, hf in runs.items() if hf is not None}
    refused = [j for j, hf in runs.items() if hf is None]
    assert settled and refused, "the funds must cover some holds and not all"
    assert observer.samples > 0 and observer.broken == []

    cash_paid = sum(f.cash_fen for _, f in settled.values())
    redeemed = {v: sum(f.part(v) for _, f in settled.values()) for v in vids}
    with center.db.begin() as s:
        b = store.balances(s, [org_cash(org_id), org_hold(org_id), program_budget(prog_id), CENTER_REVENUE]
                           + [a for v in vids for a in (voucher_account(v), voucher_hold(v))])
        refused_txns = s.scalar(select(func.count()).select_from(LedgerTxnRow).where(LedgerTxnRow.job_id.in_(refused)))
    assert b[org_cash(org_id)] == cash - cash_paid >= -credit and b[org_hold(org_id)] == 0
    for v, face in zip(vids, faces):
        assert b[voucher_account(v)] == face - redeemed[v] >= 0 and b[voucher_hold(v)] == 0
    assert b[program_budget(prog_id)] + sum(b[voucher_account(v)] + b[voucher_hold(v)] for v in vids) \
        + sum(redeemed.values()) == budget
    assert b[CENTER_REVENUE] - revenue0 == sum(f.total_fen for _, f in settled.values()) == sum(map(cost_of, settled))
    assert refused_txns == 0
    assert unbalanced(center) == []

    before = counts(center)
    for j, (hold, final) in settled.items():
        with center.db.begin() as s:
            again = settle(s, org_id=org_id, job_id=j, run=0, hold=hold, charged=NOTHING, cost=cost_of(j), now=T0)
        assert again == final
    assert counts(center) == before


def test_grants_holds_revocations_and_sweeps_at_once(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants, with everything racing on one program and one org — 8 workers running
    hold + settle cycles, 4 granting vouchers beyond the program's budget, 4 revoking the
    vouchers earliest-expiring first (the ones holds take) and sweeping: no deadlock, no
    voucher, hold or budget below zero and no overdraft (observer and end), the budget never
    overrun, every transaction sums to zero; after a final sweep nothing is held, every
    voucher is empty and budget = left + redeemed."""
    holders, granters, cycles, cash, credit, budget = 8, 4, 12, 20_000, 1_000, 12_000
    org_id, prog_id, vids, jobs = setup(center, cash=cash, credit=credit, budget=budget, vouchers=(400,) * 12,
                                        jobs=holders * cycles)
    with center.db.begin() as s:
        name = s.scalar(select(ProgramRow.name).where(ProgramRow.id == prog_id))
    revokers = WORKERS - holders - granters

    def work(i: int) -> list[Any]:
        out: list[Any] = []
        if i < holders:
            out = [(j, hold_and_settle(center, org_id, j)) for j in jobs[i * cycles:(i + 1) * cycles]]
        elif i < holders + granters:
            for _ in range(4):
                try:
                    out.append(grant(center, name, org_id, 1_000))
                except SuanliError as e:
                    out.append(e.code)
        else:
            for v in vids[i - holders - granters::revokers]:
                with center.db.begin() as s:
                    out.append(programs.revoke_voucher(s, v, "race", T0))
                with center.db.begin() as s:
                    programs.expire_vouchers(s, T0)
        return out

    observer = Observer(center, org_id, credit, prog_id)
    results = race(work, observe=observer)
    unexpected(results)
    assert observer.samples > 0 and observer.broken == []
    runs = dict(r for rs in results[:holders] for r in rs)
    settled = {j: hf for j, hf in runs.items() if hf is not None}
    grants = [g for rs in results[holders:holders + granters] for g in rs]
    assert settled
    assert set(grants) - {"program_budget_exceeded"} == {g for g in grants if isinstance(g, int)}
    with center.db.begin() as s:
        programs.expire_vouchers(s, T0 + timedelta(days=400))  # everything ended: sweep it all back
    with center.db.begin() as s:
        all_vids = list(s.scalars(select(VoucherRow.id).where(VoucherRow.program_id == prog_id)))
        b = store.balances(s, [org_cash(org_id), org_hold(org_id), program_budget(prog_id)]
                           + [a for v in all_vids for a in (voucher_account(v), voucher_hold(v))])
    redeemed = sum(f.voucher_fen for _, f in settled.values())
    assert all(fen == 0 for a, fen in b.items() if a.startswith("voucher:"))
    assert b[org_hold(org_id)] == 0 and b[org_cash(org_id)] == cash - sum(f.cash_fen for _, f in settled.values()) >= -credit
    assert b[program_budget(prog_id)] + redeemed == budget
    assert unbalanced(center) == []
