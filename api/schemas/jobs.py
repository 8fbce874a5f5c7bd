"""Job spec (what users write in YAML) and job views.

Invariants: the spec refuses unknown fields (a typo is an error naming the field, not a
silently ignored setting); `submission_from_spec` is the only way from a spec to the domain's
`JobSubmission`, and `job_out` the only way from a domain `Job` to the API's view.

Size limits (422 naming the field): command ≤ 64 KiB of UTF-8, env ≤ 256 variables with
values ≤ 64 KiB each, name ≤ 128 characters, project ≤ 64, priority_class ≤ 32, working_dir
≤ 4096 bytes. The request body as a whole is limited by `max_body_bytes` (413).
"""

from __future__ import annotations

import re
import shlex
from datetime import datetime
from typing import Literal
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from api.schemas.common import parse_duration, parse_memory_mib
from quota.settlement import bill_from_json
from scheduler.types import Job, JobSubmission, Resources
from suanli.errors import invalid

NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# Set by suanli itself; a job may not override them.
RESERVED_ENV = ("SUANLI_", "CUDA_VISIBLE_DEVICES", "ASCEND_RT_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES")
MAX_COMMAND = 65536  # bytes of UTF-8
MAX_ENV = 256
MAX_ENV_VALUE = 65536  # bytes of UTF-8
MAX_PATH = 4096  # bytes of UTF-8 (Linux PATH_MAX)


class ResourcesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    accelerator: str | list[str] = Field(
        description="An accelerator type, or a list of acceptable types in order of preference",
        examples=["nvidia-a100-80g", ["nvidia-a100-80g", "ascend-910b"]],
    )
    devices_per_node: int = Field(1, ge=1, le=64, description="Devices on each server")
    nodes: int = Field(1, ge=1, le=256, description="Servers (all start together, or none)")
    cpus_per_node: int = Field(4, ge=1, le=1024)
    memory_per_node: str | int = Field("16Gi", validate_default=True, description="MiB as a number, or '512Mi', '16Gi', …")
    device_fraction: float = Field(1.0, gt=0, le=1, description="Share of one device (e.g. 0.25), in thousandths at most; "
                                   "below 1 only with one device on one server: fractional jobs share devices")

    @field_validator("device_fraction")
    @classmethod
    def _fraction(cls, v: float) -> float:
        if abs(v * 1000 - round(v * 1000)) > 1e-9:
            raise ValueError("give the fraction in thousandths at most (e.g. 0.25, 0.125)")
        return v

    @model_validator(mode="after")
    def _fraction_shape(self) -> ResourcesIn:
        if self.device_fraction < 1 and (self.devices_per_node != 1 or self.nodes != 1):
            raise PydanticCustomError("fraction_shape", "a fractional share needs devices_per_node: 1 and nodes: 1")
        return self

    @field_validator("accelerator")
    @classmethod
    def _types(cls, v: str | list[str]) -> list[str]:
        types = [v] if isinstance(v, str) else list(v)
        if not types:
            raise ValueError("name at least one accelerator type")
        for t in types:
            if not re.match(NAME, t):
                raise ValueError(f"{t!r} is not an accelerator type name")
        if len(set(types)) != len(types):
            raise ValueError("an accelerator type is listed twice")
        return types

    @field_validator("memory_per_node")
    @classmethod
    def _memory(cls, v: str | int) -> int:
        return parse_memory_mib(v)


