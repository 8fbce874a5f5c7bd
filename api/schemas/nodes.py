"""Node registration/heartbeat input and node views."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from scheduler.types import Device, Node, NodeReport

NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class DeviceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    index: int = Field(ge=0, le=1023)
    uuid: str = Field("", max_length=128)
    model: str = Field("", max_length=128)
    memory_mb: int = Field(0, ge=0)
    health: str = Field("OK", max_length=32)


class HeartbeatIn(BaseModel):
    """What an agent sends at registration and on every heartbeat."""

    model_config = ConfigDict(extra="forbid")
    accelerator_type: str = Field(pattern=NAME)
    cpus: int = Field(ge=1)
    memory_mb: int = Field(ge=1)
    devices: list[DeviceIn] = Field(max_length=1024)
    labels: dict[str, str] = {}
    agent_version: str = Field("", max_length=32)


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
        devices=tuple(Device(d.index, d.uuid, d.model, d.memory_mb, d.health) for d in devices),
        labels=dict(hb.labels),
        agent_version=hb.agent_version,
    )


class DeviceOut(BaseModel):
    index: int
    uuid: str
    model: str
    memory_mb: int
    health: str
    job_id: int | None


class NodeOut(BaseModel):
    name: str
    accelerator_type: str
    status: str
    device_count: int
    devices_free: int
    cpus: int
    memory_mb: int
    devices: list[DeviceOut]
    labels: dict[str, str]
    agent_version: str
    registered_at: datetime
    last_heartbeat_at: datetime | None


def node_out(n: Node) -> NodeOut:
    return NodeOut(
        name=n.name,
        accelerator_type=n.accelerator_type,
        status=n.status,
        device_count=n.device_count,
        devices_free=n.device_count - len(n.allocated),
        cpus=n.cpus,
        memory_mb=n.memory_mb,
        devices=[
            DeviceOut(index=d.index, uuid=d.uuid, model=d.model, memory_mb=d.memory_mb, health=d.health, job_id=n.allocated.get(d.index))
            for d in n.devices
        ],
        labels=n.labels,
        agent_version=n.agent_version,
        registered_at=n.registered_at,
        last_heartbeat_at=n.last_heartbeat_at,
    )
