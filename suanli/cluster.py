"""The servers of a (local or simulated) cluster, as configured by operators.

Invariants: server names are unique and valid node names; every server's type has one
vendor; the default is the demo cluster of `suanli up` (two 8-GPU A100 servers and one
8-NPU Ascend 910B server).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from scheduler.types import Vendor

NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class ServerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME)
    accelerator_type: str = Field(pattern=NAME)
    vendor: Vendor
    devices: int = Field(8, ge=1, le=64)
    cpus: int = Field(32, ge=1)
    memory_mb: int = Field(256 * 1024, ge=1024)
    model: str = ""  # device model name shown in telemetry (e.g. "NVIDIA A100-SXM4-80GB")
    device_memory_mb: int = Field(81920, ge=1)
    rack: str | None = None


class ClusterSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    servers: list[ServerSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> ClusterSpec:
        names = [s.name for s in self.servers]
        if len(set(names)) != len(names):
            raise ValueError("server names must be unique")
        vendors: dict[str, Vendor] = {}
        for s in self.servers:
            if vendors.setdefault(s.accelerator_type, s.vendor) is not s.vendor:
                raise ValueError(f"type {s.accelerator_type} is given two vendors")
        return self

    def accelerator_types(self) -> dict[str, Vendor]:
        return {s.accelerator_type: s.vendor for s in self.servers}

    @classmethod
    def load(cls, path: Path) -> ClusterSpec:
        return cls.model_validate(yaml.safe_load(path.read_text()))


def demo_cluster() -> ClusterSpec:
    a100 = dict(accelerator_type="nvidia-a100-80g", vendor=Vendor.NVIDIA, devices=8, cpus=64,
                memory_mb=1024 * 1024, model="NVIDIA A100-SXM4-80GB", device_memory_mb=81920)
    return ClusterSpec(
        servers=[
            ServerSpec(name="a100-0", rack="r1", **a100),  # type: ignore[arg-type]
            ServerSpec(name="a100-1", rack="r1", **a100),  # type: ignore[arg-type]
            ServerSpec(name="910b-0", accelerator_type="ascend-910b", vendor=Vendor.ASCEND, devices=8, cpus=192,
                       memory_mb=1536 * 1024, model="Ascend910B3", device_memory_mb=65536, rack="r2"),
        ]
    )


def is_valid_name(name: str) -> bool:
    return re.match(NAME, name) is not None
