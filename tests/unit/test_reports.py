"""Statements and program reports (`quota.reports`): exact arithmetic and CSV.

Rules under test (module docstring of `quota.reports`): a run belongs to the month of its
settled_at in the billing time zone; device-hours = devices_milli × ms / 3.6e9 rounded half-up
to 4 decimals per run, and totals add the rounded lines; a program's subsidy of a run is its
own vouchers' part, not the run's whole subsidy; the CSV carries the same values as the data.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quota.reports import (
    REPORT_COLUMNS,
    STATEMENT_COLUMNS,
    TOTAL_MARK,
    Month,
    ProgramInfo,
    Run,
    device_hours,
    month_of,
    parse_month,
    program_report,
    report_csv,
    statement,
    statement_csv,
    yuan,
)

SH = "Asia/Shanghai"
T0 = datetime(2026, 6, 10, 4, tzinfo=UTC)
JUNE = Month(2026, 6)
P1 = ProgramInfo(1, "2026 算力券 第一批", Decimal("0.3"), 10_000_000)
P2 = ProgramInfo(2, "second", Decimal("0.2"), 5_000_000)


def run(job_id: int, *, run_no: int = 0, org: str = "uni", kind: str = "university", pool: str = "universities",
        milli: int = 1000, ms: int = 3_600_000, price: int = 1200, cost: int | None = None, programs: dict[int, int] | None = None,
        settled: datetime = T0, center_fault: bool = False) -> Run:
    """A settled run; cost defaults to devices × hours × price (half-up), paid by `programs` then cash."""
    programs = programs or {}
    if cost is None:
        cost = (2 * milli * ms * price + 1000 * 3_600_000) // (2 * 1000 * 3_600_000)
    subsidy = sum(programs.values())
    return Run(job_id=job_id, run=run_no, job_name=f"job-{job_id}", org=org, org_kind=kind, pool=pool, project="default",
               user=f"{org}-user", accelerator_type="nvidia-a100-80g", devices_milli=milli, started_at=settled - timedelta(milliseconds=ms),
               ended_at=settled, duration_ms=ms, price_fen_per_device_hour=price, cost_fen=cost, cash_fen=cost - subsidy,
               subsidy_fen=subsidy, settled_at=settled, center_fault=center_fault, programs=programs)


# --- device-hours ---------------------------------------------------------------------------


@pytest.mark.parametrize(("milli", "ms", "want"), [
    (1000, 3_600_000, "1.0000"),           # one device, one hour
    (8000, 1_800_000, "4.0000"),           # eight devices, half an hour
    (500, 5_400_000, "0.7500"),            # half a device, 1.5 h
    (1000, 180, "0.0001"),                 # 0.00005 h: exactly half → up
    (1000, 179, "0.0000"),                 # 0.0000497… h → down
    (3000, 1_234_567, "1.0288"),           # 1.028805833… h
    (250, 1, "0.0000"),
    (0, 3_600_000, "0.0000"),
    (1000, 0, "0.0000"),                   # a center-fault run records 0 ms
])
def test_device_hours_are_rounded_half_up_to_four_decimals(milli: int, ms: int, want: str) -> None:
    """Invariant: device-hours = devices_milli × ms / 3.6e9, half-up to 4 decimals, exactly."""
    got = device_hours(milli, ms)
    assert str(got) == want and got == Decimal(want)


@given(st.integers(0, 10**7), st.integers(0, 10**11))
def test_device_hours_match_a_high_precision_reference(milli: int, ms: int) -> None:
    """Invariant: the integer computation equals the exact quotient rounded half-up (the quotient
    is never within 1e-30 of a rounding boundary unless it is on it, so 60 digits decide it)."""
    with localcontext() as ctx:
        ctx.prec = 60
        ref = (Decimal(milli) * ms / Decimal(3_600_000_000)).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)
    assert device_hours(milli, ms) == ref


def test_yuan_is_exact() -> None:
    """Invariant: yuan strings are fen / 100 with two decimals, no float."""
    assert [yuan(f) for f in (0, 5, 100, 123456, -5, -123456, 10**15 + 1)] == \
        ["0.00", "0.05", "1.00", "1234.56", "-0.05", "-1234.56", "10000000000000.01"]


# --- months ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["2026-13", "2026-00", "abc", "2026-6", "26-06", "2026-06-01", " 2026-06", "1969-12", "9999-12", ""])
def test_bad_months_are_refused(text: str) -> None:
    """Invariant: only YYYY-MM with a real month (years 1970–9998) parses."""
    with pytest.raises(ValueError):
        parse_month(text)


def test_month_parsing_and_bounds_in_shanghai() -> None:
    """Invariants: '2026-06' is June 2026; in Shanghai (UTC+8) it runs from 2026-05-31T16:00Z to
    2026-06-30T16:00Z; December's end is the next year's start."""
    tz = ZoneInfo(SH)
    assert parse_month("2026-06") == JUNE and str(JUNE) == "2026-06"
    assert JUNE.start(tz) == datetime(2026, 5, 31, 16, tzinfo=UTC)
    assert JUNE.end(tz) == datetime(2026, 6, 30, 16, tzinfo=UTC)
    assert Month(2026, 12).end(tz) == Month(2027, 1).start(tz) == datetime(2026, 12, 31, 16, tzinfo=UTC)
    assert Month(2026, 5) < JUNE < Month(2027, 1)


def test_a_run_settled_late_on_31_may_utc_is_junes_in_shanghai() -> None:
    """Invariant: the month of a run is that of its settled_at in the billing time zone:
    2026-05-31T17:00Z is 01:00 on 1 June in Shanghai (June), but May in UTC; 15:59:59Z is
    still May in Shanghai. A statement refuses a run of another month."""
    late, early = datetime(2026, 5, 31, 17, tzinfo=UTC), datetime(2026, 5, 31, 15, 59, 59, tzinfo=UTC)
    assert month_of(late, ZoneInfo(SH)) == JUNE
    assert month_of(late, ZoneInfo("UTC")) == Month(2026, 5)
    assert month_of(early, ZoneInfo(SH)) == Month(2026, 5)
    st_june = statement("uni", JUNE, SH, [run(1, settled=late)])
    assert [r.job_id for r in st_june.lines] == [1]
    with pytest.raises(ValueError):
        statement("uni", Month(2026, 5), SH, [run(1, settled=late)])
    with pytest.raises(ValueError):
        statement("uni", JUNE, "UTC", [run(1, settled=late)])
    rp = program_report(P1, SH, [run(1, settled=late, programs={1: 100}), run(2, settled=early, programs={1: 50})])
    assert [(r.month, r.totals.subsidy_fen) for r in rp.rows] == [(Month(2026, 5), 50), (JUNE, 100)]


# --- statements -----------------------------------------------------------------------------


def test_statement_totals_are_the_sums_of_its_lines() -> None:
    """Invariants: totals add the lines — device-hours as rounded per line (three runs of
    0.00005 h each show 0.0001 and total 0.0003, not the 0.0002 the exact sum would round
    to), cost, subsidy, paid; runs and distinct jobs are counted; per line cost = subsidy +
    paid; lines come in settlement order; a center-fault run adds 0."""
    runs = [
        run(3, settled=T0 + timedelta(hours=2), milli=2000, ms=5_400_000, programs={1: 1080}),
        run(1, settled=T0, ms=3_601_234, programs={1: 200, 2: 50}),
        run(1, run_no=1, settled=T0 + timedelta(hours=1), ms=1_234_567, price=3000),
        *(run(10 + i, settled=T0 + timedelta(minutes=i), milli=1000, ms=180, cost=0) for i in range(3)),
        run(20, settled=T0 + timedelta(hours=3), ms=0, cost=0, center_fault=True),
    ]
    st_ = statement("uni", JUNE, SH, runs)
    lines = st_.lines
    assert [(r.job_id, r.run) for r in lines] == [(1, 0), (10, 0), (11, 0), (12, 0), (1, 1), (3, 0), (20, 0)]
    t = st_.totals
    assert t.runs == 7 and t.jobs == 6
    assert t.device_hours == sum(r.device_hours for r in lines) == Decimal("1.0003") + Decimal("0.0003") + Decimal("0.3429") \
        + Decimal("3.0000")
    assert t.cost_fen == sum(r.cost_fen for r in lines) == 1200 + 1029 + 3600
    assert t.subsidy_fen == 1330 and t.paid_fen == t.cost_fen - t.subsidy_fen
    assert all(r.cost_fen == r.subsidy_fen + r.cash_fen for r in lines)
    assert st_.period_start == datetime(2026, 5, 31, 16, tzinfo=UTC)
    with pytest.raises(ValueError):
        statement("other-org", JUNE, SH, runs)


def test_statement_csv_round_trips_through_the_csv_module() -> None:
    """Invariants: the statement CSV has the header `STATEMENT_COLUMNS`, one row per line with
    the line's values (money in fen and in yuan, device-hours with 4 decimals, times in the
    billing zone), then a TOTAL row whose figures equal the sums of the columns above it."""
    runs = [run(1, programs={1: 300, 2: 61}), run(2, milli=500, ms=999_999, settled=T0 + timedelta(days=1)),
            run(3, settled=datetime(2026, 5, 31, 17, tzinfo=UTC), programs={2: 1})]
    st_ = statement("uni", JUNE, SH, runs, opening_balance_fen=1000, closing_balance_fen=-5)
    text = statement_csv(st_)
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert tuple(csv.reader(io.StringIO(text)).__next__()) == STATEMENT_COLUMNS
    *lines, total = rows
    assert [int(r["job_id"]) for r in lines] == [r.job_id for r in st_.lines] == [3, 1, 2]
    for row, r in zip(lines, st_.lines, strict=True):
        assert row["org"] == "uni" and row["month"] == "2026-06" and row["job_name"] == r.job_name
        assert Decimal(row["device_hours"]) == r.device_hours and len(row["device_hours"].split(".")[1]) == 4
        assert (int(row["cost_fen"]), int(row["subsidy_fen"]), int(row["paid_fen"])) == (r.cost_fen, r.subsidy_fen, r.cash_fen)
        assert Decimal(row["cost_yuan"]) * 100 == r.cost_fen and Decimal(row["paid_yuan"]) * 100 == r.cash_fen
        assert datetime.fromisoformat(row["settled_at"]) == r.settled_at and row["settled_at"].endswith("+08:00")
        assert row["center_fault"] == "false"
    assert lines[1]["devices"] == "1" and lines[2]["devices"] == "0.5"
    assert total["job_id"] == TOTAL_MARK and int(total["run"]) == 3
    assert Decimal(total["device_hours"]) == sum(Decimal(r["device_hours"]) for r in lines) == st_.totals.device_hours
    for col in ("cost_fen", "subsidy_fen", "paid_fen"):
        assert int(total[col]) == sum(int(r[col]) for r in lines)
    assert int(total["subsidy_fen"]) == 362


# --- program reports ------------------------------------------------------------------------


def mixed_runs() -> list[Run]:
    july = datetime(2026, 7, 2, tzinfo=UTC)
    return [
        run(1, org="uni", programs={1: 300, 2: 100}),                       # both programs paid
        run(2, org="uni", programs={2: 240}),                               # only program 2
        run(3, org="startup-a", kind="startup", pool="enterprises", programs={1: 360}),
        run(4, org="startup-b", kind="startup", pool="enterprises", programs={1: 90}, settled=july),
        run(5, org="uni", programs={1: 30}, settled=july),
        run(6, org="corp", kind="enterprise", pool="enterprises"),          # no voucher at all
    ]


def test_a_programs_report_counts_only_what_its_own_vouchers_paid() -> None:
    """Invariants: a run paid by vouchers of two programs counts in each program's report with
    that program's part only (300 and 100 fen of a 400 fen subsidy), never the run's whole
    subsidy; runs a program paid nothing for are not in its report; the parts of all
    programs add up to the runs' subsidies."""
    runs = mixed_runs()
    r1, r2 = program_report(P1, SH, runs), program_report(P2, SH, runs)
    assert [r.job_id for r in r1.evidence] == [1, 3, 4, 5] and [r.job_id for r in r2.evidence] == [1, 2]
    assert r1.total.subsidy_fen == 300 + 360 + 90 + 30 and r2.total.subsidy_fen == 100 + 240
    assert r1.total.subsidy_fen + r2.total.subsidy_fen == sum(r.subsidy_fen for r in runs)
    assert r1.total.cost_fen == sum(r.cost_fen for r in r1.evidence)
    assert program_report(ProgramInfo(9, "unused", Decimal("0.1"), 1), SH, runs).rows == ()


