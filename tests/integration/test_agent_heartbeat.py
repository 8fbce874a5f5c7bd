"""The agent's heartbeat against the real API app on a real SQLite database, and the
`suanli-agent` command as a real process against a real uvicorn server."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

warnings.filterwarnings("ignore", message=".*httpx2.*")

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import select  # noqa: E402

import suanli  # noqa: E402
from agents.devices.simulated import SimulatedCollector  # noqa: E402
from agents.heartbeat import Backoff, HeartbeatClient  # noqa: E402
from agents.state import AgentState  # noqa: E402
from api.app import create_app  # noqa: E402
from api.schemas.nodes import HeartbeatIn  # noqa: E402
from scheduler.types import Placement, Start, Vendor  # noqa: E402
from suanli.cluster import demo_cluster  # noqa: E402
from suanli.db.engine import Database, migrate  # noqa: E402
from suanli.db.models import NodeRow  # noqa: E402
from suanli.db.store import jobs as job_store  # noqa: E402
from suanli.demo import DemoTokens, seed  # noqa: E402
from suanli.settings import Settings  # noqa: E402

API = "http://testserver"  # TestClient's base URL


@dataclass
class Center:
    settings: Settings
    db: Database
    tokens: DemoTokens
    client: TestClient

    def nodes(self) -> dict[str, dict]:  # type: ignore[type-arg]
        r = self.client.get("/v1/nodes", headers={"Authorization": f"Bearer {self.tokens.admin}"})
        assert r.status_code == 200, r.text
        return {n["name"]: n for n in r.json()}


@pytest.fixture
def bare(tmp_path: Path) -> Iterator[Center]:
    """A center with demo data but no servers registered yet (fresh database per test)."""
    settings = Settings(data_dir=tmp_path)
    migrate(settings.effective_database_url)
    db = Database(settings.effective_database_url)
    tokens = seed(db, tmp_path, demo_cluster())
    client = TestClient(create_app(settings, db))
    yield Center(settings, db, tokens, client)
    client.close()
    db.dispose()


def agent(bare: Center, token: str, node: str = "a100-0", accelerator_type: str = "nvidia-a100-80g",
          vendor: Vendor = Vendor.NVIDIA) -> tuple[HeartbeatClient, SimulatedCollector]:
    collector = SimulatedCollector(accelerator_type, vendor, 8, seed=1, node=node)
    hb = HeartbeatClient(API, token, node, collector, cpus=64, memory_mb=1024 * 1024, labels={"rack": "r1"},
                         http=bare.client, state=AgentState())
    return hb, collector


def test_body_matches_the_api_schema(bare: Center) -> None:
    """The heartbeat document validates against api.schemas.nodes.HeartbeatIn unchanged."""
    hb, _ = agent(bare, bare.tokens.agent)
    body = HeartbeatIn.model_validate(hb.body())
    assert body.agent_version == suanli.__version__
    assert [d.index for d in body.devices] == list(range(8))
    assert all(d.uuid.startswith("GPU-") and d.memory_mb == 81920 and d.health == "OK" for d in body.devices)


def test_beat_registers_the_node(bare: Center) -> None:
    """One beat with the agent token registers the server: it is listed with its 8 devices,
    type, labels, UUIDs and agent version, and the agent records the success."""
    hb, collector = agent(bare, bare.tokens.agent)
    assert hb.beat() is True
    node = bare.nodes()["a100-0"]
    assert node["accelerator_type"] == "nvidia-a100-80g"
    assert node["device_count"] == 8 and len(node["devices"]) == 8
    assert node["labels"] == {"rack": "r1"}
    assert node["agent_version"] == suanli.__version__
    assert [d["uuid"] for d in node["devices"]] == [d.uuid for d in collector.inventory()]
    assert hb.state.heartbeat_failures == 0 and hb.state.last_heartbeat_at is not None


def test_second_beat_refreshes_last_heartbeat(bare: Center) -> None:
    """A later beat moves last_heartbeat_at forward and keeps one node row."""
    hb, _ = agent(bare, bare.tokens.agent)
    assert hb.beat()
    first = bare.nodes()["a100-0"]["last_heartbeat_at"]
    time.sleep(0.01)
    assert hb.beat()
    nodes = bare.nodes()
    assert list(nodes) == ["a100-0"]
    assert nodes["a100-0"]["last_heartbeat_at"] > first


def test_member_token_is_refused_without_crashing(bare: Center, caplog: pytest.LogCaptureFixture) -> None:
    """A member's token gets 403: beat() returns False instead of raising, counts one failure,
    logs one line naming the status and the problem's code, registers nothing."""
    hb, _ = agent(bare, bare.tokens.member)
    with caplog.at_level(logging.WARNING, logger="agents.heartbeat"):
        assert hb.beat() is False
    assert hb.state.heartbeat_failures == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "agents.heartbeat"]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert "HTTP 403" in lines[0] and "forbidden" in lines[0]
    assert bare.nodes() == {}


