"""Billing service for accounts: top-ups, credit limits, balances (what `suanli balance`
shows). Job money (holds, metering, settlement) is `quota.settlement`; programs and vouchers
are `quota.programs`.

Invariants: balances are folds of ledger entries; a top-up is posted once per key; every
admin change is written to the audit log in the same transaction.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from quota.ledger import topup_txn
from quota.types import Balance, VoucherView, org_cash
from suanli.db.models import OrgRow
from suanli.db.store import billing as billing_store
from suanli.db.store import ledger
from suanli.errors import invalid


def top_up(s: Session, org_id: int, amount_fen: int, key: str, memo: str, now: datetime) -> bool:
    return ledger.post(s, topup_txn(org_id, amount_fen, key, memo), now)


def set_credit_limit(s: Session, org: OrgRow, credit_limit_fen: int, actor: str, now: datetime) -> None:
    if credit_limit_fen < 0:
        raise invalid("bad_amount", "a credit limit is a non-negative number of fen", "credit_limit_fen")
    locked = billing_store.lock_org(s, org.id)
    assert locked is not None
    cash, _ = billing_store.org_money(s, org.id)
    if cash < -credit_limit_fen:
        raise invalid("credit_below_debt",
                      f"org {org.name} owes {-cash} fen already; the credit limit cannot go below that", "credit_limit_fen")
    before = locked.credit_limit_fen
    locked.credit_limit_fen = credit_limit_fen
    billing_store.audit(s, actor, "org.credit_limit", f"org:{org.name}", {"credit_limit_fen": before},
                        {"credit_limit_fen": credit_limit_fen}, now)


def balance(s: Session, org_id: int, org: str, recent: int = 10, now: datetime | None = None) -> Balance:
    row = s.get(OrgRow, org_id)
    cash, held = billing_store.org_money(s, org_id)
    vouchers = []
    balances = billing_store.voucher_balances(s, org_id)
    vheld = billing_store.voucher_held(s, [b.voucher.id for b in balances])
    names = {p.id: p.name for p in billing_store.programs(s)}
    for b in balances:
        v = b.voucher
        usable = v.revoked_at is None and (now is None or v.valid_from <= now < v.expires_at)
        vouchers.append(VoucherView(v.id, names.get(v.program_id, str(v.program_id)), b.rate, tuple(sorted(b.types)), v.face_fen,
                                    b.remaining_fen, vheld[v.id], v.valid_from, v.expires_at, v.revoked_at, usable))
    return Balance(org_id, org, cash, tuple(ledger.recent_txns(s, org_id, recent)), held, row.credit_limit_fen if row else 0,
                   tuple(vouchers))


__all__ = ["balance", "org_cash", "set_credit_limit", "top_up"]
