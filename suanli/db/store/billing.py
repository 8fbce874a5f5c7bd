"""Store: programs, vouchers, the audit log, and balances read from the ledger.

Invariants: balances are always folds of ledger entries (never stored); `lock_*` take row
locks (SELECT … FOR NO KEY UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE already serializes
writers) in one global order — program, then org, then vouchers by id — so concurrent grants
and settlements cannot deadlock; functions never commit. NO KEY UPDATE, not FOR UPDATE:
foreign-key checks take FOR KEY SHARE on the row they reference, which FOR UPDATE blocks, so
a revocation holding a voucher lock and posting a transaction that references the org would
wait for a hold holding the org and waiting for that voucher — a deadlock outside the order.
A locked row is read afresh (populate_existing): an object loaded earlier in the session
would otherwise keep what it was before the lock was granted (status, revocation, limit).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from quota.types import Program, Voucher, VoucherBalance, org_cash, org_hold, program_budget, voucher_account, voucher_hold
from suanli.db.models import AuditRow, LedgerEntryRow, LedgerTxnRow, OrgRow, ProgramRow, VoucherRow


def program_from_row(r: ProgramRow) -> Program:
    return Program(
        id=r.id, name=r.name, budget_fen=r.budget_fen, rate=Decimal(r.rate), cap_per_org_year_fen=r.cap_per_org_year_fen,
        org_kinds=frozenset(r.org_kinds or ()), accelerator_types=frozenset(r.accelerator_types or ()),
        valid_from=r.valid_from, valid_until=r.valid_until,
    )


def voucher_from_row(r: VoucherRow) -> Voucher:
    return Voucher(r.id, r.program_id, r.org_id, r.face_fen, r.valid_from, r.expires_at, r.revoked_at)


def balances(s: Session, accounts: Sequence[str]) -> dict[str, int]:
    """Sum of entries per account (0 for accounts with none)."""
    if not accounts:
        return {}
    rows = s.execute(
        select(LedgerEntryRow.account, func.sum(LedgerEntryRow.amount_fen))
        .where(LedgerEntryRow.account.in_(list(accounts))).group_by(LedgerEntryRow.account)
    ).all()
    got = {a: int(v or 0) for a, v in rows}
    return {a: got.get(a, 0) for a in accounts}


def lock_program(s: Session, program_id: int) -> ProgramRow | None:
    return s.scalar(select(ProgramRow).where(ProgramRow.id == program_id).with_for_update(key_share=True)
                    .execution_options(populate_existing=True))


def lock_org(s: Session, org_id: int) -> OrgRow | None:
    return s.scalar(select(OrgRow).where(OrgRow.id == org_id).with_for_update(key_share=True)
                    .execution_options(populate_existing=True))


def lock_vouchers(s: Session, voucher_ids: Sequence[int]) -> list[VoucherRow]:
    if not voucher_ids:
        return []
    return list(s.scalars(select(VoucherRow).where(VoucherRow.id.in_(sorted(set(voucher_ids)))).order_by(VoucherRow.id)
                          .with_for_update(key_share=True).execution_options(populate_existing=True)))


def get_program(s: Session, name: str) -> ProgramRow | None:
    return s.scalar(select(ProgramRow).where(ProgramRow.name == name))


def programs(s: Session) -> list[ProgramRow]:
    return list(s.scalars(select(ProgramRow).order_by(ProgramRow.id)))


def org_vouchers(s: Session, org_id: int) -> list[VoucherRow]:
    return list(s.scalars(select(VoucherRow).where(VoucherRow.org_id == org_id).order_by(VoucherRow.expires_at, VoucherRow.id)))


def voucher_balances(s: Session, org_id: int) -> list[VoucherBalance]:
    """What each of the org's vouchers can still pay, with its program's rate and types."""
    rows = s.execute(select(VoucherRow, ProgramRow).join(ProgramRow, ProgramRow.id == VoucherRow.program_id)
                     .where(VoucherRow.org_id == org_id).order_by(VoucherRow.expires_at, VoucherRow.id)).all()
    left = balances(s, [voucher_account(v.id) for v, _ in rows])
    return [VoucherBalance(voucher_from_row(v), Decimal(p.rate), frozenset(p.accelerator_types or ()), left[voucher_account(v.id)])
            for v, p in rows]


def all_voucher_balances(s: Session) -> dict[int, list[VoucherBalance]]:
    """Voucher balances of every org (for the scheduler's snapshot), in one pass."""
    rows = s.execute(select(VoucherRow, ProgramRow).join(ProgramRow, ProgramRow.id == VoucherRow.program_id)
                     .where(VoucherRow.returned_at.is_(None)).order_by(VoucherRow.expires_at, VoucherRow.id)).all()
    left = balances(s, [voucher_account(v.id) for v, _ in rows])
    out: dict[int, list[VoucherBalance]] = {}
    for v, p in rows:
        out.setdefault(v.org_id, []).append(
            VoucherBalance(voucher_from_row(v), Decimal(p.rate), frozenset(p.accelerator_types or ()), left[voucher_account(v.id)]))
    return out


def granted_in_year(s: Session, program_id: int, org_id: int, year_start: datetime, year_end: datetime) -> int:
    """Face value granted to the org by the program in [year_start, year_end) (the yearly cap)."""
    total = s.scalar(select(func.coalesce(func.sum(VoucherRow.face_fen), 0)).where(
        VoucherRow.program_id == program_id, VoucherRow.org_id == org_id,
        VoucherRow.created_at >= year_start, VoucherRow.created_at < year_end))
    return int(total or 0)


def program_left(s: Session, program_id: int) -> int:
    return balances(s, [program_budget(program_id)])[program_budget(program_id)]


def subsidy_by_program(s: Session) -> dict[int, int]:
    """Program id -> fen its vouchers paid for settled runs: the sum of every billing run's
    `programs` part, added up by the database (each dialect's JSON table function) so a scrape
    does not ship every run to Python."""
    if s.get_bind().dialect.name == "postgresql":
        sql = "SELECT j.key, SUM(j.value::bigint) FROM billing_runs b, json_each_text(b.programs) j GROUP BY j.key"
    else:
        sql = "SELECT j.key, SUM(j.value) FROM billing_runs b, json_each(b.programs) j GROUP BY j.key"
    return {int(k): int(v) for k, v in s.execute(text(sql)).all()}


def org_money(s: Session, org_id: int) -> tuple[int, int]:
    """(account balance, held for running jobs)."""
    b = balances(s, [org_cash(org_id), org_hold(org_id)])
    return b[org_cash(org_id)], b[org_hold(org_id)]


def voucher_held(s: Session, voucher_ids: Sequence[int]) -> dict[int, int]:
    b = balances(s, [voucher_hold(v) for v in voucher_ids])
    return {v: b[voucher_hold(v)] for v in voucher_ids}


def audit(s: Session, actor: str, action: str, target: str, before: dict[str, Any] | None, after: dict[str, Any] | None,
          now: datetime) -> None:
    s.add(AuditRow(at=now, actor=actor, action=action, target=target, before=before, after=after))


def audit_rows(s: Session, limit: int = 100) -> list[AuditRow]:
    return list(s.scalars(select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)))


