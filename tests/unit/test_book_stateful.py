"""A stateful hypothesis test of the in-memory book (`quota.book.Book`) driven the way the
center drives the ledger: fund programs, grant vouchers, top up, set credit limits, start
jobs (hold), meter them, finish them (final charge, release), refund, expire or revoke
vouchers, and replay anything already posted.

After every step:
- `Book.invariants()` is empty (every txn sums to zero; no budget, voucher, voucher hold or
  org hold below zero; no org cash below −its credit limit; no job's share of a hold or
  net payment below zero);
- the sum over all accounts is 0;
- conservation, with F_P the money funded into program P, R_P the revenue its vouchers paid
  net of refunds to them, T the money orgs topped up and R_cash the revenue paid from org
  accounts net of refunds to them (F_P, R_P, T, R_cash tracked by this test, not the book):
      F_P            = budget_P + Σ_{v ∈ P} (voucher_v + voucher hold_v) + R_P   for every P
      −center:subsidy = Σ_P F_P
      −center:topups  = T = Σ_org (cash_org + hold_org) + R_cash
      center:revenue  = Σ_P R_P + R_cash
  i.e. no fen moves between programs, nor between subsidy money and org money;
- every running job's shares of the holds equal its hold minus what was charged, a finished
  job holds nothing, and every job's net payments equal its charges minus its refunds.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from quota.book import Book
from quota.ledger import (
    charge_txn_from_hold,
    fund_program_txn,
    grant_voucher_txn,
    hold_txn,
    refund_txn,
    release_txn,
    return_voucher_txn,
    topup_txn,
)
from quota.types import (
    CENTER_REVENUE,
    CENTER_SUBSIDY,
    CENTER_TOPUPS,
    LedgerEntry,
    LedgerTxn,
    Split,
    Voucher,
    VoucherBalance,
    org_cash,
    org_hold,
    program_budget,
    voucher_account,
    voucher_hold,
)
from quota.vouchers import combine, hold_split, meter_split, remainder, round_half_up

ORGS = (1, 2)
TYPES = ("nvidia-h100", "ascend-910b")
T0 = datetime(2026, 3, 1, tzinfo=UTC)
RATES = [Decimal("0.2"), Decimal("0.3"), Decimal("0.5"), Decimal(1), Decimal(0)]
TYPE_SETS = [frozenset(), frozenset(TYPES), frozenset({"ascend-910b"}), frozenset({"nvidia-h100"})]


@dataclass
class Run:
    org_id: int
    job_id: int
    hold: Split
    vouchers: tuple[VoucherBalance, ...]  # the balances the hold was split over
    charged: Split = field(default_factory=lambda: Split((), 0))
    refunded: Split = field(default_factory=lambda: Split((), 0))
    finished: bool = False
    meters: int = 0


def minus(a: Split, b: Split) -> dict[str, int]:
    """a − b as {"cash": fen, voucher id: fen} (zeros left out)."""
    out: dict[str, int] = {"cash": a.cash_fen - b.cash_fen}
    for v, fen in a.voucher_parts:
        out[str(v)] = fen - b.part(v)
    return {k: f for k, f in out.items() if f}


class BookMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.book = Book()
        self.now = T0
        self.programs: dict[int, tuple[Decimal, frozenset[str]]] = {}
        self.vouchers: dict[int, Voucher] = {}
        self.funded: dict[int, int] = defaultdict(int)
        self.voucher_revenue: dict[int, int] = defaultdict(int)  # R_P
        self.cash_revenue = 0  # R_cash
        self.topped_up = 0  # T
        self.runs: dict[int, Run] = {}
        self.ids = itertools.count(1)

    # --- helpers ----------------------------------------------------------------------------

    def key(self, what: str) -> str:
        return f"{what}:{next(self.ids)}"

    def snapshot(self) -> dict[str, int]:
        return {a: self.book.balance(a) for a in self.book.accounts()}

    def refused(self, txn) -> None:  # type: ignore[no-untyped-def]
        """The book must refuse `txn` and change nothing."""
        before, count = self.snapshot(), len(self.book.txns())
        try:
            self.book.post(txn)
        except ValueError:
            pass
        else:
            raise AssertionError(f"the book accepted {txn}")
        assert self.snapshot() == before and len(self.book.txns()) == count

    def balances(self, org_id: int) -> tuple[VoucherBalance, ...]:
        out = []
        for v in self.vouchers.values():
            if v.org_id == org_id:
                rate, types = self.programs[v.program_id]
                out.append(VoucherBalance(v, rate, types, self.book.balance(voucher_account(v.id))))
        return tuple(out)

    def charge(self, run: Run, inc: Split, key: str) -> None:
        if inc.voucher_fen:
            event("charge paid partly by vouchers")
        if inc.total_fen:
            assert self.book.post(charge_txn_from_hold(run.org_id, run.job_id, 0, inc, key))
        run.charged = combine(run.charged, inc)
        self.cash_revenue += inc.cash_fen
        for v, fen in inc.voucher_parts:
            self.voucher_revenue[self.vouchers[v].program_id] += fen

    def running(self) -> list[int]:
        return sorted(j for j, r in self.runs.items() if not r.finished)

    def refundable(self) -> list[int]:
        return sorted(j for j, r in self.runs.items() if r.finished and minus(r.charged, r.refunded))

    # --- rules ------------------------------------------------------------------------------

    @initialize(programs=st.lists(st.tuples(st.sampled_from(RATES), st.sampled_from(TYPE_SETS), st.integers(40_000, 300_000)),
                                  min_size=2, max_size=3),
                cash=st.lists(st.integers(0, 100_000), min_size=len(ORGS), max_size=len(ORGS)),
                grants=st.lists(st.tuples(st.integers(0, 2), st.sampled_from(ORGS), st.integers(1, 20_000),
                                          st.integers(1, 24 * 20)), min_size=2, max_size=5))
    def create_programs_and_orgs(self, programs: list[tuple[Decimal, frozenset[str], int]], cash: list[int],
                                 grants: list[tuple[int, int, int, int]]) -> None:
        """Programs (funded or not), orgs with some cash, and a few vouchers valid from now:
        a start that makes holds over several programs likely."""
        for i, (rate, types, budget) in enumerate(programs, start=1):
            self.programs[i] = (rate, types)
            if budget:
                self.fund_program(i, budget)
        for org, fen in zip(ORGS, cash):
            if fen:
                self.top_up(org, fen)
        for p, org, amount, hours in grants:
            p = p % len(programs) + 1
            if amount <= self.book.balance(program_budget(p)):
                vid = next(self.ids)
                assert self.book.post(grant_voucher_txn(p, vid, org, amount, f"grant:{vid}"))
                self.vouchers[vid] = Voucher(vid, p, org, amount, self.now, self.now + timedelta(hours=hours))

    def fund_program(self, p: int, amount: int) -> None:
        assert self.book.post(fund_program_txn(p, amount, self.key("fund")))
        self.funded[p] += amount

    @rule(data=st.data(), amount=st.integers(1, 100_000))
    def fund(self, data: st.DataObject, amount: int) -> None:
        self.fund_program(data.draw(st.sampled_from(sorted(self.programs))), amount)

    @rule(data=st.data(), org=st.sampled_from(ORGS), amount=st.integers(1, 40_000) | st.integers(100_000, 400_000),
          start_h=st.integers(-48, 12), hours=st.integers(1, 24 * 20))
    def grant(self, data: st.DataObject, org: int, amount: int, start_h: int, hours: int) -> None:
        """A grant beyond the program's budget is refused; otherwise it is posted."""
        p = data.draw(st.sampled_from(sorted(self.programs)))
        vid = next(self.ids)
        start = self.now + timedelta(hours=start_h)
        txn = grant_voucher_txn(p, vid, org, amount, f"grant:{vid}")
        if amount > self.book.balance(program_budget(p)):
            event("grant refused: beyond the budget")
            self.refused(txn)
            return
        assert self.book.post(txn)
        self.vouchers[vid] = Voucher(vid, p, org, amount, start, start + timedelta(hours=hours))

    @rule(org=st.sampled_from(ORGS), amount=st.integers(1, 200_000))
    def top_up(self, org: int, amount: int) -> None:
        assert self.book.post(topup_txn(org, amount, self.key("topup"), ""))
        self.topped_up += amount

    @rule(org=st.sampled_from(ORGS), limit=st.integers(0, 50_000))
    def set_credit_limit(self, org: int, limit: int) -> None:
        """A limit below what the org owes is refused; any other is set."""
        owed = -self.book.balance(org_cash(org))
        try:
            self.book.set_credit_limit(org, limit)
        except ValueError:
            assert limit < owed
        else:
            assert limit >= owed and self.book.credit_limit(org) == limit

    @rule(hours=st.integers(1, 96))
    def advance_time(self, hours: int) -> None:
        self.now += timedelta(hours=hours)

    @rule(org=st.sampled_from(ORGS), accel=st.sampled_from(TYPES), price=st.integers(0, 3_000),
          seconds=st.integers(0, 8 * 3600))
    def start_job(self, org: int, accel: str, price: int, seconds: int) -> None:
        """The hold is posted if the org's cash can cover its cash part within the credit
        limit (the vouchers' parts are within their balances by construction); otherwise the
        book refuses it and the job does not start."""
        cost = -(-price * seconds // 3600)
        vouchers = self.balances(org)
        hold = hold_split(cost, accel, vouchers, self.now)
        job = next(self.ids)
        if hold.total_fen:
            txn = hold_txn(org, job, 0, hold, f"hold:job:{job}")
            if self.book.balance(org_cash(org)) - hold.cash_fen < -self.book.credit_limit(org):
                event("hold refused: not coverable")
                self.refused(txn)
                return
            assert self.book.post(txn)
            event(f"hold posted with vouchers of {len({self.vouchers[v].program_id for v, _ in hold.voucher_parts})} program(s)")
        self.runs[job] = Run(org, job, hold, vouchers)

    @precondition(lambda self: self.running())
    @rule(data=st.data())
    def meter(self, data: st.DataObject) -> None:
        """A meter charges the cost to date (≤ the hold) against the hold."""
        run = self.runs[data.draw(st.sampled_from(self.running()))]
        to_date = data.draw(st.integers(run.charged.total_fen, run.hold.total_fen))
        run.meters += 1
        self.charge(run, meter_split(to_date, run.hold, run.charged, run.vouchers), f"meter:job:{run.job_id}:{run.meters}")

    @precondition(lambda self: self.running())
    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        """The final charge (≤ the hold) and the release of the rest."""
        run = self.runs[data.draw(st.sampled_from(self.running()))]
        final = data.draw(st.integers(run.charged.total_fen, run.hold.total_fen))
        self.charge(run, meter_split(final, run.hold, run.charged, run.vouchers), f"settle:job:{run.job_id}")
        rest = remainder(run.hold, run.charged)
        if rest.total_fen:
            assert self.book.post(release_txn(run.org_id, run.job_id, 0, rest.cash_fen, rest.voucher_parts,
                                              f"release:job:{run.job_id}"))
        run.finished = True

    @precondition(lambda self: self.refundable())
    @rule(data=st.data())
    def refund(self, data: st.DataObject) -> None:
        """A partial refund goes back where the money came from."""
        run = self.runs[data.draw(st.sampled_from(self.refundable()))]
        left = minus(run.charged, run.refunded)
        cash = data.draw(st.integers(0, left.get("cash", 0)))
        parts = tuple((int(v), data.draw(st.integers(0, f))) for v, f in left.items() if v != "cash")
        parts = tuple(p for p in parts if p[1])
        if not cash and not parts:
            return
        assert self.book.post(refund_txn(run.org_id, run.job_id, cash, parts, self.key(f"refund:job:{run.job_id}")))
        run.refunded = combine(run.refunded, Split(parts, cash))
        self.cash_revenue -= cash
        for v, fen in parts:
            self.voucher_revenue[self.vouchers[v].program_id] -= fen

    @precondition(lambda self: self.runs)
    @rule(data=st.data())
    def over_refund(self, data: st.DataObject) -> None:
        """A refund of more cash than the job paid is refused, whatever revenue holds."""
        run = self.runs[data.draw(st.sampled_from(sorted(self.runs)))]
        extra = run.charged.cash_fen - run.refunded.cash_fen + 1
        self.refused(refund_txn(run.org_id, run.job_id, extra, (), self.key("refund")))

    @precondition(lambda self: self.vouchers)
    @rule(data=st.data())
    def overdraw_voucher(self, data: st.DataObject) -> None:
        """A hold of more than a voucher has is refused."""
        v = self.vouchers[data.draw(st.sampled_from(sorted(self.vouchers)))]
        more = self.book.balance(voucher_account(v.id)) + 1
        self.refused(hold_txn(v.org_id, next(self.ids), 0, Split(((v.id, more),), 0), self.key("hold")))

    @precondition(lambda self: self.runs)
    @rule(data=st.data())
    def overcharge_hold(self, data: st.DataObject) -> None:
        """A charge of more cash than the job still holds is refused, even when the org's
        hold account has enough for other jobs."""
        run = self.runs[data.draw(st.sampled_from(sorted(self.runs)))]
        left = 0 if run.finished else run.hold.cash_fen - run.charged.cash_fen
        self.refused(charge_txn_from_hold(run.org_id, run.job_id, 0, Split((), left + 1), self.key("charge")))

    @precondition(lambda self: self.vouchers)
    @rule(data=st.data(), revoke=st.booleans())
    def return_voucher(self, data: st.DataObject, revoke: bool) -> None:
        """Revoke any voucher, or sweep an expired one: what it has left goes back to its
        program (money released or refunded to it later is returned by a later sweep)."""
        candidates = sorted(v for v, x in self.vouchers.items() if revoke or x.expires_at <= self.now)
        if not candidates:
            return
        v = self.vouchers[data.draw(st.sampled_from(candidates))]
        if revoke and v.revoked_at is None:
            self.vouchers[v.id] = Voucher(v.id, v.program_id, v.org_id, v.face_fen, v.valid_from, v.expires_at, self.now)
        left = self.book.balance(voucher_account(v.id))
        if left:
            kind = "revoke" if revoke else "expire"
            event(f"voucher {kind}d with money left")
            assert self.book.post(return_voucher_txn(v.program_id, v.id, v.org_id, left, self.key(kind), kind))
        assert self.book.balance(voucher_account(v.id)) == 0

    @precondition(lambda self: self.book.txns())
    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        """Posting any posted txn again is a no-op."""
        txn = data.draw(st.sampled_from(self.book.txns()))
        before, count = self.snapshot(), len(self.book.txns())
        assert self.book.post(txn) is False
        assert self.snapshot() == before and len(self.book.txns()) == count

    # --- invariants -------------------------------------------------------------------------

    @invariant()
    def book_invariants_hold(self) -> None:
        assert self.book.invariants() == []

    @invariant()
    def accounts_sum_to_zero(self) -> None:
        assert sum(self.book.balance(a) for a in self.book.accounts()) == 0

    @invariant()
    def money_is_conserved(self) -> None:
        b = self.book.balance
        for p in self.programs:
            in_vouchers = sum(b(voucher_account(v)) + b(voucher_hold(v)) for v, x in self.vouchers.items() if x.program_id == p)
            assert self.funded[p] == b(program_budget(p)) + in_vouchers + self.voucher_revenue[p]
        assert -b(CENTER_SUBSIDY) == sum(self.funded.values())
        assert -b(CENTER_TOPUPS) == self.topped_up == sum(b(org_cash(o)) + b(org_hold(o)) for o in ORGS) + self.cash_revenue
        assert b(CENTER_REVENUE) == sum(self.voucher_revenue.values()) + self.cash_revenue

    @invariant()
    def jobs_hold_and_pay_what_they_should(self) -> None:
        for run in self.runs.values():
            held = {} if run.finished else minus(run.hold, run.charged)
            expected_held = {(org_hold(run.org_id) if k == "cash" else voucher_hold(int(k))): f for k, f in held.items()}
            assert self.book.held(run.job_id) == expected_held
            paid = minus(run.charged, run.refunded)
            expected_paid = {(org_cash(run.org_id) if k == "cash" else voucher_account(int(k))): f for k, f in paid.items()}
            assert self.book.paid(run.job_id) == expected_paid
            rate_cap = round_half_up(run.hold.rate, run.charged.total_fen)
            assert run.charged.voucher_fen <= rate_cap  # programs never stack


BookMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=50, deadline=None)
TestBookStateful = BookMachine.TestCase


