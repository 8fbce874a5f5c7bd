"""Store: servers (nodes) as registered and kept alive by their agents.

Invariants:
- A node is identified by its name (also its Ray node label); a heartbeat creates or updates
  the row in one statement set and bumps its version; a node's device count may not shrink
  below a device that is claimed by a running job.
- A drained server has status DRAINED and its reason, who and when (`drain`); a heartbeat
  never undoes a drain (only NOT_READY and LOST become READY again); `undrain` clears all four.
- NOT_READY and LOST are written by the scheduler's sweep (`mark_not_ready`, `mark_lost`)
  when heartbeats stop; each change of a node's state or of a device's health is one
  `node_events` row.
- `allocations` is the live truth of who holds which device: the `device_claims` rows (and
  the `device_shares` of shared devices), with the org of each job.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from scheduler.types import NodeReport
from suanli.db.models import DeviceClaimRow, DeviceShareRow, JobRow, NodeEventRow, NodeRow, OrgRow, ProjectRow
from suanli.errors import conflict

READY = "READY"
NOT_READY = "NOT_READY"
LOST = "LOST"
DRAINED = "DRAINED"


def upsert_node(s: Session, report: NodeReport, now: datetime) -> NodeRow:
    row = s.scalar(select(NodeRow).where(NodeRow.name == report.name))
    devices = [asdict(d) for d in report.devices]
    if row is None:
        row = NodeRow(
            name=report.name,
            accelerator_type=report.accelerator_type,
            device_count=len(report.devices),
            cpus=report.cpus,
            memory_mb=report.memory_mb,
            status="READY",
            devices=devices,
            labels=dict(report.labels),
            agent_version=report.agent_version,
            topology=[list(r) for r in report.topology] if report.topology is not None else None,
            ray_node_id=report.ray_node_id,
            registered_at=now,
            last_heartbeat_at=now,
            version=1,
        )
        s.add(row)
        s.flush()
        return row
    claimed = set(s.scalars(select(DeviceClaimRow.device_index).where(DeviceClaimRow.node_id == row.id)))
    if claimed and max(claimed) >= len(report.devices):
        raise conflict("node_devices_in_use", f"node {report.name} reports {len(report.devices)} devices but device {max(claimed)} is in use")
    if report.accelerator_type != row.accelerator_type and claimed:
        raise conflict("node_type_in_use", f"node {report.name} changed type while jobs run on it")
    row.accelerator_type = report.accelerator_type
    row.device_count = len(report.devices)
    row.cpus = report.cpus
    row.memory_mb = report.memory_mb
    row.devices = devices
    row.labels = dict(report.labels)
    row.agent_version = report.agent_version
    if report.topology is not None:  # agents send it at registration and when it changes, not every beat
        row.topology = [list(r) for r in report.topology]
    row.ray_node_id = report.ray_node_id or row.ray_node_id
    row.last_heartbeat_at = now
    if row.status in (NOT_READY, LOST):
        row.status = READY
    row.version += 1
    s.flush()
    return row


def heartbeat_stale(at: datetime | None, now: datetime, timeout_s: float) -> bool:
    """A server is NOT_READY when it never sent a heartbeat or its last one is older than
    `timeout_s` — the one rule behind both the node views and the scheduler's placement."""
    return at is None or (now - at).total_seconds() > timeout_s


def largest_fit(s: Session, accelerator_types: list[str]) -> dict[str, list[int]]:
    """Device counts of the registered, not drained servers of each accepted type."""
    out: dict[str, list[int]] = {t: [] for t in accelerator_types}
    for t, count in s.execute(
        select(NodeRow.accelerator_type, NodeRow.device_count).where(
            NodeRow.accelerator_type.in_(accelerator_types), NodeRow.status != "DRAINED"
        )
    ):
        out[t].append(count)
    return out


# ---------------------------------------------------------------------------- drain, allocations



def node_rows(s: Session, name: str | None = None) -> list[NodeRow]:
    """All servers by name, or the one named (an empty list when there is none)."""
    stmt = select(NodeRow).order_by(NodeRow.name)
    if name is not None:
        stmt = stmt.where(NodeRow.name == name)
    return list(s.scalars(stmt))


def lock_node(s: Session, name: str) -> NodeRow | None:
    """The server's row, locked for this transaction (drain and undrain serialize on it)."""
    return s.scalar(select(NodeRow).where(NodeRow.name == name).with_for_update())


