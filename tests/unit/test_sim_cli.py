"""`suanli simulate` end to end on small inputs: JSON output, charts, errors."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from suanli.cli import app

DATA = Path(__file__).resolve().parents[1] / "data" / "sim"


def run(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(app, ["simulate", *args])
    return r.exit_code, r.output


def test_compare_writes_json_and_charts(tmp_path: Path) -> None:
    """Invariants: --compare runs every named policy on the same input; --json prints the
    metrics the issue names for each; --plot writes PNG files."""
    code, out = run("--trace", str(DATA / "trace-small.csv"), "--cluster", str(DATA / "cluster-small.yaml"),
                    "--compare", "suanli,fifo,slurm-like", "--json", "--plot", str(tmp_path))
    assert code == 0, out
    data = json.loads(out)
    assert set(data["policies"]) == {"suanli", "fifo", "slurm-like"}
    for r in data["policies"].values():
        for key in ("avg_jct_s", "p50_jct_s", "p99_jct_s", "avg_wait_s", "p99_wait_s", "makespan_s",
                    "device_utilization", "jain_index", "preemptions", "longest_wait_s_by_size", "tenants"):
            assert key in r
    assert data["time_limit"] == "overestimate:2"
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["jct_cdf.png", "queue_utilization.png", "tenant_share.png"]
    assert all((tmp_path / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)


def test_malformed_trace_line_names_file_line_and_field(tmp_path: Path) -> None:
    """Invariant: a bad trace line is exit code 2 with FILE:LINE: FIELD, no traceback."""
    bad = tmp_path / "bad.csv"
    bad.write_text("submit_time,duration_s,devices,tenant\n0,10,1,a\n5,-3,1,b\n")
    code, out = run("--trace", str(bad), "--cluster", str(DATA / "cluster-small.yaml"))
    assert code == 2 and f"{bad}:3" in out and "duration_s" in out and "Traceback" not in out


def test_bad_arguments_are_clear(tmp_path: Path) -> None:
    """Invariants: unknown policy, bad --time-limit, bad --set and missing inputs exit 2 with a message."""
    base = ["--trace", str(DATA / "trace-small.csv"), "--cluster", str(DATA / "cluster-small.yaml")]
    assert "unknown policy" in run(*base, "--policy", "magic")[1]
    assert "--time-limit" in run(*base, "--time-limit", "often")[1]
    assert "unknown policy setting" in run(*base, "--set", "nope=1")[1]
    code, out = run("--cluster", str(DATA / "cluster-small.yaml"))
    assert code == 2 and "exactly one of" in out
    code, out = run(*base, "--bound")
    assert code == 2 and "--bound needs --mode fgd" in out
    for bad in ("0", "-2", "nan"):
        code, out = run(*base, "--time-scale", bad)
        assert code == 2 and "--time-scale must be a positive number" in out, out
    code, out = run(*base, "--mode", "fgd", "--time-scale", "2")
    assert code == 2 and "--time-scale needs --mode time" in out


def test_time_scale_compresses_arrivals_keeping_the_work() -> None:
    """Invariants: --time-scale K divides every submit time's distance from the first by K
    and keeps durations, so on the same cluster the same jobs finish sooner overall while
    each waits at least as long as with the original spacing (more of them queue at once)."""
    from scheduler.sim.model import SimJob
    from suanli.cli_sim import compress

    jobs = [SimJob(1, 100.0, 50.0, 1), SimJob(2, 300.0, 50.0, 2), SimJob(3, 700.0, 10.0, 1)]
    fast = compress(jobs, 4)
    assert [j.submit_time for j in fast] == [100.0, 150.0, 250.0]
    assert [j.duration_s for j in fast] == [50.0, 50.0, 10.0] and compress([], 3) == []
    base = ["--trace", str(DATA / "trace-small.csv"), "--cluster", str(DATA / "cluster-small.yaml"), "--json", "--policy", "fifo"]
    slow = json.loads(run(*base)[1])["policies"]["fifo"]
    dense = json.loads(run(*base, "--time-scale", "50")[1])["policies"]["fifo"]
    assert dense["jobs"] == slow["jobs"] and dense["makespan_s"] <= slow["makespan_s"]
    assert dense["avg_wait_s"] >= slow["avg_wait_s"]


def test_fgd_mode_bound_in_json_and_table() -> None:
    """Invariants: `--mode fgd --bound` adds the floors to the JSON (each <= the policy's
    figure) and two floor rows to the table; a trace replayed in fgd mode is one seed."""
    base = ["--trace", str(DATA / "trace-small.csv"), "--cluster", str(DATA / "cluster-small.yaml"), "--mode", "fgd", "--bound"]
    code, out = run(*base, "--json")
    assert code == 0, out
    data = json.loads(out)
    floors = data["bounds"]["seeds"]["0"]
    got = data["policies"]["suanli"]["seeds"]["0"]["unallocated_gpu_pct_at_100"]
    assert floors["relaxed_floor_pct"] <= got + 1e-9
    code, out = run(*base)
    assert code == 0 and "floor: any placement" in out and "floor: every share pod placed" in out


def test_fgd_plot_marks_the_floors(tmp_path: Path) -> None:
    """Invariant: with --bound the allocation chart draws each floor as a marker at 100 %
    arrived, at 100 minus the floor (what no placement could beat there)."""
    from scheduler.sim import plots

    drawn: list[tuple[list[float], list[float], str]] = []
    real = plots.plt.subplots

    def spy(*a, **kw):  # type: ignore[no-untyped-def]
        fig, ax = real(*a, **kw)
        plot = ax.plot

        def record(xs, ys, *rest, **kw2):  # type: ignore[no-untyped-def]
            drawn.append((list(xs), list(ys), kw2.get("label", "")))
            return plot(xs, ys, *rest, **kw2)

        ax.plot = record
        return fig, ax

    results = {"mode": "fgd", "policies": {"suanli": {"seeds": {0: {"allocation_curve": [(99.0, 95.0), (100.0, 96.0)]}}}},
               "bounds": {"median_share_floor_pct": 3.5, "median_relaxed_floor_pct": 2.0}}
    plots.plt.subplots = spy
    try:
        paths = plots.write_plots(results, tmp_path, published=None)
    finally:
        plots.plt.subplots = real
    assert [p.name for p in paths] == ["allocation.png"] and paths[0].read_bytes()[:4] == b"\x89PNG"
    floors = [(xs, ys) for xs, ys, label in drawn if "floor" in label]
    assert floors == [([100], [96.5]), ([100], [98.0])]
