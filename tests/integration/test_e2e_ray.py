"""End to end on a real local Ray cluster: submit over HTTP → the scheduler loop (thread) →
a runner actor pinned to the chosen server and devices → the process → status, logs, bill.

The cluster is `suanli.localray` (one Ray node per simulated server, real raylets); the
only thing simulated is the accelerator hardware itself (no physical GPU/NPU here).
"""

from __future__ import annotations

import os
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from quota.ledger import cost_fen, cost_fen_milli, duration_ms

pytestmark = [pytest.mark.ray, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT"}


def submit(rc, member, **over: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    spec: dict[str, Any] = {"name": "t", "resources": {"accelerator": "nvidia-a100-80g", "cpus_per_node": 1,
                                                      "memory_per_node": "1Gi"}, "command": "true", "time_limit": 120}
    spec.update(over)
    r = rc.client.post("/v1/jobs", json=spec, headers=rc.headers(member.token))
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def wait_for(rc, member, job_id: int, statuses: set[str], timeout: float = 60) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = rc.client.get(f"/v1/jobs/{job_id}", headers=rc.headers(member.token)).json()
        if job["status"] in statuses:
            return job  # type: ignore[no-any-return]
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} is {job['status']} ({job['reason']}), wanted {statuses}")


def wait_rerun(rc, member, job_id: int, timeout: float = 60) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The job once it runs again after one requeue (restart count 1, RUNNING)."""
    deadline = time.time() + timeout
    job: dict[str, Any] = {}
    while time.time() < deadline:
        job = rc.client.get(f"/v1/jobs/{job_id}", headers=rc.headers(member.token)).json()
        if job["restart_count"] == 1 and job["status"] == "RUNNING":
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not run again: {job}")


def logs(rc, member, job_id: int) -> str:  # type: ignore[no-untyped-def]
    return rc.client.get(f"/v1/jobs/{job_id}/logs", headers=rc.headers(member.token)).text  # type: ignore[no-any-return]


def wait_log(rc, member, job_id: int, pattern: str, timeout: float = 60) -> re.Match[str]:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = re.search(pattern, logs(rc, member, job_id))
        if m:
            return m
        time.sleep(0.2)
    raise AssertionError(f"{pattern!r} not in log of job {job_id}: {logs(rc, member, job_id)!r}")


def balance(rc, member) -> int:  # type: ignore[no-untyped-def]
    return rc.client.get("/v1/balance", headers=rc.headers(member.token)).json()["balance_fen"]  # type: ignore[no-any-return]


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_training_job_succeeds_with_logs_and_exact_charge(ray_center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: the example job runs to SUCCEEDED on the devices the scheduler chose; its
    log holds the training output; the org is charged exactly devices × ms × price (half-up),
    once, and the balance drops by that amount."""
    m = ray_center.new_org()
    before = balance(ray_center, m)
    job = submit(ray_center, m, name="train", command="python train_numpy.py --epochs 20",
                 working_dir=str(REPO / "examples"), resources={"accelerator": "nvidia-a100-80g", "devices_per_node": 2,
                                                               "cpus_per_node": 1, "memory_per_node": "1Gi"})
    job = wait_for(ray_center, m, job["id"], TERMINAL, timeout=120)
    assert job["status"] == "SUCCEEDED", (job["reason"], logs(ray_center, m, job["id"]))
    assert job["exit_code"] == 0
    text = logs(ray_center, m, job["id"])
    assert re.search(r"epoch\s+20/20 loss [0-9.]+ train_acc [0-9.]+ test_acc [0-9.]+", text)
    p = job["placements"][0]
    assert f"devices {','.join(map(str, p['devices']))}" in text  # CUDA_VISIBLE_DEVICES = the assignment
    assert len(p["devices"]) == 2
    started, ended = datetime.fromisoformat(job["started_at"]), datetime.fromisoformat(job["ended_at"])
    expected = cost_fen(2, duration_ms(started, ended), job["price_fen_per_device_hour"])
    assert job["price_fen_per_device_hour"] == 1200
    assert job["cost_fen"] == expected
    assert balance(ray_center, m) == before - expected
    charges = [t for t in ray_center.client.get("/v1/balance", headers=ray_center.headers(m.token)).json()["recent"]
               if t["kind"] == "charge"]
    assert [(t["job_id"], t["amount_fen"]) for t in charges] == [(job["id"], -expected)]
    events = ray_center.client.get(f"/v1/jobs/{job['id']}/events", headers=ray_center.headers(m.token)).json()
    assert [e["to_status"] for e in events] == ["PENDING", "STARTING", "RUNNING", "SUCCEEDED"]


def test_cancel_running_job_kills_its_process(ray_center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: cancelling a running job ends it CANCELLED, its process (and children)
    are gone, its devices are free again, and it is billed for the time it ran."""
    m = ray_center.new_org()
    job = submit(ray_center, m, command="sleep 600 & echo pid=$$ child=$!; wait")
    wait_for(ray_center, m, job["id"], {"RUNNING"})
    found = wait_log(ray_center, m, job["id"], r"pid=(\d+) child=(\d+)")
    pid, child = int(found.group(1)), int(found.group(2))
    assert alive(pid) and alive(child)
    r = ray_center.client.post(f"/v1/jobs/{job['id']}/cancel", headers=ray_center.headers(m.token))
    assert r.status_code == 200 and r.json()["status"] in ("CANCELLING", "CANCELLED")
    done = wait_for(ray_center, m, job["id"], TERMINAL)
    assert done["status"] == "CANCELLED"
    assert not alive(pid) and not alive(child)
    assert done["cost_fen"] is not None and done["started_at"] is not None
    nodes = ray_center.client.get("/v1/nodes", headers=ray_center.headers(m.token)).json()
    assert all(d["job_id"] != job["id"] for n in nodes for d in n["devices"])


def test_time_limit_ends_job_as_timeout(ray_center) -> None:  # type: ignore[no-untyped-def]
    """Invariant: a job running past its time limit is stopped and ends TIMEOUT."""
    m = ray_center.new_org()
    job = submit(ray_center, m, command="sleep 600", time_limit=2, grace_period=1)
    done = wait_for(ray_center, m, job["id"], TERMINAL)
    assert done["status"] == "TIMEOUT", done["reason"]
    elapsed = (datetime.fromisoformat(done["ended_at"]) - datetime.fromisoformat(done["started_at"])).total_seconds()
    assert 1.5 < elapsed < 10


def test_failing_command_ends_failed_with_its_exit_code(ray_center) -> None:  # type: ignore[no-untyped-def]
    """Invariant: a command exiting 3 ends FAILED with exit code 3."""
    m = ray_center.new_org()
    job = submit(ray_center, m, command="echo about to fail; exit 3")
    done = wait_for(ray_center, m, job["id"], TERMINAL)
    assert (done["status"], done["exit_code"]) == ("FAILED", 3)
    assert "about to fail" in logs(ray_center, m, job["id"])


def test_ascend_job_sees_its_npus_and_gang_job_spans_servers(ray_center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: an Ascend job gets ASCEND_RT_VISIBLE_DEVICES (not CUDA's) set to its
    assignment; a 2-server job starts one runner on each of two distinct servers."""
    m = ray_center.new_org()
    npu = submit(ray_center, m, resources={"accelerator": "ascend-910b", "devices_per_node": 3, "cpus_per_node": 1,
                                           "memory_per_node": 512},
                 command='echo "npus=$ASCEND_RT_VISIBLE_DEVICES cuda=${CUDA_VISIBLE_DEVICES-unset}"')
    gang = submit(ray_center, m, resources={"accelerator": "nvidia-a100-80g", "devices_per_node": 1, "nodes": 2,
                                            "cpus_per_node": 1, "memory_per_node": 512},
                  command='echo "rank=$SUANLI_RANK node=$SUANLI_NODE"')
    npu_done = wait_for(ray_center, m, npu["id"], TERMINAL)
    assert npu_done["status"] == "SUCCEEDED"
    devs = ",".join(map(str, npu_done["placements"][0]["devices"]))
    assert f"npus={devs} cuda=unset" in logs(ray_center, m, npu["id"])
    gang_done = wait_for(ray_center, m, gang["id"], TERMINAL)
    assert gang_done["status"] == "SUCCEEDED"
    assert len({p["node"] for p in gang_done["placements"]}) == 2


def test_bad_working_dir_fails_with_a_reason(ray_center) -> None:  # type: ignore[no-untyped-def]
    """Invariant: a working dir missing on the server ends the job FAILED, saying why, unbilled."""
    m = ray_center.new_org()
    job = submit(ray_center, m, working_dir="/nonexistent/suanli-test")
    done = wait_for(ray_center, m, job["id"], TERMINAL)
    assert done["status"] == "FAILED" and "does not exist" in done["reason"]
    assert done["cost_fen"] is None
    assert os.path.exists(ray_center.settings.jobs_dir / str(job["id"]))


def test_lost_runner_fails_the_job_unbilled_and_frees_devices(ray_center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: when Ray loses a job's runner (the per-rank actor, or with the supervisor
    launcher its server's supervisor, killed while the node lives), the job ends FAILED
    saying the runner was lost, is not charged, its devices are free, and its process is
    gone (PDEATHSIG from the runner)."""
    import ray

    from scheduler.launcher import RayLauncher
    from scheduler.supervisor import SupervisorLauncher

    m = ray_center.new_org()
    job = submit(ray_center, m, command="echo pid=$$; exec sleep 600")
    running = wait_for(ray_center, m, job["id"], {"RUNNING"})
    pid = int(wait_log(ray_center, m, job["id"], r"pid=(\d+)").group(1))
    name = (SupervisorLauncher.supervisor_name(running["placements"][0]["node"])
            if isinstance(ray_center.loop.launcher, SupervisorLauncher) else RayLauncher.actor_name(job["id"], 0))
    actor = ray.get_actor(name, namespace=ray_center.settings.ray_namespace)
    ray.kill(actor, no_restart=True)
    done = wait_for(ray_center, m, job["id"], TERMINAL)
    assert done["status"] == "FAILED" and "runner lost" in done["reason"]
    assert done["cost_fen"] is None
    deadline = time.time() + 10
    while alive(pid) and time.time() < deadline:
        time.sleep(0.1)
    assert not alive(pid)
    nodes = ray_center.client.get("/v1/nodes", headers=ray_center.headers(m.token)).json()
    assert all(d["job_id"] != job["id"] for n in nodes for d in n["devices"])


def test_runner_that_cannot_be_placed_is_requeued_then_failed(local_ray, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Invariants: a server the database knows but Ray does not (no Ray node carries its
    label) leaves the runner unplaceable: the job is requeued after the starting timeout,
    keeping its place, and after MAX_REQUEUES requeues ends FAILED with the reason; its
    devices are released each time, and each attempt holds and settles under its own run
    number with nothing charged."""
    from tests.conftest import make_center

    from scheduler.loop import LoopConfig, SchedulerLoop
    from scheduler.reconciler import MAX_REQUEUES
    from scheduler.supervisor import make_launcher
    from suanli.cluster import ClusterSpec, ServerSpec

    ghost = ClusterSpec(servers=[ServerSpec(name="ghost-0", accelerator_type="nvidia-a100-80g", vendor="nvidia")])
    c = make_center("", tmp_path, "sqlite", cluster=ghost)
    launcher = make_launcher(c.settings.ray_launcher, local_ray.address)
    loop = SchedulerLoop(c.db, launcher, LoopConfig(c.settings.jobs_dir, starting_timeout_s=0.5))
    m = c.new_org()
    job = c.client.post("/v1/jobs", json={"name": "g", "resources": {"accelerator": "nvidia-a100-80g", "cpus_per_node": 1,
                                                                    "memory_per_node": 256}, "command": "true"},
                        headers=c.headers(m.token)).json()
    deadline = time.time() + 60
    while time.time() < deadline:
        loop.cycle()
        got = c.client.get(f"/v1/jobs/{job['id']}", headers=c.headers(m.token)).json()
        if got["status"] == "FAILED":
            break
        time.sleep(0.2)
    assert got["status"] == "FAILED" and "launch failed" in got["reason"], got
    events = c.client.get(f"/v1/jobs/{job['id']}/events", headers=c.headers(m.token)).json()
    assert sum(1 for e in events if (e["from_status"], e["to_status"]) == ("STARTING", "PENDING")) == MAX_REQUEUES
    assert got["submitted_at"] == job["submitted_at"]
    nodes = c.client.get("/v1/nodes", headers=c.headers(m.token)).json()
    assert nodes[0]["devices_free"] == 8
    # Each attempt is its own run: its own hold, settled as a center fault (nothing charged).
    from sqlalchemy import select

    from suanli.db.models import BillingRunRow
    with c.db.begin() as s:
        runs = list(s.scalars(select(BillingRunRow).where(BillingRunRow.job_id == job["id"]).order_by(BillingRunRow.run)))
    assert [r.run for r in runs] == list(range(MAX_REQUEUES + 1))
    assert all(r.center_fault and r.cost_fen == 0 for r in runs)
    bal = c.client.get("/v1/balance", headers=c.headers(m.token)).json()
    assert bal["held_fen"] == 0
    c.db.dispose()


def test_reclaim_preempts_a_borrowing_job_requeues_it_and_starts_the_guaranteed_one(ray_center) -> None:  # type: ignore[no-untyped-def]
    """Invariants (live loop, real Ray): when an org below its guarantee cannot start, the
    most recently started borrowing job of another org gets its stop signal (SIGTERM) and
    grace period, is charged for the time it ran, goes back to PENDING keeping its submit
    time with restart count 1, and the guaranteed job then starts on the freed server."""
    from suanli.db.store import tenancy

    borrower, owner = ray_center.new_org(), ray_center.new_org()
    with ray_center.db.begin() as s:
        org = tenancy.get_org(s, owner.org)
        tenancy.set_quota(s, "org", org.id, "nvidia-a100-80g", 8, None)
    loop_cmd = "trap 'echo got SIGTERM; exit 0' TERM; echo started; while true; do sleep 0.2; done"
    big = {"accelerator": "nvidia-a100-80g", "devices_per_node": 8, "cpus_per_node": 1, "memory_per_node": 512}
    first = submit(ray_center, borrower, name="b1", resources=big, command=loop_cmd, grace_period=2)
    wait_for(ray_center, borrower, first["id"], {"RUNNING"})
    second = submit(ray_center, borrower, name="b2", resources=big, command=loop_cmd, grace_period=2)
    victim_node = wait_for(ray_center, borrower, second["id"], {"RUNNING"})["placements"][0]["node"]
    wait_log(ray_center, borrower, second["id"], "started")
    try:
        claim = submit(ray_center, owner, name="mine", resources=big, command="echo mine; sleep 1")
        done = wait_for(ray_center, owner, claim["id"], TERMINAL, timeout=90)
        assert done["status"] == "SUCCEEDED", done["reason"]
        victim = ray_center.client.get(f"/v1/jobs/{second['id']}", headers=ray_center.headers(borrower.token)).json()
        assert victim["status"] in ("PENDING", "STARTING", "RUNNING") and victim["restart_count"] == 1
        assert victim["submitted_at"] == second["submitted_at"]
        assert "got SIGTERM" in logs(ray_center, borrower, second["id"])
        events = ray_center.client.get(f"/v1/jobs/{second['id']}/events", headers=ray_center.headers(borrower.token)).json()
        steps = [(e["from_status"], e["to_status"]) for e in events]
        assert ("RUNNING", "PREEMPTING") in steps and ("PREEMPTING", "PENDING") in steps
        preempt = next(e for e in events if e["to_status"] == "PREEMPTING")
        assert f"job {claim['id']}" in preempt["reason"] and owner.org in preempt["reason"]
        assert done["placements"][0]["node"] == victim_node  # the reserved, freed server
        untouched = ray_center.client.get(f"/v1/jobs/{first['id']}", headers=ray_center.headers(borrower.token)).json()
        assert untouched["restart_count"] == 0  # the earlier-started borrowing job was not needed
        txns = [t for t in ray_center.client.get("/v1/balance?recent=50", headers=ray_center.headers(borrower.token)).json()["recent"]
                if t["job_id"] == second["id"]]
        run0 = {t["kind"]: t["key"] for t in txns if ":run:0" in t["key"]}
        assert run0 == {"hold": f"hold:job:{second['id']}:run:0", "charge": f"settle:job:{second['id']}:run:0",
                        "release": f"release:job:{second['id']}:run:0"}  # the preempted run was settled once
    finally:
        for job in (first, second):
            ray_center.client.post(f"/v1/jobs/{job['id']}/cancel", headers=ray_center.headers(borrower.token))
        for job in (first, second):
            wait_for(ray_center, borrower, job["id"], TERMINAL)


def test_fractional_jobs_share_one_device_and_pay_their_share(ray_center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: two half-device jobs run at the same time on the same device of the same
    server (Ray holds half of `dev-<i>` for each), see the same visibility variable and
    their fraction, and each is charged for half a device."""
    m = ray_center.new_org()
    half = {"accelerator": "ascend-910b", "device_fraction": 0.5, "cpus_per_node": 1, "memory_per_node": 256}
    cmd = 'echo "dev=$ASCEND_RT_VISIBLE_DEVICES frac=$SUANLI_DEVICE_FRACTION"; sleep 3'
    a = submit(ray_center, m, name="half-a", resources=half, command=cmd)
    b = submit(ray_center, m, name="half-b", resources=half, command=cmd)
    ra = wait_for(ray_center, m, a["id"], {"RUNNING", *TERMINAL})
    rb = wait_for(ray_center, m, b["id"], {"RUNNING", *TERMINAL})
    assert ra["placements"] == rb["placements"] and len(ra["placements"][0]["devices"]) == 1
    nodes = {n["name"]: n for n in ray_center.client.get("/v1/nodes", headers=ray_center.headers(m.token)).json()}
    assert nodes[ra["placements"][0]["node"]]["devices_free"] == 7  # one device, shared by both
    da, db = (wait_for(ray_center, m, j["id"], TERMINAL) for j in (a, b))
    assert da["status"] == db["status"] == "SUCCEEDED"
    dev = ra["placements"][0]["devices"][0]
    for job in (da, db):
        assert f"dev={dev} frac=0.5" in logs(ray_center, m, job["id"])
        ms = duration_ms(datetime.fromisoformat(job["started_at"]), datetime.fromisoformat(job["ended_at"]))
        assert job["cost_fen"] == cost_fen_milli(500, ms, job["price_fen_per_device_hour"])
    starts = sorted(datetime.fromisoformat(j["started_at"]) for j in (da, db))
    ends = sorted(datetime.fromisoformat(j["ended_at"]) for j in (da, db))
    assert starts[1] < ends[0]  # they overlapped
