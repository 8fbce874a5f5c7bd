"""Store: the append-only ledger.

Invariants: rows are only inserted, never updated or deleted; `post` refuses an unbalanced
transaction and is a no-op for a key already posted; balances are sums of entries.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from quota.ledger import balanced
from quota.types import LedgerEntry, LedgerTxn
from suanli.db.models import LedgerEntryRow, LedgerTxnRow


def post(s: Session, txn: LedgerTxn, now: datetime) -> bool:
    """Write `txn` unless its key was posted before. True if written."""
    if not balanced(txn):
        raise ValueError(f"unbalanced ledger transaction {txn.key}")
    if s.scalar(select(LedgerTxnRow.id).where(LedgerTxnRow.key == txn.key)) is not None:
        return False
    row = LedgerTxnRow(key=txn.key, kind=txn.kind, org_id=txn.org_id, job_id=txn.job_id, memo=txn.memo, created_at=now)
    s.add(row)
    s.flush()
    s.add_all(LedgerEntryRow(txn_id=row.id, account=e.account, amount_fen=e.amount_fen) for e in txn.entries)
    s.flush()
    return True


def account_balance(s: Session, account: str) -> int:
    return int(s.scalar(select(func.coalesce(func.sum(LedgerEntryRow.amount_fen), 0)).where(LedgerEntryRow.account == account)) or 0)


def recent_txns(s: Session, org_id: int, limit: int = 10) -> list[LedgerTxn]:
    txns = list(
        s.scalars(select(LedgerTxnRow).where(LedgerTxnRow.org_id == org_id).order_by(LedgerTxnRow.id.desc()).limit(limit))
    )
    entries: dict[int, list[LedgerEntry]] = {t.id: [] for t in txns}
    if txns:
        for row in s.scalars(select(LedgerEntryRow).where(LedgerEntryRow.txn_id.in_(entries)).order_by(LedgerEntryRow.id)):
            entries[row.txn_id].append(LedgerEntry(row.account, row.amount_fen))
    return [txn_from_row(t, entries[t.id]) for t in txns]


def txn_from_row(row: LedgerTxnRow, entries: list[LedgerEntry]) -> LedgerTxn:
    return LedgerTxn(row.key, row.kind, row.org_id, row.job_id, row.memo, tuple(entries), row.created_at)


def txn_by_key(s: Session, key: str) -> LedgerTxn | None:
    row = s.scalar(select(LedgerTxnRow).where(LedgerTxnRow.key == key))
    if row is None:
        return None
    entries = [LedgerEntry(e.account, e.amount_fen) for e in s.scalars(select(LedgerEntryRow).where(LedgerEntryRow.txn_id == row.id))]
    return txn_from_row(row, entries)