# --- plain tables of the builders and the book's refusals --------------------------------------


def test_builders_move_money_as_documented() -> None:
    """Invariant: each builder moves exactly the documented amounts, zero entries left out."""
    s = Split(((5, 30), (6, 20)), 50)
    assert hold_txn(1, 9, 0, s, "h").entries == (
        LedgerEntry(org_cash(1), -50), LedgerEntry(org_hold(1), 50), LedgerEntry(voucher_account(5), -30),
        LedgerEntry(voucher_hold(5), 30), LedgerEntry(voucher_account(6), -20), LedgerEntry(voucher_hold(6), 20))
    assert charge_txn_from_hold(1, 9, 0, Split(((5, 30),), 0), "c").entries == (
        LedgerEntry(voucher_hold(5), -30), LedgerEntry(CENTER_REVENUE, 30))
    assert release_txn(1, 9, 0, 7, ((5, 0), (6, 3)), "r").entries == (
        LedgerEntry(org_hold(1), -7), LedgerEntry(org_cash(1), 7), LedgerEntry(voucher_hold(6), -3),
        LedgerEntry(voucher_account(6), 3))
    assert refund_txn(1, 9, 4, ((5, 2),), "f").entries == (
        LedgerEntry(CENTER_REVENUE, -6), LedgerEntry(org_cash(1), 4), LedgerEntry(voucher_account(5), 2))
    assert fund_program_txn(3, 100, "k").entries == (LedgerEntry(CENTER_SUBSIDY, -100), LedgerEntry(program_budget(3), 100))
    assert grant_voucher_txn(3, 5, 1, 40, "g").entries == (LedgerEntry(program_budget(3), -40), LedgerEntry(voucher_account(5), 40))
    assert return_voucher_txn(3, 5, 1, 40, "x", "expire").entries == (
        LedgerEntry(voucher_account(5), -40), LedgerEntry(program_budget(3), 40))