def test_unknown_accelerator_type_is_refused(bare: Center, caplog: pytest.LogCaptureFixture) -> None:
    """An accelerator type the bare does not know gets 422 unknown_accelerator_type, logged
    with that code; nothing is registered."""
    hb, _ = agent(bare, bare.tokens.agent, accelerator_type="nvidia-h100-80g")
    with caplog.at_level(logging.WARNING, logger="agents.heartbeat"):
        assert hb.beat() is False
    assert hb.state.heartbeat_failures == 1
    assert any("HTTP 422" in r.getMessage() and "unknown_accelerator_type" in r.getMessage() for r in caplog.records)
    assert bare.nodes() == {}


def test_allocation_from_response_drives_set_busy(bare: Center) -> None:
    """devices[].job_id in the API's answer becomes the simulator's load and the exporter's
    `job` label; when the claim goes away the devices go idle again."""
    hb, collector = agent(bare, bare.tokens.agent)
    assert hb.beat()
    r = bare.client.post("/v1/jobs", headers={"Authorization": f"Bearer {bare.tokens.member}"}, json={
        "name": "agent-test", "project": "default", "command": "true",
        "resources": {"accelerator": "nvidia-a100-80g", "devices_per_node": 2, "memory_per_node": 1024}})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    with bare.db.begin() as s:
        node_id = s.scalar(select(NodeRow.id).where(NodeRow.name == "a100-0"))
        job_store.claim(s, job_id, Start(job_id, "nvidia-a100-80g", (Placement("a100-0", (1, 3)),), "test"), {"a100-0": node_id})
    assert collector.busy() == {}
    assert hb.beat()
    assert collector.busy() == {1: job_id, 3: job_id}
    assert hb.state.jobs() == {1: job_id, 3: job_id}
    util = {s.index: s.utilization_pct for s in collector.sample()}
    assert min(util[1], util[3]) >= 85 > 2 >= max(util[i] for i in (0, 2, 4, 5, 6, 7))
    with bare.db.begin() as s:
        job_store.release(s, job_id)
    assert hb.beat()
    assert collector.busy() == {} and hb.state.jobs() == {}


