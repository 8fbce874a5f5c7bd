"""`suanli bench ledger` with tiny numbers on the real PostgreSQL: the result has its
documented shape, every settlement it made is in the database and balanced, a throwaway
database is dropped afterwards, and bad options or an unreachable server give a clean
error with the CLI's exit codes (2, 6), never a traceback. (Speed is not checked here.)"""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import create_engine, func, select, text
from typer.testing import CliRunner

from suanli.bench_ledger import bench_ledger
from suanli.cli import app
from suanli.db.models import BillingRunRow, LedgerEntryRow, LedgerTxnRow
from tests.conftest import PG_ADMIN_URL

PHASE_KEYS = {"workers", "settlements", "wall_s", "settlements_per_s", "settle_ms", "hold_ms", "refused", "client_cpu_s"}
MS_KEYS = {"p50", "p95", "p99", "max"}

pytestmark = pytest.mark.postgres


def check_shape(r: dict, workers: int, settlements: int) -> None:  # type: ignore[type-arg]
    assert set(r) == {"database", "workers", "orgs", "settlements", "baseline", "concurrent", "hot_org",
                      "speedup_vs_1_worker", "hot_org_vs_spread", "unbalanced_txns", "billing_runs"}
    sizes = {"baseline": settlements // 4, "concurrent": settlements, "hot_org": settlements // 2}
    for phase, n in sizes.items():
        p = r[phase]
        assert set(p) == PHASE_KEYS and set(p["settle_ms"]) == MS_KEYS == set(p["hold_ms"])
        assert p["settlements"] == n and p["refused"] == 0 and p["settlements_per_s"] > 0
        assert p["workers"] == (1 if phase == "baseline" else workers)
        assert 0 < p["settle_ms"]["p50"] <= p["settle_ms"]["p95"] <= p["settle_ms"]["p99"] <= p["settle_ms"]["max"]
    assert r["unbalanced_txns"] == 0 and r["billing_runs"] == sum(sizes.values())


def test_bench_on_a_given_database_settles_everything_balanced(postgres_url: str) -> None:
    """Invariants: the result has every documented key; each phase settled what it was given
    with nothing refused; in the database every ledger transaction sums to zero, each run
    has its hold and a billing run, and the billing runs add up to the revenue charged."""
    with create_engine(postgres_url).connect() as c:
        runs_before = c.scalar(select(func.count()).select_from(BillingRunRow)) if c.dialect.has_table(c, "billing_runs") else 0
    r = bench_ledger(workers=2, orgs=3, settlements=20, database_url=postgres_url)
    check_shape(r, 2, 20)
    assert r["database"] == "given"
    engine = create_engine(postgres_url)
    with engine.connect() as c:
        sums = c.execute(select(LedgerEntryRow.txn_id).group_by(LedgerEntryRow.txn_id)
                         .having(func.sum(LedgerEntryRow.amount_fen) != 0)).all()
        assert sums == []
        runs = c.execute(select(BillingRunRow.job_id, BillingRunRow.cost_fen, BillingRunRow.cash_fen, BillingRunRow.subsidy_fen)
                         .order_by(BillingRunRow.id).offset(runs_before)).all()
        assert len(runs) == 35
        holds = set(c.scalars(select(LedgerTxnRow.job_id).where(LedgerTxnRow.kind == "hold")))
        for job, cost, cash, subsidy in runs:
            assert job in holds and cost == cash + subsidy and 200 <= cost <= 1200 and subsidy > 0
            charged = c.scalar(text("SELECT -COALESCE(SUM(e.amount_fen), 0) FROM ledger_entries e JOIN ledger_transactions t "
                                    "ON t.id = e.txn_id WHERE t.job_id = :j AND t.kind = 'charge' AND e.account <> 'center:revenue'"),
                               {"j": job})
            assert charged == cost
    engine.dispose()


def test_throwaway_database_is_dropped() -> None:
    """Invariant: by default the bench creates its own database and drops it at the end."""
    def bench_dbs() -> set[str]:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as a:
            return {n for (n,) in a.execute("SELECT datname FROM pg_database WHERE datname LIKE 'suanli_bench_%'")}

    before = bench_dbs()
    r = bench_ledger(workers=2, orgs=2, settlements=8)
    check_shape(r, 2, 8)
    assert r["database"] == "throwaway"
    assert bench_dbs() <= before


@pytest.mark.parametrize("args, code, words", [
    (["--workers", "0"], 2, "--workers"),
    (["--settlements", "1"], 2, "--settlements"),
    (["--database-url", "sqlite:///x.db"], 2, "--database-url"),
    (["--database-url", "postgresql://postgres@127.0.0.1:1/nowhere"], 6, "not reachable"),
])
def test_cli_errors_are_clean(args: list[str], code: int, words: str) -> None:
    """Invariant: bad options exit 2 naming the option, an unreachable server exits 6; no
    traceback, nothing on stdout."""
    result = CliRunner().invoke(app, ["bench", "ledger", "--json", *args])
    assert result.exit_code == code, result.output
    assert words in result.stderr and "Traceback" not in result.output and result.stdout == ""