def test_builders_refuse_bad_amounts() -> None:
    """Invariant: nothing to move, negative amounts, a voucher named twice or an unknown
    return kind raise ValueError (callers skip empty steps)."""
    bad = [
        lambda: hold_txn(1, 9, 0, Split((), 0), "h"),
        lambda: release_txn(1, 9, 0, 0, ((5, 0),), "r"),
        lambda: refund_txn(1, 9, -1, (), "f"),
        lambda: refund_txn(1, 9, 0, ((5, 1), (5, 1)), "f"),
        lambda: fund_program_txn(3, 0, "k"),
        lambda: grant_voucher_txn(3, 5, 1, -4, "g"),
        lambda: return_voucher_txn(3, 5, 1, 4, "x", "expired"),
    ]
    for build in bad:
        with pytest.raises(ValueError):
            build()


def test_book_refusals() -> None:
    """Invariant: the book refuses (nothing posted) unbalanced txns, unknown accounts, holds
    without a job, cash beyond the credit limit; it accepts cash down to exactly −limit."""
    book = Book({1: 100})
    unbalanced = LedgerTxn("u", "x", 1, None, "", (LedgerEntry(org_cash(1), -1), LedgerEntry(CENTER_REVENUE, 2)))
    unknown = LedgerTxn("n", "x", 1, None, "", (LedgerEntry("org:01:cash", -1), LedgerEntry(CENTER_TOPUPS, 1)))
    jobless = LedgerTxn("j", "hold", 1, None, "", (LedgerEntry(org_cash(1), -1), LedgerEntry(org_hold(1), 1)))
    for txn in (unbalanced, unknown, jobless, hold_txn(1, 9, 0, Split((), 101), "h1")):
        with pytest.raises(ValueError):
            book.post(txn)
    assert book.txns() == [] and book.invariants() == []
    assert book.post(hold_txn(1, 9, 0, Split((), 100), "h2"))
    assert book.balance(org_cash(1)) == -100 and book.invariants() == []
    with pytest.raises(ValueError):
        book.set_credit_limit(1, 99)  # the org owes 100
    book.set_credit_limit(1, 100)
