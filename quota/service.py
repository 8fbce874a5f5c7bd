"""Billing service: charges at the end of a job, top-ups, balances.

Invariants: a job is charged at most once (ledger key `charge:job:<id>`), in the same
transaction as its move to a terminal status; the amount is `quota.ledger.cost_fen` of the
runner-reported start and end, at the price fixed when the job was scheduled.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from quota.ledger import charge_txn, cost_fen_milli, duration_ms, topup_txn
from quota.types import Balance, org_cash
from suanli.db.store import ledger


def charge_job(
    s: Session,
    *,
    org_id: int,
    job_id: int,
    devices: int,
    started_at: datetime,
    ended_at: datetime,
    fen_per_device_hour: int,
    accelerator_type: str,
    now: datetime,
    device_milli: int = 1000,
    run: int = 0,
) -> int:
    """Post the charge of one run of a job (at most once: the ledger key names job and run);
    return its cost in fen."""
    ms = duration_ms(started_at, ended_at)
    amount = cost_fen_milli(devices * device_milli, ms, fen_per_device_hour)
    share = "" if device_milli == 1000 else f" x {device_milli / 1000:g}"
    memo = f"job {job_id}{f' run {run}' if run else ''}: {devices}{share} x {accelerator_type} x {ms} ms at {fen_per_device_hour} fen/device-hour"
    ledger.post(s, charge_txn(org_id, job_id, amount, memo, run), now)
    return amount


def top_up(s: Session, org_id: int, amount_fen: int, key: str, memo: str, now: datetime) -> bool:
    return ledger.post(s, topup_txn(org_id, amount_fen, key, memo), now)


def balance(s: Session, org_id: int, org: str, recent: int = 10) -> Balance:
    return Balance(org_id, org, ledger.account_balance(s, org_cash(org_id)), tuple(ledger.recent_txns(s, org_id, recent)))
