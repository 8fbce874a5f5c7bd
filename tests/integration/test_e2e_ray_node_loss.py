"""Ray node loss end to end: a Ray node removed under a running job (`Cluster.remove_node`)
ends the job NODE_LOST, or requeues it when its spec allows, uncharged (the center's fault)
and never as FAILED "runner lost"; a multi-node job's other ranks leave no process behind;
a requeued job runs again on a server whose Ray node is alive.

The session's shared Ray nodes are never removed: each test adds its own temporary Ray
nodes to `local_ray` (their own `suanli.io/node` label and `dev-<i>` resources, exactly as
`suanli.localray` builds a server's node), registers them as the only servers of its own
SQLite center, and runs its own scheduler loop in its own Ray namespace. No agents run (the
servers are registered once); only the accelerator hardware is simulated.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_e2e_ray import TERMINAL, alive, submit, wait_for, wait_rerun

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@dataclass
class Lossy:
    center: Any
    cluster: Any  # ray.cluster_utils.Cluster
    nodes: dict[str, Any]  # server name -> its Ray node
    namespace: str
    removed: set[str] = field(default_factory=set)

    def remove(self, server: str) -> None:
        self.cluster.remove_node(self.nodes[server])
        self.removed.add(server)


def _lossy_center(local_ray: Any, tmp_path: Path, names: list[str]) -> Iterator[Lossy]:
    from dataclasses import replace

    from scheduler.loop import SchedulerLoop
    from scheduler.main import loop_config
    from scheduler.supervisor import make_launcher
    from suanli.cluster import ClusterSpec, ServerSpec
    from suanli.localray import ray_node_args
    from tests.conftest import make_center, unique

    spec = ClusterSpec(servers=[ServerSpec(name=n, accelerator_type="nvidia-a100-80g", vendor="nvidia", devices=2, cpus=4,
                                           memory_mb=8192) for n in names])  # type: ignore[arg-type]
    cluster = local_ray.cluster
    nodes = {s.name: cluster.add_node(**ray_node_args(s)) for s in spec.servers}
    cluster.wait_for_nodes()
    c = make_center("", tmp_path, "sqlite", cluster=spec)
    namespace = unique("ray-node-loss")
    launcher = make_launcher(c.settings.ray_launcher, local_ray.address, namespace)
    loop = SchedulerLoop(c.db, launcher, replace(loop_config(c.settings), starting_timeout_s=60, node_timeout_s=None))
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop, 0.2), daemon=True)
    thread.start()
    lossy = Lossy(c, cluster, nodes, namespace)
    try:
        yield lossy
    finally:
        stop.set()
        thread.join(timeout=10)
        launcher.stop_all(grace_s=1.0)
        for name, node in nodes.items():
            if name not in lossy.removed:
                cluster.remove_node(node)
        c.client.close()
        c.db.dispose()


@pytest.fixture
def pair_a(local_ray, tmp_path: Path) -> Iterator[Lossy]:  # type: ignore[no-untyped-def]
    yield from _lossy_center(local_ray, tmp_path, ["rl-a-0", "rl-a-1"])


@pytest.fixture
def pair_b(local_ray, tmp_path: Path) -> Iterator[Lossy]:  # type: ignore[no-untyped-def]
    yield from _lossy_center(local_ray, tmp_path, ["rl-b-0", "rl-b-1"])


def _rank_pid(c: Any, m: Any, job_id: int, rank: int, timeout: float = 60) -> int:
    deadline = time.time() + timeout
    text = ""
    while time.time() < deadline:
        text = c.client.get(f"/v1/jobs/{job_id}/logs", params={"rank": rank}, headers=c.headers(m.token)).text
        found = re.search(r"pid (\d+)", text)
        if found:
            return int(found.group(1))
        time.sleep(0.2)
    raise AssertionError(f"no pid in rank {rank}'s log of job {job_id}: {text!r}")


def _gone(pids: list[int], timeout: float = 15) -> list[int]:
    deadline = time.time() + timeout
    while any(alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.2)
    return [p for p in pids if alive(p)]


def _runners(namespace: str) -> list[str]:
    """The job ranks Ray holds in the namespace: per-rank runner actors by name, and the
    ranks each server's supervisor still holds (the supervisors themselves stay)."""
    from tests.integration.test_scheduler_crash import ranks_on_ray

    return ranks_on_ray(namespace)


