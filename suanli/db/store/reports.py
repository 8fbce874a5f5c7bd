"""Store: settled runs (`billing_runs`) with the names statements and program reports show,
and an org's money as of an instant, read from the ledger.

Invariants: read only; a run is selected by its `settled_at` in [start, end) (the caller turns
months of the billing time zone into these UTC bounds); runs come in settlement order (then
job id, run); `run_from_row` is the one way from rows to `quota.reports.Run`; balances are
folds of ledger entries (transactions created before the instant), never stored.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from quota.reports import ProgramInfo, Run
from quota.types import org_cash, org_hold
from suanli.db.models import (
    BillingRunRow,
    JobRow,
    LedgerEntryRow,
    LedgerTxnRow,
    OrgRow,
    PoolRow,
    ProgramRow,
    ProjectRow,
    UserRow,
)


def run_from_row(r: BillingRunRow, job_name: str, org: str, org_kind: str, pool: str, project: str, user: str) -> Run:
    return Run(
        job_id=r.job_id, run=r.run, job_name=job_name, org=org, org_kind=org_kind, pool=pool, project=project, user=user,
        accelerator_type=r.accelerator_type, devices_milli=r.devices_milli, started_at=r.started_at, ended_at=r.ended_at,
        duration_ms=r.duration_ms, price_fen_per_device_hour=r.price_fen_per_device_hour, cost_fen=r.cost_fen,
        cash_fen=r.cash_fen, subsidy_fen=r.subsidy_fen, settled_at=r.settled_at, center_fault=r.center_fault,
        programs={int(k): int(v) for k, v in (r.programs or {}).items()},
    )


def program_info(r: ProgramRow) -> ProgramInfo:
    return ProgramInfo(r.id, r.name, Decimal(r.rate), r.budget_fen)


def runs(s: Session, *, org_id: int | None = None, program_id: int | None = None, start: datetime | None = None,
         end: datetime | None = None) -> list[Run]:
    """Settled runs with settled_at in [start, end) (None: unbounded), of one org and/or paid
    in part by one program's vouchers."""
    stmt = (
        select(BillingRunRow, JobRow.name, OrgRow.name, OrgRow.kind, PoolRow.name, ProjectRow.name, UserRow.name)
        .join(JobRow, JobRow.id == BillingRunRow.job_id)
        .join(OrgRow, OrgRow.id == BillingRunRow.org_id)
        .join(PoolRow, PoolRow.id == OrgRow.pool_id)
        .join(ProjectRow, ProjectRow.id == BillingRunRow.project_id)
        .join(UserRow, UserRow.id == BillingRunRow.user_id)
        .order_by(BillingRunRow.settled_at, BillingRunRow.job_id, BillingRunRow.run)
    )
    if org_id is not None:
        stmt = stmt.where(BillingRunRow.org_id == org_id)
    if start is not None:
        stmt = stmt.where(BillingRunRow.settled_at >= start)
    if end is not None:
        stmt = stmt.where(BillingRunRow.settled_at < end)
    if program_id is not None:
        # JSON key lookup works on SQLite (json_extract) and PostgreSQL (->>); settlement
        # writes only positive parts, so a present key means the program paid something.
        stmt = stmt.where(BillingRunRow.programs[str(program_id)].as_integer() > 0)
    return [run_from_row(*row) for row in s.execute(stmt).all()]


def own_money_at(s: Session, org_id: int, at: datetime) -> int:
    """The org's own money — its account plus what was held for its running jobs — from the
    ledger transactions created before `at`."""
    total = s.scalar(
        select(func.coalesce(func.sum(LedgerEntryRow.amount_fen), 0))
        .join(LedgerTxnRow, LedgerTxnRow.id == LedgerEntryRow.txn_id)
        .where(LedgerEntryRow.account.in_([org_cash(org_id), org_hold(org_id)]), LedgerTxnRow.created_at < at)
    )
    return int(total or 0)
