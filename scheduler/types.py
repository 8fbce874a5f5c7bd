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
from typing import Any


class JobStatus(StrEnum):
    PENDING = "PENDING"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    CANCELLING = "CANCELLING"
    PREEMPTING = "PREEMPTING"
    # Kept out of scheduling on request (`POST /v1/jobs/{id}/hold`) until released: the
    # snapshot loads PENDING jobs only, so the policy never sees a held job.
    HELD = "HELD"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    PREEMPTED = "PREEMPTED"
    # Its server stopped sending heartbeats for good (`node_lost_after_s`) and the job asked
    # not to be requeued; a requeueable job goes back to PENDING instead. Never charged
    # while `refund_center_faults` is on: the loss is the center's fault.
    NODE_LOST = "NODE_LOST"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def holds_devices(self) -> bool:
        return self in ACTIVE


TERMINAL = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.TIMEOUT, JobStatus.PREEMPTED,
     JobStatus.NODE_LOST}
)
# Statuses in which a job owns device claims and (maybe) a runner on Ray.
ACTIVE = frozenset({JobStatus.STARTING, JobStatus.RUNNING, JobStatus.CANCELLING, JobStatus.PREEMPTING})


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
    # Share of one device in thousandths, for fractional requests (notebooks, inference):
    # below 1000 only with one device on one server; such jobs are packed onto shared devices.
    device_milli: int = 1000

    @property
    def total_devices(self) -> int:
        return self.devices_per_node * self.nodes

    @property
    def total_milli(self) -> int:
        """Devices asked, in thousandths (what quotas and usage count)."""
        return self.devices_per_node * self.nodes * self.device_milli

    @property
    def fractional(self) -> bool:
        return self.device_milli < 1000


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
    project: str = "default"
    pool: str = ""
    priority_class: str = "normal"


@dataclass(frozen=True)
class RunningJob:
    """A job holding devices (STARTING, RUNNING, CANCELLING or PREEMPTING)."""

    id: int
    org: str
    accelerator_type: str
    placements: tuple[Placement, ...]
    started_at: float
    time_limit_s: int
    submitted_at: float = 0.0
    project: str = "default"
    pool: str = ""
    priority_class: str = "normal"
    device_milli: int = 1000
    grace_s: float = 10.0
    # Being stopped already (cancel or preemption): its devices are free by `stop_by`, and
    # it is never chosen as a victim again.
    stop_by: float | None = None

    @property
    def milli(self) -> int:
        return sum(len(p.devices) for p in self.placements) * self.device_milli

    @property
    def ends_by(self) -> float:
        """Latest end: its stop deadline if stopping, else its time limit."""
        return self.stop_by if self.stop_by is not None else self.started_at + self.time_limit_s


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
    rack: str | None = None
    # Devices partly used by fractional jobs: (index, free thousandths); not in free_devices.
    shared: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class Quota:
    """Devices of one accelerator type: `guaranteed` (reclaimable when lent out) and a
    `limit` on what may be used at once (None: no limit)."""

    guaranteed: int = 0
    limit: int | None = None


@dataclass(frozen=True)
class PriorityClass:
    value: float  # the QOS factor, in [0, 1]
    preemptible: bool = False


DEFAULT_CLASSES = {
    "high": PriorityClass(1.0),
    "normal": PriorityClass(0.5),
    "low": PriorityClass(0.25),
    "preemptible": PriorityClass(0.0, preemptible=True),
}


