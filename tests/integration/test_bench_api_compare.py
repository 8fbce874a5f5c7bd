"""`suanli bench api --compare-sync --rate R` with tiny numbers against real uvicorn servers
on a throwaway PostgreSQL database: the paced phase and the sync-path server's phases answer
without errors, report the CPU per request read from /proc, and `--rate` out of range is
refused naming the option. (Speed is not checked here: `make bench`.)"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from suanli.bench_api import bench_api
from suanli.cli import app

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_paced_and_sync_phases() -> None:
    """Invariants: with --compare-sync and a rate, submit_paced (offered at that rate) and
    submit_sync / submit_sync_paced exist, every request of every phase was answered without
    an error status, the servers' CPU per request is positive (they did the work), and
    submit_vs_sync is the ratio of the two closed-loop rates."""
    r = bench_api(server_workers=1, clients=4, submissions=30, stored=0, rate=200, compare_sync=True)
    for phase in ("healthz", "submit", "submit_paced", "submit_sync", "submit_sync_paced", "list"):
        p = r[phase]
        assert p["errors"] == {}, (phase, p)
        assert p["requests"] >= 10 and p["server_cpu_ms"] > 0, (phase, p)
    assert r["submit_paced"]["offered_per_s"] == 200 and r["submit_paced"]["requests"] == 30
    assert r["submit_vs_sync"] == round(r["submit"]["per_s"] / r["submit_sync"]["per_s"], 2)
    assert r["stored_jobs"] == 4 * 30  # submit, submit_paced, submit_sync, submit_sync_paced


def test_bad_rate_exits_2_naming_the_option() -> None:
    """Invariant: a negative --rate is refused before anything starts, exit 2, no traceback."""
    result = CliRunner().invoke(app, ["bench", "api", "--rate", "-1"])
    assert result.exit_code == 2 and "--rate" in result.output and "Traceback" not in result.output
