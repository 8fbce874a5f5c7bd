"""Simulated devices whose telemetry follows the jobs the scheduler placed on them.

Used by `suanli up`, by development setups without accelerators, and by tests. The numbers
are plausible, not physical: they are drawn in fixed ranges per vendor (modelled on an
A100-SXM4-80GB and an Ascend 910B), so dashboards and alerts look like a real center's.

Invariants:
- Deterministic: with the same `seed`, the same clock readings and the same `set_busy` calls,
  the same samples come out (one `random.Random(seed)`, drawn in a fixed order).
- A device is busy exactly when the last `set_busy` mapping gave it a job id; the mapping
  replaces the whole allocation (a device it leaves out is idle).
- Busy: utilization 85..100 %, memory used 60..90 % of total, power in the vendor's busy
  range, 60..80 C. Idle: utilization 0..2 %, about 0.5 GiB used, 50..70 W, 30..40 C.
- Energy is the integral of the sampled power over the injected clock: each sample adds
  `power_w * elapsed_s * 1000` mJ, so it never decreases.
- UUIDs depend only on (node name, index): `GPU-<uuid5>` for NVIDIA, `NPU-<uuid5>` for Ascend.
- Thread-safe: `set_busy` (heartbeat thread) and `sample` (sampler thread) share one lock.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from agents.devices.base import DeviceInfo, DeviceSample, Health
from scheduler.types import Vendor

# A fixed namespace so the same (node, index) gives the same UUID on every run and machine.
UUID_NAMESPACE = uuid.UUID("5d0c3a8e-2f4b-4c55-9a51-7375616e6c69")
IDLE_MEMORY_MIB = (400.0, 600.0)  # what a driver context and the runtime keep resident


@dataclass(frozen=True)
class Profile:
    """The ranges one kind of device is simulated in (low, high)."""

    default_model: str
    default_memory_mib: int
    busy_power_w: tuple[float, float]
    idle_power_w: tuple[float, float]
    busy_core_clock_mhz: float
    idle_core_clock_mhz: float
    memory_clock_mhz: float
    busy_memory_util_pct: tuple[float, float]


PROFILES = {
    # A100-SXM4-80GB: 400 W TDP; SM clock drops to 210 MHz when idle, boosts to 1410 MHz;
    # HBM2e at 1593 MHz (the values a real A800/A100 dcgm-exporter scrape shows).
    Vendor.NVIDIA: Profile("NVIDIA A100-SXM4-80GB", 81920, (300.0, 400.0), (50.0, 70.0), 1410.0, 210.0, 1593.0, (30.0, 70.0)),
    # Ascend 910B: about 310 W under load; the AI cores stay at 1800 MHz (npu-smi shows no
    # idle down-clocking); HBM at 1600 MHz.
    Vendor.ASCEND: Profile("Ascend910B3", 65536, (250.0, 310.0), (50.0, 70.0), 1800.0, 1800.0, 1600.0, (20.0, 60.0)),
}


def device_uuid(vendor: Vendor, node: str, index: int) -> str:
    """The stable UUID of simulated device `index` on `node`."""
    u = uuid.uuid5(UUID_NAMESPACE, f"{node}/{index}")
    return f"GPU-{u}" if vendor is Vendor.NVIDIA else f"NPU-{u}"


class SimulatedCollector:
    """`devices` simulated accelerators of one model on one server."""

    def __init__(
        self,
        accelerator_type: str,
        vendor: Vendor | str,
        devices: int,
        model: str = "",
        device_memory_mb: int | None = None,
        seed: int | None = None,
        *,
        node: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if devices < 1:
            raise ValueError("a simulated server has at least one device")
        self.accelerator_type = accelerator_type
        self._vendor = Vendor(vendor)
        self.profile = PROFILES[self._vendor]
        self.node = node
        self.model = model or self.profile.default_model
        self.memory_mib = int(device_memory_mb or self.profile.default_memory_mib)
        self.count = devices
        self._rng = random.Random(seed)
        self._clock = clock
        self._lock = threading.Lock()
        self._jobs: dict[int, int] = {}
        # Memory a job holds stays put while it runs (frameworks allocate once and cache), so
        # it is drawn when the job arrives on the device, not on every sample.
        self._job_memory_frac: dict[int, float] = {}
        self._health = {i: Health.OK for i in range(devices)}
        self._code = {i: 0 for i in range(devices)}  # last XID (NVIDIA) or error code (Ascend)
        self._energy_mj = [0.0] * devices  # "since boot" = since this collector started
        self._last_t = clock()
        self._inventory = [
            DeviceInfo(index=i, uuid=device_uuid(self._vendor, node, i), model=self.model, memory_total_mib=self.memory_mib,
                       pci_bus_id=self._bus_id(i))
            for i in range(devices)
        ]

    @property
    def vendor(self) -> Vendor:
        return self._vendor

    def _bus_id(self, index: int) -> str:
        # Made-up but well-formed, in each tool's spelling, so parsers downstream are exercised.
        if self._vendor is Vendor.NVIDIA:
            return f"00000000:{0x18 + index:02X}:00.0"
        return f"0000:{0xC1 + index:02X}:00.0"

    def inventory(self) -> list[DeviceInfo]:
        return list(self._inventory)

    def set_busy(self, jobs: Mapping[int, int | None]) -> None:
        """Replace the allocation: device index -> job id (busy) or None (idle)."""
        unknown = [i for i in jobs if not 0 <= i < self.count]
        if unknown:
            raise ValueError(f"no simulated device {unknown[0]} (this server has {self.count})")
        with self._lock:
            new = {i: j for i, j in sorted(jobs.items()) if j is not None}
            for i, job in new.items():
                if self._jobs.get(i) != job:
                    self._job_memory_frac[i] = self._rng.uniform(0.62, 0.88)
            for i in [i for i in self._job_memory_frac if i not in new]:
                del self._job_memory_frac[i]
            self._jobs = new

    def busy(self) -> dict[int, int]:
        with self._lock:
            return dict(self._jobs)

    def set_health(self, index: int, health: Health | str, code: int | None = None) -> None:
        """Inject a fault (for demos and tests of alerting): the device reports `health` and,
        if given, `code` as its last XID (NVIDIA) or current error code (Ascend)."""
        with self._lock:
            self._health[index] = Health(health)
            if code is not None:
                self._code[index] = code

    def sample(self) -> list[DeviceSample]:
        with self._lock:
            now = self._clock()
            elapsed = max(0.0, now - self._last_t)  # a clock that steps back adds nothing
            self._last_t = now
            return [self._sample_one(i, elapsed) for i in range(self.count)]

    def _sample_one(self, i: int, elapsed: float) -> DeviceSample:
        p, r = self.profile, self._rng
        if i in self._jobs:
            util = r.uniform(85.0, 100.0)
            mem_util = r.uniform(*p.busy_memory_util_pct)
            # Jitter of +-2 % around the job's own footprint, kept inside 60..90 %.
            frac = min(0.9, max(0.6, self._job_memory_frac[i] + r.uniform(-0.02, 0.02)))
            used = self.memory_mib * frac
            power = round(r.uniform(*p.busy_power_w), 3)
            temp = r.uniform(60.0, 80.0)
            core = p.busy_core_clock_mhz
        else:
            util = r.uniform(0.0, 2.0)
            mem_util = r.uniform(0.0, 1.0)
            used = min(float(self.memory_mib), r.uniform(*IDLE_MEMORY_MIB))
            power = round(r.uniform(*p.idle_power_w), 3)
            temp = r.uniform(30.0, 40.0)
            core = p.idle_core_clock_mhz
        self._energy_mj[i] += power * elapsed * 1000.0
        nvidia = self._vendor is Vendor.NVIDIA
        return DeviceSample(
            index=i,
            utilization_pct=round(util, 1),
            memory_utilization_pct=round(mem_util, 1),
            memory_used_mib=float(round(used)),
            memory_total_mib=float(self.memory_mib),
            power_w=power,
            energy_mj=int(self._energy_mj[i]),
            temperature_c=float(round(temp)),
            core_clock_mhz=core,
            memory_clock_mhz=p.memory_clock_mhz,
            health=self._health[i],
            xid_last=self._code[i] if nvidia else None,
            error_code=None if nvidia else self._code[i],
        )
