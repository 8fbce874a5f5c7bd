"""`suanli bench launch`: how fast submitted jobs start on Ray — submit → RUNNING latency
(p50/p99) and sustained starts per second — on a local Ray cluster of 4 simulated servers
(8 devices each), through the real API, scheduler loop and the Ray launcher `--launcher`
names (`supervisor`: one actor per server, the default; `actors`: one actor per rank) —
issue 8's targets for single-node jobs: p50 ≤ 0.5 s, p99 ≤ 2 s, ≥ 50 starts/s.

What is measured (a throw-away SQLite center in a temporary folder), after a warm-up of one
single-node job and one job on all 4 servers (Ray's first workers, imports, and with the
supervisor launcher each server's supervisor, created on first use):
- `latency`: `--jobs` jobs submitted one after another, `--gap` seconds apart, each a short
  `sleep`; a job's latency is its process's start time (`started_at`, stamped by its runner
  when the command is spawned) minus its `submitted_at` (stamped by the API): what a user
  waits, scheduling cycle and Ray actor creation included. Run for single-node jobs (one
  device) and for 2-node jobs (one device on each of two servers).
- `queued`: `--burst` single-node jobs submitted while the scheduler loop is paused, then
  the loop resumed; starts/s = jobs / (last start − resume): the start rate of scheduler and
  launcher alone (32 devices and 0.2 s jobs bound it too: later jobs wait for devices).
- `burst`: `--burst` single-node jobs submitted at once; starts/s = jobs / (last start − first
  submit). 32 devices, so with short jobs this is the sustained start rate. `submit_s` is
  how long the submits themselves took (the API runs in this process, sharing its cores with
  the scheduler): starts/s can be no higher than jobs / submit_s.
The scheduler cycles every `--interval` seconds (production default: 1 s); the JSON says which.

JSON keys (stable): launcher, servers, devices_per_server, interval_s, targets {p50_s, p99_s, starts_per_s},
single / multi {jobs, latency_s {p50, p95, p99, max}, failed}, burst {jobs, seconds, submit_s, starts_per_s,
latency_s {...}, failed}, queued {jobs, seconds, starts_per_s, failed}, meets_target {p50, p99, starts_per_s}.

Errors: bad options → BenchError code 2 naming the option.
"""

from __future__ import annotations

import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from collections.abc import Iterable
from typing import Annotated, Any

import typer

from suanli.bench_ledger import BenchError, report

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON")]

SERVERS = 4
DEVICES = 8
TARGETS = {"p50_s": 0.5, "p99_s": 2.0, "starts_per_s": 50.0}
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED", "NODE_LOST"}


