"""Pure ledger arithmetic: job cost and double-entry transactions.

Cost rule (documented in README): a job's cost is
    devices × duration_ms × fen_per_device_hour / 3,600,000
computed exactly with integers and rounded to whole fen half-up (0.5 fen rounds up).
`duration_ms` is the whole milliseconds between the process start and its end, as reported
by the runner.

Invariants: every transaction built here sums to zero; charges move money from the org's
account (or from holds) to center revenue; nothing here does I/O.

Money flows of the voucher builders (account names in `quota.types`):

    fund_program_txn      center:subsidy      → program:<p>:budget
    grant_voucher_txn     program:<p>:budget  → voucher:<v>
    return_voucher_txn    voucher:<v>         → program:<p>:budget     (revoke, expire)
    hold_txn              org:<o>:cash        → org:<o>:hold           (cash part)
                          voucher:<v>         → voucher:<v>:hold       (each voucher part)
    charge_txn_from_hold  org:<o>:hold        → center:revenue         (meters, final charge)
                          voucher:<v>:hold    → center:revenue
    release_txn           org:<o>:hold        → org:<o>:cash
                          voucher:<v>:hold    → voucher:<v>
    refund_txn            center:revenue      → org:<o>:cash, voucher:<v>

Zero amounts: an entry of 0 fen is left out. A builder given nothing to move (every amount
0) raises ValueError instead of returning a transaction without entries, which
`balanced` (and so every `post`) refuses: callers skip the step, e.g.
`if split.total_fen: post(hold_txn(...))`. Negative amounts raise ValueError; a voucher
named twice in one list raises ValueError. The idempotency key is the caller's (it names
the job, run and step, e.g. "hold:job:42:run:0"); `run` goes into the memo only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from quota.types import (
    CENTER_REVENUE,
    CENTER_SUBSIDY,
    CENTER_TOPUPS,
    LedgerEntry,
    LedgerTxn,
    Split,
    check_fen,
    org_cash,
    org_hold,
    program_budget,
    voucher_account,
    voucher_hold,
)

MS_PER_HOUR = 3_600_000


def duration_ms(started_at: datetime, ended_at: datetime) -> int:
    """Whole milliseconds from start to end (never negative)."""
    return max(0, (ended_at - started_at) // timedelta(milliseconds=1))


def cost_fen(devices: int, ms: int, fen_per_device_hour: int) -> int:
    """Exact cost rounded half-up to whole fen."""
    if devices < 0 or ms < 0 or fen_per_device_hour < 0:
        raise ValueError("cost inputs must be non-negative")
    numerator = devices * ms * fen_per_device_hour
    return (2 * numerator + MS_PER_HOUR) // (2 * MS_PER_HOUR)


def cost_fen_milli(milli_devices: int, ms: int, fen_per_device_hour: int) -> int:
    """`cost_fen` for a share of devices given in thousandths (fractional jobs)."""
    if milli_devices < 0 or ms < 0 or fen_per_device_hour < 0:
        raise ValueError("cost inputs must be non-negative")
    numerator = milli_devices * ms * fen_per_device_hour
    return (2 * numerator + 1000 * MS_PER_HOUR) // (2 * 1000 * MS_PER_HOUR)


def hold_fen(milli_devices: int, seconds: int, fen_per_device_hour: int) -> int:
    """The most a run can cost: devices (thousandths) × its time limit × price, rounded up
    to whole fen (a hold must cover the worst case)."""
    return -(-milli_devices * seconds * fen_per_device_hour // (1000 * 3600))


def charge_txn(org_id: int, job_id: int, amount_fen: int, memo: str, run: int = 0) -> LedgerTxn:
    """The charge for one run of a job (a preempted and requeued job runs again: run 1, 2…)."""
    return LedgerTxn(
        key=f"charge:job:{job_id}" + (f":run:{run}" if run else ""),
        kind="charge",
        org_id=org_id,
        job_id=job_id,
        memo=memo,
        entries=(
            LedgerEntry(org_cash(org_id), -amount_fen),
            LedgerEntry(CENTER_REVENUE, amount_fen),
        ),
    )


def topup_txn(org_id: int, amount_fen: int, key: str, memo: str) -> LedgerTxn:
    if amount_fen <= 0:
        raise ValueError("a top-up must be positive")
    return LedgerTxn(
        key=key,
        kind="topup",
        org_id=org_id,
        job_id=None,
        memo=memo,
        entries=(
            LedgerEntry(CENTER_TOPUPS, -amount_fen),
            LedgerEntry(org_cash(org_id), amount_fen),
        ),
    )


def balanced(txn: LedgerTxn) -> bool:
    return len(txn.entries) >= 2 and sum(e.amount_fen for e in txn.entries) == 0


def balance_of(account: str, entries: Iterable[LedgerEntry]) -> int:
    """A balance is the fold of the account's entries."""
    return sum(e.amount_fen for e in entries if e.account == account)


# --- vouchers, holds, metering, settlement -------------------------------------------------


