"""Routes for statements per org and month, and program reports for the funder (JSON, or CSV
with `?format=csv`).

Invariants: thin — parse, call `suanli.reports`, render with `api.schemas.reports` (JSON) or
`quota.reports` (CSV); read only. The /v1/admin route takes the center-admin dependency, so
anyone else gets 403 before any query parameter is looked at.
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Response

from api.auth import require
from api.deps import DbDep, PrincipalDep, SettingsDep
from api.schemas.reports import MONTH_RULE, Format, ProgramReportOut, StatementOut, report_out, statement_out
from quota.reports import report_csv, statement_csv
from suanli import reports as service
from suanli.identity import Principal, Role


def center_admin(who: PrincipalDep) -> Principal:
    return require(who, Role.CENTER_ADMIN)


AdminDep = Annotated[Principal, Depends(center_admin)]
FormatQuery = Annotated[Format, Query(description="json (default) or csv (text/csv; charset=utf-8)")]
CSV_DOC = {200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "JSON, or CSV with ?format=csv"}}
MonthQuery = Annotated[str | None, Query(description="YYYY-MM", examples=["2026-06"])]

router = APIRouter(prefix="/v1", tags=["reports"])


def csv_response(text: str, filename: str) -> Response:
    # An ASCII name for old clients, the exact (UTF-8) one for the others (RFC 6266).
    ascii_name = re.sub(r"[^A-Za-z0-9._-]", "_", filename)
    disposition = f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"
    return Response(text.encode("utf-8"), media_type="text/csv; charset=utf-8", headers={"Content-Disposition": disposition})


@router.get("/orgs/{org}/statements/{month}", response_model=StatementOut, responses=CSV_DOC,  # type: ignore[arg-type]
            description="The org's settled runs of one month, with totals and the org's own money at the month's start "
                        "and end. Members and org admins of the org, and center admins; others get 404. CSV: one row per "
                        "run, then a TOTAL row. " + MONTH_RULE)
def get_statement(org: str, month: str, who: PrincipalDep, db: DbDep, settings: SettingsDep,
                  format: FormatQuery = "json") -> StatementOut | Response:
    """Monthly statement of an org."""
    st = service.statement(db, who, settings.billing_timezone, org, month)
    if format == "csv":
        return csv_response(statement_csv(st), f"statement-{st.org}-{st.month}.csv")
    return statement_out(st)


@router.get("/admin/programs/{name}/report", response_model=ProgramReportOut, responses=CSV_DOC,  # type: ignore[arg-type]
            description="What a program's vouchers paid, per org per month, with totals by org kind, by pool and overall "
                        "(center admins). Choose `month`, or `from`/`to` (inclusive, either may be open); none: every "
                        "month. CSV: the job-level evidence (核销), one row per run the program paid a part of. " + MONTH_RULE)
def get_program_report(
    name: str,
    who: AdminDep,
    db: DbDep,
    settings: SettingsDep,
    month: MonthQuery = None,
    from_: Annotated[str | None, Query(alias="from", description="First month, YYYY-MM")] = None,
    to: Annotated[str | None, Query(description="Last month, inclusive, YYYY-MM")] = None,
    format: FormatQuery = "json",
) -> ProgramReportOut | Response:
    """Program report for the funder."""
    rp = service.program_report(db, who, settings.billing_timezone, name, month, from_, to)
    if format == "csv":
        span = str(rp.first or "start") + ("" if rp.first == rp.last and rp.first else f"-{rp.last or 'now'}")
        return csv_response(report_csv(rp), f"program-{rp.program.name}-{span}.csv")
    return report_out(rp)
