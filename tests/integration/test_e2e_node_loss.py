"""Heartbeat loss end to end on the real local Ray cluster: a server whose agent goes silent
is NOT_READY (nothing new placed on it), then LOST: its running job's runner is killed on
Ray and the job is requeued, uncharged, and runs again on a live server.

Its own center (SQLite) and scheduler loop with short timeouts, on the session's Ray cluster
in its own Ray namespace, so the shared `ray_center` (which runs without heartbeats) is not
disturbed. Heartbeats are sent through the API by a thread standing for the agents of the
servers still alive; only the accelerator hardware is simulated.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_e2e_ray import alive, submit, wait_for, wait_log, wait_rerun

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _body(name: str) -> dict[str, Any]:
    return {"accelerator_type": "nvidia-a100-80g", "cpus": 64, "memory_mb": 1024 * 1024, "labels": {"rack": "r1"},
            "devices": [{"index": i, "uuid": f"{name}-{i}", "model": "A100", "memory_mb": 81920,
                         "utilization_pct": 90.0} for i in range(8)]}


@pytest.fixture
def center(local_ray, tmp_path: Path) -> Iterator[tuple[Any, set[str]]]:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from scheduler.loop import SchedulerLoop
    from scheduler.main import loop_config
    from scheduler.supervisor import make_launcher
    from tests.conftest import make_center

    c = make_center("", tmp_path, "sqlite")
    # The API and the scheduler read the same settings: NOT_READY after 12 missed 0.125 s
    # beats (1.5 s), LOST after 4 s.
    c.settings.node_heartbeat_interval_s = 0.125
    c.settings.node_lost_after_s = 4.0
    launcher = make_launcher(c.settings.ray_launcher, local_ray.address, "suanli-node-loss-test")
    loop = SchedulerLoop(c.db, launcher, replace(loop_config(c.settings), starting_timeout_s=60))
    assert (loop.config.node_timeout_s, loop.config.node_lost_after_s) == (1.5, 4.0)
    beating = {"a100-0", "a100-1"}  # 910b-0 stays silent: it is lost from the start, with nothing on it
    stop = threading.Event()

    def agents() -> None:
        while not stop.is_set():
            for name in sorted(beating):
                c.client.put(f"/v1/nodes/{name}/heartbeat", json=_body(name), headers=c.headers(c.tokens.agent))
            stop.wait(0.3)

    beats = threading.Thread(target=agents, daemon=True)
    beats.start()
    time.sleep(0.5)
    thread = threading.Thread(target=loop.run, args=(stop, 0.2), daemon=True)
    thread.start()
    yield c, beating
    stop.set()
    thread.join(timeout=10)
    beats.join(timeout=5)
    launcher.stop_all(grace_s=1.0)
    c.client.close()
    c.db.dispose()


def test_silent_server_is_not_ready_then_lost_and_its_job_runs_again_elsewhere(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: silent for the heartbeat timeout → NOT_READY while the job keeps running;
    silent for node_lost_after_s → LOST, the job's process on it is gone (runner killed
    through Ray), the job is requeued (restart count 1, not charged for the lost run) and
    runs again on a server that is still beating, never the lost one."""
    c, beating = center
    m = c.new_org()
    job = submit(c, m, command="echo pid $$; exec sleep 120", time_limit=300)
    first = wait_for(c, m, job["id"], {"RUNNING"})
    node = first["nodes"][0]
    pid = int(wait_log(c, m, job["id"], r"pid (\d+)").group(1))
    assert alive(pid)

    beating.discard(node)
    deadline = time.time() + 20
    status = ""
    while time.time() < deadline and status != "NOT_READY":
        status = c.client.get(f"/v1/nodes/{node}", headers=c.headers()).json()["status"]
        time.sleep(0.1)
    assert status == "NOT_READY"
    assert c.client.get(f"/v1/jobs/{job['id']}", headers=c.headers(m.token)).json()["status"] == "RUNNING"

    again = wait_rerun(c, m, job["id"])
    assert again["nodes"] and again["nodes"][0] != node and again["nodes"][0] in beating
    events = [e["reason"] for e in c.client.get(f"/v1/jobs/{job['id']}/events", headers=c.headers(m.token)).json()]
    assert any(f"requeued: server {node} lost" in e and "not charged" in e for e in events), events
    deadline = time.time() + 15
    while alive(pid) and time.time() < deadline:
        time.sleep(0.2)
    assert not alive(pid), "the process on the lost server was not stopped"
    assert c.client.get(f"/v1/nodes/{node}", headers=c.headers()).json()["status"] == "LOST"
    r = c.client.post(f"/v1/jobs/{job['id']}/cancel", headers=c.headers(m.token))
    assert r.status_code == 200, r.text
    wait_for(c, m, job["id"], {"CANCELLED"})
