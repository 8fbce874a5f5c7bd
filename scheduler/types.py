"""Domain dataclasses of the scheduler: what the policy sees and what it decides.

Invariants:
- Everything here is frozen and free of I/O; times are float epoch seconds (UTC) inside the
  policy and aware `datetime`s on the `Job` record.
- A `Snapshot` is self-contained: `decide(snapshot, now)` needs nothing else.
- Device indices are the server's own indices (0..count-1), the same numbers that go into
  `CUDA_VISIBLE_DEVICES` / `ASCEND_RT_VISIBLE_DEVICES`; the database's claims are the truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class JobStatus(StrEnum):
    PENDING = "PENDING"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    CANCELLING = "CANCELLING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def holds_devices(self) -> bool:
        return self in ACTIVE


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.TIMEOUT})
# Statuses in which a job owns device claims and (maybe) a runner on Ray.
ACTIVE = frozenset({JobStatus.STARTING, JobStatus.RUNNING, JobStatus.CANCELLING})


class Vendor(StrEnum):
    NVIDIA = "nvidia"
    ASCEND = "ascend"

    @property
    def visibility_env(self) -> str:
        """The variable that restricts a process to its devices."""
        return "CUDA_VISIBLE_DEVICES" if self is Vendor.NVIDIA else "ASCEND_RT_VISIBLE_DEVICES"

    @property
    def ray_resource(self) -> str:
        """Ray's resource name for this vendor's devices."""
        return "GPU" if self is Vendor.NVIDIA else "NPU"


@dataclass(frozen=True)
class Resources:
    """What a job asks for: `nodes` servers, each with `devices_per_node` devices of one of
    `accelerator_types` (in order of preference), plus CPUs and memory per server."""

    accelerator_types: tuple[str, ...]
    devices_per_node: int = 1
    nodes: int = 1
    cpus_per_node: int = 1
    memory_mb_per_node: int = 1024

    @property
    def total_devices(self) -> int:
        return self.devices_per_node * self.nodes


@dataclass(frozen=True)
class Placement:
    """One server's share of a job: its devices there. Rank = position in the tuple."""

    node: str
    devices: tuple[int, ...]


@dataclass(frozen=True)
class JobRequest:
    """A pending job as the policy sees it."""

    id: int
    org: str
    resources: Resources
    submitted_at: float
    time_limit_s: int


@dataclass(frozen=True)
class NodeView:
    """A server as the policy sees it: what is free now."""

    name: str
    accelerator_type: str
    device_count: int
    free_devices: tuple[int, ...]
    free_cpus: int
    free_memory_mb: int
    schedulable: bool = True


@dataclass(frozen=True)
class Snapshot:
    nodes: tuple[NodeView, ...]
    pending: tuple[JobRequest, ...]


class WaitCode(StrEnum):
    NO_CAPACITY_NOW = "no_capacity_now"  # fits the cluster, not what is free now
    NEVER_FITS = "never_fits"  # no schedulable server of an accepted type can ever hold it


@dataclass(frozen=True)
class Start:
    job_id: int
    accelerator_type: str
    placements: tuple[Placement, ...]
    reason: str


@dataclass(frozen=True)
class Wait:
    job_id: int
    code: WaitCode
    reason: str


@dataclass(frozen=True)
class Decisions:
    starts: tuple[Start, ...] = ()
    waits: tuple[Wait, ...] = ()


@dataclass(frozen=True)
class JobSubmission:
    """A validated job spec, ready to be stored."""

    name: str
    project: str
    resources: Resources
    time_limit_s: int
    grace_s: float
    command: str
    working_dir: str | None
    env: dict[str, str]


@dataclass(frozen=True)
class Job:
    """A job record, as the services and the API see it."""

    id: int
    name: str
    org: str
    project: str
    user: str
    status: JobStatus
    resources: Resources
    time_limit_s: int
    grace_s: float
    command: str
    working_dir: str | None
    env: dict[str, str]
    submitted_at: datetime
    version: int
    reason: str = ""
    started_at: datetime | None = None
    ended_at: datetime | None = None
    exit_code: int | None = None
    accelerator_type: str | None = None
    placements: tuple[Placement, ...] = ()
    price_fen_per_device_hour: int | None = None
    cost_fen: int | None = None


@dataclass(frozen=True)
class LaunchSpec:
    """Everything a launcher needs to run one job on its placement."""

    job_id: int
    name: str
    org: str
    vendor: Vendor
    accelerator_type: str
    placements: tuple[Placement, ...]
    cpus_per_node: int
    memory_mb_per_node: int
    command: str
    working_dir: str | None
    env: dict[str, str]
    job_dir: str  # <jobs_dir>/<id>: logs go here; the default working directory
    time_limit_s: int
    grace_s: float


class RunnerPhase(StrEnum):
    STARTING = "STARTING"  # the runner exists but has not started the process yet
    RUNNING = "RUNNING"
    EXITED = "EXITED"
    LOST = "LOST"  # the launcher has no runner for this job (died, or never existed)


@dataclass(frozen=True)
class RunnerState:
    """What the launcher reports about one job's process."""

    phase: RunnerPhase
    started_at: float | None = None
    ended_at: float | None = None
    exit_code: int | None = None
    # Why the process ended if we ended it: "cancel", "timeout"; None if it exited by itself.
    stopped_by: str | None = None
    error: str | None = None  # a launch error (bad working dir, …), shown to the user
    pid: int | None = None
    extra: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Device:
    index: int
    uuid: str = ""
    model: str = ""
    memory_mb: int = 0
    health: str = "OK"


@dataclass(frozen=True)
class NodeReport:
    """What an agent reports about its server at registration and on every heartbeat."""

    name: str
    accelerator_type: str
    cpus: int
    memory_mb: int
    devices: tuple[Device, ...]
    labels: dict[str, str] = field(default_factory=dict)
    agent_version: str = ""


@dataclass(frozen=True)
class Node:
    """A server as the API shows it."""

    name: str
    accelerator_type: str
    status: str
    device_count: int
    cpus: int
    memory_mb: int
    devices: tuple[Device, ...]
    labels: dict[str, str]
    agent_version: str
    registered_at: datetime
    last_heartbeat_at: datetime | None
    # device index -> job id, for devices in use
    allocated: dict[int, int] = field(default_factory=dict)