def drain(s: Session, row: NodeRow, reason: str, by: str, now: datetime) -> None:
    row.status = DRAINED
    row.drain_reason, row.drained_by, row.drained_at = reason, by, now
    row.version += 1
    s.flush()


def undrain(s: Session, row: NodeRow) -> None:
    row.status = "READY"
    row.drain_reason = row.drained_by = row.drained_at = None
    row.version += 1
    s.flush()


@dataclass
class DeviceUse:
    """Who holds a device in use: one job if held whole; a job per share if shared (possibly
    none for a moment between the last share's release and its claim's)."""

    shared: bool
    jobs: list[tuple[int, int]] = field(default_factory=list)  # (job id, org id)


def allocations(s: Session, node_ids: list[int] | None = None) -> dict[int, dict[int, DeviceUse]]:
    """node id -> device index -> its use, for every device in use."""
    out: dict[int, dict[int, DeviceUse]] = defaultdict(dict)
    claims = (select(DeviceClaimRow.node_id, DeviceClaimRow.device_index, DeviceClaimRow.job_id, JobRow.org_id)
              .outerjoin(JobRow, JobRow.id == DeviceClaimRow.job_id))
    shares = (select(DeviceShareRow.node_id, DeviceShareRow.device_index, DeviceShareRow.job_id, JobRow.org_id)
              .join(JobRow, JobRow.id == DeviceShareRow.job_id).order_by(DeviceShareRow.job_id))
    if node_ids is not None:
        claims = claims.where(DeviceClaimRow.node_id.in_(node_ids))
        shares = shares.where(DeviceShareRow.node_id.in_(node_ids))
    for node_id, dev, job_id, org_id in s.execute(claims):
        out[node_id][dev] = DeviceUse(True) if job_id is None else DeviceUse(False, [(job_id, org_id)])
    for node_id, dev, job_id, org_id in s.execute(shares):
        out[node_id].setdefault(dev, DeviceUse(True)).jobs.append((job_id, org_id))
    return out


def add_event(s: Session, node_id: int, kind: str, message: str, now: datetime, device: int | None = None) -> None:
    s.add(NodeEventRow(node_id=node_id, at=now, kind=kind, device_index=device, message=message))


def events(s: Session, node_id: int, limit: int = 100) -> list[NodeEventRow]:
    """The node's latest events, newest first."""
    return list(s.scalars(select(NodeEventRow).where(NodeEventRow.node_id == node_id)
                          .order_by(NodeEventRow.id.desc()).limit(limit)))


def silent_nodes(s: Session, now: datetime, timeout_s: float) -> list[NodeRow]:
    """Servers whose heartbeat is stale (or that never sent one)."""
    return [r for r in s.scalars(select(NodeRow).order_by(NodeRow.id))
            if heartbeat_stale(r.last_heartbeat_at, now, timeout_s)]


def set_status_if(s: Session, row: NodeRow, expected: str, status: str) -> bool:
    """Change a server's stored status if it is still `expected` and no heartbeat came in
    since it was read (a heartbeat bumps the version): False when it moved on."""
    res = s.execute(update(NodeRow).where(NodeRow.id == row.id, NodeRow.version == row.version, NodeRow.status == expected)
                    .values(status=status, version=row.version + 1).execution_options(synchronize_session=False))
    return res.rowcount == 1


def jobs_on_nodes(s: Session, node_ids: list[int]) -> list[int]:
    """Ids of the jobs holding devices (whole or shared) on these servers."""
    if not node_ids:
        return []
    whole = select(DeviceClaimRow.job_id).where(DeviceClaimRow.node_id.in_(node_ids), DeviceClaimRow.job_id.is_not(None))
    shared = select(DeviceShareRow.job_id).where(DeviceShareRow.node_id.in_(node_ids))
    return sorted({j for j in s.scalars(whole)} | {j for j in s.scalars(shared)})


def job_names(s: Session, job_ids: list[int]) -> dict[int, tuple[str, str]]:
    """job id -> (org name, project name)."""
    if not job_ids:
        return {}
    rows = s.execute(select(JobRow.id, OrgRow.name, ProjectRow.name).join(OrgRow, OrgRow.id == JobRow.org_id)
                     .join(ProjectRow, ProjectRow.id == JobRow.project_id).where(JobRow.id.in_(job_ids)))
    return {j: (o, p) for j, o, p in rows}
