"""Node service: heartbeats from agents, the server list with health and allocation, drain
and undrain, node events.

Invariants:
- Status is derived from the stored one and the heartbeat's age: a drained server (stored
  DRAINED) is DRAINING while any of its devices is still in use and DRAINED once none is —
  so it becomes DRAINED the moment its last job's claims are released, with no write; a
  server whose last heartbeat is older than `node_heartbeat_timeout_s`
  (`node_missed_heartbeats` × `node_heartbeat_interval_s`), or that never sent one, is
  LOST if the scheduler has declared it lost (and ended or requeued its jobs), else
  NOT_READY; otherwise READY. Health is separate: "down" (stale heartbeat), "degraded" (a
  device reports a health other than OK), "ok".
- The policy places only on READY-stored servers with a fresh heartbeat (`store.snapshot`:
  schedulable = status READY and not `heartbeat_stale`, when the live loop passes the
  timeout), and only on their healthy devices (OK or Warning), so neither a drained nor a
  NOT_READY server nor an unhealthy device gets new jobs while running ones continue; the
  guarantee capacity (`tenancy.capacity_by_type`) and the submit fit check
  (`store.nodes.largest_fit`) leave drained servers out, draining ones included.
- A heartbeat writes node events for registration, coming back, and device health changes,
  and tracks idle allocations (`suanli.node_health`), in the heartbeat's transaction.
- Any signed-in principal may list servers and their events; a job id (with its org and
  project) on a device is shown only to center admins and to members of the job's org;
  anyone else sees the device as busy.
- Drain and undrain are for center admins, one transaction each under the node's row lock,
  every check before the first write, and write one audit row (`node.drain`, `node.undrain`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scheduler.types import NodeReport
from suanli.db.engine import Database
from suanli.db.models import NodeEventRow, NodeRow
from suanli.db.store import billing as billing_store
from suanli.db.store import nodes as node_store
from suanli.db.store.nodes import DeviceUse
from suanli.db.store import tenancy
from suanli.errors import conflict, forbidden, invalid, not_found
from suanli.identity import Principal, Role
from suanli.jobs import utcnow
from suanli.node_health import IdleRule, apply_heartbeat, idle_past

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
REASON_MAX = 500


@dataclass(frozen=True)
class DeviceEntry:
    index: int
    uuid: str
    model: str
    memory_mb: int
    health: str
    busy: bool  # in use by any job (visible to the caller or not)
    job_ids: tuple[int, ...]  # the jobs on it that the caller may see
    shared: bool  # fractional jobs share it
    health_reason: str = ""
    utilization_pct: float | None = None
    org: str | None = None  # of the first visible job
    project: str | None = None
    idle_since: datetime | None = None
    idle: bool = False  # idle past the window (an idle allocation)


@dataclass(frozen=True)
class Drain:
    reason: str
    by: str
    at: datetime


@dataclass(frozen=True)
class NodeEntry:
    name: str
    accelerator_type: str
    status: str  # READY, DRAINING, DRAINED, NOT_READY, LOST
    health: str  # ok, degraded, down
    cpus: int
    memory_mb: int
    devices: tuple[DeviceEntry, ...]
    labels: dict[str, str]
    agent_version: str
    registered_at: datetime
    topology: list[list[str]] | None
    last_heartbeat_at: datetime | None
    heartbeat_age_s: float | None
    drain: Drain | None
    jobs: int  # distinct jobs on it, visible or not
    ray_node_id: str = ""

    @property
    def device_count(self) -> int:
        return len(self.devices)

    @property
    def devices_busy(self) -> int:
        return sum(1 for d in self.devices if d.busy)

    @property
    def devices_free(self) -> int:
        return self.device_count - self.devices_busy


def node_status(stored: str, busy: int, last_heartbeat_at: datetime | None, now: datetime, timeout_s: float) -> str:
    """READY, DRAINING, DRAINED, NOT_READY or LOST (see the module's invariants)."""
    if stored == node_store.DRAINED:
        return "DRAINING" if busy else "DRAINED"
    if node_store.heartbeat_stale(last_heartbeat_at, now, timeout_s):
        return node_store.LOST if stored == node_store.LOST else node_store.NOT_READY
    return node_store.READY


def node_health(devices: list[dict[str, Any]], last_heartbeat_at: datetime | None, now: datetime, timeout_s: float) -> str:
    if node_store.heartbeat_stale(last_heartbeat_at, now, timeout_s):
        return "down"
    return "degraded" if any(str(d.get("health", "OK")).upper() != "OK" for d in devices) else "ok"


@dataclass(frozen=True)
class View:
    """How a node is shown: to whom (None: everything, for its own agent), the names of
    the jobs' orgs and projects, and the idle window."""

    who: Principal | None
    names: dict[int, tuple[str, str]]  # job id -> (org, project)
    idle_window_s: float = 1800.0


def device_entry(d: dict[str, Any], use: DeviceUse | None, view: View, now: datetime) -> DeviceEntry:
    """A device as reported by its agent, with who holds it as the viewer may see it."""
    who = view.who
    visible = tuple(j for j, org in (use.jobs if use else []) if who is None or who.can_see_org(org))
    org, project = view.names.get(visible[0], (None, None)) if visible else (None, None)
    since = d.get("idle_since")
    return DeviceEntry(
        index=int(d["index"]), uuid=str(d.get("uuid", "")), model=str(d.get("model", "")),
        memory_mb=int(d.get("memory_mb", 0)), health=str(d.get("health", "OK")), busy=use is not None,
        job_ids=visible, shared=bool(use and use.shared), health_reason=str(d.get("health_reason") or ""),
        utilization_pct=d.get("utilization_pct"), org=org, project=project,
        idle_since=datetime.fromisoformat(since) if since and use is not None else None,
        idle=use is not None and idle_past(d, now, view.idle_window_s),
    )


def node_entry(row: NodeRow, allocated: dict[int, DeviceUse], view: View, now: datetime, timeout_s: float) -> NodeEntry:
    """The server as the viewer may see it."""
    raw = list(row.devices or [])
    devices = tuple(device_entry(d, allocated.get(int(d["index"])), view, now) for d in raw)
    busy = sum(1 for d in devices if d.busy)
    drain = Drain(row.drain_reason or "", row.drained_by or "", row.drained_at) \
        if row.status == node_store.DRAINED and row.drained_at is not None else None
    hb = row.last_heartbeat_at
    return NodeEntry(
        name=row.name, accelerator_type=row.accelerator_type,
        status=node_status(row.status, busy, hb, now, timeout_s), health=node_health(raw, hb, now, timeout_s),
        cpus=row.cpus, memory_mb=row.memory_mb, devices=devices, labels=dict(row.labels or {}),
        agent_version=row.agent_version, registered_at=row.registered_at, last_heartbeat_at=hb,
        topology=row.topology, ray_node_id=row.ray_node_id or "",
        heartbeat_age_s=None if hb is None else round(max(0.0, (now - hb).total_seconds()), 3),
        drain=drain, jobs=len({j for use in allocated.values() for j, _ in use.jobs}),
    )


def _entries(s, who: Principal | None, name: str | None, now: datetime, timeout_s: float,  # type: ignore[no-untyped-def]
             idle_window_s: float = 1800.0) -> list[NodeEntry]:
    rows = node_store.node_rows(s, name)
    alloc = node_store.allocations(s, [r.id for r in rows] if name is not None else None)
    job_ids = {j for uses in alloc.values() for use in uses.values() for j, _ in use.jobs}
    view = View(who, node_store.job_names(s, sorted(job_ids)), idle_window_s)
    return [node_entry(r, alloc.get(r.id, {}), view, now, timeout_s) for r in rows]


# ---------------------------------------------------------------------------- agents


def heartbeat(db: Database, report: NodeReport, timeout_s: float = 60.0, idle: IdleRule | None = None) -> NodeEntry:
    """Register the server or refresh it; write its events and track idle allocations
    (`suanli.node_health`). The answer shows every job on it with org and project (the
    agent labels its devices' metrics with them) and which devices are idle allocations."""
    if not NAME.match(report.name):
        raise invalid("bad_node_name", f"{report.name!r} is not a node name", "name")
    rule = idle or IdleRule()
    now = utcnow()
    with db.begin() as s:
        if report.accelerator_type not in tenancy.accelerator_vendors(s):
            raise invalid("unknown_accelerator_type", f"unknown accelerator type {report.accelerator_type}", "accelerator_type")
        old = node_store.lock_node(s, report.name)
        before = {int(d["index"]): dict(d) for d in (old.devices or [])} if old is not None else {}
        was_status = old.status if old is not None else None
        row = node_store.upsert_node(s, report, now)
        uses = node_store.allocations(s, [row.id]).get(row.id, {})
        holders = {dev: tuple(j for j, _ in use.jobs) for dev, use in uses.items()}
        apply_heartbeat(s, row, before, was_status, holders, now, rule)
        # The answer from what this transaction holds already: no second read of the node.
        names = node_store.job_names(s, sorted({j for js in holders.values() for j in js}))
        return node_entry(row, uses, View(None, names, rule.window_s), now, timeout_s)


def node_events(db: Database, who: Principal, name: str, limit: int = 100) -> list[NodeEventRow]:
    """The server's latest events, newest first (any signed-in principal, like the list)."""
    del who  # every principal may read them: they name devices and servers, never jobs
    with db.begin() as s:
        row = node_store.node_rows(s, name)
        if not row:
            raise not_found("node", name)
        found = node_store.events(s, row[0].id, limit)
        s.expunge_all()
        return found


# ---------------------------------------------------------------------------- everyone


def list_nodes(db: Database, who: Principal, timeout_s: float) -> list[NodeEntry]:
    """Every server by name, as `who` may see it."""
    now = utcnow()
    with db.begin() as s:
        return _entries(s, who, None, now, timeout_s)


def get_node(db: Database, who: Principal, name: str, timeout_s: float) -> NodeEntry:
    now = utcnow()
    with db.begin() as s:
        found = _entries(s, who, name, now, timeout_s)
    if not found:
        raise not_found("node", name)
    return found[0]


# ---------------------------------------------------------------------------- center admins


def _admin(who: Principal) -> None:
    if who.role is not Role.CENTER_ADMIN:
        raise forbidden(f"this needs the role {Role.CENTER_ADMIN.value}; you are {who.role.value}")


def drain(db: Database, who: Principal, name: str, reason: str, timeout_s: float) -> NodeEntry:
    """No new jobs on the server; running ones continue. DRAINING until the last ends."""
    _admin(who)
    reason = reason.strip()
    if not reason or len(reason) > REASON_MAX:
        raise invalid("bad_reason", f"say why the server is drained (1 to {REASON_MAX} characters)", "reason")
    now = utcnow()
    with db.begin() as s:
        row = node_store.lock_node(s, name)
        if row is None:
            raise not_found("node", name)
        if row.status == node_store.DRAINED:
            raise conflict("node_drained", f"node {name} is drained already (by {row.drained_by}: {row.drain_reason})")
        before = row.status
        node_store.drain(s, row, reason, who.user, now)
        billing_store.audit(s, who.user, "node.drain", f"node:{name}", {"status": before},
                            {"status": node_store.DRAINED, "reason": reason}, now)
        return _entries(s, who, name, now, timeout_s)[0]


def undrain(db: Database, who: Principal, name: str, timeout_s: float) -> NodeEntry:
    """The server takes new jobs again."""
    _admin(who)
    now = utcnow()
    with db.begin() as s:
        row = node_store.lock_node(s, name)
        if row is None:
            raise not_found("node", name)
        if row.status != node_store.DRAINED:
            raise conflict("node_not_drained", f"node {name} is not drained (status {row.status})")
        before = {"status": row.status, "reason": row.drain_reason, "by": row.drained_by,
                  "at": row.drained_at.isoformat() if row.drained_at else None}
        node_store.undrain(s, row)
        billing_store.audit(s, who.user, "node.undrain", f"node:{name}", before, {"status": "READY"}, now)
        return _entries(s, who, name, now, timeout_s)[0]
