"""Pure ledger arithmetic: job cost and double-entry transactions.

Cost rule (documented in README): a job's cost is
    devices × duration_ms × fen_per_device_hour / 3,600,000
computed exactly with integers and rounded to whole fen half-up (0.5 fen rounds up).
`duration_ms` is the whole milliseconds between the process start and its end, as reported
by the runner.

Invariants: every transaction built here sums to zero; charges move money from the org's
account to center revenue; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from quota.types import CENTER_REVENUE, CENTER_TOPUPS, LedgerEntry, LedgerTxn, org_cash

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
