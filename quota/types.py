"""Domain dataclasses of billing.

Invariants: amounts are integer fen (1 yuan = 100 fen), never float; a `LedgerTxn`'s entries
sum to zero (checked by `quota.ledger.balanced`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

CENTER_REVENUE = "center:revenue"
CENTER_TOPUPS = "center:topups"  # money that came in from outside (bank transfer, …)


def org_cash(org_id: int) -> str:
    """The org's prepaid account."""
    return f"org:{org_id}:cash"


@dataclass(frozen=True)
class Price:
    accelerator_type: str
    fen_per_device_hour: int
    effective_from: datetime


@dataclass(frozen=True)
class LedgerEntry:
    account: str
    amount_fen: int


@dataclass(frozen=True)
class LedgerTxn:
    key: str  # idempotency key: the same key is applied at most once
    kind: str
    org_id: int | None
    job_id: int | None
    memo: str
    entries: tuple[LedgerEntry, ...]
    created_at: datetime | None = None


@dataclass(frozen=True)
class Balance:
    org_id: int
    org: str
    balance_fen: int
    recent: tuple[LedgerTxn, ...]
