"""What a simulation replays: a cluster, its tenancy, and a list of jobs.

Invariants: every job has a positive duration (its true run time, which the policy never
sees) and a time limit (what the policy sees); times are seconds from the trace start;
CPUs are in milli-cores and memory in MiB on both servers and jobs, so the policy compares
like with like; a job's `devices_per_node` may be 0 (CPU-only pods in the Alibaba trace).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scheduler.types import PolicyConfig, PriorityClass, Quota


@dataclass(frozen=True)
class SimServer:
    name: str
    accelerator_type: str
    devices: int
    cpu_milli: int = 64_000
    memory_mib: int = 256 * 1024
    rack: str | None = None


@dataclass(frozen=True)
class SimTenant:
    org: str
    pool: str = "default"
    shares: float = 1.0


@dataclass(frozen=True)
class SimCluster:
    servers: tuple[SimServer, ...]
    tenants: tuple[SimTenant, ...] = ()
    pool_shares: dict[str, float] = field(default_factory=dict)
    quotas: dict[tuple[str, str], Quota] = field(default_factory=dict)  # (org, type)
    pool_quotas: dict[tuple[str, str], Quota] = field(default_factory=dict)  # (pool, type)
    prices: dict[str, int] = field(default_factory=dict)  # fen per device-hour
    billing_weights: dict[str, float] = field(default_factory=dict)
    classes: dict[str, PriorityClass] | None = None
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    half_life_s: float = 7 * 24 * 3600

    @property
    def total_devices(self) -> int:
        return sum(s.devices for s in self.servers)


@dataclass(frozen=True)
class SimJob:
    id: int
    submit_time: float
    duration_s: float
    devices: int  # per node; 0 for CPU-only
    nodes: int = 1
    device_milli: int = 1000  # share of one device when < 1000 (then devices == 1, nodes == 1)
    accelerators: tuple[str, ...] = ()  # acceptable types; empty = any type in the cluster
    tenant: str = "default"
    pool: str | None = None  # None: the tenant's pool in the cluster file
    time_limit_s: float | None = None  # None: decided by the --time-limit rule
    priority_class: str = "normal"
    cpu_milli: int = 1000  # per node
    memory_mib: int = 1024  # per node
    name: str = ""

    @property
    def gpu_request(self) -> float:
        """Devices asked in all, as a number of whole devices (fractions count as such)."""
        return self.devices * self.nodes * self.device_milli / 1000
