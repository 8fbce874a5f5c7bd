"""What every device backend gives the agent: an inventory and periodic samples.

The same protocol fits NVML (NVIDIA), npu-smi (Ascend) and the simulator, so the exporter
and the heartbeat never know which backend they talk to.

Invariants:
- `inventory()` and `sample()` cover the same devices, indexed 0..n-1 in ascending order;
  an index is the server's own device index (what goes into `CUDA_VISIBLE_DEVICES` /
  `ASCEND_RT_VISIBLE_DEVICES`), never a PCI or npu-smi id.
- A device's `uuid` is stable for the life of the hardware (the simulator: for the life of
  the (node name, index) pair).
- Percentages are 0..100; `0 <= memory_used_mib <= memory_total_mib`; power, temperature
  and clocks are non-negative.
- `energy_mj` never decreases between two samples of one collector (a counter since boot).
- Optional counters are `None` when the backend cannot measure them (ECC on a device with ECC
  off, XID on Ascend, an npu error code on NVIDIA); never a made-up 0.
- `health` is one of `Health`; `Warning` still counts as healthy (a minor alarm, the device
  keeps running jobs), `Alarm` and `Critical` do not.
- Everything here is frozen: a sample is a value taken at one moment, shared between threads.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

from scheduler.types import Vendor


class Health(StrEnum):
    """npu-smi's health words; NVML's state maps onto them (OK, or Critical after a fatal XID)."""

    OK = "OK"
    WARNING = "Warning"
    ALARM = "Alarm"
    CRITICAL = "Critical"

    @property
    def healthy(self) -> bool:
        return self in (Health.OK, Health.WARNING)


@dataclass(frozen=True)
class DeviceInfo:
    """What does not change while the agent runs: identity and capacity."""

    index: int
    uuid: str
    model: str  # e.g. "NVIDIA A100-SXM4-80GB", "Ascend910B3"
    memory_total_mib: int
    pci_bus_id: str = ""  # "00000000:18:00.0" (NVML) or "0000:C1:00.0" (npu-smi); "" if unknown
    serial: str = ""
    driver_version: str = ""
    vdie_id: str = ""  # Ascend die id (npu-exporter's `vdie_id` label); "" if unknown

    def __post_init__(self) -> None:
        if self.index < 0 or self.memory_total_mib < 0:
            raise ValueError(f"bad device info {self}")


@dataclass(frozen=True)
class DeviceSample:
    """One device at one moment."""

    index: int
    utilization_pct: float  # GPU (SM busy time) or AI-core utilization
    memory_utilization_pct: float  # memory bandwidth busy (NVML "memory" util); HBM on Ascend
    memory_used_mib: float
    memory_total_mib: float
    power_w: float
    energy_mj: int  # total energy since boot (or since the collector started), millijoules
    temperature_c: float
    core_clock_mhz: float  # SM clock (NVIDIA), AI-core current frequency (Ascend)
    memory_clock_mhz: float
    health: Health = Health.OK
    xid_last: int | None = None  # NVIDIA: value of the last XID error, 0 = none seen
    ecc_corrected_total: int | None = None
    ecc_uncorrected_total: int | None = None
    error_code: int | None = None  # Ascend: npu-smi's current error code, 0 = none
    health_reason: str = ""  # why `health` is not OK ("Xid 79", "uncorrectable ECC", "temperature 93 C"), "" if OK
    retired_pages: int | None = None  # NVIDIA: pages retired (single + double bit), pre-Ampere
    remapped_rows_failed: int | None = None  # NVIDIA: row-remapping failures (Ampere+), > 0 means replace the GPU
    remapped_rows_pending: int | None = None  # NVIDIA: remaps waiting for a GPU reset
    mig_enabled: bool | None = None  # NVIDIA: MIG mode currently on

    def __post_init__(self) -> None:
        # Checked here so a backend bug shows up where it is made, not as a strange graph.
        if not (0 <= self.utilization_pct <= 100 and 0 <= self.memory_utilization_pct <= 100):
            raise ValueError(f"device {self.index}: utilization outside 0..100")
        if not (0 <= self.memory_used_mib <= self.memory_total_mib):
            raise ValueError(f"device {self.index}: memory used {self.memory_used_mib} outside 0..{self.memory_total_mib}")
        if min(self.power_w, self.energy_mj, self.core_clock_mhz, self.memory_clock_mhz) < 0:
            raise ValueError(f"device {self.index}: negative power, energy or clock")

    @property
    def memory_free_mib(self) -> float:
        return self.memory_total_mib - self.memory_used_mib

    @property
    def healthy(self) -> bool:
        return Health(self.health).healthy


class BackendError(RuntimeError):
    """The device tool or driver failed (npu-smi missing or timing out, NVML call failing).
    `sample()` raises it; the agent logs one line, keeps serving the previous sample and
    reports the failure as its health instead of crashing."""


class Collector(Protocol):
    """A device backend. `sample()` may be slow (it talks to a driver or runs a tool); the
    agent calls it from its sampler thread only, never while answering a scrape."""

    @property
    def vendor(self) -> Vendor: ...

    def inventory(self) -> list[DeviceInfo]: ...

    def sample(self) -> list[DeviceSample]: ...


@runtime_checkable
class SupportsTopology(Protocol):
    """A collector that knows how its devices are linked. `topology()` returns the square
    matrix of link words as `nvidia-smi topo -m` prints them ("X" on the diagonal, "NV12",
    "PIX", "PXB", "PHB", "NODE", "SYS"), row i / column j = device index i / j."""

    def topology(self) -> list[list[str]]: ...


@runtime_checkable
class SupportsBusy(Protocol):
    """A collector whose numbers follow the jobs placed on it (the simulator). Real
    hardware needs no telling; the heartbeat calls this only where it exists."""

    def set_busy(self, jobs: dict[int, int | None]) -> None: ...