def test_beat_reports_peak_utilization_health_and_learns_owners(bare: Center) -> None:
    """Invariants: each device reports its highest utilization since the previous beat (a
    short busy moment between beats is not missed) and its health with the reason; the
    answer's org/project for each allocated device reach AgentState (the exporter's labels);
    while the backend is broken every device reports Unknown health with the error, and the
    API then shows them as unhealthy (kept out of placement)."""
    from agents.devices.base import DeviceSample, Health

    hb, collector = agent(bare, bare.tokens.agent)

    def sample(util: float, health: Health = Health.OK, why: str = "") -> list[DeviceSample]:
        return [DeviceSample(i, util, 1.0, 100.0, 81920.0, 60.0, 1, 40.0, 210.0, 1593.0, health=health,
                             health_reason=why if i == 5 else "") for i in range(8)]

    hb.state.set_samples(sample(80.0), 1.0)
    hb.state.set_samples(sample(3.0, Health.CRITICAL, "Xid 79"), 2.0)
    body = hb.body()
    assert [d["utilization_pct"] for d in body["devices"]] == [80.0] * 8
    assert body["devices"][5]["health"] == "Critical" and body["devices"][5]["health_reason"] == "Xid 79"
    assert hb.body()["devices"][0]["utilization_pct"] == 3.0  # peaks start over after each beat
    assert hb.beat()
    r = bare.client.post("/v1/jobs", headers={"Authorization": f"Bearer {bare.tokens.member}"}, json={
        "name": "owners", "project": "default", "command": "true",
        "resources": {"accelerator": "nvidia-a100-80g", "devices_per_node": 1, "memory_per_node": 1024}})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    with bare.db.begin() as s:
        node_id = s.scalar(select(NodeRow.id).where(NodeRow.name == "a100-0"))
        job_store.claim(s, job_id, Start(job_id, "nvidia-a100-80g", (Placement("a100-0", (2,)),), "test"), {"a100-0": node_id})
    assert hb.beat()
    owners, idle = hb.state.owners()
    assert owners == {2: (r.json()["org"], "default")} and idle == frozenset()
    hb.state.set_backend_error("BackendError: npu-smi timed out")
    body = hb.body()
    assert {d["health"] for d in body["devices"]} == {"Unknown"} and {d["utilization_pct"] for d in body["devices"]} == {None}
    assert hb.beat()
    assert bare.nodes()["a100-0"]["unhealthy_devices"] == list(range(8))


def test_connection_refused_and_5xx_count_failures_and_back_off(caplog: pytest.LogCaptureFixture) -> None:
    """With no API listening, and with an API answering 503, beats fail quietly (one log line
    each), count failures and back off 1 s, 2 s, 4 s, ..."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    collector = SimulatedCollector("nvidia-a100-80g", Vendor.NVIDIA, 2, seed=1, node="n")
    hb = HeartbeatClient(f"http://127.0.0.1:{port}", "t", "n", collector, 4, 4096, timeout_s=2)
    with caplog.at_level(logging.WARNING, logger="agents.heartbeat"):
        assert hb.beat() is False and hb.retry_in == 1
        assert hb.beat() is False and hb.retry_in == 2
    assert hb.state.heartbeat_failures == 2
    assert len(caplog.records) == 2 and "cannot reach" in caplog.records[0].getMessage()
    hb.close()

    def unavailable(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"code": "internal_error", "detail": "database is down"})

    caplog.clear()
    hb5 = HeartbeatClient("http://api", "t", "n", collector, 4, 4096, http=httpx.Client(transport=httpx.MockTransport(unavailable)))
    with caplog.at_level(logging.WARNING, logger="agents.heartbeat"):
        assert hb5.beat() is False
    assert "HTTP 503 internal_error: database is down" in caplog.records[0].getMessage()


def test_backoff_is_capped_exponential_and_resets() -> None:
    """Backoff doubles from 1 s up to 30 s and starts over after reset()."""
    b = Backoff()
    assert [b.next() for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    b.reset()
    assert b.next() == 1


def test_run_waits_backoff_after_failures_then_interval(bare: Center) -> None:
    """run() waits the backoff delay after each failed beat and `interval` after a success,
    and returns when the stop event is set."""
    answers = iter([503, 503, 503, None, None])

    def flaky(request: httpx.Request) -> httpx.Response:
        status = next(answers)
        if status is None:  # hand the request to the real app
            r = bare.client.put(str(request.url), content=request.content, headers=dict(request.headers))
            return httpx.Response(r.status_code, content=r.content, headers=r.headers)
        return httpx.Response(status, json={"code": "internal_error", "detail": "x"})

    class Stop:
        def __init__(self, after: int) -> None:
            self.waits: list[float] = []
            self.after = after

        def is_set(self) -> bool:
            return len(self.waits) >= self.after

        def wait(self, timeout: float) -> bool:
            self.waits.append(timeout)
            return self.is_set()

    collector = SimulatedCollector("nvidia-a100-80g", Vendor.NVIDIA, 2, seed=1, node="flaky-0")
    hb = HeartbeatClient(API, bare.tokens.agent, "flaky-0", collector, 4, 4096,
                         http=httpx.Client(transport=httpx.MockTransport(flaky)))
    stop = Stop(after=5)
    hb.run(stop, interval=5.0)  # type: ignore[arg-type]
    assert stop.waits == [1, 2, 4, 5.0, 5.0]
    assert hb.state.heartbeat_failures == 3
    assert "flaky-0" in bare.nodes()


# ----------------------------------------------------------------- real process


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def live_api(bare: Center) -> Iterator[str]:
    """The same app served by a real uvicorn server on a free port, in a thread."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(create_app(bare.settings, bare.db), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=5)


