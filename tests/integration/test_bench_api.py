"""`suanli bench api` with tiny numbers against a real uvicorn server on a throwaway
PostgreSQL database: every phase answers without errors (submissions are accepted, 201),
the result has its documented shape, the database is dropped afterwards, and bad options
give the CLI's exit code 2 naming the option. (Speed is not checked here: `make bench`.)"""

from __future__ import annotations

import psycopg
import pytest
from typer.testing import CliRunner

from suanli.bench_api import bench_api
from suanli.cli import app
from tests.conftest import PG_ADMIN_URL

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def bench_databases() -> set[str]:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as c:
        return {r[0] for r in c.execute("SELECT datname FROM pg_database WHERE datname LIKE 'suanli_bench_%'")}


def test_tiny_bench_submits_lists_and_cleans_up() -> None:
    """Invariants: with 20 submissions and 200 stored jobs, healthz, submit and list each
    answered every request without an error status; the stored count is what was inserted
    plus what was submitted (closed loop and paced); the throwaway database is gone afterwards."""
    before = bench_databases()
    r = bench_api(server_workers=1, clients=4, submissions=20, stored=200)
    assert {"database", "server_workers", "clients", "healthz", "submit", "list", "stored_jobs", "client_cpu_s",
            "submit_vs_healthz", "targets"} <= set(r)
    for phase in ("healthz", "submit", "list"):
        p = r[phase]
        assert p["errors"] == {}, p
        assert p["requests"] >= 20 and p["per_s"] > 0
        assert 0 < p["ms"]["p50"] <= p["ms"]["p99"] <= p["ms"]["max"]
    # 200 inserted, 20 submitted closed loop, 20 more in the paced phase (--rate 500 by default).
    assert r["stored_jobs"] == 240 and r["database"] == "throwaway"
    assert bench_databases() == before


def test_bad_options_exit_2_naming_the_option() -> None:
    """Invariant: a bad option is refused before anything starts, exit 2, no traceback."""
    result = CliRunner().invoke(app, ["bench", "api", "--clients", "0"])
    assert result.exit_code == 2 and "--clients" in result.output and "Traceback" not in result.output
