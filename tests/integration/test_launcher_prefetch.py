"""`SupervisorLauncher.prefetch` on a real local Ray cluster: the states asked for at the start
of a cycle are what `poll` reports (RUNNING, then EXITED with the exit code), and an answer
asked before a job was released never reports the job's newer run LOST (it vouched only for
the run it was asked about)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from scheduler.supervisor import SupervisorLauncher
from scheduler.types import LaunchSpec, Placement, RunnerPhase, RunnerState, Vendor

pytestmark = [pytest.mark.ray, pytest.mark.slow]
SERVER = "a100-1"


def spec(tmp_path: Path, job: int, command: str, run: int) -> LaunchSpec:
    return LaunchSpec(job_id=job, name="p", org="o", vendor=Vendor.NVIDIA, accelerator_type="nvidia-a100-80g",
                      placements=(Placement(SERVER, (7,)),), cpus_per_node=1, memory_mb_per_node=256,
                      command=command, working_dir=str(tmp_path), env={}, job_dir=str(tmp_path),
                      time_limit_s=60, grace_s=0.5, restart_count=run)


def cycle(launcher: SupervisorLauncher, job: int) -> RunnerState:
    """What the loop does per cycle: prefetch first, poll at the end."""
    launcher.prefetch()
    time.sleep(0.02)
    return launcher.poll({job: 1})[job]


def until(launcher: SupervisorLauncher, job: int, phases: set[RunnerPhase], seen: list[RunnerState]) -> RunnerState:
    deadline = time.time() + 30
    while time.time() < deadline:
        st = cycle(launcher, job)
        seen.append(st)
        if st.phase in phases:
            return st
        time.sleep(0.05)
    raise AssertionError(f"job {job}: {seen[-3:]}")


def test_prefetched_states_and_a_released_job_relaunched(local_ray, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Invariants: prefetch + poll report RUNNING then EXITED (exit code kept); after a
    release with a prefetched poll in flight, the relaunched newer run is STARTING/RUNNING
    and never LOST."""
    launcher = SupervisorLauncher(local_ray.address, namespace="suanli-prefetch-test")
    try:
        seen: list[RunnerState] = []
        launcher.launch(spec(tmp_path, 1, "sleep 0.5; exit 3", 0))
        until(launcher, 1, {RunnerPhase.RUNNING}, seen)
        st = until(launcher, 1, {RunnerPhase.EXITED, RunnerPhase.LOST}, seen)
        assert st.phase is RunnerPhase.EXITED and st.exit_code == 3, st
        launcher.release(1, 1)

        seen = []
        launcher.launch(spec(tmp_path, 2, "sleep 30", 0))
        until(launcher, 2, {RunnerPhase.RUNNING}, seen)
        launcher.prefetch()  # asked while run 0 runs: it vouches for run 0 only
        launcher.release(2, 1)
        launcher.launch(spec(tmp_path, 2, "sleep 30", 1))
        time.sleep(0.5)  # the start and the old answer have both arrived
        st = launcher.poll({2: 1})[2]
        seen.append(st)
        until(launcher, 2, {RunnerPhase.RUNNING, RunnerPhase.LOST}, seen)
        assert all(s.phase is not RunnerPhase.LOST for s in seen), seen
    finally:
        launcher.stop_all(0.5)