def test_removed_ray_node_ends_a_gang_job_node_lost_and_stops_its_other_rank(pair_a: Lossy) -> None:
    """Invariants: removing the Ray node of one rank of a running 2-node job that asked not
    to be requeued ends it NODE_LOST (not FAILED "runner lost"), naming the server and the
    Ray node's death, not charged, devices released; the process of the rank on the server
    that is still alive is stopped too, and no runner actor of the job is left on Ray."""
    c = pair_a.center
    m = c.new_org()
    before = c.client.get("/v1/balance", headers=c.headers(m.token)).json()["balance_fen"]
    job = submit(c, m, command="echo pid $$; exec sleep 300", requeue=False,
                 resources={"accelerator": "nvidia-a100-80g", "devices_per_node": 1, "nodes": 2, "cpus_per_node": 1,
                            "memory_per_node": 512})
    running = wait_for(c, m, job["id"], {"RUNNING"})
    servers = [p["node"] for p in running["placements"]]
    assert sorted(servers) == ["rl-a-0", "rl-a-1"]
    pids = [_rank_pid(c, m, job["id"], r) for r in (0, 1)]
    assert all(alive(p) for p in pids)

    victim = servers[1]
    pair_a.remove(victim)
    done = wait_for(c, m, job["id"], TERMINAL | {"NODE_LOST"}, timeout=30)
    assert done["status"] == "NODE_LOST", done["reason"]
    assert f"server {victim} lost (its Ray node died)" in done["reason"] and "not charged" in done["reason"]
    assert done["cost_fen"] is None
    assert _gone(pids) == [], "a rank's process outlived the job"
    deadline = time.time() + 10
    while _runners(pair_a.namespace) and time.time() < deadline:
        time.sleep(0.2)
    assert _runners(pair_a.namespace) == []
    nodes = c.client.get("/v1/nodes", headers=c.headers(m.token)).json()
    assert all(d["job_id"] != job["id"] for n in nodes for d in n["devices"])
    assert c.client.get("/v1/balance", headers=c.headers(m.token)).json()["balance_fen"] == before
    events = c.client.get(f"/v1/nodes/{victim}/events", headers=c.headers()).json()
    assert any(e["kind"] == "engine_lost" for e in events), events


def test_removed_ray_node_requeues_a_job_that_runs_again_elsewhere(pair_b: Lossy) -> None:
    """Invariants: a requeueable job whose server's Ray node is removed goes back to PENDING
    uncharged (restart count 1, submit time kept), its process is gone, and it runs again on
    the other server — never on the one without a live Ray node; a later job is not placed
    there either."""
    c = pair_b.center
    m = c.new_org()
    job = submit(c, m, command="echo pid $$; exec sleep 300")
    first = wait_for(c, m, job["id"], {"RUNNING"})
    victim = first["placements"][0]["node"]
    pid = _rank_pid(c, m, job["id"], 0)
    pair_b.remove(victim)

    again = wait_rerun(c, m, job["id"])
    assert again["placements"][0]["node"] != victim
    assert again["submitted_at"] == job["submitted_at"]
    events = [e["reason"] for e in c.client.get(f"/v1/jobs/{job['id']}/events", headers=c.headers(m.token)).json()]
    assert any(f"requeued: server {victim} lost (its Ray node died)" in e and "not charged" in e for e in events), events
    assert not any("runner lost" in e for e in events), events
    assert _gone([pid]) == []
    other = submit(c, m, command="true")
    assert wait_for(c, m, other["id"], TERMINAL)["placements"][0]["node"] != victim
    c.client.post(f"/v1/jobs/{job['id']}/cancel", headers=c.headers(m.token))
    assert wait_for(c, m, job["id"], TERMINAL)["status"] == "CANCELLED"