def test_report_rows_per_org_per_month_and_totals_by_kind_and_pool() -> None:
    """Invariants: one row per (org, month), by month then org; totals by org kind and by pool
    count distinct orgs and add the rows; the grand total adds everything; `first`/`last`
    keep only the months asked (inclusive)."""
    rp = program_report(P1, SH, mixed_runs())
    assert [(str(r.month), r.org, r.totals.runs, r.totals.subsidy_fen) for r in rp.rows] == [
        ("2026-06", "startup-a", 1, 360), ("2026-06", "uni", 1, 300), ("2026-07", "startup-b", 1, 90), ("2026-07", "uni", 1, 30)]
    kinds = {g.key: (g.orgs, g.totals.runs, g.totals.subsidy_fen) for g in rp.by_org_kind}
    pools = {g.key: (g.orgs, g.totals.runs, g.totals.subsidy_fen) for g in rp.by_pool}
    assert kinds == {"startup": (2, 2, 450), "university": (1, 2, 330)}
    assert pools == {"enterprises": (2, 2, 450), "universities": (1, 2, 330)}
    for field in ("runs", "device_hours", "cost_fen", "subsidy_fen", "paid_fen"):
        want = getattr(rp.total, field)
        assert sum(getattr(r.totals, field) for r in rp.rows) == want
        assert sum(getattr(g.totals, field) for g in rp.by_org_kind) == want == sum(getattr(g.totals, field) for g in rp.by_pool)
    july = program_report(P1, SH, mixed_runs(), first=Month(2026, 7), last=Month(2026, 7))
    assert [r.job_id for r in july.evidence] == [4, 5] and july.total.subsidy_fen == 120
    assert [r.job_id for r in program_report(P1, SH, mixed_runs(), last=JUNE).evidence] == [1, 3]


def test_report_csv_is_the_job_level_evidence() -> None:
    """Invariants: the report CSV has the header `REPORT_COLUMNS` and one row per run the
    program paid a part of, whose subsidy is the program's part; a program name that a
    spreadsheet would evaluate as a formula is written with a leading quote."""
    runs = mixed_runs()
    rp = program_report(P2, SH, runs)
    rows = list(csv.DictReader(io.StringIO(report_csv(rp), newline="")))
    assert tuple(rows[0]) == REPORT_COLUMNS
    assert [(int(r["job_id"]), int(r["subsidy_fen"]), r["subsidy_yuan"]) for r in rows] == [(1, 100, "1.00"), (2, 240, "2.40")]
    assert {r["program"] for r in rows} == {"second"} and {r["month"] for r in rows} == {"2026-06"}
    assert all(Decimal(r["device_hours"]) == Decimal("1.0000") and r["org_kind"] == "university" for r in rows)
    evil = program_report(ProgramInfo(2, "=HYPERLINK(\"x\")", Decimal("0.2"), 1), SH, runs)
    assert {r["program"] for r in csv.DictReader(io.StringIO(report_csv(evil), newline=""))} == {"'=HYPERLINK(\"x\")"}
