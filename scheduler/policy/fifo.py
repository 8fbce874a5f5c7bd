"""First-fit FIFO: the simplest honest policy (the fair-share policy replaces it).

Rules:
- Pending jobs are considered in submit order (ties by id).
- For each job, each accepted accelerator type is tried in the job's order of preference; a
  job gets `nodes` distinct schedulable servers of that type, each with `devices_per_node`
  free devices and the CPUs and memory asked, taken first-fit in server-name order, lowest
  device indices first.
- A fractional job takes a whole free device (FIFO does not share devices).
- A job that does not fit now waits with a reason; later jobs may still start (no
  reservation: backfill and starvation control belong to the fair-share policy).

Invariants (tested): no device is given twice, a gang job gets all its servers or none, a
job starts only on a type it accepted, and the result depends only on (snapshot, now).
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.types import (
    Decisions,
    JobRequest,
    NodeView,
    Placement,
    Snapshot,
    Start,
    Wait,
    WaitCode,
)


@dataclass
class _Free:
    """Mutable free capacity of one server during a decision."""

    view: NodeView
    devices: list[int]
    cpus: int
    memory_mb: int

    def fits(self, job: JobRequest) -> bool:
        r = job.resources
        return (
            len(self.devices) >= r.devices_per_node
            and self.cpus >= r.cpus_per_node
            and self.memory_mb >= r.memory_mb_per_node
        )

    def take(self, job: JobRequest) -> Placement:
        r = job.resources
        taken, self.devices = self.devices[: r.devices_per_node], self.devices[r.devices_per_node :]
        self.cpus -= r.cpus_per_node
        self.memory_mb -= r.memory_mb_per_node
        return Placement(self.view.name, tuple(taken))


def decide(snapshot: Snapshot, now: float) -> Decisions:
    del now  # FIFO needs no clock; the signature is the policy protocol's
    by_type: dict[str, list[_Free]] = {}
    nodes = snapshot.nodes
    if not nodes and snapshot.capacity is not None:
        nodes = tuple(v for cap in snapshot.capacity.values() for v in cap.views())
    for node in sorted(nodes, key=lambda n: n.name):
        if node.schedulable:
            by_type.setdefault(node.accelerator_type, []).append(
                _Free(node, sorted(node.free_devices), node.free_cpus, node.free_memory_mb)
            )

    starts: list[Start] = []
    waits: list[Wait] = []
    for job in sorted(snapshot.pending, key=lambda j: (j.submitted_at, j.id)):
        start = _place(job, by_type)
        if start is not None:
            starts.append(start)
        else:
            waits.append(_why_waiting(job, by_type))
    return Decisions(tuple(starts), tuple(waits))


def _place(job: JobRequest, by_type: dict[str, list[_Free]]) -> Start | None:
    for acc in job.resources.accelerator_types:
        fitting = [f for f in by_type.get(acc, ()) if f.fits(job)][: job.resources.nodes]
        if len(fitting) == job.resources.nodes:  # gang: all servers or none
            placements = tuple(f.take(job) for f in fitting)
            where = ", ".join(f"{p.node}[{','.join(map(str, p.devices))}]" for p in placements)
            return Start(job.id, acc, placements, f"first fit in submit order on {acc}: {where}",
                         device_milli=job.resources.device_milli)
    return None


def _why_waiting(job: JobRequest, by_type: dict[str, list[_Free]]) -> Wait:
    r = job.resources
    parts: list[str] = []
    ever = False
    for acc in r.accelerator_types:
        servers = by_type.get(acc, [])
        big_enough = [f for f in servers if f.view.device_count >= r.devices_per_node]
        if len(big_enough) >= r.nodes:
            ever = True
            best = max((len(f.devices) for f in servers), default=0)
            parts.append(
                f"{acc}: {sum(1 for f in servers if f.fits(job))} of {r.nodes} needed "
                f"server(s) free with {r.devices_per_node} device(s) (most free on one server: {best})"
            )
        else:
            parts.append(
                f"{acc}: only {len(big_enough)} schedulable server(s) can hold "
                f"{r.devices_per_node} device(s), {r.nodes} needed"
            )
    if ever:
        return Wait(job.id, WaitCode.NO_CAPACITY_NOW, "waiting for capacity: " + "; ".join(parts))
    return Wait(job.id, WaitCode.NEVER_FITS, "cannot fit the cluster: " + "; ".join(parts))
