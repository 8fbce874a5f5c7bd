"""Statements per org and month, and program reports for the funder: pure aggregation and CSV
rendering of settled runs (`Run`, one per `billing_runs` row). No database, no clock.

Rules (the API and the CLI state the same):
- **Month of a run**: the calendar month of its `settled_at` in the billing time zone (setting
  `billing_timezone`, default Asia/Shanghai). A run settled at 2026-05-31T17:00Z — 01:00 on
  1 June in Shanghai — belongs to June. Months are `YYYY-MM`, years 1970–9998.
- **Device-hours** of a run = devices_milli × duration_ms / (1000 × 3,600,000), rounded
  half-up to 4 decimals, computed with integers (exact, no float, no Decimal context). Totals
  add the rounded lines, so every column of a statement or CSV sums exactly to its total.
- **Money** is integer fen; yuan are exact strings (fen / 100 with two decimals). Per run,
  cost = subsidy (vouchers) + paid (the org's account), as settlement recorded it; a run lost
  through the center's fault (`center_fault`) costs 0 and counts 0 device-hours.
- **A program's subsidy** of a run is what that program's vouchers paid (`Run.programs`), not
  the run's total subsidy: one run may be paid by vouchers of two programs. A program report
  counts only the runs its vouchers paid a part of.
- **CSV**: UTF-8, a header row, quoting by the `csv` module, times ISO 8601 in the billing
  time zone with their offset. Text cells that start with = + - @ get a leading `'` so that a
  spreadsheet never runs them as formulas (names of orgs, projects, users and jobs cannot
  start so; program names can).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from zoneinfo import ZoneInfo

MS_PER_HOUR = 3_600_000
HOURS_PLACES = 4
_MONTH = re.compile(r"(\d{4})-(\d{2})")
FIRST_YEAR, LAST_YEAR = 1970, 9998


# ---------------------------------------------------------------------------- units


def device_hours(devices_milli: int, duration_ms: int) -> Decimal:
    """devices_milli × duration_ms / (1000 × 3,600,000) rounded half-up to 4 decimals."""
    if devices_milli < 0 or duration_ms < 0:
        raise ValueError("devices and durations are non-negative")
    scale = 1000 * MS_PER_HOUR // 10**HOURS_PLACES  # 360,000: the exact value × 10^4 is num / scale
    num = devices_milli * duration_ms
    return Decimal((2 * num + scale) // (2 * scale)).scaleb(-HOURS_PLACES)


def hours_text(h: Decimal) -> str:
    """Device-hours with exactly 4 decimals ('1.5000')."""
    return f"{h.quantize(Decimal(1).scaleb(-HOURS_PLACES)):f}"


def yuan(fen: int) -> str:
    """Exact yuan of an amount in fen: 123456 → '1234.56', -5 → '-0.05'."""
    sign = "-" if fen < 0 else ""
    return f"{sign}{abs(fen) // 100}.{abs(fen) % 100:02d}"


def devices_text(devices_milli: int) -> str:
    """Devices from thousandths, without trailing zeros: 2000 → '2', 500 → '0.5'."""
    d = Decimal(devices_milli).scaleb(-3).normalize()
    return f"{d:f}"


# ---------------------------------------------------------------------------- months


@dataclass(frozen=True, order=True)
class Month:
    """A calendar month; its bounds depend on the time zone it is read in."""

    year: int
    month: int

    def __post_init__(self) -> None:
        if not (FIRST_YEAR <= self.year <= LAST_YEAR and 1 <= self.month <= 12):
            raise ValueError(f"no month {self.year:04d}-{self.month:02d} (years {FIRST_YEAR}–{LAST_YEAR}, months 01–12)")

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    def start(self, tz: tzinfo) -> datetime:
        """The first instant of the month in `tz`, as UTC."""
        return datetime(self.year, self.month, 1, tzinfo=tz).astimezone(UTC)

    def end(self, tz: tzinfo) -> datetime:
        """The first instant after the month in `tz`, as UTC (exclusive bound)."""
        nxt = (self.year + (self.month == 12), self.month % 12 + 1)
        return datetime(nxt[0], nxt[1], 1, tzinfo=tz).astimezone(UTC)


def parse_month(text: str) -> Month:
    """`YYYY-MM` → Month; ValueError with a message for anything else ("2026-13", "abc")."""
    m = _MONTH.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"{text!r} is not a month; write YYYY-MM, e.g. 2026-06")
    return Month(int(m.group(1)), int(m.group(2)))


def month_of(at: datetime, tz: tzinfo) -> Month:
    """The month `at` falls in, read in `tz` (a run's month is that of its settled_at)."""
    if at.tzinfo is None:
        raise ValueError("a naive datetime has no month in a time zone")
    local = at.astimezone(tz)
    return Month(local.year, local.month)


def zone(name: str) -> ZoneInfo:
    """The billing time zone by IANA name (ValueError if unknown)."""
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError) as e:  # ZoneInfoNotFoundError is a KeyError
        raise ValueError(f"unknown time zone {name!r}") from e


