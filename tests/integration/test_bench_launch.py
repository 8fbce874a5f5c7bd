"""`suanli bench launch --json` with tiny counts, in its own process (it starts its own local
Ray cluster of 4 simulated servers): the JSON has its documented shape and every job it
submitted started. Speed itself is measured by `make bench`, not here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_bench_launch_json_shape() -> None:
    """Invariants: the keys documented in suanli/bench_launch.py are there with sane values
    (latencies ordered p50 ≤ p99 ≤ max and positive, positive start rates, no failed job),
    on the default launcher (supervisor)."""
    suanli = Path(sys.executable).parent / "suanli"
    done = subprocess.run([str(suanli), "bench", "launch", "--jobs", "2", "--burst", "3", "--gap", "0.1", "--json"],
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    r = json.loads(done.stdout)
    assert (r["benchmark"], r["launcher"], r["servers"], r["devices_per_server"]) == ("launch", "supervisor", 4, 8)
    assert r["targets"] == {"p50_s": 0.5, "p99_s": 2.0, "starts_per_s": 50.0}
    for key, jobs in (("single", 2), ("multi", 1), ("burst", 3)):
        part = r[key]
        assert part["jobs"] == jobs and part["failed"] == 0
        lat = part["latency_s"]
        assert 0 < lat["p50"] <= lat["p99"] <= lat["max"]
    assert r["burst"]["starts_per_s"] > 0 and r["burst"]["seconds"] > 0
    assert r["burst"]["submit_s"] > 0
    assert (r["queued"]["jobs"], r["queued"]["failed"]) == (3, 0) and r["queued"]["starts_per_s"] > 0
    assert set(r["meets_target"]) == {"p50", "p99", "starts_per_s"}


def test_bench_launch_refuses_bad_options() -> None:
    """Invariant: a bad option is one line and exit code 2, no traceback, no cluster started."""
    suanli = Path(sys.executable).parent / "suanli"
    done = subprocess.run([str(suanli), "bench", "launch", "--jobs", "0"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--jobs must be at least 1" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
