"""Statement and program-report views. Money is integer fen with an exact yuan string beside
it; device-hours are strings with 4 decimals (rounded half-up per run; totals add the runs);
times are ISO 8601 in the billing time zone.

Invariants: `statement_out` and `report_out` are the only ways from `quota.reports` to these
views; the CSV renderings (`quota.reports.statement_csv`, `report_csv`) carry the same values.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Literal

from pydantic import BaseModel, Field

from quota.reports import GroupTotal, ProgramReport, ReportRow, Run, Statement, Totals, devices_text, hours_text, yuan, zone

Format = Literal["json", "csv"]
MONTH_RULE = ("A run belongs to the calendar month of its settlement time (settled_at) in the billing time zone "
              "(setting billing_timezone, default Asia/Shanghai): a run settled at 2026-05-31T17:00Z is June's. "
              "Device-hours = devices × hours, rounded half-up to 4 decimals per run; totals add the runs. "
              "Money is integer fen (1 yuan = 100 fen) with exact yuan strings.")


class LineOut(BaseModel):
    job_id: int
    run: int = Field(description="Run number of the job (a requeued job runs again: 0, 1, …)")
    job_name: str
    project: str
    user: str
    accelerator_type: str
    devices: str = Field(description="Devices (fractions for shared devices), e.g. '2' or '0.5'")
    started_at: datetime | None
    ended_at: datetime
    settled_at: datetime = Field(description="Decides the month the run belongs to")
    device_hours: str = Field(description="e.g. '1.5000'")
    price_fen_per_device_hour: int
    price_yuan_per_device_hour: str
    cost_fen: int
    cost_yuan: str
    subsidy_fen: int = Field(description="Paid by vouchers")
    subsidy_yuan: str
    paid_fen: int = Field(description="Paid from the org's account")
    paid_yuan: str
    center_fault: bool = Field(description="Lost through the center's fault: not charged")


class TotalsOut(BaseModel):
    runs: int
    jobs: int
    device_hours: str
    cost_fen: int
    cost_yuan: str
    subsidy_fen: int
    subsidy_yuan: str
    paid_fen: int = Field(description="Paid from the orgs' accounts")
    paid_yuan: str


class StatementOut(BaseModel):
    org: str
    month: str = Field(description="YYYY-MM")
    time_zone: str
    period_start: datetime = Field(description="First instant of the month in the time zone")
    period_end: datetime = Field(description="First instant after the month (exclusive)")
    lines: list[LineOut]
    totals: TotalsOut
    opening_balance_fen: int | None = Field(description="The org's own money (account + held for running jobs) at period_start")
    opening_balance_yuan: str | None
    closing_balance_fen: int | None = Field(description="The same at period_end")
    closing_balance_yuan: str | None


def _t(at: datetime | None, tz: tzinfo) -> datetime | None:
    return None if at is None else at.astimezone(tz)


def _yuan(fen: int | None) -> str | None:
    return None if fen is None else yuan(fen)


def line_out(r: Run, tz: tzinfo) -> LineOut:
    return LineOut(
        job_id=r.job_id, run=r.run, job_name=r.job_name, project=r.project, user=r.user, accelerator_type=r.accelerator_type,
        devices=devices_text(r.devices_milli), started_at=_t(r.started_at, tz), ended_at=r.ended_at.astimezone(tz),
        settled_at=r.settled_at.astimezone(tz), device_hours=hours_text(r.device_hours),
        price_fen_per_device_hour=r.price_fen_per_device_hour, price_yuan_per_device_hour=yuan(r.price_fen_per_device_hour),
        cost_fen=r.cost_fen, cost_yuan=yuan(r.cost_fen), subsidy_fen=r.subsidy_fen, subsidy_yuan=yuan(r.subsidy_fen),
        paid_fen=r.cash_fen, paid_yuan=yuan(r.cash_fen), center_fault=r.center_fault,
    )


def totals_out(t: Totals) -> TotalsOut:
    return TotalsOut(runs=t.runs, jobs=t.jobs, device_hours=hours_text(t.device_hours), cost_fen=t.cost_fen,
                     cost_yuan=yuan(t.cost_fen), subsidy_fen=t.subsidy_fen, subsidy_yuan=yuan(t.subsidy_fen),
                     paid_fen=t.paid_fen, paid_yuan=yuan(t.paid_fen))


def statement_out(st: Statement) -> StatementOut:
    tz = zone(st.time_zone)
    return StatementOut(
        org=st.org, month=str(st.month), time_zone=st.time_zone, period_start=st.period_start.astimezone(tz),
        period_end=st.period_end.astimezone(tz), lines=[line_out(r, tz) for r in st.lines], totals=totals_out(st.totals),
        opening_balance_fen=st.opening_balance_fen, opening_balance_yuan=_yuan(st.opening_balance_fen),
        closing_balance_fen=st.closing_balance_fen, closing_balance_yuan=_yuan(st.closing_balance_fen),
    )


class ProgramOut(BaseModel):
    name: str
    rate: str = Field(description="Share of eligible costs its vouchers pay, e.g. '0.3'")
    budget_fen: int
    budget_yuan: str


class ReportRowOut(BaseModel):
    org: str
    org_kind: str
    pool: str
    month: str
    totals: TotalsOut = Field(description="Runs the program paid a part of; subsidy_fen: what THIS program's vouchers paid")


class GroupOut(BaseModel):
    key: str = Field(description="The org kind or the pool")
    orgs: int
    totals: TotalsOut


class ProgramReportOut(BaseModel):
    program: ProgramOut
    time_zone: str
    from_month: str | None = Field(description="First month counted (null: from the beginning)")
    to_month: str | None = Field(description="Last month counted, inclusive (null: to now)")
    rows: list[ReportRowOut] = Field(description="Per org per month, by month then org")
    by_org_kind: list[GroupOut]
    by_pool: list[GroupOut]
    total: TotalsOut


def _row_out(r: ReportRow) -> ReportRowOut:
    return ReportRowOut(org=r.org, org_kind=r.org_kind, pool=r.pool, month=str(r.month), totals=totals_out(r.totals))


def _group_out(g: GroupTotal) -> GroupOut:
    return GroupOut(key=g.key, orgs=g.orgs, totals=totals_out(g.totals))


def report_out(rp: ProgramReport) -> ProgramReportOut:
    p = rp.program
    return ProgramReportOut(
        program=ProgramOut(name=p.name, rate=f"{p.rate.normalize():f}", budget_fen=p.budget_fen, budget_yuan=yuan(p.budget_fen)),
        time_zone=rp.time_zone, from_month=str(rp.first) if rp.first else None, to_month=str(rp.last) if rp.last else None,
        rows=[_row_out(r) for r in rp.rows], by_org_kind=[_group_out(g) for g in rp.by_org_kind],
        by_pool=[_group_out(g) for g in rp.by_pool], total=totals_out(rp.total),
    )