def test_agent_process_registers_serves_metrics_and_stops_on_sigterm(bare: Center, live_api: str) -> None:
    """`suanli-agent run --backend simulated` registers its node with a real API server, answers
    /metrics over HTTP with dcgm and unified families, and exits 0 within 5 s of SIGTERM."""
    script = Path(sys.executable).with_name("suanli-agent")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "agents.main"]
    metrics_port = _free_port()
    cmd += ["run", "--backend", "simulated", "--api-url", live_api, "--node", "sim-0",
            "--accelerator-type", "nvidia-a100-80g", "--devices", "8", "--cpus", "16", "--memory-mb", "65536",
            "--label", "rack=r9", "--host", "127.0.0.1", "--port", str(metrics_port), "--interval", "0.5", "--seed", "1"]
    env = {**os.environ, "SUANLI_AGENT_TOKEN": bare.tokens.agent}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        admin = {"Authorization": f"Bearer {bare.tokens.admin}"}
        deadline = time.monotonic() + 20
        node = None
        while node is None:
            assert proc.poll() is None, f"agent exited early: {proc.stdout.read() if proc.stdout else ''}"
            assert time.monotonic() < deadline, "the node never appeared"
            nodes = {n["name"]: n for n in httpx.get(f"{live_api}/v1/nodes", headers=admin).json()}
            node = nodes.get("sim-0")
            time.sleep(0.1)
        assert node["device_count"] == 8 and node["labels"] == {"rack": "r9"}
        while True:  # the API may have stored the beat a moment before the agent read the answer
            text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
            fams = {f.name: f for f in text_string_to_metric_families(text)}
            if fams["suanli_agent_last_heartbeat_timestamp_seconds"].samples[0].value > 0:
                break
            assert time.monotonic() < deadline, "the agent never recorded an accepted heartbeat"
            time.sleep(0.1)
        assert len(fams["DCGM_FI_DEV_GPU_UTIL"].samples) == 8
        assert {s.labels["node"] for s in fams["suanli_device_allocated"].samples} == {"sim-0"}
    finally:
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        try:
            rc = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail("the agent did not stop within 5 s of SIGTERM")
    output = proc.stdout.read() if proc.stdout else ""
    assert rc == 0, output
    assert time.monotonic() - t0 < 5


# ----------------------------------------------------------------- command line