def txns_of_job(s: Session, job_id: int) -> list[LedgerTxnRow]:
    return list(s.scalars(select(LedgerTxnRow).where(LedgerTxnRow.job_id == job_id).order_by(LedgerTxnRow.id)))


def last_entry_id(s: Session, account: str) -> int:
    """Id of the latest ledger entry on an account (0 if none)."""
    return int(s.scalar(select(func.coalesce(func.max(LedgerEntryRow.id), 0)).where(LedgerEntryRow.account == account)) or 0)


# --- read-only views for the programs admin (`suanli.programs`) ------------------------------

_IN_CHUNK = 500  # accounts per IN (…) list: keeps statements small on both backends


def program_rows_by_id(s: Session, program_ids: Sequence[int]) -> dict[int, ProgramRow]:
    if not program_ids:
        return {}
    return {p.id: p for p in s.scalars(select(ProgramRow).where(ProgramRow.id.in_(sorted(set(program_ids)))))}


def get_voucher(s: Session, voucher_id: int) -> VoucherRow | None:
    return s.get(VoucherRow, voucher_id)


def vouchers_where(s: Session, *, org_id: int | None = None, program_id: int | None = None) -> list[VoucherRow]:
    """Vouchers (by id) of one org and/or one program; every voucher when both are None."""
    q = select(VoucherRow).order_by(VoucherRow.id)
    if org_id is not None:
        q = q.where(VoucherRow.org_id == org_id)
    if program_id is not None:
        q = q.where(VoucherRow.program_id == program_id)
    return list(s.scalars(q))


def org_names(s: Session, org_ids: Sequence[int]) -> dict[int, str]:
    if not org_ids:
        return {}
    rows = s.execute(select(OrgRow.id, OrgRow.name).where(OrgRow.id.in_(sorted(set(org_ids))))).all()
    return {org_id: name for org_id, name in rows}


def balances_by_kind(s: Session, accounts: Sequence[str]) -> dict[tuple[str, str], int]:
    """Sum of entries per (account, transaction kind), for accounts that have any: what
    moved in and out of an account by grants, holds, charges, refunds, returns…"""
    out: dict[tuple[str, str], int] = {}
    unique_accounts = sorted(set(accounts))
    for i in range(0, len(unique_accounts), _IN_CHUNK):
        chunk = unique_accounts[i:i + _IN_CHUNK]
        rows = s.execute(
            select(LedgerEntryRow.account, LedgerTxnRow.kind, func.sum(LedgerEntryRow.amount_fen))
            .join(LedgerTxnRow, LedgerTxnRow.id == LedgerEntryRow.txn_id)
            .where(LedgerEntryRow.account.in_(chunk))
            .group_by(LedgerEntryRow.account, LedgerTxnRow.kind)
        ).all()
        for account, kind, total in rows:
            out[(account, kind)] = int(total or 0)
    return out


def balances_many(s: Session, accounts: Sequence[str]) -> dict[str, int]:
    """`balances` for any number of accounts (chunked IN lists)."""
    out: dict[str, int] = {}
    unique_accounts = sorted(set(accounts))
    for i in range(0, len(unique_accounts), _IN_CHUNK):
        out.update(balances(s, unique_accounts[i:i + _IN_CHUNK]))
    return out
