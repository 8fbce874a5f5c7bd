"""Holds, metering and settlement of job runs (inside the scheduler's transactions).

A run's money moves in three steps, each one ledger transaction with an idempotency key:
1. **Hold** at start (`hold:job:<id>:run:<n>`): the most the run can cost — time limit ×
   devices × price, rounded up — split by `quota.vouchers.hold_split` between the org's
   eligible vouchers (earliest-expiring first, at most the program's rate) and its account;
   the account part may not take the account below minus its credit limit.
2. **Metering** (`meter:job:<id>:run:<n>:<k>`) every few minutes while it runs: the cost so
   far, split by `meter_split` *against what was held* (vouchers held at start keep paying
   even if they expire meanwhile), minus what was charged, moves from the holds to revenue.
3. **Settlement** at the end (`settle:…`, then `release:…`): the final cost is charged the
   same way and what is left of the holds goes back. A run lost through the center's fault
   costs nothing: what metering took is refunded (`refund:…`) and the hold released.
All amounts are integer fen; every step is a no-op when replayed (same key). The split of a
run is kept on the job row as JSON (`bill_to_json`).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from quota import ledger
from quota.ledger import cost_fen_milli, duration_ms, hold_fen
from quota.types import Split, VoucherBalance
from quota.vouchers import combine, hold_split, meter_split, remainder
from suanli.db.store import billing as store
from suanli.db.store import ledger as ledger_store

NOTHING = Split((), 0)


class InsufficientFunds(Exception):
    """The org cannot cover the hold; the job does not start."""


def bill_to_json(sp: Split) -> dict[str, Any]:
    return {"cash": sp.cash_fen, "vouchers": [[v, f] for v, f in sp.voucher_parts], "rate": str(sp.rate)}


def bill_from_json(d: dict[str, Any] | None) -> Split:
    if not d:
        return NOTHING
    return Split(tuple((int(v), int(f)) for v, f in d.get("vouchers", [])), int(d.get("cash", 0)), Decimal(d.get("rate", "0")))


def run_cost(devices: int, device_milli: int, started: datetime, ended: datetime, price: int) -> int:
    return cost_fen_milli(devices * device_milli, duration_ms(started, ended), price)


def place_hold(s: Session, *, org_id: int, job_id: int, run: int, devices: int, device_milli: int, time_limit_s: int,
               price: int, accelerator_type: str, now: datetime) -> Split:
    """Hold the most the run can cost; raise InsufficientFunds (writing nothing) if the org
    cannot cover it."""
    org = store.lock_org(s, org_id)
    assert org is not None
    total = hold_fen(devices * device_milli, time_limit_s, price)
    store.lock_vouchers(s, [v.id for v in store.org_vouchers(s, org_id)])
    # Read the balances only under the voucher locks: a revocation or an expiry sweep locks
    # just the voucher (not the org) and may have taken its money back meanwhile.
    balances = store.voucher_balances(s, org_id)
    sp = hold_split(total, accelerator_type, balances, now)
    cash, _held = store.org_money(s, org_id)
    if cash - sp.cash_fen < -org.credit_limit_fen:
        raise InsufficientFunds(f"the hold is {total} fen ({sp.cash_fen} from the account, {sp.voucher_fen} from vouchers); "
                                f"org {org.name} can spend {cash + org.credit_limit_fen} from its account")
    if sp.total_fen:
        ledger_store.post(s, ledger.hold_txn(org_id, job_id, run, sp, f"hold:job:{job_id}:run:{run}"), now)
    return sp


def _held_balances(s: Session, org_id: int, hold: Split) -> list[VoucherBalance]:
    held = dict(hold.voucher_parts)
    return [VoucherBalance(b.voucher, b.rate, b.types, held[b.voucher.id])
            for b in store.voucher_balances(s, org_id) if b.voucher.id in held]


def meter(s: Session, *, org_id: int, job_id: int, run: int, seq: int, hold: Split, charged: Split, cost: int,
          now: datetime) -> Split:
    """Charge the run's cost so far (capped at the hold) from the holds; returns the new
    total charged for this run."""
    cost = max(charged.total_fen, min(cost, hold.total_fen))
    inc = meter_split(cost, hold, charged, _held_balances(s, org_id, hold))
    if inc.total_fen:
        ledger_store.post(s, ledger.charge_txn_from_hold(org_id, job_id, run, inc, f"meter:job:{job_id}:run:{run}:{seq}"), now)
    return combine(charged, inc)


def settle(s: Session, *, org_id: int, job_id: int, run: int, hold: Split, charged: Split, cost: int, now: datetime,
           center_fault: bool = False) -> Split:
    """Final charge of a run and release of the rest of its hold; returns what the run cost,
    split. With `center_fault` the run costs nothing: metered charges are refunded."""
    if center_fault:
        if charged.total_fen:
            ledger_store.post(s, ledger.refund_txn(org_id, job_id, charged.cash_fen, charged.voucher_parts,
                                                   f"refund:job:{job_id}:run:{run}"), now)
        final, rest = NOTHING, remainder(hold, charged)
    else:
        cost = max(charged.total_fen, min(cost, hold.total_fen))
        inc = meter_split(cost, hold, charged, _held_balances(s, org_id, hold))
        if inc.total_fen:
            ledger_store.post(s, ledger.charge_txn_from_hold(org_id, job_id, run, inc, f"settle:job:{job_id}:run:{run}"), now)
        final = combine(charged, inc)
        rest = remainder(hold, final)
    if rest.total_fen:
        ledger_store.post(s, ledger.release_txn(org_id, job_id, run, rest.cash_fen, rest.voucher_parts,
                                                f"release:job:{job_id}:run:{run}"), now)
    return final