class JobSpecIn(BaseModel):
    """A job spec, as written in YAML (see README: "Job spec")."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "train-numpy",
                    "project": "default",
                    "resources": {"accelerator": "nvidia-a100-80g", "devices_per_node": 1},
                    "time_limit": "10m",
                    "command": "python train_numpy.py --epochs 30",
                    "working_dir": "/srv/work/examples",
                    "env": {"SEED": "1"},
                }
            ]
        },
    )

    name: str = Field(max_length=128, pattern=NAME)
    project: str = Field("default", max_length=64, pattern=NAME)
    priority_class: str = Field("normal", max_length=32, pattern=NAME,
                                description="high, normal, low, preemptible, or a class the center defined")
    requeue: bool = Field(True, description="After a preemption or the loss of its server, go back to the queue (else end PREEMPTED or NODE_LOST)")
    resources: ResourcesIn
    time_limit: str | int | None = Field(None, description="Seconds, or '30m', '2h', '1h30m', '1d'")
    grace_period: str | int | None = Field(None, description="Seconds between the stop signal and SIGKILL")
    stop_signal: Literal["SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2"] = Field(
        "SIGTERM", description="Sent to every rank's process group on cancel, preemption and time limit; SIGKILL "
        "follows after grace_period. Billing stops when it is sent")
    command: str | list[str] = Field(description="A shell command line, or an argv list")
    working_dir: str | None = Field(None, description="Absolute path on the servers (a shared filesystem): run in place")
    code: str | None = Field(None, pattern=r"^sha256:[0-9a-f]{64}$",
                             description="Uploaded code (POST /v1/code; the CLI uploads a directory given as `code`), "
                             "unpacked on each server by Ray and run there; not with working_dir")
    env: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description=f"At most {MAX_ENV} variables, each value at most {MAX_ENV_VALUE} bytes")

    @field_validator("time_limit", "grace_period")
    @classmethod
    def _duration(cls, v: str | int | None) -> int | None:
        return None if v is None else parse_duration(v)

    @field_validator("command")
    @classmethod
    def _command(cls, v: str | list[str]) -> str:
        text = v if isinstance(v, str) else shlex.join(v)
        if not text.strip():
            raise ValueError("the command is empty")
        if len(text.encode()) > MAX_COMMAND:
            raise ValueError(f"the command is longer than {MAX_COMMAND} bytes (64 KiB); put long scripts in a file")
        return text

    @field_validator("working_dir")
    @classmethod
    def _wd(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError("working_dir must be an absolute path (the CLI resolves relative ones)")
        if v is not None and len(v.encode()) > MAX_PATH:
            raise ValueError(f"working_dir is longer than {MAX_PATH} bytes")
        return v

    @model_validator(mode="after")
    def _code_or_dir(self) -> JobSpecIn:
        if self.code is not None and self.working_dir is not None:
            raise PydanticCustomError("code_and_working_dir", "give code (shipped) or working_dir (in place), not both")
        return self

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, object]) -> dict[str, str]:
        if len(v) > MAX_ENV:
            raise ValueError(f"at most {MAX_ENV} variables")
        out: dict[str, str] = {}
        for k, val in v.items():
            if not ENV_KEY.match(k):
                raise ValueError(f"{k!r} is not a valid variable name")
            if k.startswith(RESERVED_ENV):
                raise ValueError(f"{k} is set by suanli and cannot be overridden")
            out[k] = str(val).lower() if isinstance(val, bool) else str(val)
            if len(out[k].encode()) > MAX_ENV_VALUE:
                raise ValueError(f"the value of {k} is longer than {MAX_ENV_VALUE} bytes (64 KiB)")
        return out


def submission_from_spec(spec: JobSpecIn, default_time_limit_s: int, max_time_limit_s: int, default_grace_s: float) -> JobSubmission:
    time_limit = spec.time_limit or default_time_limit_s
    if time_limit > max_time_limit_s:
        raise invalid("time_limit_too_long", f"time_limit {time_limit}s is over the center's maximum of {max_time_limit_s}s", "time_limit")
    r = spec.resources
    return JobSubmission(
        name=spec.name,
        project=spec.project,
        resources=Resources(
            accelerator_types=tuple(r.accelerator),  # type: ignore[arg-type]
            devices_per_node=r.devices_per_node,
            nodes=r.nodes,
            cpus_per_node=r.cpus_per_node,
            memory_mb_per_node=int(r.memory_per_node),
            device_milli=round(r.device_fraction * 1000),
        ),
        time_limit_s=int(time_limit),
        grace_s=float(spec.grace_period if spec.grace_period is not None else default_grace_s),
        command=spec.command,  # type: ignore[arg-type]
        working_dir=spec.working_dir,
        env=dict(spec.env),  # type: ignore[arg-type]
        priority_class=spec.priority_class,
        requeue=spec.requeue,
        stop_signal=spec.stop_signal,
        code=spec.code,
    )


class ResourcesOut(BaseModel):
    accelerator_types: list[str]
    devices_per_node: int
    nodes: int
    cpus_per_node: int
    memory_mb_per_node: int
    device_fraction: float


class PlacementOut(BaseModel):
    node: str
    devices: list[int]


class FactorOut(BaseModel):
    name: str
    factor: float = Field(description="In [0, 1]")
    weight: float


class JobOut(BaseModel):
    id: int
    name: str
    org: str
    project: str
    user: str
    status: str
    reason: str
    reason_code: str = Field(description="Machine-readable reason (e.g. reserved, over_quota, insufficient_funds)")
    priority_class: str
    priority: float | None = Field(description="Weighted sum of the factors, in [0, 1]; set while pending")
    priority_factors: list[FactorOut]
    estimated_start_at: datetime | None
    requeue: bool
    restart_count: int
    resources: ResourcesOut
    time_limit_s: int
    grace_s: float
    stop_signal: str = Field(description="Sent on cancel, preemption and time limit; SIGKILL after grace_s")
    command: str
    working_dir: str | None
    code: str | None = Field(None, description="The shipped code's id (sha256:<hex>), if any")
    submitted_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    exit_code: int | None
    accelerator_type: str | None
    placements: list[PlacementOut]
    nodes: list[str] = Field(description="The servers of its current (or last) run, in rank order")
    price_fen_per_device_hour: int | None
    cost_fen: int | None = Field(description="What its runs cost in all (fen), once settled")
    subsidy_fen: int | None = Field(description="Of the cost, what compute vouchers paid (fen); the org's account paid the rest")
    cost_so_far_fen: int = Field(description="Charged so far (fen): settled runs plus what metering has charged the "
                                 "current run; for a running job this grows every meter interval")
    idle_since: datetime | None = Field(None, description="Its devices have been an idle allocation (below the "
                                        "center's utilization threshold for its idle window) since then")
    notices: list[str] = Field([], description="Things its owner should know, e.g. an idle allocation")


def job_out(job: Job) -> JobOut:
    r = job.resources
    return JobOut(
        id=job.id,
        name=job.name,
        org=job.org,
        project=job.project,
        user=job.user,
        status=str(job.status),
        reason=job.reason,
        reason_code=job.reason_code,
        priority_class=job.priority_class,
        priority=job.priority,
        priority_factors=[FactorOut(name=n, factor=f, weight=w) for n, f, w in job.priority_factors],
        estimated_start_at=job.estimated_start_at,
        requeue=job.requeue,
        restart_count=job.restart_count,
        resources=ResourcesOut(
            accelerator_types=list(r.accelerator_types),
            devices_per_node=r.devices_per_node,
            nodes=r.nodes,
            cpus_per_node=r.cpus_per_node,
            memory_mb_per_node=r.memory_mb_per_node,
            device_fraction=r.device_milli / 1000,
        ),
        time_limit_s=job.time_limit_s,
        grace_s=job.grace_s,
        stop_signal=job.stop_signal,
        command=job.command,
        working_dir=job.working_dir,
        code=job.code,
        submitted_at=job.submitted_at,
        started_at=job.started_at,
        ended_at=job.ended_at,
        exit_code=job.exit_code,
        accelerator_type=job.accelerator_type,
        placements=[PlacementOut(node=p.node, devices=list(p.devices)) for p in job.placements],
        nodes=[p.node for p in job.placements],
        price_fen_per_device_hour=job.price_fen_per_device_hour,
        cost_fen=job.cost_fen,
        subsidy_fen=job.subsidy_fen,
        cost_so_far_fen=cost_so_far_fen(job),
        idle_since=job.idle_since,
        notices=notices(job),
    )


def notices(job: Job) -> list[str]:
    """What the owner should act on; shown by `suanli describe`."""
    out = []
    if job.idle_since is not None and not job.status.terminal:
        out.append(f"idle allocation: its devices have been below the center's utilization threshold since "
                   f"{job.idle_since.isoformat(timespec='seconds')} — free them if the job is not working "
                   f"(see its events)")
    return out


def cost_so_far_fen(job: Job) -> int:
    """Settled cost of finished runs plus what metering charged the current run (its
    `run_charged`: account part and voucher parts)."""
    charged = bill_from_json(job.run_charged)
    return (job.cost_fen or 0) + charged.cash_fen + sum(f for _, f in charged.voucher_parts)


class JobList(BaseModel):
    items: list[JobOut]
    next_cursor: str | None = Field(None, description="Opaque; pass as `cursor` (with the same sort) for the next "
                                    "page. Absent on the last page")


class EventOut(BaseModel):
    at: datetime
    from_status: str | None
    to_status: str | None
    reason: str