def _txn(key: str, kind: str, org_id: int | None, job_id: int | None, memo: str, moves: list[tuple[str, str, int]]) -> LedgerTxn:
    """A transaction of (from account, to account, fen) moves, zero moves left out and equal
    accounts merged in first-seen order; ValueError if nothing moves."""
    totals: dict[str, int] = {}
    for source, target, fen in moves:
        if fen:
            totals[source] = totals.get(source, 0) - fen
            totals[target] = totals.get(target, 0) + fen
    entries = tuple(LedgerEntry(a, fen) for a, fen in totals.items() if fen)
    if not entries:
        raise ValueError(f"{kind} {key!r} moves nothing; skip it instead of posting it")
    return LedgerTxn(key=key, kind=kind, org_id=org_id, job_id=job_id, memo=memo, entries=entries)


def _parts(voucher_parts: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    seen: set[int] = set()
    for voucher_id, fen in voucher_parts:
        check_fen(f"voucher {voucher_id}'s part", fen)
        if voucher_id in seen:
            raise ValueError(f"voucher {voucher_id} appears twice")
        seen.add(voucher_id)
    return list(voucher_parts)


def _run(run: int) -> str:
    return f" run {run}" if run else ""


def fund_program_txn(program_id: int, amount_fen: int, key: str, memo: str = "") -> LedgerTxn:
    """The funder pays `amount_fen` into a program's budget."""
    check_fen("amount_fen", amount_fen, positive=True)
    return _txn(key, "fund", None, None, memo or f"fund program {program_id}",
                [(CENTER_SUBSIDY, program_budget(program_id), amount_fen)])


def grant_voucher_txn(program_id: int, voucher_id: int, org_id: int, amount_fen: int, key: str, memo: str = "") -> LedgerTxn:
    """Grant a voucher of `amount_fen` from the program's budget (the ledger refuses an
    overdrawn budget; the yearly cap and eligibility are the caller's checks)."""
    check_fen("amount_fen", amount_fen, positive=True)
    return _txn(key, "grant", org_id, None, memo or f"voucher {voucher_id} from program {program_id}",
                [(program_budget(program_id), voucher_account(voucher_id), amount_fen)])


def return_voucher_txn(program_id: int, voucher_id: int, org_id: int, amount_fen: int, key: str, kind: str,
                       memo: str = "") -> LedgerTxn:
    """What a revoked or expired voucher has left goes back to its program (`kind` "revoke" or
    "expire"). Money held for running jobs is not included: it returns to the voucher when
    released, so the caller returns it again after the release (a sweep)."""
    if kind not in ("revoke", "expire"):
        raise ValueError(f"a voucher return is a 'revoke' or an 'expire', not {kind!r}")
    check_fen("amount_fen", amount_fen, positive=True)
    return _txn(key, kind, org_id, None, memo or f"{kind} voucher {voucher_id}: back to program {program_id}",
                [(voucher_account(voucher_id), program_budget(program_id), amount_fen)])


def hold_txn(org_id: int, job_id: int, run: int, split: Split, key: str, memo: str = "") -> LedgerTxn:
    """Set aside what a run may cost: the cash part from the org's account, each voucher part
    from its voucher."""
    moves = [(org_cash(org_id), org_hold(org_id), split.cash_fen)]
    moves += [(voucher_account(v), voucher_hold(v), fen) for v, fen in split.voucher_parts]
    return _txn(key, "hold", org_id, job_id, memo or f"hold for job {job_id}{_run(run)}", moves)


def charge_txn_from_hold(org_id: int, job_id: int, run: int, split: Split, key: str, memo: str = "") -> LedgerTxn:
    """Charge (a meter step or the final charge) from what the run holds: the cash part from
    the org's hold, each voucher part from its voucher hold, all to center revenue."""
    moves = [(org_hold(org_id), CENTER_REVENUE, split.cash_fen)]
    moves += [(voucher_hold(v), CENTER_REVENUE, fen) for v, fen in split.voucher_parts]
    return _txn(key, "charge", org_id, job_id, memo or f"charge job {job_id}{_run(run)}", moves)


def release_txn(org_id: int, job_id: int, run: int, cash_fen: int, voucher_parts: Sequence[tuple[int, int]], key: str,
                memo: str = "") -> LedgerTxn:
    """Give back what a run held and did not use: to the org's account and to each voucher."""
    check_fen("cash_fen", cash_fen)
    moves = [(org_hold(org_id), org_cash(org_id), cash_fen)]
    moves += [(voucher_hold(v), voucher_account(v), fen) for v, fen in _parts(voucher_parts)]
    return _txn(key, "release", org_id, job_id, memo or f"release job {job_id}{_run(run)}", moves)


def refund_txn(org_id: int, job_id: int, cash_fen: int, voucher_parts: Sequence[tuple[int, int]], key: str,
               memo: str = "") -> LedgerTxn:
    """Give back charged money from center revenue to where it came from: the org's account
    and each voucher (never more than the job paid from each: `quota.book.Book` checks)."""
    check_fen("cash_fen", cash_fen)
    moves = [(CENTER_REVENUE, org_cash(org_id), cash_fen)]
    moves += [(CENTER_REVENUE, voucher_account(v), fen) for v, fen in _parts(voucher_parts)]
    return _txn(key, "refund", org_id, job_id, memo or f"refund job {job_id}", moves)