@dataclass(frozen=True)
class PolicyConfig:
    """Weights and knobs of the fair-share policy (from settings; part of the snapshot so
    that `decide` stays a function of its arguments)."""

    weight_fairshare: float = 4.0
    weight_age: float = 2.0
    weight_size: float = 1.0
    weight_qos: float = 3.0
    weight_shortness: float = 6.0  # short time limits first (see priority.py; issue-4 sweep in docs/benchmarks.md)
    max_limit_s: float = 14 * 24 * 3600  # the shortness factor reaches 0 here
    max_age_s: float = 7 * 24 * 3600  # the age factor reaches 1 after this wait
    size_favors_small: bool = False  # Slurm's default favours large jobs
    backfill_depth: int = 1  # reservations per accelerator type (1 = EASY backfill)
    estimate_depth: int = 50  # blocked jobs that get an estimated start time
    # Jobs examined per decision, in priority order (Slurm's default_queue_depth); the rest
    # wait for a later cycle with their priority reported. Bounds the cost of a cycle.
    queue_depth: int = 2000
    reclaim: bool = True  # preempt borrowing jobs for orgs below their guarantee
    # Variants, for baselines and experiments (the defaults are the suanli policy):
    fairshare: str = "fair-tree"  # or "classic" (Slurm's 2^(-UE/S))
    ordering: str = "priority"  # or "fifo" (submit order, priority only reported)
    guarantee_tiers: bool = True  # serve jobs inside a guarantee before borrowing ones
    # "auto": fragmentation gradient descent less a scarcity penalty (policy/scoring.py "fgd"
    # with SCARCITY_WEIGHT: a placement that leaves a rare workload shape with fewer servers
    # it fits on costs more) for one-server jobs when the snapshot carries the target
    # workload, else best fit by free devices (capacity.py);
    # "bucket": always the latter; or a strategy of scoring.py: bestfit, packing, fgd, …
    placement: str = "auto"


@dataclass(frozen=True)
class ShareNode:
    """A node of the tenancy tree: center -> pool -> org -> project (leaf). `usage` is the
    leaf's decayed usage in billing units; inner nodes' usage is the sum below them."""

    id: str
    parent: str | None
    shares: float
    usage: float = 0.0


def project_key(org: str, project: str) -> str:
    """The share-tree leaf id of a project."""
    return f"project:{org}/{project}"


@dataclass(frozen=True)
class Snapshot:
    nodes: tuple[NodeView, ...]
    pending: tuple[JobRequest, ...]
    running: tuple[RunningJob, ...] = ()
    share_tree: tuple[ShareNode, ...] = ()
    quotas: dict[tuple[str, str], Quota] = field(default_factory=dict)  # (org, type)
    pool_quotas: dict[tuple[str, str], Quota] = field(default_factory=dict)  # (pool, type)
    classes: dict[str, PriorityClass] = field(default_factory=lambda: dict(DEFAULT_CLASSES))
    prices: dict[str, int] = field(default_factory=dict)  # fen per device-hour
    funds: dict[str, int] | None = None  # spendable fen per org; None = not enforced
    config: PolicyConfig = field(default_factory=PolicyConfig)
    # Optional: what each org can pay with (quota.types.Wallet); when given it is used
    # instead of `funds` (vouchers pay their program's share of eligible types).
    wallets: dict[str, Any] | None = None
    # Optional: free capacity already indexed by accelerator type (policy.capacity
    # TypeCapacity), kept up to date by the producer and describing exactly `nodes` (which
    # may then be left empty). `decide` only reads it (it works on forks).
    capacity: dict[str, Any] | None = None
    # Optional: devices in use (thousandths) by (org, type) and by (pool, type), summed over
    # `running`, kept by the producer (the simulator) so a decision need not re-add them.
    in_use: tuple[dict[tuple[str, str], int], dict[tuple[str, str], int]] | None = None
    # For score-based placement strategies (PolicyConfig.placement): the target workload
    # (policy.fragment.Workload: typical task shapes and their popularity) and the order in
    # which equal scores are broken (server name -> rank; default: by name).
    workload: Any | None = None
    tie_rank: dict[str, int] | None = None
    # Optional, only with `capacity` and `workload`: per GPU shape of `workload`, the servers
    # of `capacity` where it fits now (policy.scarcity.LiveShapeFits), kept up to date by the
    # producer as `capacity` is, so a decision need not count the cluster for the scarcity
    # penalty; when absent the policy counts itself, with the same result. Only read.
    shape_fits: Any | None = None
    # Optional, only with `capacity`: every server of `capacity` as numpy columns for
    # score-based placement (policy.fragment.ServerColumns), told of every change by the
    # producer, so a decision copies them instead of building them; when absent the policy
    # builds its own, with the same result. Only read (a decision works on a copy).
    columns: Any | None = None
    # Optional: the GPU shares each partly used device holds (policy.pairing.DeviceShares),
    # kept by the producer as jobs start and end, for the share plan of placement "auto";
    # when absent the policy reads them from `running`, with the same result. Only read.
    device_shares: Any | None = None
    # Orgs whose jobs must not start (suspended or not verified), name -> status.
    inactive_orgs: dict[str, str] = field(default_factory=dict)


