"""Balance and ledger views; top-up input. Money is integer fen (1 yuan = 100 fen)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from quota.types import Balance, LedgerTxn, VoucherView, org_cash, org_hold


def yuan(fen: int) -> str:
    """Exact display of fen as yuan: 123456 -> '1234.56'."""
    sign = "-" if fen < 0 else ""
    return f"{sign}{abs(fen) // 100}.{abs(fen) % 100:02d}"


class TxnOut(BaseModel):
    key: str
    kind: str = Field(description="topup, hold, charge (metering or final), release, refund, grant, revoke, expire")
    job_id: int | None
    memo: str
    amount_fen: int = Field(description="Change to the org's own money, account and holds together (negative = paid)")
    voucher_fen: int = Field(description="Change to the org's vouchers, held or not (negative = paid by vouchers)")
    at: datetime | None


class VoucherOut(BaseModel):
    id: int
    program: str
    rate: str = Field(description="Share of eligible costs the voucher pays, e.g. '0.3'")
    accelerator_types: list[str] = Field(description="Types it pays for; empty = all")
    face_fen: int
    remaining_fen: int
    held_fen: int = Field(description="Set aside for running jobs")
    valid_from: datetime
    expires_at: datetime
    revoked_at: datetime | None
    usable: bool


class BalanceOut(BaseModel):
    org: str
    balance_fen: int = Field(description="The account, not counting what is held for running jobs")
    balance_yuan: str
    held_fen: int = Field(description="Held for running jobs; settled against what they use")
    credit_limit_fen: int
    vouchers: list[VoucherOut]
    recent: list[TxnOut]


def txn_out(txn: LedgerTxn, org_id: int) -> TxnOut:
    own = {org_cash(org_id), org_hold(org_id)}
    return TxnOut(
        key=txn.key,
        kind=txn.kind,
        job_id=txn.job_id,
        memo=txn.memo,
        amount_fen=sum(e.amount_fen for e in txn.entries if e.account in own),
        voucher_fen=sum(e.amount_fen for e in txn.entries if e.account.startswith("voucher:")),
        at=txn.created_at,
    )


def voucher_out(v: VoucherView) -> VoucherOut:
    return VoucherOut(id=v.id, program=v.program, rate=str(v.rate), accelerator_types=list(v.types), face_fen=v.face_fen,
                      remaining_fen=v.remaining_fen, held_fen=v.held_fen, valid_from=v.valid_from, expires_at=v.expires_at,
                      revoked_at=v.revoked_at, usable=v.usable)


def balance_out(b: Balance) -> BalanceOut:
    return BalanceOut(org=b.org, balance_fen=b.balance_fen, balance_yuan=yuan(b.balance_fen), held_fen=b.held_fen,
                      credit_limit_fen=b.credit_limit_fen, vouchers=[voucher_out(v) for v in b.vouchers],
                      recent=[txn_out(t, b.org_id) for t in b.recent])


class TopUpIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount_fen: int = Field(gt=0, le=10**13, strict=True, description="Amount in fen (1 yuan = 100 fen), a JSON integer")
    key: str = Field(min_length=1, max_length=100, description="Idempotency key: the same key tops up once")
    memo: str = Field("", max_length=500)