def test_ray_args_agree_with_localray(capsys: pytest.CaptureFixture[str]) -> None:
    """`ray-args` prints exactly what suanli.localray gives the same server: --num-gpus N for
    NVIDIA, "NPU": N for Ascend, dev-0..dev-(N-1) and accelerator_type:<type> in --resources,
    and the node/type labels."""
    import json
    import shlex

    from agents.main import main
    from suanli.localray import ray_node_args

    for server in demo_cluster().servers:
        assert main(["ray-args", "--node", server.name, "--accelerator-type", server.accelerator_type,
                     "--devices", str(server.devices), "--cpus", str(server.cpus), "--memory-mb", str(server.memory_mb)]) == 0
        words = shlex.split(capsys.readouterr().out)
        flags = dict(zip(words[::2], words[1::2], strict=True))
        expected = ray_node_args(server)
        assert json.loads(flags["--resources"]) == expected["resources"]
        assert int(flags["--num-gpus"]) == expected["num_gpus"] == (8 if server.vendor is Vendor.NVIDIA else 0)
        assert int(flags["--num-cpus"]) == server.cpus and int(flags["--memory"]) == expected["memory"]
        assert flags["--labels"] == f"suanli.io/node={server.name},suanli.io/accelerator-type={server.accelerator_type}"
        resources = json.loads(flags["--resources"])
        assert {f"dev-{i}" for i in range(8)} | {f"accelerator_type:{server.accelerator_type}"} <= set(resources)
        assert resources.get("NPU") == (8 if server.vendor is Vendor.ASCEND else None)


def test_auto_backend_without_accelerators_exits_2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """With neither NVML nor npu-smi (this machine: no NVIDIA driver, no npu-smi on PATH), `run`
    (backend auto) exits 2 with exactly the NO_ACCELERATOR line; it never falls back to simulating."""
    from agents.main import NO_ACCELERATOR, main

    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError: no NVML either way
    monkeypatch.setenv("PATH", str(tmp_path))  # no npu-smi
    monkeypatch.delenv("SUANLI_AGENT_BACKEND", raising=False)
    assert main(["run"]) == 2
    assert capsys.readouterr().err == f"suanli-agent: {NO_ACCELERATOR}\n"


@pytest.mark.parametrize("backend, reason", [("nvidia", "nvidia backend: "), ("ascend", "ascend backend: npu-smi not found")])
def test_hardware_backend_without_its_driver_exits_2(backend: str, reason: str, monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--backend nvidia|ascend on a machine without that driver (no NVML library, no npu-smi on PATH):
    exit 2 with one stderr line naming the backend and why, before any token or network is needed."""
    from agents.main import main

    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("SUANLI_AGENT_TOKEN", raising=False)
    assert main(["run", "--backend", backend, "--accelerator-type", f"{backend}-x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"suanli-agent: {reason}") and err.count("\n") == 1


def test_topology_and_ray_node_id_reach_the_node(bare: Center) -> None:
    """Invariants: a collector that knows its topology sends it (read once) with the Ray node
    id; the API keeps and shows both; a matrix of the wrong shape is refused with 422
    `bad_topology` and changes nothing."""

    class Linked(SimulatedCollector):
        reads = 0

        def topology(self) -> list[list[str]]:
            Linked.reads += 1
            return [["X" if i == j else "NV12" for j in range(8)] for i in range(8)]

    collector = Linked("nvidia-a100-80g", Vendor.NVIDIA, 8, seed=1, node="a100-0")
    hb = HeartbeatClient(API, bare.tokens.agent, "a100-0", collector, cpus=64, memory_mb=1024 * 1024,
                         http=bare.client, state=AgentState(), ray_node_id="ab12cd")
    assert hb.beat() and hb.beat() and Linked.reads == 1
    node = bare.nodes()["a100-0"]
    assert node["topology"][0][:3] == ["X", "NV12", "NV12"] and node["ray_node_id"] == "ab12cd"
    body = hb.body() | {"topology": [["X"]]}
    r = bare.client.put("/v1/nodes/a100-0/heartbeat", json=body, headers={"Authorization": f"Bearer {bare.tokens.agent}"})
    assert r.status_code == 422 and r.json()["code"] == "bad_topology"
    assert bare.nodes()["a100-0"]["topology"][0][1] == "NV12"
