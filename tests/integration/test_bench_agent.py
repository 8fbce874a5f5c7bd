"""`suanli bench agent` with tiny counts: the result has its documented shape and every
figure is a positive measurement (speed against the targets is `make bench`'s job, not a
test's); bad options give the CLI's exit code 2 naming the option, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from suanli.bench_agent import FIXTURE, bench_agent
from suanli.cli import app

pytestmark = pytest.mark.skipif(not FIXTURE.exists(), reason="recorded npu-smi fixture not present")


def test_tiny_bench_shape_and_positive_figures() -> None:
    """Invariants: both backends report sample CPU, CPU % of a core, render CPU and scrape latency, all
    positive, percentiles ordered, a non-empty metrics body, boolean target flags; the sampler run covers
    about the requested time with positive CPU; the spawn floor is positive."""
    r = bench_agent(samples=5, scrapes=5, seconds=0.6, interval=0.2, spawn_runs=2)
    assert {"interval_s", "devices", "targets", "simulated", "ascend_fixture", "sampler", "spawn"} <= set(r)
    assert r["devices"] == 8 and r["targets"] == {"cpu_pct_of_core": 1.0, "scrape_p99_ms": 10.0}
    for name in ("simulated", "ascend_fixture"):
        b = r[name]
        assert (b["samples"], b["scrapes"]) == (5, 5)
        assert b["cpu_pct_of_core"] > 0 and b["metrics_bytes"] > 1000
        for key in ("sample_cpu_ms", "render_cpu_ms", "scrape_ms"):
            assert 0 < b[key]["p50"] <= b[key]["p99"] <= b[key]["max"], (name, key, b[key])
        assert set(b["meets_target"]) == {"cpu", "scrape"} and all(isinstance(v, bool) for v in b["meets_target"].values())
    assert r["ascend_fixture"]["fixture"] == FIXTURE.name
    assert r["sampler"]["seconds"] >= 0.6 and r["sampler"]["cpu_pct_of_core"] > 0
    assert r["spawn"]["runs"] == 2 and r["spawn"]["wall_ms"]["p50"] > 0


def test_bad_options_exit_2_naming_the_option(tmp_path: Path) -> None:
    """Invariant: a bad count or a missing npu-smi file is refused before anything runs, exit 2, one message."""
    runner = CliRunner()
    result = runner.invoke(app, ["bench", "agent", "--samples", "0"])
    assert result.exit_code == 2 and "--samples" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["bench", "agent", "--npu-smi-file", str(tmp_path / "none.txt")])
    assert result.exit_code == 2 and "--npu-smi-file" in result.output and "Traceback" not in result.output