class WaitCode(StrEnum):
    NO_CAPACITY_NOW = "no_capacity_now"  # fits the cluster, not what is free now
    NEVER_FITS = "never_fits"  # no schedulable server of an accepted type can ever hold it
    RESERVED = "reserved"  # holds the reservation: starts when enough devices free up
    BLOCKED_BY_RESERVATION = "blocked_by_reservation"  # would delay a higher job's reservation
    OVER_QUOTA = "over_quota"  # the org (or its pool) would exceed its limit
    INSUFFICIENT_FUNDS = "insufficient_funds"  # the hold for its time limit cannot be covered
    RECLAIMING = "reclaiming"  # borrowed devices are being preempted for it
    UNKNOWN_CLASS = "unknown_priority_class"
    ORG_NOT_ACTIVE = "org_not_active"  # its org is suspended (or not verified): nothing of it starts


@dataclass(frozen=True)
class Priority:
    """A job's priority and the weighted factors it is made of (all factors in [0, 1])."""

    value: float
    factors: tuple[tuple[str, float, float], ...] = ()  # (name, factor, weight)

    def explain(self) -> str:
        return ", ".join(f"{n} {f:.3f}x{w:g}" for n, f, w in self.factors)


@dataclass(frozen=True)
class Start:
    job_id: int
    accelerator_type: str
    placements: tuple[Placement, ...]
    reason: str
    priority: Priority | None = None
    device_milli: int = 1000


@dataclass(frozen=True)
class Wait:
    job_id: int
    code: WaitCode
    reason: str
    priority: Priority | None = None
    estimated_start: float | None = None


@dataclass(frozen=True)
class Preempt:
    """Stop a running job (with its grace period) and requeue it, so `for_job` can start."""

    job_id: int
    for_job: int
    reason: str


@dataclass(frozen=True)
class Decisions:
    starts: tuple[Start, ...] = ()
    waits: tuple[Wait, ...] = ()
    preemptions: tuple[Preempt, ...] = ()


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
    priority_class: str = "normal"
    requeue: bool = True  # back to the queue after a preemption (else it ends PREEMPTED)
    stop_signal: str = "SIGTERM"  # sent to every rank on cancel, preemption, timeout; SIGKILL after grace
    code: str | None = None  # uploaded code id (sha256:<hex>, suanli/code.py): shipped to each server


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
    priority_class: str = "normal"
    requeue: bool = True
    restart_count: int = 0
    reason_code: str = ""
    priority: float | None = None
    priority_factors: tuple[tuple[str, float, float], ...] = ()
    estimated_start_at: datetime | None = None
    stop_by: datetime | None = None
    # Billing of the current run (quota.settlement JSON) and of all runs.
    hold: dict[str, Any] | None = None
    run_charged: dict[str, Any] | None = None
    meter_seq: int = 0
    subsidy_fen: int | None = None
    idle_since: datetime | None = None  # an idle allocation since then (`suanli.node_health`)
    stop_signal: str = "SIGTERM"
    code: str | None = None  # shipped code id (sha256:<hex>), None: working_dir in place


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
    restart_count: int = 0
    device_milli: int = 1000
    stop_signal: str = "SIGTERM"
    code_zip: str | None = None  # the shipped code's zip (path the scheduler reads), run as Ray's working_dir


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
    # Why the process ended if we ended it: "cancel", "timeout", "preempt", "shutdown"; None
    # if it exited by itself.
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
    health_reason: str = ""  # why health is not OK, as the agent says it
    utilization_pct: float | None = None  # highest utilization since the agent's previous beat


# Device health words that still take jobs (npu-smi's OK and Warning); any other word —
# Alarm, Critical, Unknown (the agent cannot read its devices) — keeps the device out of
# placement until a heartbeat reports it healthy again.
HEALTHY_WORDS = frozenset({"OK", "WARNING"})


def device_healthy(health: str) -> bool:
    return health.strip().upper() in HEALTHY_WORDS


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
    topology: tuple[tuple[str, ...], ...] | None = None  # device link words, row i / column j
    ray_node_id: str = ""


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
