"""The job state machine: one transition table, one `transition()`.

Invariants:
- A job's status changes only through `transition()`; the store writes the returned
  `Transition` (status, event with its reason) in the same transaction as the version-guarded
  update, so every change has exactly one event.
- Terminal statuses (SUCCEEDED, FAILED, CANCELLED, TIMEOUT, PREEMPTED, NODE_LOST) have no
  way out.
- Device claims are held exactly in STARTING, RUNNING, CANCELLING and PREEMPTING
  (see `types.ACTIVE`).
- A preempted job goes back to PENDING keeping its submit time (so its age), unless it
  declared itself not requeueable (then PREEMPTED).
- HELD is reachable only from PENDING and leads only back to PENDING or to CANCELLED; it
  holds no devices (not in `types.ACTIVE`) and is not terminal.
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.types import JobStatus as S
from suanli.errors import conflict

# (from, to) -> why this edge exists. Nothing else is allowed.
TRANSITIONS: dict[tuple[S, S], str] = {
    # The policy chose devices; they are claimed and the launcher is asked to start the runner.
    (S.PENDING, S.STARTING): "scheduled",
    # Cancelled before it ever ran: nothing to stop, nothing to bill.
    (S.PENDING, S.CANCELLED): "cancelled while pending",
    # The runner reported that the process started.
    (S.STARTING, S.RUNNING): "process started",
    # The runner never came up within the starting timeout (Ray could not place it): the claims
    # are released and the job waits again with its original submit time.
    (S.STARTING, S.PENDING): "requeued: runner did not start",
    # The runner could not start the process (bad working dir, command not found, …).
    (S.STARTING, S.FAILED): "launch failed",
    # Cancel requested while a runner may exist: the scheduler must stop it first.
    (S.STARTING, S.CANCELLING): "cancel requested",
    (S.RUNNING, S.CANCELLING): "cancel requested",
    # The process exited by itself.
    (S.RUNNING, S.SUCCEEDED): "exit code 0",
    (S.RUNNING, S.FAILED): "non-zero exit code, or the runner was lost",
    # The runner stopped the process at its time limit (signal, grace, kill).
    (S.RUNNING, S.TIMEOUT): "time limit reached",
    # The process is gone after the stop signal (or the runner was gone already).
    (S.CANCELLING, S.CANCELLED): "stopped on request",
    # The process ended by itself, or hit its time limit, before the stop took effect.
    (S.CANCELLING, S.SUCCEEDED): "exited 0 before the stop",
    (S.CANCELLING, S.FAILED): "failed before the stop",
    (S.CANCELLING, S.TIMEOUT): "time limit reached before the stop",
    # The policy preempts the job (reclaim of a guarantee): the runner gets the stop signal
    # and the grace period; claims stay until the process is gone.
    (S.STARTING, S.PREEMPTING): "preempted before it ran",
    (S.RUNNING, S.PREEMPTING): "preempted",
    # The process is gone: back in the queue with its age (or ended, if not requeueable).
    (S.PREEMPTING, S.PENDING): "requeued after preemption",
    (S.PREEMPTING, S.PREEMPTED): "preempted; the job asked not to be requeued",
    # It ended by itself, or hit its time limit, before the stop took effect.
    (S.PREEMPTING, S.SUCCEEDED): "exited 0 before the preemption",
    (S.PREEMPTING, S.FAILED): "failed before the preemption, or the runner was lost",
    (S.PREEMPTING, S.TIMEOUT): "time limit reached before the preemption",
    # A user cancels a job that is being preempted: it will not be requeued.
    (S.PREEMPTING, S.CANCELLING): "cancel requested",
    # Its server has sent no heartbeat for `node_lost_after_s` (lost for good): the claims are
    # released and the run is not charged (the center's fault); a requeueable job waits again
    # with its original submit time, any other ends NODE_LOST. The runner, if Ray can still
    # reach it, is killed after the commit.
    (S.RUNNING, S.PENDING): "requeued: its server was lost",
    (S.RUNNING, S.NODE_LOST): "its server was lost; the job asked not to be requeued",
    (S.PREEMPTING, S.NODE_LOST): "its server was lost while preempting; not requeued as the job asked",
    # Its owner (or an admin) keeps a pending job out of scheduling; the scheduler loads
    # PENDING jobs only, so a held job holds nothing and is never started or reserved for.
    (S.PENDING, S.HELD): "held",
    # Back in the queue with its original submit time (its age counts from the submit).
    (S.HELD, S.PENDING): "released",
    # Cancelled while held: like a pending job, nothing to stop, nothing to bill.
    (S.HELD, S.CANCELLED): "cancelled while held",
    # A center admin's requeue of a running (or starting) job goes through the preemption
    # path: RUNNING/STARTING → PREEMPTING (edges above, reason "requeued by admin <name>"),
    # then PREEMPTING → PENDING when the process is gone. No edge of its own.
}


@dataclass(frozen=True)
class Transition:
    job_id: int
    from_status: S
    to_status: S
    reason: str  # the concrete reason, shown by `suanli describe`


def allowed(from_status: S, to_status: S) -> bool:
    return (from_status, to_status) in TRANSITIONS


def transition(job_id: int, from_status: S, to_status: S, reason: str) -> Transition:
    """Validate one change; raise a `conflict` error (code `illegal_transition`) if the table
    has no such edge. The caller persists the result with a version guard."""
    if not allowed(from_status, to_status):
        raise conflict(
            "illegal_transition",
            f"job {job_id} cannot go from {from_status} to {to_status}",
        )
    return Transition(job_id, from_status, to_status, reason or TRANSITIONS[(from_status, to_status)])
