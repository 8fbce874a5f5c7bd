"""Store: servers (nodes) as registered and kept alive by their agents.

Invariants: a node is identified by its name (also its Ray node label); a heartbeat creates
or updates the row in one statement set and bumps its version; a node's device count may not
shrink below a device that is claimed by a running job.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.types import Device, Node, NodeReport
from suanli.db.models import DeviceClaimRow, DeviceShareRow, NodeRow
from suanli.errors import conflict


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
    row.last_heartbeat_at = now
    if row.status == "NOT_READY":
        row.status = "READY"
    row.version += 1
    s.flush()
    return row


def node_from_row(row: NodeRow, allocated: dict[int, int]) -> Node:
    return Node(
        name=row.name,
        accelerator_type=row.accelerator_type,
        status=row.status,
        device_count=row.device_count,
        cpus=row.cpus,
        memory_mb=row.memory_mb,
        devices=tuple(Device(**d) for d in row.devices or []),
        labels=dict(row.labels or {}),
        agent_version=row.agent_version,
        registered_at=row.registered_at,
        last_heartbeat_at=row.last_heartbeat_at,
        allocated=allocated,
    )


def list_nodes(s: Session) -> list[Node]:
    allocated: dict[int, dict[int, int]] = defaultdict(dict)
    for node_id, dev, job_id in s.execute(select(DeviceClaimRow.node_id, DeviceClaimRow.device_index, DeviceClaimRow.job_id)):
        if job_id is not None:
            allocated[node_id][dev] = job_id
    for node_id, dev, job_id in s.execute(
        select(DeviceShareRow.node_id, DeviceShareRow.device_index, DeviceShareRow.job_id).order_by(DeviceShareRow.job_id)
    ):
        allocated[node_id].setdefault(dev, job_id)  # a shared device shows its first job
    return [node_from_row(r, allocated[r.id]) for r in s.scalars(select(NodeRow).order_by(NodeRow.name))]


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
