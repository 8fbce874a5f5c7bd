"""Reports service: monthly statements per org and program reports for the funder.

Invariants:
- Read only: each call is one read transaction and writes nothing.
- Months are `YYYY-MM` calendar months in the billing time zone (`Settings.billing_timezone`,
  default Asia/Shanghai); a run belongs to the month of its `settled_at` there (a run settled
  at 2026-05-31T17:00Z is June's). A malformed month is 422 `bad_month` naming the field.
- Statements: members and org admins see their own org's, center admins any org's; anyone
  else is told the org does not exist (404 `org_not_found`), as on other org-scoped routes.
- Program reports: center admins only (403 `forbidden`, checked before anything else is
  read); an unknown program is 404 `program_not_found`.
- The arithmetic (device-hours, totals, per-program attribution) is `quota.reports`.
"""

from __future__ import annotations

from quota import reports as rep
from quota.reports import Month, ProgramReport, Statement
from suanli.db.engine import Database
from suanli.db.store import billing as billing_store
from suanli.db.store import reports as store
from suanli.db.store import tenancy
from suanli.errors import forbidden, invalid, not_found
from suanli.identity import Principal, Role


def month(text: str, field: str = "month") -> Month:
    """Parse a `YYYY-MM` month, or raise 422 `bad_month` naming `field`."""
    try:
        return rep.parse_month(text)
    except ValueError as e:
        raise invalid("bad_month", str(e), field) from None


def statement(db: Database, who: Principal, time_zone: str, org: str, month_text: str) -> Statement:
    """The org's runs settled in the month (billing time zone), with totals and the org's own
    money (account + held) at the month's start and end."""
    m = month(month_text)
    tz = rep.zone(time_zone)
    start, end = m.start(tz), m.end(tz)
    with db.begin() as s:
        row = tenancy.get_org(s, org)
        if row is None or not who.can_see_org(row.id):
            raise not_found("org", org)
        runs = store.runs(s, org_id=row.id, start=start, end=end)
        opening, closing = store.own_money_at(s, row.id, start), store.own_money_at(s, row.id, end)
        return rep.statement(row.name, m, time_zone, runs, opening, closing)


def program_report(db: Database, who: Principal, time_zone: str, program: str, month_text: str | None = None,
                   from_text: str | None = None, to_text: str | None = None) -> ProgramReport:
    """What the program's vouchers paid, per org and month, for `month`, or the months
    `from`..`to` (inclusive, either may be left open), or every month when none is given."""
    if who.role is not Role.CENTER_ADMIN:
        raise forbidden(f"program reports are for {Role.CENTER_ADMIN.value}s; you are {who.role.value}")
    if month_text is not None and (from_text is not None or to_text is not None):
        raise invalid("bad_month", "give either month, or from and/or to, not both", "month")
    if month_text is not None:
        first = last = month(month_text)
    else:
        first = month(from_text, "from") if from_text is not None else None
        last = month(to_text, "to") if to_text is not None else None
    if first is not None and last is not None and last < first:
        raise invalid("bad_month", f"to ({last}) is before from ({first})", "to")
    tz = rep.zone(time_zone)
    with db.begin() as s:
        row = billing_store.get_program(s, program)
        if row is None:
            raise not_found("program", program)
        info = store.program_info(row)
        runs = store.runs(s, program_id=row.id, start=first.start(tz) if first else None, end=last.end(tz) if last else None)
        return rep.program_report(info, time_zone, runs, first, last)
