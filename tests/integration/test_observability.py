"""The alert rules and every dashboard query, against the real Prometheus.

- `promtool check rules` and `promtool test rules` on deploy/prometheus/ (every alert has a
  firing and a silent case there; tests/unit/test_dashboards.py checks that).
- A real Prometheus on loopback (temp dir, random port, 1 s scrapes, the alert rules loaded)
  scrapes a running stack: the API (uvicorn on a SQLite center), the scheduler's metrics
  server fed by a real `SchedulerLoop`, and one agent per demo server (the real
  `DeviceExporter` and `MetricsServer` over simulated devices, told which job holds which
  device as the heartbeat answer would). Jobs run, wait, finish and are charged (with voucher
  subsidy) while it scrapes. Then every variable query and every panel expression of every
  dashboard is evaluated through the HTTP API with the variables set to real values, and must
  be valid and return data — except the few panels listed in MAY_BE_EMPTY with the reason.

What is scripted, and why: the launcher (no Ray here; it reports the runner RUNNING, then
EXITED on request — the Ray suites run real processes), and the center metrics' cache, which
is 1 s instead of 10 s so that a charge shows up within the test's seconds.

Prometheus comes from the Debian package `prometheus` (`make test` installs it through
scripts/ensure-prometheus.sh); the tests are skipped, saying so, only when it is missing and
cannot be installed.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.unit.test_dashboards import DASHBOARDS, RULES, RULES_TEST, label_values, panels

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]

# (dashboard uid, panel title, refId) -> why it may return nothing here.
MAY_BE_EMPTY = {
    ("suanli-nodes", "NVIDIA: ECC errors (last hour)", "A"): "the simulated backend does not measure ECC",
    ("suanli-nodes", "NVIDIA: ECC errors (last hour)", "B"): "the simulated backend does not measure ECC",
    ("suanli-nodes", "NVIDIA: failed row remaps", "A"): "the simulated backend does not measure row remapping",
}


@functools.cache
def tools() -> tuple[str, str]:
    """Paths of prometheus and promtool, installing the Debian package if they are missing."""
    if not (shutil.which("prometheus") and shutil.which("promtool")):
        subprocess.run([str(REPO / "scripts" / "ensure-prometheus.sh")], capture_output=True, timeout=600)
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if not (prometheus and promtool):
        pytest.skip("prometheus/promtool not found and could not be installed (run scripts/ensure-prometheus.sh as root)")
    return prometheus, promtool


def test_promtool_check_rules() -> None:
    """The rule file is valid for Prometheus (syntax, PromQL, templates)."""
    out = subprocess.run([tools()[1], "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {sum(len(g['rules']) for g in yaml.safe_load(RULES.read_text())['groups'])} rules found" in out.stdout


def test_promtool_unit_tests_of_every_alert() -> None:
    """promtool's unit tests of the alerts pass (each alert fires and stays silent where expected)."""
    out = subprocess.run([tools()[1], "test", "rules", str(RULES_TEST)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr


# --------------------------------------------------------------------------- the stack


class ScriptedLauncher:
    """A job runs from launch until `finish(job)`, then its runner reports it EXITED with 0."""

    def __init__(self) -> None:
        self.started: dict[int, float] = {}
        self.ended: dict[int, float] = {}
        self.specs: dict[int, Any] = {}

    def launch(self, spec: Any) -> None:
        self.started[spec.job_id] = time.time()
        self.specs[spec.job_id] = spec

    def finish(self, job_id: int) -> None:
        self.ended[job_id] = time.time()

    def poll(self, jobs: Mapping[int, int]) -> dict[int, Any]:
        from scheduler.types import RunnerPhase, RunnerState

        out = {}
        for j in jobs:
            if j not in self.started:
                out[j] = RunnerState(RunnerPhase.LOST, error="no runner")
            elif j in self.ended:
                out[j] = RunnerState(RunnerPhase.EXITED, started_at=self.started[j], ended_at=self.ended[j], exit_code=0)
            else:
                out[j] = RunnerState(RunnerPhase.RUNNING, started_at=self.started[j])
        return out

    def stop(self, job_id: int, ranks: int, reason: str, grace_s: float) -> None:
        self.finish(job_id)

    def release(self, job_id: int, ranks: int) -> None:
        pass


def cycle_until(loop: Any, what: str, check: Any, timeout: float = 20.0) -> None:
    """Run scheduler cycles by hand until `check()` holds."""
    def step() -> bool:
        loop.cycle()
        return bool(check())

    wait_for(what, step, timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check: Any, timeout: float = 20.0, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


class Prom:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        r = httpx.get(f"{self.url}{path}", params=params, timeout=10)
        body = r.json()
        assert body.get("status") == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.get("/api/v1/query", query=expr)["result"]  # type: ignore[no-any-return]


@pytest.fixture()
def prometheus(tmp_path: Path) -> Iterator[Any]:
    """A function that starts Prometheus scraping {job: [host:port, …]} and returns a `Prom`;
    the process is stopped at teardown."""
    binary = tools()[0]
    procs: list[subprocess.Popen[bytes]] = []

    def start(targets: dict[str, list[str]]) -> Prom:
        port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": addrs}],
                 # The agents' `job` label is the suanli job id, as with the chart's ServiceMonitor.
                 **({"honor_labels": True} if job == "suanli-agent" else {})}
                for job, addrs in targets.items()
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - closed with the process
        procs.append(subprocess.Popen(
            [binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                assert procs[-1].poll() is None, (tmp_path / "prometheus.log").read_text()
                return False

        wait_for("Prometheus to be ready", ready, 30)
        return Prom(url)

    yield start
    for p in procs:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def submit(c: Any, token: str, accelerator: str, devices: int, name: str) -> int:
    r = c.client.post("/v1/jobs", headers=c.headers(token), json={
        "name": name, "resources": {"accelerator": accelerator, "devices_per_node": devices, "cpus_per_node": 1,
                                    "memory_per_node": 256},
        "command": "true", "time_limit": "2h"})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def status(c: Any, job: int) -> str:
    return str(c.client.get(f"/v1/jobs/{job}", headers=c.headers(c.tokens.admin)).json()["status"])


def regex_escape(value: str) -> str:
    """A value as Grafana writes it into a PromQL regex: metacharacters escaped with a backslash,
    itself escaped for the PromQL string (PromQL refuses Python's escapes such as `\\-`)."""
    return re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\\\1", value)


def substitute(expr: str, values: dict[str, str]) -> str:
    """Grafana's interpolation for these dashboards: `$__rate_interval` -> 1m, `$var` -> the regex
    Grafana writes for a multi-value variable, `(v1|v2|…)` with each value regex-escaped."""
    expr = expr.replace("$__rate_interval", "1m")
    return re.sub(r"\$\{?([a-z_]+)\}?", lambda m: values[m.group(1)], expr)


def test_every_dashboard_query_returns_data_from_a_running_stack(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prometheus: Any) -> None:
    """Invariant: with the API, the scheduler and the agents scraped and jobs running, waiting,
    finishing and charged, every variable query of every dashboard yields values, every panel
    expression (variables set to those values) is valid PromQL for the real Prometheus and
    returns data — except MAY_BE_EMPTY, whose reasons are stated — and every alert rule loads
    and evaluates without error."""
    from agents.devices.simulated import SimulatedCollector
    from agents.exporter import DeviceExporter, MetricsServer, Sampler
    from scheduler.loop import LoopConfig, SchedulerLoop
    from scheduler.metrics import SchedulerMetrics, serve_metrics
    from scheduler.types import Device, NodeReport
    from suanli import metrics as center_metrics
    from suanli import nodes as node_service
    from suanli.db.models import JobRow
    from tests.conftest import make_center, serve

    # The center metrics' cache: 1 s so a charge is scraped within seconds (10 s in production).
    monkeypatch.setattr("api.app.CenterCollector", functools.partial(center_metrics.CenterCollector, ttl_s=1.0))
    c = make_center("", tmp_path / "center", "sqlite")
    admin = c.headers(c.tokens.admin)
    for org, atype, guaranteed, limit in (("city-university", "nvidia-a100-80g", 2, 4), ("nova-robotics", "nvidia-a100-80g", 8, None)):
        r = c.client.put(f"/v1/admin/quotas/org/{org}/{atype}", json={"guaranteed": guaranteed, "limit": limit}, headers=admin)
        assert r.status_code == 200, r.text

    # Agents: simulated devices behind the real exporter, one per demo server. One A100 reports
    # a critical Xid and one 910B chip an Alarm, as their agents would, to the center too.
    agents: dict[str, tuple[SimulatedCollector, DeviceExporter]] = {}
    servers, samplers = [], []
    for s in c.cluster.servers:
        coll = SimulatedCollector(s.accelerator_type, s.vendor, s.devices, s.model, s.device_memory_mb, seed=1, node=s.name)
        exporter = DeviceExporter(coll, s.name)
        agents[s.name] = (coll, exporter)
    sick = {"a100-1": (7, "Critical", 79), "910b-0": (7, "Alarm", 0x80E18402)}
    for node, (index, health, code) in sick.items():
        agents[node][0].set_health(index, health, code)
        spec = next(s for s in c.cluster.servers if s.name == node)
        node_service.heartbeat(c.db, NodeReport(
            name=node, accelerator_type=spec.accelerator_type, cpus=spec.cpus, memory_mb=spec.memory_mb,
            devices=tuple(Device(i, f"{node}-{i}", spec.model, spec.device_memory_mb,
                                 health=health if i == index else "OK") for i in range(spec.devices)),
            labels={"rack": spec.rack or ""}))
    for _, exporter in agents.values():
        exporter.refresh()
        servers.append(MetricsServer(exporter, "127.0.0.1", 0).start())
        samplers.append(Sampler(exporter, 0.5).start())

    # The scheduler: the real loop, recording into the real metrics server.
    sched_metrics = SchedulerMetrics()
    sched_server, _ = serve_metrics(sched_metrics, "127.0.0.1", 0)
    launcher = ScriptedLauncher()
    loop = SchedulerLoop(c.db, launcher, LoopConfig(c.settings.jobs_dir, meter_interval_s=5), metrics=sched_metrics)
    stop = threading.Event()
    try:
        with serve(c) as api_url:
            # One voucher-subsidised run settled before Prometheus starts: the charge counters exist.
            first = submit(c, c.tokens.other_member, "nvidia-a100-80g", 8, "settled-early")
            cycle_until(loop, "the first job to run", lambda: status(c, first) == "RUNNING")
            time.sleep(1.0)
            launcher.finish(first)
            cycle_until(loop, "the first job to settle", lambda: status(c, first) == "SUCCEEDED")
            burner = submit(c, c.tokens.other_member, "nvidia-a100-80g", 8, "burns-vouchers")
            idle = submit(c, c.tokens.member, "nvidia-a100-80g", 2, "idle-holder")
            npu = submit(c, c.tokens.member, "ascend-910b", 1, "npu-job")
            waiting = submit(c, c.tokens.member, "nvidia-a100-80g", 4, "over-its-limit")
            running = (burner, idle, npu)
            cycle_until(loop, "three jobs to run", lambda: all(status(c, j) == "RUNNING" for j in running))
            with c.db.begin() as s:  # the API's idle detection, which needs 30 min, is not what is checked here
                s.get(JobRow, idle).idle_since = datetime.now(UTC)
            # Tell each agent who holds its devices, as the heartbeat answer does.
            for node, (coll, exporter) in agents.items():
                holders = {d: j for j in running for p in launcher.specs[j].placements if p.node == node for d in p.devices}
                owners = {d: (launcher.specs[j].org, str(c.client.get(f"/v1/jobs/{j}", headers=admin).json()["project"]))
                          for d, j in holders.items()}
                coll.set_busy(holders)
                exporter.state.set_jobs(holders)
                exporter.state.set_owners(owners, {d for d, j in holders.items() if j == idle})
            threading.Thread(target=loop.run, args=(stop, 0.5), daemon=True).start()

            host = "127.0.0.1"
            prom = prometheus({
                "suanli-api": [api_url.removeprefix("http://")],
                "suanli-scheduler": [f"{host}:{sched_server.server_port}"],
                "suanli-agent": [f"{host}:{srv.port}" for srv in servers],
            })
            wait_for("every target scraped and up", lambda: len(prom.query("up == 1")) == 5, 20)
            # A job started and one finished while Prometheus watches: waits, rates and burn move.
            late = submit(c, c.tokens.member, "ascend-910b", 1, "started-late")
            wait_for("the late job to run", lambda: status(c, late) == "RUNNING")
            launcher.finish(burner)
            wait_for("the voucher burn to be scraped", lambda: prom.query("sum(rate(suanli_subsidy_fen_total[1m])) > 0"), 20)
            wait_for("the late start to be scraped", lambda: prom.query(
                'sum(rate(suanli_scheduler_queue_wait_seconds_bucket{le="+Inf"}[1m])) > 0'), 20)
            assert status(c, waiting) == "PENDING"
            # honor_labels keeps the agents' `job` label: the suanli job holding the device.
            held = {(s["metric"]["node"], s["metric"]["job"]) for s in prom.query("suanli_device_allocated == 1")}
            assert {j for _, j in held} == {str(j) for j in running} and ("910b-0", str(npu)) in held

            checked = empty_ok = 0
            problems: list[str] = []
            for path in DASHBOARDS:
                d = json.loads(path.read_text())
                values: dict[str, str] = {}
                for v in d["templating"]["list"]:
                    if v["type"] != "query":
                        continue
                    selector, label = label_values(v["definition"])
                    series = prom.get("/api/v1/series", **{"match[]": substitute(selector, values)})
                    found = sorted({s[label] for s in series if s.get(label)})
                    assert found, f"{path.name}: variable {v['name']} has no values ({v['definition']})"
                    values[v["name"]] = "(" + "|".join(regex_escape(x) for x in found) + ")"
                for p in panels(d):
                    for t in p.get("targets", []):
                        expr = substitute(t["expr"], values)
                        r = httpx.get(f"{prom.url}/api/v1/query", params={"query": expr}, timeout=10).json()
                        where = f"{path.name} / {p['title']} / {t['refId']}"
                        checked += 1
                        if r.get("status") != "success":
                            problems.append(f"{where}: {r.get('error')} in {expr}")
                        elif not r["data"]["result"]:
                            if (d["uid"], p["title"], t["refId"]) in MAY_BE_EMPTY:
                                empty_ok += 1
                            else:
                                problems.append(f"{where}: no data for {expr}")
            assert not problems, "\n".join(problems)
            assert checked > 60 and empty_ok <= len(MAY_BE_EMPTY)

            rules = [r for g in prom.get("/api/v1/rules")["groups"] for r in g["rules"]]
            assert len(rules) == sum(len(g["rules"]) for g in yaml.safe_load(RULES.read_text())["groups"])
            assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    finally:
        stop.set()
        for sampler in samplers:
            sampler.stop()
        for srv in servers:
            srv.stop()
        sched_server.shutdown()
        c.client.close()
        c.db.dispose()


def test_suanli_up_prometheus_config_is_valid(tmp_path: Path) -> None:
    """The config `suanli up` writes for its Prometheus passes `promtool check config` (with the
    alert rules it loads) and scrapes the API, the scheduler and every agent, the agents with
    honor_labels."""
    from suanli.up import RULES as UP_RULES
    from suanli.up import prometheus_config

    config = prometheus_config("127.0.0.1:8000", "127.0.0.1:9404", ["127.0.0.1:9401", "127.0.0.1:9402"], UP_RULES)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    out = subprocess.run([tools()[1], "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {sum(len(g['rules']) for g in yaml.safe_load(RULES.read_text())['groups'])} rules found" in out.stdout
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}  # type: ignore[attr-defined]
    assert jobs["suanli-agent"]["honor_labels"] is True
    assert jobs["suanli-agent"]["static_configs"][0]["targets"] == ["127.0.0.1:9401", "127.0.0.1:9402"]
    assert jobs["suanli-scheduler"]["static_configs"][0]["targets"] == ["127.0.0.1:9404"]
