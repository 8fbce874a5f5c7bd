"""What each rank's process is given (no Ray): the torchrun rendezvous variables, the
communication hints, the per-job checkpoint directory and stop signal, the precedence of the
variables, how ranks fold into one job state (the first failing rank), the reason a failed
gang ends with, and the runner's stop signal and billed end time (real processes)."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scheduler.launcher import checkpoint_dir, comm_hints, failed_rank, fold, rank_spec, rendezvous_env
from scheduler.reconciler import outcome
from scheduler.runner import STOP_SIGNALS, ProcessRunner, RankSpec, build_env
from scheduler.types import Job, JobStatus, LaunchSpec, Placement, Resources, RunnerPhase, RunnerState, Vendor


def spec(nodes: int = 2, devices: tuple[int, ...] = (2, 5), vendor: Vendor = Vendor.NVIDIA, **kw: object) -> LaunchSpec:
    return LaunchSpec(job_id=7, name="ddp", org="uni", vendor=vendor, accelerator_type="x", cpus_per_node=1,
                      placements=tuple(Placement(f"gpu-{i}", devices) for i in range(nodes)), memory_mb_per_node=256,
                      command="true", working_dir=None, env={"SEED": "1"}, job_dir="/jobs/7", time_limit_s=60,
                      grace_s=2.0, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("node_rank", "nnodes", "nproc", "world"),
    [(0, 1, 1, 1), (0, 1, 8, 8), (1, 2, 1, 2), (3, 4, 8, 32)],
)
def test_rendezvous_env_has_torchruns_meaning(node_rank: int, nnodes: int, nproc: int, world: int) -> None:
    """Invariants: WORLD_SIZE = nodes × devices per node; RANK = NODE_RANK = the server's
    rank; NPROC_PER_NODE = LOCAL_WORLD_SIZE = devices per node; the master is given as is."""
    env = rendezvous_env(node_rank, nnodes, nproc, "10.0.0.5", 29500)
    assert env == {"MASTER_ADDR": "10.0.0.5", "MASTER_PORT": "29500", "WORLD_SIZE": str(world),
                   "RANK": str(node_rank), "NODE_RANK": str(node_rank), "NNODES": str(nnodes),
                   "NPROC_PER_NODE": str(nproc), "LOCAL_WORLD_SIZE": str(nproc)}


def test_comm_hints_only_what_is_known() -> None:
    """Invariants: Ascend ranks get HCCL_IF_IP = their server's address; NVIDIA ranks get no
    guessed NCCL setting (the interface depends on the center's network)."""
    assert comm_hints(Vendor.ASCEND, "10.1.2.3") == {"HCCL_IF_IP": "10.1.2.3"}
    assert comm_hints(Vendor.NVIDIA, "10.1.2.3") == {}


def test_rank_spec_carries_checkpoint_dir_stop_signal_and_rank() -> None:
    """Invariants: every rank of a job gets the same checkpoint directory
    `<jobs_dir>/<id>/checkpoint` (in SUANLI_CHECKPOINT_DIR too), the job's stop signal, its own
    rank, node and devices, and its own log file."""
    s = spec(stop_signal="SIGUSR1")
    r0, r1 = rank_spec(s, 0), rank_spec(s, 1)
    assert r0.checkpoint_dir == r1.checkpoint_dir == checkpoint_dir("/jobs/7") == "/jobs/7/checkpoint"
    assert r1.env["SUANLI_CHECKPOINT_DIR"] == "/jobs/7/checkpoint"
    assert (r0.stop_signal, r1.stop_signal) == ("SIGUSR1", "SIGUSR1")
    assert (r1.rank, r1.env["SUANLI_RANK"], r1.env["SUANLI_NODE"], r1.env["SUANLI_NNODES"]) == (1, "1", "gpu-1", "2")
    assert r1.log_path == "/jobs/7/rank-1.log" and r1.devices == [2, 5]
    assert r1.env["SEED"] == "1"
    assert set(STOP_SIGNALS) == {"SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2"}


def test_env_precedence_rendezvous_wins_hints_yield() -> None:
    """Invariants: the rendezvous variables win over the job's env, the job's env wins over
    the hints and the server's environment, Ray's variables and foreign visibility are
    dropped, and the visibility variable is the assignment."""
    rs = rank_spec(spec(vendor=Vendor.ASCEND), 1)
    rs.env.update(MASTER_PORT="1", HCCL_IF_IP="192.168.9.9")
    base = {"RAY_ADDRESS": "x", "CUDA_VISIBLE_DEVICES": "0", "NCCL_SOCKET_IFNAME": "eth7", "PATH": "/bin"}
    env = build_env(rs, base, rendezvous_env(1, 2, 2, "10.0.0.5", 29500), comm_hints(Vendor.ASCEND, "10.0.0.6"))
    assert env["MASTER_PORT"] == "29500" and env["MASTER_ADDR"] == "10.0.0.5"
    assert env["HCCL_IF_IP"] == "192.168.9.9"  # the job's own choice
    assert env["NCCL_SOCKET_IFNAME"] == "eth7"  # set by the center on the server: inherited
    assert "RAY_ADDRESS" not in env and "CUDA_VISIBLE_DEVICES" not in env
    assert env["ASCEND_RT_VISIBLE_DEVICES"] == "2,5"


def exited(code: int | None, ended: float, stopped_by: str | None = None, error: str | None = None,
           started: float | None = 100.0) -> RunnerState:
    return RunnerState(RunnerPhase.EXITED, started_at=started, ended_at=ended, exit_code=code, stopped_by=stopped_by, error=error)


RUNNING = RunnerState(RunnerPhase.RUNNING, started_at=100.0)


def test_fold_names_the_first_rank_that_failed_by_itself() -> None:
    """Invariants: while a rank has failed and others run, the job is still RUNNING but names
    the failed rank; once all have exited the job's code is the first (by time) rank that
    failed by itself, not a rank we stopped afterwards (143) nor a lower rank that failed later."""
    live = fold([RUNNING, exited(3, 105.0)])
    assert live.phase is RunnerPhase.RUNNING and live.extra["failed_rank"] == 1
    done = fold([exited(143, 106.0, "peer_failed"), exited(3, 105.0), exited(4, 105.5)])
    assert done.phase is RunnerPhase.EXITED and done.exit_code == 3 and done.extra["failed_rank"] == 1
    assert failed_rank([exited(0, 101.0), exited(0, 102.0)]) is None
    assert failed_rank([exited(143, 101.0, "cancel"), exited(143, 101.0, "cancel")]) is None
    starting = fold([RunnerState(RunnerPhase.STARTING), exited(None, 101.0, error="no rendezvous", started=None)])
    assert starting.phase is RunnerPhase.STARTING and starting.extra["failed_rank"] == 1


def job(status: JobStatus = JobStatus.RUNNING, requeue: bool = True) -> Job:
    return Job(id=7, name="ddp", org="uni", project="p", user="u", status=status,
               resources=Resources(("x",), 1, 2, 1, 256), time_limit_s=60, grace_s=2.0, command="true",
               working_dir=None, env={}, submitted_at=datetime.now(UTC), version=3, requeue=requeue)


def test_outcome_of_a_failed_gang_names_the_rank() -> None:
    """Invariants: a gang whose rank failed by itself ends FAILED with that rank's code and a
    reason naming the rank; a rank that could not rendezvous is named the same way; a gang
    stopped by a cancel or a preemption still ends CANCELLED or requeued."""
    done = fold([exited(143, 106.0, "peer_failed"), exited(3, 105.0)])
    to, why = outcome(job(), done)
    assert (to, done.exit_code) == (JobStatus.FAILED, 3) and why.startswith("rank 1 exited with code 3")
    no_rdv = fold([exited(143, 106.0, "peer_failed"), exited(None, 105.0, error="no rendezvous from rank 0", started=None)])
    to, why = outcome(job(), no_rdv)
    assert to is JobStatus.FAILED and "rank 1 could not launch (no rendezvous from rank 0)" in why
    cancelled = fold([exited(143, 106.0, "cancel"), exited(143, 106.0, "cancel")])
    assert outcome(job(JobStatus.CANCELLING), cancelled)[0] is JobStatus.CANCELLED
    preempted = fold([exited(0, 106.0, "preempt"), exited(0, 106.0, "preempt")])
    assert outcome(job(JobStatus.PREEMPTING), preempted)[0] is JobStatus.PENDING


def runner(tmp_path: Path, command: str, **kw: object) -> ProcessRunner:
    rs = RankSpec(job_id=1, rank=0, command=command, env={}, working_dir=str(tmp_path), log_path=str(tmp_path / "rank-0.log"),
                  time_limit_s=kw.pop("time_limit_s", 60), grace_s=kw.pop("grace_s", 5.0),  # type: ignore[arg-type]
                  visibility_var="CUDA_VISIBLE_DEVICES", devices=[0], **kw)  # type: ignore[arg-type]
    return ProcessRunner(rs)


def wait_exit(r: ProcessRunner, timeout: float = 20) -> RunnerState:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (st := r.poll()).phase is RunnerPhase.EXITED:
            return st
        time.sleep(0.05)
    raise AssertionError(f"still {r.poll()}")


def wait_file(path: Path, timeout: float = 10) -> None:
    deadline = time.time() + timeout
    while not path.exists() and time.time() < deadline:
        time.sleep(0.02)
    assert path.exists(), path


@pytest.mark.parametrize("sig", ["SIGUSR1", "SIGTERM"])
def test_stop_sends_the_jobs_signal_and_billing_ends_at_the_signal(tmp_path: Path, sig: str) -> None:
    """Invariants (real processes): a stop sends the job's chosen signal to the process
    group; a handler that takes 1.5 s to save its work and exit leaves `ended_at` at the time
    the signal was sent (what is billed), not when the process died."""
    ready = tmp_path / "ready"
    r = runner(tmp_path, f"trap 'echo got {sig}; sleep 1.5; exit 0' {sig[3:]}; touch {ready}; while true; do sleep 0.1; done",
               stop_signal=sig)
    r.start()
    wait_file(ready)
    t0 = time.time()
    r.stop("preempt")
    st = wait_exit(r)
    died = time.time()
    assert f"got {sig}" in (tmp_path / "rank-0.log").read_text()
    assert st.stopped_by == "preempt" and st.exit_code == 0
    assert st.ended_at is not None and t0 <= st.ended_at < t0 + 0.5 < died - 1.0


def test_checkpoint_dir_exists_before_the_command_starts(tmp_path: Path) -> None:
    """Invariants: the checkpoint directory is created before the command runs, and an
    existing one (a requeued run's) is kept with its files."""
    ckpt = tmp_path / "checkpoint"
    r = runner(tmp_path, f"test -d {ckpt} && echo have-dir", checkpoint_dir=str(ckpt))
    r.start()
    assert wait_exit(r).exit_code == 0 and "have-dir" in (tmp_path / "rank-0.log").read_text()
    (ckpt / "state").write_text("step=3")
    r2 = runner(tmp_path, f"cat {ckpt}/state", checkpoint_dir=str(ckpt))
    r2.start()
    assert wait_exit(r2).exit_code == 0 and "step=3" in (tmp_path / "rank-0.log").read_text()


def test_stop_before_start_wins_over_a_late_start(tmp_path: Path) -> None:
    """Invariant: a rank stopped while it waits for its rendezvous never starts its process."""
    marker = tmp_path / "ran"
    r = runner(tmp_path, f"touch {marker}")
    r.stop("peer_failed")
    st = r.start({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"})
    assert st.phase is RunnerPhase.EXITED and st.stopped_by == "peer_failed" and st.started_at is None
    time.sleep(0.2)
    assert not marker.exists()
    assert r.fail_launch("late").error == "stopped before start"


def test_stop_signals_are_the_api_choices_and_real_signals() -> None:
    """Invariants: the runner accepts exactly the signals the job spec allows, and each is a
    signal of this platform (a typo would make every stop fail)."""
    from typing import get_args

    from api.schemas.jobs import JobSpecIn

    assert set(get_args(JobSpecIn.model_fields["stop_signal"].annotation)) == set(STOP_SIGNALS)
    assert all(isinstance(signal.Signals[s], signal.Signals) for s in STOP_SIGNALS)