# ---------------------------------------------------------------------------- runs and totals


@dataclass(frozen=True)
class Run:
    """One settled run of a job with the names a reader needs (a `billing_runs` row joined
    with its job, org, pool, project and user). `programs`: program id → fen its vouchers paid."""

    job_id: int
    run: int
    job_name: str
    org: str
    org_kind: str
    pool: str
    project: str
    user: str
    accelerator_type: str
    devices_milli: int
    started_at: datetime | None
    ended_at: datetime
    duration_ms: int
    price_fen_per_device_hour: int
    cost_fen: int
    cash_fen: int
    subsidy_fen: int
    settled_at: datetime
    center_fault: bool = False
    programs: Mapping[int, int] = field(default_factory=dict)

    @property
    def device_hours(self) -> Decimal:
        return device_hours(self.devices_milli, self.duration_ms)

    def program_fen(self, program_id: int) -> int:
        """What the vouchers of one program paid for this run (0 if none)."""
        return int(self.programs.get(program_id, 0))


@dataclass(frozen=True)
class Totals:
    """Sums over runs. `subsidy_fen` is what vouchers paid (in a program report: that
    program's vouchers only); `paid_fen` what the orgs paid from their accounts."""

    runs: int = 0
    jobs: int = 0
    device_hours: Decimal = Decimal(0).scaleb(-HOURS_PLACES)
    cost_fen: int = 0
    subsidy_fen: int = 0
    paid_fen: int = 0


def totals(runs: Iterable[Run], subsidy: Callable[[Run], int] | None = None) -> Totals:
    """Sum of the runs' lines (device-hours as rounded per line); `subsidy` picks the subsidy
    counted for a run (default: all its vouchers paid)."""
    pick = subsidy or (lambda r: r.subsidy_fen)
    runs = list(runs)
    return Totals(
        runs=len(runs),
        jobs=len({r.job_id for r in runs}),
        device_hours=sum((r.device_hours for r in runs), Decimal(0).scaleb(-HOURS_PLACES)),
        cost_fen=sum(r.cost_fen for r in runs),
        subsidy_fen=sum(pick(r) for r in runs),
        paid_fen=sum(r.cash_fen for r in runs),
    )


def _order(runs: Iterable[Run]) -> list[Run]:
    return sorted(runs, key=lambda r: (r.settled_at, r.job_id, r.run))


# ---------------------------------------------------------------------------- statements


@dataclass(frozen=True)
class Statement:
    """An org's runs settled in one month, in order of settlement, with totals. The opening
    and closing balances (the org's own money — account plus what was held for running jobs —
    at the month's start and end) are filled in by the caller when known."""

    org: str
    month: Month
    time_zone: str
    period_start: datetime
    period_end: datetime
    lines: tuple[Run, ...]
    totals: Totals
    opening_balance_fen: int | None = None
    closing_balance_fen: int | None = None


