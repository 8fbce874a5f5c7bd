"""The process runner, with real processes (no Ray): exit codes, time limit, stop with
grace, process-group cleanup, device visibility and launch errors."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from scheduler.runner import ProcessRunner, RankSpec
from scheduler.types import RunnerPhase, RunnerState


def make_runner(tmp_path: Path, command: str, time_limit_s: float = 60, grace_s: float = 1.0, **kw) -> ProcessRunner:  # type: ignore[no-untyped-def]
    spec = RankSpec(job_id=1, rank=0, command=command, env=kw.pop("env", {}), working_dir=str(kw.pop("cwd", tmp_path)),
                    log_path=str(tmp_path / "rank-0.log"), time_limit_s=time_limit_s, grace_s=grace_s,
                    visibility_var=kw.pop("var", "CUDA_VISIBLE_DEVICES"), devices=kw.pop("devices", [3, 5]))
    return ProcessRunner(spec)


def wait_exit(r: ProcessRunner, timeout: float = 20) -> RunnerState:
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = r.poll()
        if st.phase is RunnerPhase.EXITED:
            return st
        time.sleep(0.05)
    raise AssertionError(f"still {r.poll()}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not alive for our purpose
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_exit_code_and_times(tmp_path: Path) -> None:
    """Invariant: the command's exit code is reported, with start <= end, and the log has its output."""
    r = make_runner(tmp_path, "echo hello; exit 3")
    assert r.start().phase is RunnerPhase.RUNNING
    st = wait_exit(r)
    assert st.exit_code == 3 and st.stopped_by is None
    assert st.started_at is not None and st.ended_at is not None and st.started_at <= st.ended_at
    log = (tmp_path / "rank-0.log").read_text()
    assert "hello" in log and "exit code 3" in log


def test_visibility_comes_from_the_assignment(tmp_path: Path) -> None:
    """Invariant: the vendor's visibility variable lists exactly the assigned devices and the
    other vendor's variable is removed, whatever the runner's own environment says."""
    os.environ["ASCEND_RT_VISIBLE_DEVICES"] = "7"
    try:
        r = make_runner(tmp_path, 'echo "cuda=$CUDA_VISIBLE_DEVICES ascend=${ASCEND_RT_VISIBLE_DEVICES-unset} seed=$SEED"',
                        env={"SEED": "4"})
        r.start()
        assert wait_exit(r).exit_code == 0
    finally:
        del os.environ["ASCEND_RT_VISIBLE_DEVICES"]
    assert "cuda=3,5 ascend=unset seed=4" in (tmp_path / "rank-0.log").read_text()


def test_time_limit_stops_the_process(tmp_path: Path) -> None:
    """Invariant: at the time limit the process gets SIGTERM and is reported stopped by timeout."""
    r = make_runner(tmp_path, "sleep 600", time_limit_s=0.5)
    r.start()
    st = wait_exit(r)
    assert st.stopped_by == "timeout" and st.exit_code == 128 + 15
    assert st.ended_at - st.started_at < 5  # type: ignore[operator]


def test_stop_escalates_to_sigkill_after_grace(tmp_path: Path) -> None:
    """Invariant: a process that ignores SIGTERM is killed after the grace period."""
    r = make_runner(tmp_path, "trap '' TERM; echo ready; while true; do sleep 0.1; done", grace_s=0.5)
    r.start()
    deadline = time.time() + 5
    while "ready" not in (tmp_path / "rank-0.log").read_text() and time.time() < deadline:
        time.sleep(0.05)
    t0 = time.time()
    r.stop("cancel")
    st = wait_exit(r)
    assert st.stopped_by == "cancel" and st.exit_code == 128 + 9
    assert 0.4 < time.time() - t0 < 5


def test_children_of_the_command_are_gone_after_stop(tmp_path: Path) -> None:
    """Invariant: stopping a job kills its whole process group, background children included."""
    r = make_runner(tmp_path, "sleep 600 & echo child=$!; sleep 600")
    r.start()
    deadline = time.time() + 5
    while "child=" not in (tmp_path / "rank-0.log").read_text() and time.time() < deadline:
        time.sleep(0.05)
    child = int((tmp_path / "rank-0.log").read_text().split("child=")[1].split()[0])
    assert alive(child)
    r.stop("cancel", grace_s=1)
    wait_exit(r)
    time.sleep(0.2)
    assert not alive(child)


def test_stragglers_are_killed_when_the_leader_exits(tmp_path: Path) -> None:
    """Invariant: when the command exits by itself, processes it left in its group die too."""
    r = make_runner(tmp_path, "sleep 600 & echo child=$!; exit 0")
    r.start()
    assert wait_exit(r).exit_code == 0
    child = int((tmp_path / "rank-0.log").read_text().split("child=")[1].split()[0])
    time.sleep(0.2)
    assert not alive(child)


def test_missing_working_dir_is_a_launch_error(tmp_path: Path) -> None:
    """Invariant: a bad working dir ends the runner with an error and no start time."""
    r = make_runner(tmp_path, "true", cwd=tmp_path / "nope")
    st = r.start()
    assert st.phase is RunnerPhase.EXITED and st.started_at is None and "does not exist" in (st.error or "")


@pytest.mark.parametrize("var", ["CUDA_VISIBLE_DEVICES", "ASCEND_RT_VISIBLE_DEVICES"])
def test_start_is_idempotent(tmp_path: Path, var: str) -> None:
    """Invariant: a second start() does not start a second process."""
    r = make_runner(tmp_path, "echo once", var=var)
    first = r.start()
    second = r.start()
    assert first.pid == second.pid
    wait_exit(r)
    assert (tmp_path / "rank-0.log").read_text().count("once") == 1