def _pct(values: list[float]) -> dict[str, float]:
    """Nearest-rank p50/p95/p99 and the max, in seconds rounded to 0.001."""
    if not values:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
    v = sorted(values)

    def rank(pct: int) -> float:
        return v[max(0, -(-len(v) * pct // 100) - 1)]

    return {k: round(x, 3) for k, x in (("p50", rank(50)), ("p95", rank(95)), ("p99", rank(99)), ("max", v[-1]))}


class _Center:
    """A SQLite center on a local Ray cluster, its scheduler loop in a thread."""

    def __init__(self, data_dir: Path, interval: float, launcher: str) -> None:
        from fastapi.testclient import TestClient

        from api.app import create_app
        from scheduler.loop import SchedulerLoop
        from scheduler.main import loop_config
        from scheduler.supervisor import make_launcher
        from scheduler.types import Device, NodeReport
        from suanli import nodes as node_service
        from scheduler.types import Vendor
        from suanli.cluster import ClusterSpec, ServerSpec
        from suanli.db.engine import Database, migrate
        from suanli.demo import seed
        from suanli.localray import start_local_ray
        from suanli.settings import Settings

        self.spec = ClusterSpec(servers=[
            ServerSpec(name=f"bench-{i}", accelerator_type="nvidia-a100-80g", vendor=Vendor.NVIDIA, devices=DEVICES,
                       cpus=64, memory_mb=256 * 1024) for i in range(SERVERS)])
        self.ray = start_local_ray(self.spec)
        settings = Settings(data_dir=data_dir, ray_address=self.ray.address, rate_limit_per_s=0, auth_cache_s=5,
                            default_grace_s=1.0)
        migrate(settings.effective_database_url)
        self.db = Database(settings.effective_database_url)
        self.tokens = seed(self.db, data_dir, self.spec)
        for s in self.spec.servers:
            node_service.heartbeat(self.db, NodeReport(
                name=s.name, accelerator_type=s.accelerator_type, cpus=s.cpus, memory_mb=s.memory_mb,
                devices=tuple(Device(i, f"{s.name}-{i}", "A100", 81920) for i in range(s.devices))))
        self.client = TestClient(create_app(settings, self.db))
        self.launcher = make_launcher(launcher, self.ray.address, settings.ray_namespace)
        from dataclasses import replace
        self.loop = SchedulerLoop(self.db, self.launcher, replace(loop_config(settings), node_timeout_s=None,
                                                                  meter_interval_s=0))
        self.interval = interval
        self.resume()

    def pause(self) -> None:
        """Stop the scheduler loop (it gives up its lease; `resume` takes it again)."""
        self.stop.set()
        self.thread.join(timeout=10)

    def resume(self) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop.run, args=(self.stop, self.interval), daemon=True)
        self.thread.start()

    def submit(self, nodes: int, seconds: float) -> int:
        spec = {"name": "bench", "resources": {"accelerator": "nvidia-a100-80g", "devices_per_node": 1, "nodes": nodes,
                                               "cpus_per_node": 1, "memory_per_node": 256},
                "command": f"sleep {seconds:g}", "time_limit": 120}
        r = self.client.post("/v1/jobs", json=spec, headers={"Authorization": f"Bearer {self.tokens.member}"})
        r.raise_for_status()
        return int(r.json()["id"])

    def wait(self, ids: list[int], timeout: float, ended: bool = False) -> dict[int, dict[str, Any]]:
        """Each job once it has started (or, with `ended`, once it has ended); raises when some
        did not within `timeout`."""
        deadline = time.monotonic() + timeout
        got: dict[int, dict[str, Any]] = {}
        h = {"Authorization": f"Bearer {self.tokens.member}"}
        while len(got) < len(ids):
            for i in ids:
                if i not in got:
                    job = self.client.get(f"/v1/jobs/{i}", headers=h).json()
                    if (job["started_at"] and not ended) or job["status"] in TERMINAL:
                        got[i] = job
            if len(got) < len(ids):
                if time.monotonic() > deadline:
                    raise BenchError(f"{len(ids) - len(got)} jobs did not start within {timeout:g}s", 1)
                time.sleep(0.1)
        return got

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        try:
            self.launcher.stop_all(grace_s=0.5)
        finally:
            import ray

            ray.shutdown()
            self.ray.shutdown()
            self.client.close()
            self.db.dispose()


def _latencies(jobs: dict[int, dict[str, Any]]) -> tuple[list[float], int]:
    lat, failed = [], 0
    for job in jobs.values():
        if not job["started_at"]:
            failed += 1
            continue
        lat.append((datetime.fromisoformat(job["started_at"]) - datetime.fromisoformat(job["submitted_at"])).total_seconds())
    return lat, failed


def _paced(center: _Center, jobs: int, gap: float, nodes: int) -> dict[str, Any]:
    ids = []
    for _ in range(jobs):
        ids.append(center.submit(nodes, 0.2))
        time.sleep(gap)
    lat, failed = _latencies(center.wait(ids, 120 + jobs))
    return {"jobs": jobs, "latency_s": _pct(lat), "failed": failed}


def _queued(center: _Center, jobs: int) -> dict[str, Any]:
    """`jobs` single-node jobs submitted while the scheduler is paused, then released at once:
    the start rate of scheduler and launcher alone, without the API's submit pace."""
    center.pause()
    try:
        ids = [center.submit(1, 0.2) for _ in range(jobs)]
    finally:
        t0 = time.time()
        center.resume()
    got = center.wait(ids, 120 + 2 * jobs)
    starts = [datetime.fromisoformat(j["started_at"]).timestamp() for j in got.values() if j["started_at"]]
    seconds = max(starts) - t0 if starts else 0.0
    return {"jobs": jobs, "seconds": round(seconds, 3),
            "starts_per_s": round(len(starts) / seconds, 2) if seconds > 0 else 0.0, "failed": jobs - len(starts)}


def bench_launch(jobs: int = 40, burst: int = 100, gap: float = 0.2, interval: float = 0.1,
                 launcher: str = "supervisor") -> dict[str, Any]:
    for name, v in (("jobs", jobs), ("burst", burst)):
        if v < 1:
            raise BenchError(f"--{name} must be at least 1", 2)
    if gap < 0 or interval <= 0:
        raise BenchError("--gap must be ≥ 0 and --interval > 0", 2)
    if launcher not in ("supervisor", "actors"):
        raise BenchError(f"--launcher must be supervisor or actors, not {launcher!r}", 2)
    import ray

    if ray.is_initialized():  # the launcher would use that connection, not the bench's own cluster
        raise BenchError("run the launch benchmark in its own process (Ray is already connected here)", 2)
    with tempfile.TemporaryDirectory(prefix="suanli-bench-launch-") as tmp:
        center = _Center(Path(tmp), interval, launcher)
        try:
            center.wait([center.submit(1, 0.1), center.submit(SERVERS, 0.1)], 120)  # warm-up: see the docstring
            single = _paced(center, jobs, gap, 1)
            multi = _paced(center, max(1, jobs // 2), gap, 2)
            t0 = time.time()
            ids = [center.submit(1, 0.2) for _ in range(burst)]
            submit_s = time.time() - t0  # the in-process API's own pace bounds the rate from above
            got = center.wait(ids, 120 + 2 * burst)
            lat, failed = _latencies(got)
            starts = [datetime.fromisoformat(j["started_at"]).timestamp() for j in got.values() if j["started_at"]]
            seconds = max(starts) - t0 if starts else 0.0
            rate = round(len(starts) / seconds, 2) if seconds > 0 else 0.0
            center.wait(ids, 120 + 2 * burst, ended=True)  # every device free again
            queued = _queued(center, burst)
        finally:
            center.close()
    burst_out: dict[str, Any] = {"jobs": burst, "seconds": round(seconds, 3), "submit_s": round(submit_s, 3), "starts_per_s": rate, "latency_s": _pct(lat), "failed": failed}
    return {
        "benchmark": "launch", "launcher": launcher, "servers": SERVERS, "devices_per_server": DEVICES, "interval_s": interval,
        "targets": TARGETS, "single": single, "multi": multi, "burst": burst_out, "queued": queued,
        "meets_target": {"p50": single["latency_s"]["p50"] <= TARGETS["p50_s"],
                         "p99": single["latency_s"]["p99"] <= TARGETS["p99_s"],
                         "starts_per_s": rate >= TARGETS["starts_per_s"]},
    }


def register(bench_app: typer.Typer) -> None:
    """Add `suanli bench launch` to the bench app."""

    @bench_app.command("launch")
    def bench_launch_command(
        jobs: Annotated[int, typer.Option(help="Single-node jobs submitted one by one (half as many 2-node jobs)")] = 40,
        burst: Annotated[int, typer.Option(help="Single-node jobs submitted at once for the start rate")] = 100,
        gap: Annotated[float, typer.Option(help="Seconds between two paced submits")] = 0.2,
        interval: Annotated[float, typer.Option(help="Scheduler cycle interval, seconds")] = 0.1,
        launcher: Annotated[str, typer.Option(help="Ray launcher: supervisor (one actor per server) or actors "
                                                   "(one per rank)")] = "supervisor",
        as_json: JsonOpt = False,
    ) -> None:
        """Submit → RUNNING latency and starts/s on a local Ray cluster of 4 simulated servers
        (targets for single-node jobs: p50 ≤ 0.5 s, p99 ≤ 2 s, ≥ 50 starts/s)."""
        report(lambda: bench_launch(jobs, burst, gap, interval, launcher), as_json, _lines)


def _lines(result: dict[str, Any]) -> Iterable[str]:
    for k in ("single", "multi"):
        r = result[k]
        yield f"{k:<7} {r['jobs']} jobs: latency p50 {r['latency_s']['p50']} s p99 {r['latency_s']['p99']} s"
    b = result["burst"]
    yield f"burst   {b['jobs']} jobs in {b['seconds']} s: {b['starts_per_s']} starts/s  {result['meets_target']}"