def statement(org: str, month: Month, time_zone: str, runs: Iterable[Run], opening_balance_fen: int | None = None,
              closing_balance_fen: int | None = None) -> Statement:
    """The statement of `org` for `month`; ValueError if a run belongs to another org or month."""
    tz = zone(time_zone)
    lines = _order(runs)
    for r in lines:
        if r.org != org or month_of(r.settled_at, tz) != month:
            raise ValueError(f"run {r.job_id}/{r.run} ({r.org}, settled {r.settled_at}) is not in {org}'s {month}")
    return Statement(org, month, time_zone, month.start(tz), month.end(tz), tuple(lines), totals(lines),
                     opening_balance_fen, closing_balance_fen)


# ---------------------------------------------------------------------------- program reports


@dataclass(frozen=True)
class ProgramInfo:
    id: int
    name: str
    rate: Decimal
    budget_fen: int


@dataclass(frozen=True)
class ReportRow:
    """One org in one month: the runs the program's vouchers paid a part of."""

    org: str
    org_kind: str
    pool: str
    month: Month
    totals: Totals


@dataclass(frozen=True)
class GroupTotal:
    """Totals over an org kind or a pool; `orgs`: how many distinct orgs."""

    key: str
    orgs: int
    totals: Totals


@dataclass(frozen=True)
class ProgramReport:
    """What one program paid for, per org per month, with totals by org kind, by pool and
    overall; `evidence` is every run it paid a part of (the 核销 evidence), in settlement order.
    `first`/`last`: the months asked for (None: unbounded)."""

    program: ProgramInfo
    time_zone: str
    first: Month | None
    last: Month | None
    rows: tuple[ReportRow, ...]
    by_org_kind: tuple[GroupTotal, ...]
    by_pool: tuple[GroupTotal, ...]
    total: Totals
    evidence: tuple[Run, ...]


def _groups(runs: Sequence[Run], key: Callable[[Run], str], subsidy: Callable[[Run], int]) -> tuple[GroupTotal, ...]:
    by: dict[str, list[Run]] = {}
    for r in runs:
        by.setdefault(key(r), []).append(r)
    return tuple(GroupTotal(k, len({r.org for r in rs}), totals(rs, subsidy)) for k, rs in sorted(by.items()))


def program_report(program: ProgramInfo, time_zone: str, runs: Iterable[Run], first: Month | None = None,
                   last: Month | None = None) -> ProgramReport:
    """Aggregate the runs the program paid a part of, settled in months [first, last]
    (inclusive; None: unbounded). Runs the program paid nothing for, or outside the months,
    are left out."""
    tz = zone(time_zone)

    def mine(r: Run) -> int:
        return r.program_fen(program.id)

    def wanted(r: Run) -> bool:
        m = month_of(r.settled_at, tz)
        return mine(r) > 0 and (first is None or m >= first) and (last is None or m <= last)

    evidence = _order(r for r in runs if wanted(r))
    cells: dict[tuple[str, Month], list[Run]] = {}
    for r in evidence:
        cells.setdefault((r.org, month_of(r.settled_at, tz)), []).append(r)
    rows = tuple(ReportRow(org, rs[0].org_kind, rs[0].pool, m, totals(rs, mine))
                 for (org, m), rs in sorted(cells.items(), key=lambda kv: (kv[0][1], kv[0][0])))
    return ProgramReport(program, time_zone, first, last, rows, _groups(evidence, lambda r: r.org_kind, mine),
                         _groups(evidence, lambda r: r.pool, mine), totals(evidence, mine), tuple(evidence))


# ---------------------------------------------------------------------------- CSV

STATEMENT_COLUMNS = (
    "org", "month", "job_id", "run", "job_name", "project", "user", "accelerator_type", "devices", "started_at", "ended_at",
    "settled_at", "device_hours", "price_fen_per_device_hour", "price_yuan_per_device_hour", "cost_fen", "cost_yuan",
    "subsidy_fen", "subsidy_yuan", "paid_fen", "paid_yuan", "center_fault",
)
TOTAL_MARK = "TOTAL"  # the statement CSV's last row has this in `job_id`

