"""Node registration/heartbeat input, node views, drain requests.

Invariants: requests refuse unknown fields; `node_out` is the only way from the node
service's entries (`suanli.nodes.NodeEntry`) to `NodeOut`, and shows only the job ids the
service left visible to the caller.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from scheduler.types import Device, NodeReport, device_healthy
from suanli.nodes import NodeEntry

NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class DeviceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    index: int = Field(ge=0, le=1023)
    uuid: str = Field("", max_length=128)
    model: str = Field("", max_length=128)
    memory_mb: int = Field(0, ge=0)
    health: str = Field("OK", max_length=32, description="OK, Warning (both take jobs), Alarm, Critical, Unknown")
    health_reason: str = Field("", max_length=200, description="Why health is not OK (e.g. Xid 79)")
    utilization_pct: float | None = Field(None, ge=0, le=100,
                                          description="Highest utilization since the previous heartbeat (idle detection)")


class HeartbeatIn(BaseModel):
    """What an agent sends at registration and on every heartbeat."""

    model_config = ConfigDict(extra="forbid")
    accelerator_type: str = Field(pattern=NAME)
    cpus: int = Field(ge=1)
    memory_mb: int = Field(ge=1)
    devices: list[DeviceIn] = Field(max_length=1024)
    labels: dict[str, str] = {}
    agent_version: str = Field("", max_length=32)
    topology: list[list[str]] | None = Field(None, max_length=1024, description="Device link matrix as `nvidia-smi topo -m` "
                                             "prints it (X, NV12, PIX, PXB, PHB, NODE, SYS); row i, column j = devices i, j")
    ray_node_id: str = Field("", max_length=64, description="The Ray node this server runs (hex id), if the agent knows it")


def report_from_heartbeat(name: str, hb: HeartbeatIn) -> NodeReport:
    devices = sorted(hb.devices, key=lambda d: d.index)
    if [d.index for d in devices] != list(range(len(devices))):
        from suanli.errors import invalid

        raise invalid("bad_device_indices", "device indices must be 0..n-1 without gaps", "devices")
    return NodeReport(
        name=name,
        accelerator_type=hb.accelerator_type,
        cpus=hb.cpus,
        memory_mb=hb.memory_mb,
        devices=tuple(Device(d.index, d.uuid, d.model, d.memory_mb, d.health, d.health_reason, d.utilization_pct)
                      for d in devices),
        labels=dict(hb.labels),
        agent_version=hb.agent_version,
        topology=_topology(hb.topology, len(devices)),
        ray_node_id=hb.ray_node_id,
    )


def _topology(rows: list[list[str]] | None, n: int) -> tuple[tuple[str, ...], ...] | None:
    if rows is None:
        return None
    if len(rows) != n or any(len(r) != n for r in rows) or any(len(w) > 16 for r in rows for w in r):
        from suanli.errors import invalid

        raise invalid("bad_topology", f"topology must be a {n}x{n} matrix of short link words", "topology")
    return tuple(tuple(r) for r in rows)


class DeviceOut(BaseModel):
    index: int
    uuid: str
    model: str
    memory_mb: int
    health: str = Field(description="As the agent reports it: OK, Warning (both take jobs), Alarm, Critical, Unknown")
    health_reason: str = Field("", description="Why it is not OK")
    utilization_pct: float | None = Field(None, description="Highest utilization over the last heartbeat interval")
    org: str | None = Field(None, description="The org of `job_id`, if you may see it")
    project: str | None = Field(None, description="The project of `job_id`, if you may see it")
    idle_since: datetime | None = Field(None, description="In use but below the idle threshold since then")
    idle: bool = Field(False, description="An idle allocation: below `idle_utilization_pct` for `idle_window_s`")
    busy: bool = Field(description="In use by a job, whether or not you may see which")
    job_id: int | None = Field(description="The job on it, if you may see it (the first, on a shared device)")
    job_ids: list[int] = Field(description="Every job on it that you may see (several on a shared device)")
    shared: bool = Field(description="Fractional jobs share it")


class DrainOut(BaseModel):
    reason: str
    by: str
    at: datetime


class NodeOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "name": "a100-0", "accelerator_type": "nvidia-a100-80g", "status": "DRAINING", "health": "ok",
        "device_count": 8, "devices_free": 6, "devices_busy": 2, "jobs": 1, "cpus": 64, "memory_mb": 524288,
        "devices": [{"index": 0, "uuid": "GPU-0", "model": "A100-SXM4-80GB", "memory_mb": 81920, "health": "OK",
                     "busy": True, "job_id": None, "job_ids": [], "shared": False}],
        "labels": {"rack": "r1"}, "agent_version": "0.1.0", "registered_at": "2026-11-29T08:00:00Z",
        "last_heartbeat_at": "2026-11-29T08:10:00Z", "heartbeat_age_s": 4.2,
        "drain": {"reason": "NVLink errors on GPU 3", "by": "admin", "at": "2026-11-29T08:09:00Z"}}]})
    name: str
    accelerator_type: str
    status: str = Field(description="READY; DRAINING (drained, jobs still running); DRAINED (drained, empty); "
                                    "NOT_READY (missed node_missed_heartbeats heartbeats: nothing new is placed on it); "
                                    "LOST (silent for node_lost_after_s: its jobs were requeued or ended NODE_LOST)")
    health: str = Field(description="ok; degraded (a device reports a health other than OK); down (heartbeat stale)")
    unhealthy_devices: list[int] = Field([], description="Devices kept out of placement (health not OK or Warning)")
    device_count: int
    devices_free: int
    devices_busy: int
    jobs: int = Field(description="Jobs on the server (yours or not)")
    cpus: int
    memory_mb: int
    devices: list[DeviceOut]
    labels: dict[str, str]
    agent_version: str
    topology: list[list[str]] | None = Field(None, description="Device links as the agent reported them")
    ray_node_id: str = ""
    registered_at: datetime
    last_heartbeat_at: datetime | None
    heartbeat_age_s: float | None
    drain: DrainOut | None = Field(description="Why, by whom and when it was drained (while it is)")


def node_out(n: NodeEntry) -> NodeOut:
    return NodeOut(
        name=n.name,
        accelerator_type=n.accelerator_type,
        status=n.status,
        health=n.health,
        device_count=n.device_count,
        devices_free=n.devices_free,
        devices_busy=n.devices_busy,
        jobs=n.jobs,
        cpus=n.cpus,
        memory_mb=n.memory_mb,
        devices=[
            DeviceOut(index=d.index, uuid=d.uuid, model=d.model, memory_mb=d.memory_mb, health=d.health,
                      health_reason=d.health_reason, utilization_pct=d.utilization_pct, busy=d.busy,
                      job_id=d.job_ids[0] if d.job_ids else None, job_ids=list(d.job_ids), shared=d.shared,
                      org=d.org, project=d.project, idle_since=d.idle_since, idle=d.idle)
            for d in n.devices
        ],
        unhealthy_devices=[d.index for d in n.devices if not device_healthy(d.health)],
        labels=n.labels,
        agent_version=n.agent_version,
        topology=[list(r) for r in n.topology] if n.topology is not None else None,
        ray_node_id=n.ray_node_id,
        registered_at=n.registered_at,
        last_heartbeat_at=n.last_heartbeat_at,
        heartbeat_age_s=n.heartbeat_age_s,
        drain=DrainOut(reason=n.drain.reason, by=n.drain.by, at=n.drain.at) if n.drain else None,
    )


class DrainIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"reason": "NVLink errors on GPU 3"}]})
    reason: str = Field(min_length=1, max_length=500, description="Why (shown with the node and in the audit log)")


class NodeEventOut(BaseModel):
    at: datetime
    kind: str = Field(description="registered, not_ready, ready, lost, device_unhealthy, device_healthy")
    device: int | None = Field(description="The device concerned, for device events")
    message: str
