"""The per-server supervisor (`scheduler.supervisor.Supervisor`) as a plain object, no Ray:
real processes on this machine. What Ray's `dev-<i>` resources guaranteed before now rests
on it: it refuses a rank whose devices overlap a live rank's (whole devices, or shares above
1000 milli); a run's start is idempotent, a newer run replaces an older one, an older one
never replaces a newer one; `release` removes only runs up to the one it names; `poll`
answers for the jobs asked, with each rank's run; rank 0 answers the rendezvous."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from scheduler.runner import RankSpec
from scheduler.supervisor import Supervisor


def rank(tmp_path: Path, job: int, command: str, devices: list[int], r: int = 0) -> dict[str, Any]:
    rs = RankSpec(job_id=job, rank=r, command=command, env={}, working_dir=str(tmp_path),
                  log_path=str(tmp_path / f"job-{job}-rank-{r}.log"), time_limit_s=60, grace_s=0.5,
                  visibility_var="CUDA_VISIBLE_DEVICES", devices=devices)
    return vars(rs)


@pytest.fixture
def sup() -> Any:
    s = Supervisor("srv-0", device_wait_s=0.3, ip="127.0.0.1")
    yield s
    s.stop_all(0.5)


def state(s: Supervisor, job: int, r: int = 0) -> dict[str, Any]:
    return s.poll([job])[job][r]


def wait_phase(s: Supervisor, job: int, phases: set[str], timeout: float = 10) -> dict[str, Any]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = state(s, job)
        if st["phase"] in phases:
            return st
        time.sleep(0.02)
    raise AssertionError(f"job {job} is {state(s, job)}")


def test_a_rank_on_a_busy_device_is_refused_naming_the_holder(sup: Supervisor, tmp_path: Path) -> None:
    """Invariants: a whole-device rank on a device a live rank of another job holds fails to
    launch (never starts its process), naming the device and the holder; once the holder is
    released the same devices start a new rank."""
    sup.start(rank(tmp_path, 1, "sleep 30", [0, 1]), 0, 1, "nvidia", 1000, "srv-0")
    wait_phase(sup, 1, {"RUNNING"})
    marker = tmp_path / "ran"
    sup.start(rank(tmp_path, 2, f"touch {marker}", [1]), 0, 1, "nvidia", 1000, "srv-0")
    st = wait_phase(sup, 2, {"EXITED"})
    assert st["started_at"] is None and "device 1 (job 1 rank 0)" in st["error"] and not marker.exists()
    assert sup.release(1) == 1
    sup.start(rank(tmp_path, 3, f"touch {marker}", [1]), 0, 1, "nvidia", 1000, "srv-0")
    assert wait_phase(sup, 3, {"EXITED"})["exit_code"] == 0 and marker.exists()


def test_shares_fit_up_to_one_device_and_no_further(sup: Supervisor, tmp_path: Path) -> None:
    """Invariants: two half-device ranks share a device; a third share that would make the
    device more than whole is refused; a different device is free."""
    for job in (1, 2):
        sup.start(rank(tmp_path, job, "sleep 30", [4]), 0, 1, "ascend", 500, "srv-0")
        wait_phase(sup, job, {"RUNNING"})
    sup.start(rank(tmp_path, 3, "sleep 30", [4]), 0, 1, "ascend", 100, "srv-0")
    assert "device 4" in wait_phase(sup, 3, {"EXITED"})["error"]
    sup.start(rank(tmp_path, 4, "sleep 30", [5]), 0, 1, "ascend", 100, "srv-0")
    assert wait_phase(sup, 4, {"RUNNING"})["pid"]


def test_runs_start_once_and_a_newer_run_replaces_an_older_one(sup: Supervisor, tmp_path: Path) -> None:
    """Invariants: starting the same run twice starts one process; a newer run of the job
    kills the older run's process and runs; a late start of the older run changes nothing;
    a late release of the older run leaves the newer one alone."""
    log = tmp_path / "starts"
    cmd = f"echo $SUANLI_RUN >> {log}; exec sleep 30"
    first = rank(tmp_path, 9, cmd, [0])
    first["env"] = {"SUANLI_RUN": "0"}
    sup.start(first, 0, 1, "nvidia", 1000, "srv-0")
    sup.start(first, 0, 1, "nvidia", 1000, "srv-0")
    old_pid = wait_phase(sup, 9, {"RUNNING"})["pid"]
    deadline = time.time() + 5  # RUNNING = spawned: let run 0's shell write before it is replaced
    while (not log.exists() or not log.read_text()) and time.time() < deadline:
        time.sleep(0.02)
    second = dict(first, env={"SUANLI_RUN": "1"})
    sup.start(second, 1, 1, "nvidia", 1000, "srv-0")  # same device: the older run is not in the way
    st = wait_phase(sup, 9, {"RUNNING"})
    deadline = time.time() + 5
    while st["pid"] == old_pid and time.time() < deadline:
        time.sleep(0.02)
        st = state(sup, 9)
    assert st["pid"] != old_pid and st["run"] == 1
    sup.start(first, 0, 1, "nvidia", 1000, "srv-0")  # stale
    assert sup.release(9, upto_run=0) == 0
    time.sleep(0.3)
    assert state(sup, 9)["pid"] == st["pid"] and state(sup, 9)["phase"] == "RUNNING"
    assert log.read_text().split() == ["0", "1"]


def test_poll_answers_for_the_jobs_asked_and_rank_0_gives_the_rendezvous(sup: Supervisor, tmp_path: Path) -> None:
    """Invariants: `poll` returns exactly the asked jobs' ranks; `rendezvous` is None for a
    job whose rank 0 is not here and (this server's address, a port) once it registered;
    `runners` lists every rank held until it is released."""
    assert sup.rendezvous(5, 0) is None
    sup.start(rank(tmp_path, 5, "sleep 30", [0]), 0, 2, "nvidia", 1000, "srv-0")
    sup.start(rank(tmp_path, 6, "sleep 30", [1]), 0, 1, "nvidia", 1000, "srv-0")
    addr, port = sup.rendezvous(5, 0)  # type: ignore[misc]
    assert addr == "127.0.0.1" and port > 0 and sup.rendezvous(5, 1) is None
    assert set(sup.poll([5])) == {5} and set(sup.poll([5, 6, 7])) == {5, 6}
    assert sup.runners() == [(5, 0), (6, 0)]
    sup.release(5)
    assert sup.runners() == [(6, 0)] and sup.rendezvous(5, 0) is None