REPORT_COLUMNS = (
    "program", "org", "org_kind", "pool", "month", "job_id", "run", "job_name", "project", "user", "accelerator_type",
    "devices", "started_at", "ended_at", "settled_at", "device_hours", "price_fen_per_device_hour", "cost_fen", "cost_yuan",
    "subsidy_fen", "subsidy_yuan", "time_zone",
)


def _text(value: str) -> str:
    """A text cell a spreadsheet will not evaluate (see the module docstring)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@") else value


def _time(at: datetime | None, tz: tzinfo) -> str:
    return "" if at is None else at.astimezone(tz).isoformat()


def _render(columns: Sequence[str], rows: Iterable[Mapping[str, object]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\r\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: "" if v is None else v for k, v in row.items()})
    return buf.getvalue()


def _money(prefix: str, fen: int) -> dict[str, object]:
    return {f"{prefix}_fen": fen, f"{prefix}_yuan": yuan(fen)}


def statement_csv(st: Statement) -> str:
    """One row per run (`STATEMENT_COLUMNS`), then a totals row (`job_id` = TOTAL, `run` =
    the number of runs, `job_name` = the number of jobs)."""
    tz = zone(st.time_zone)
    org, month = _text(st.org), str(st.month)

    def line(r: Run) -> dict[str, object]:
        return {
            "org": org, "month": month, "job_id": r.job_id, "run": r.run, "job_name": _text(r.job_name),
            "project": _text(r.project), "user": _text(r.user), "accelerator_type": r.accelerator_type,
            "devices": devices_text(r.devices_milli), "started_at": _time(r.started_at, tz), "ended_at": _time(r.ended_at, tz),
            "settled_at": _time(r.settled_at, tz), "device_hours": hours_text(r.device_hours),
            "price_fen_per_device_hour": r.price_fen_per_device_hour, "price_yuan_per_device_hour": yuan(r.price_fen_per_device_hour),
            **_money("cost", r.cost_fen), **_money("subsidy", r.subsidy_fen), **_money("paid", r.cash_fen),
            "center_fault": "true" if r.center_fault else "false",
        }

    t = st.totals
    total = {"org": org, "month": month, "job_id": TOTAL_MARK, "run": t.runs, "job_name": t.jobs,
             "device_hours": hours_text(t.device_hours), **_money("cost", t.cost_fen), **_money("subsidy", t.subsidy_fen),
             **_money("paid", t.paid_fen)}
    return _render(STATEMENT_COLUMNS, [*(line(r) for r in st.lines), total])


def report_csv(rep: ProgramReport) -> str:
    """The job-level evidence of a program: one row per run it paid a part of
    (`REPORT_COLUMNS`); `subsidy_*` is what this program's vouchers paid for the run."""
    tz = zone(rep.time_zone)
    name = _text(rep.program.name)
    return _render(REPORT_COLUMNS, ({
        "program": name, "org": _text(r.org), "org_kind": r.org_kind, "pool": _text(r.pool),
        "month": str(month_of(r.settled_at, tz)), "job_id": r.job_id, "run": r.run, "job_name": _text(r.job_name),
        "project": _text(r.project), "user": _text(r.user), "accelerator_type": r.accelerator_type,
        "devices": devices_text(r.devices_milli), "started_at": _time(r.started_at, tz), "ended_at": _time(r.ended_at, tz),
        "settled_at": _time(r.settled_at, tz), "device_hours": hours_text(r.device_hours),
        "price_fen_per_device_hour": r.price_fen_per_device_hour, **_money("cost", r.cost_fen),
        **_money("subsidy", r.program_fen(rep.program.id)), "time_zone": rep.time_zone,
    } for r in rep.evidence))
