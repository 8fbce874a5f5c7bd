"""Balance and ledger views; top-up input. Money is integer fen (1 yuan = 100 fen)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from quota.types import Balance, LedgerTxn, org_cash


def yuan(fen: int) -> str:
    """Exact display of fen as yuan: 123456 -> '1234.56'."""
    sign = "-" if fen < 0 else ""
    return f"{sign}{abs(fen) // 100}.{abs(fen) % 100:02d}"


class TxnOut(BaseModel):
    key: str
    kind: str
    job_id: int | None
    memo: str
    amount_fen: int = Field(description="Change to the org's account (negative = paid)")
    at: datetime | None


class BalanceOut(BaseModel):
    org: str
    balance_fen: int
    balance_yuan: str
    recent: list[TxnOut]


def txn_out(txn: LedgerTxn, org_id: int) -> TxnOut:
    account = org_cash(org_id)
    return TxnOut(
        key=txn.key,
        kind=txn.kind,
        job_id=txn.job_id,
        memo=txn.memo,
        amount_fen=sum(e.amount_fen for e in txn.entries if e.account == account),
        at=txn.created_at,
    )


def balance_out(b: Balance) -> BalanceOut:
    return BalanceOut(org=b.org, balance_fen=b.balance_fen, balance_yuan=yuan(b.balance_fen), recent=[txn_out(t, b.org_id) for t in b.recent])


class TopUpIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount_fen: int = Field(gt=0, le=10**13, description="Amount in fen (1 yuan = 100 fen)")
    key: str = Field(min_length=1, max_length=100, description="Idempotency key: the same key tops up once")
    memo: str = Field("", max_length=500)
