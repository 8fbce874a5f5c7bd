"""NVML backend: inventory, samples, Xid/ECC/remap health, NOT_SUPPORTED handling, topology.

This machine has no GPU and no libnvidia-ml, so these tests drive `NvmlCollector` with
`FakeNvml`, a small object exposing the pynvml functions the collector calls. It reproduces
these real pynvml behaviours:
- every failure is the real `pynvml.NVMLError(code)`, which pynvml turns into its
  `NVMLError_NotSupported` / `NVMLError_GpuIsLost` / ... subclass with `.value` set and the
  same message (`str(e)` = "Not Supported", "GPU is lost", ...);
- a field a device lacks raises NVML_ERROR_NOT_SUPPORTED on every call, a lost GPU raises
  NVML_ERROR_GPU_IS_LOST from every device call;
- `nvmlEventSetWait(set, 0)` returns one event per call and raises NVML_ERROR_TIMEOUT when
  the queue is empty; the event's `device` is a new handle object (a fresh ctypes struct on
  hardware), equal to no handle by identity;
- units as NVML reports them: memory in bytes, power in mW, energy in mJ, clocks in MHz,
  `nvmlDeviceGetRemappedRows` -> (corrected, uncorrected, pending flag, failure flag),
  `nvmlDeviceGetMigMode` -> [current, pending], retired pages -> a list of addresses;
- NVLink: `nvmlDeviceGetNvLinkState` raises INVALID_ARGUMENT past a GPU's last link and
  NOT_SUPPORTED on a GPU without NVLink.
The values of the 8-GPU H100 box are those of the recorded `nvidia-smi` fixture
(../shared/fixtures/nvidia/nvidia-smi-8xh100-sxm-550.127.05.txt). The real pynvml is also used
unfaked where it runs here: without libnvidia-ml it must report "libnvidia-ml not found".
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

from agents.devices.base import BackendError, DeviceSample, Health, SupportsTopology
from agents.devices.nvml import CRITICAL_XIDS, NvmlCollector, nvml_available, parse_topo_matrix
from agents.exporter import DeviceExporter
from scheduler.types import Vendor

FIXTURES = Path("/work/shared/fixtures/nvidia")
MIB = 1024 * 1024
XID = pynvml.nvmlEventTypeXidCriticalError

# From nvidia-smi-8xh100-sxm-550.127.05.txt: bus id, temperature C, power W per GPU.
H100_ROWS = [("00000000:61:00.0", 31, 70), ("00000000:62:00.0", 29, 69), ("00000000:63:00.0", 27, 68),
             ("00000000:64:00.0", 31, 72), ("00000000:6A:00.0", 35, 72), ("00000000:6B:00.0", 29, 69),
             ("00000000:6C:00.0", 31, 70), ("00000000:6D:00.0", 27, 70)]


@dataclass
class FakeGpu:
    """One GPU's answers. A field set to None answers NOT_SUPPORTED."""

    index: int
    bus_id: str
    name: str = "NVIDIA H100 80GB HBM3"
    serial: str | None = None
    memory_total_mib: int = 81559
    memory_used_mib: int = 1
    util: tuple[int, int] | None = (0, 0)
    power_mw: int | None = 70_000
    energy_mj: int | None = 1_000_000
    temperature_c: int | None = 31
    sm_clock: int | None = 1980
    mem_clock: int | None = 2619
    ecc: tuple[int, int] | None = (0, 0)  # volatile corrected, uncorrected
    retired: tuple[list[int], list[int]] | None = None  # Hopper retires no pages: it remaps rows
    remapped: tuple[int, int, int, int] | None = (0, 0, 0, 0)
    mig: list[int] | None = field(default_factory=lambda: [0, 0])
    xid_events: bool = True
    lost: bool = False
    errors: dict[str, int] = field(default_factory=dict)  # NVML function name -> error code it raises
    links: list[tuple[int, str]] | None = None  # per link (remote device type, remote bus id); None: no NVLink

    @property
    def uuid(self) -> str:
        return f"GPU-00000000-0000-4000-8000-{self.index:012d}"


class FakeHandle:
    def __init__(self, index: int) -> None:
        self.index = index


def _err(code: int) -> pynvml.NVMLError:
    return pynvml.NVMLError(code)  # the real class: becomes e.g. NVMLError_NotSupported


class FakeNvml:
    """The pynvml functions NvmlCollector calls, answering from `FakeGpu`s (see module doc)."""

    def __init__(self, gpus: list[FakeGpu], *, init_error: int | None = None, levels: Any = None,
                 driver: str = "550.127.05") -> None:
        self.gpus = gpus
        self.init_error = init_error
        self.levels = levels or (lambda i, j: pynvml.NVML_TOPOLOGY_SYSTEM)
        self.driver = driver
        self.calls: Counter[tuple[str, int]] = Counter()
        self.events: deque[tuple[int, int]] = deque()
        self.wait_timeouts: list[int] = []
        self.inits = self.shutdowns = self.sets_freed = 0
        self.registered: list[int] = []

    def _gpu(self, fn: str, h: FakeHandle) -> FakeGpu:
        self.calls[(fn, h.index)] += 1
        gpu = self.gpus[h.index]
        if gpu.lost:
            raise _err(pynvml.NVML_ERROR_GPU_IS_LOST)
        if fn in gpu.errors:
            raise _err(gpu.errors[fn])
        return gpu

    @staticmethod
    def _value(v: Any) -> Any:
        if v is None:
            raise _err(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return v

    def nvmlInit(self) -> None:  # noqa: N802 - pynvml's names
        if self.init_error is not None:
            raise _err(self.init_error)
        self.inits += 1

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> FakeHandle:  # noqa: N802
        return FakeHandle(i)

    def nvmlDeviceGetIndex(self, h: FakeHandle) -> int:  # noqa: N802
        return h.index

    def nvmlSystemGetDriverVersion(self) -> str:  # noqa: N802
        return self.driver

    def nvmlDeviceGetUUID(self, h: FakeHandle) -> str:  # noqa: N802
        return self._gpu("uuid", h).uuid

    def nvmlDeviceGetName(self, h: FakeHandle) -> str:  # noqa: N802
        return self._gpu("name", h).name

    def nvmlDeviceGetSerial(self, h: FakeHandle) -> str:  # noqa: N802
        return self._value(self._gpu("serial", h).serial)

    def nvmlDeviceGetPciInfo(self, h: FakeHandle) -> SimpleNamespace:  # noqa: N802
        return SimpleNamespace(busId=self._gpu("pci", h).bus_id)

    def nvmlDeviceGetMemoryInfo(self, h: FakeHandle) -> SimpleNamespace:  # noqa: N802
        g = self._gpu("memory", h)
        total, used = g.memory_total_mib * MIB, g.memory_used_mib * MIB
        return SimpleNamespace(total=total, used=used, free=total - used)

    def nvmlDeviceGetUtilizationRates(self, h: FakeHandle) -> SimpleNamespace:  # noqa: N802
        gpu, mem = self._value(self._gpu("util", h).util)
        return SimpleNamespace(gpu=gpu, memory=mem)

    def nvmlDeviceGetPowerUsage(self, h: FakeHandle) -> int:  # noqa: N802
        return self._value(self._gpu("power", h).power_mw)

    def nvmlDeviceGetTotalEnergyConsumption(self, h: FakeHandle) -> int:  # noqa: N802
        return self._value(self._gpu("energy", h).energy_mj)

    def nvmlDeviceGetTemperature(self, h: FakeHandle, sensor: int) -> int:  # noqa: N802
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return self._value(self._gpu("temperature", h).temperature_c)

    def nvmlDeviceGetClockInfo(self, h: FakeHandle, kind: int) -> int:  # noqa: N802
        g = self._gpu(f"clock{kind}", h)
        return self._value({pynvml.NVML_CLOCK_SM: g.sm_clock, pynvml.NVML_CLOCK_MEM: g.mem_clock}[kind])

    def nvmlDeviceGetTotalEccErrors(self, h: FakeHandle, kind: int, counter: int) -> int:  # noqa: N802
        assert counter == pynvml.NVML_VOLATILE_ECC
        return self._value(self._gpu(f"ecc{kind}", h).ecc)[kind]

    def nvmlDeviceGetRetiredPages(self, h: FakeHandle, cause: int) -> list[int]:  # noqa: N802
        return self._value(self._gpu(f"retired{cause}", h).retired)[cause]

    def nvmlDeviceGetRemappedRows(self, h: FakeHandle) -> tuple[int, int, int, int]:  # noqa: N802
        return self._value(self._gpu("remapped", h).remapped)

    def nvmlDeviceGetMigMode(self, h: FakeHandle) -> list[int]:  # noqa: N802
        return self._value(self._gpu("mig", h).mig)

    # events
    def nvmlEventSetCreate(self) -> object:  # noqa: N802
        return object()

    def nvmlEventSetFree(self, s: object) -> None:  # noqa: N802
        self.sets_freed += 1

    def nvmlDeviceGetSupportedEventTypes(self, h: FakeHandle) -> int:  # noqa: N802
        return XID if self.gpus[h.index].xid_events else 0

    def nvmlDeviceRegisterEvents(self, h: FakeHandle, types: int, s: object) -> None:  # noqa: N802
        assert types == XID
        self.registered.append(h.index)

    def nvmlEventSetWait(self, s: object, timeout_ms: int) -> SimpleNamespace:  # noqa: N802
        self.wait_timeouts.append(timeout_ms)
        if not self.events:
            raise _err(pynvml.NVML_ERROR_TIMEOUT)
        index, xid = self.events.popleft()
        return SimpleNamespace(device=FakeHandle(index), eventType=XID, eventData=xid, gpuInstanceId=0, computeInstanceId=0)

    # topology
    def _link(self, h: FakeHandle, link: int) -> tuple[int, str]:
        g = self.gpus[h.index]
        if g.links is None:
            raise _err(pynvml.NVML_ERROR_NOT_SUPPORTED)
        if link >= len(g.links):
            raise _err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return g.links[link]

    def nvmlDeviceGetNvLinkState(self, h: FakeHandle, link: int) -> int:  # noqa: N802
        self._link(h, link)
        return pynvml.NVML_FEATURE_ENABLED

    def nvmlDeviceGetNvLinkRemoteDeviceType(self, h: FakeHandle, link: int) -> int:  # noqa: N802
        return self._link(h, link)[0]

    def nvmlDeviceGetNvLinkRemotePciInfo(self, h: FakeHandle, link: int) -> SimpleNamespace:  # noqa: N802
        return SimpleNamespace(busId=self._link(h, link)[1])

    def nvmlDeviceGetTopologyCommonAncestor(self, a: FakeHandle, b: FakeHandle) -> int:  # noqa: N802
        return self.levels(a.index, b.index)


def h100_box(**overrides: Any) -> list[FakeGpu]:
    return [FakeGpu(index=i, bus_id=bus, temperature_c=temp, power_mw=watts * 1000, serial=f"16523220{i:05d}", **overrides)
            for i, (bus, temp, watts) in enumerate(H100_ROWS)]


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


# ---------------------------------------------------------------- inventory and samples


def test_inventory_and_sample_of_an_8xh100_box() -> None:
    """Inventory carries NVML's identity (UUID, name, MiB, bus id, serial, driver) and a sample
    converts NVML's units (bytes -> MiB, mW -> W) with the values the fixture box showed."""
    fake = FakeNvml(h100_box())
    c = NvmlCollector(fake)
    inv = c.inventory()
    assert [d.index for d in inv] == list(range(8))
    assert inv[4].uuid == "GPU-00000000-0000-4000-8000-000000000004"
    assert (inv[4].model, inv[4].memory_total_mib, inv[4].pci_bus_id) == ("NVIDIA H100 80GB HBM3", 81559, "00000000:6A:00.0")
    assert (inv[4].serial, inv[4].driver_version) == ("1652322000004", "550.127.05")
    s = c.sample()
    assert [x.index for x in s] == list(range(8))
    assert [x.temperature_c for x in s] == [31, 29, 27, 31, 35, 29, 31, 27]
    assert [x.power_w for x in s] == [70, 69, 68, 72, 72, 69, 70, 70]
    x = s[0]
    assert (x.memory_used_mib, x.memory_total_mib, x.core_clock_mhz, x.memory_clock_mhz) == (1.0, 81559.0, 1980.0, 2619.0)
    assert (x.energy_mj, x.ecc_corrected_total, x.ecc_uncorrected_total) == (1_000_000, 0, 0)
    assert (x.retired_pages, x.remapped_rows_failed, x.remapped_rows_pending, x.mig_enabled) == (None, 0, 0, False)
    assert (x.health, x.health_reason, x.xid_last) == (Health.OK, "", 0)


def test_busy_a100_values_and_mig() -> None:
    """Utilization and memory come through as NVML reports them; MIG current mode maps to mig_enabled."""
    gpus = [FakeGpu(index=i, bus_id=f"00000000:{0x07 + i:02X}:00.0", name="NVIDIA A100-SXM4-80GB", memory_total_mib=81920,
                    memory_used_mib=61234, util=(97, 41), retired=([0x1000], [0x2000, 0x3000]), mig=[1, 1] if i == 0 else [0, 0])
            for i in range(8)]
    s = NvmlCollector(FakeNvml(gpus)).sample()
    assert (s[3].utilization_pct, s[3].memory_utilization_pct, s[3].memory_used_mib) == (97.0, 41.0, 61234.0)
    assert s[3].retired_pages == 3
    assert (s[0].mig_enabled, s[1].mig_enabled) == (True, False)


def test_is_a_collector_with_topology() -> None:
    """The collector is an NVIDIA Collector the agent can ask for topology."""
    c = NvmlCollector(FakeNvml(h100_box()))
    assert c.vendor is Vendor.NVIDIA
    assert isinstance(c, SupportsTopology)


def test_not_supported_fields_are_none_and_not_asked_again() -> None:
    """NOT_SUPPORTED (or NO_PERMISSION, FUNCTION_NOT_FOUND) gives None, and the call is not repeated later."""
    gpus = h100_box(ecc=None, remapped=None)
    gpus[2].errors["clock1"] = pynvml.NVML_ERROR_NO_PERMISSION
    gpus[2].errors["mig"] = pynvml.NVML_ERROR_FUNCTION_NOT_FOUND  # what pynvml raises on a driver without the function
    fake = FakeNvml(gpus)
    c = NvmlCollector(fake)
    for _ in range(5):
        s = c.sample()
    x = s[2]
    assert (x.ecc_corrected_total, x.ecc_uncorrected_total, x.remapped_rows_failed, x.mig_enabled) == (None, None, None, None)
    assert s[3].mig_enabled is False
    assert x.core_clock_mhz == 0.0 and x.health is Health.OK
    for fn in ("ecc0", "ecc1", "remapped", "mig", "retired0", "retired1"):
        assert fake.calls[(fn, 2)] == 1, fn
    assert fake.calls[("clock1", 2)] == 1
    assert fake.calls[("clock1", 3)] == 5  # only the device that refused stops being asked
    assert fake.calls[("util", 2)] == 5


def test_energy_falls_back_to_integrated_power_and_never_decreases() -> None:
    """Without NVML's energy counter, energy is power x elapsed time on the injected clock, monotone."""
    clock = Clock()
    fake = FakeNvml(h100_box(energy_mj=None))
    c = NvmlCollector(fake, clock=clock)
    seen = []
    for step, watts in [(1.0, 70), (2.0, 700), (0.5, 0), (-3.0, 300), (1.0, 300)]:
        for g in fake.gpus:
            g.power_mw = watts * 1000
        clock.t += step
        seen.append(c.sample()[0].energy_mj)
    assert seen == [70_000, 1_470_000, 1_470_000, 1_470_000, 1_770_000]
    assert fake.calls[("energy", 0)] == 1


def test_energy_counter_is_used_where_supported() -> None:
    """NVML's own counter is reported as is, and a counter that goes backwards is not followed."""
    fake = FakeNvml(h100_box())
    c = NvmlCollector(fake)
    fake.gpus[1].energy_mj = 5_000_000
    assert c.sample()[1].energy_mj == 5_000_000
    fake.gpus[1].energy_mj = 4_000_000
    assert c.sample()[1].energy_mj == 5_000_000


# ---------------------------------------------------------------- health


def test_xid_events_drained_without_blocking() -> None:
    """All queued Xids are read with timeout 0 until TIMEOUT; xid_last is the last one per device;
    a critical Xid makes the device Critical for the collector's life, a benign one does not."""
    fake = FakeNvml(h100_box())
    c = NvmlCollector(fake)
    assert sorted(fake.registered) == list(range(8))
    fake.events.extend([(3, 13), (5, 79), (3, 31)])
    s = c.sample()
    assert set(fake.wait_timeouts) == {0} and len(fake.wait_timeouts) == 4  # 3 events + the TIMEOUT
    assert (s[3].xid_last, s[3].health) == (31, Health.OK)  # 13 and 31 are application faults
    assert (s[5].xid_last, s[5].health, s[5].health_reason) == (79, Health.CRITICAL, "Xid 79")
    assert s[0].xid_last == 0
    assert not s[5].healthy
    for _ in range(3):
        s = c.sample()
    assert (s[5].health, s[5].health_reason) == (Health.CRITICAL, "Xid 79")  # sticky: a reset is needed
    assert {48, 63, 64, 74, 79, 92, 94, 95, 119, 120} == CRITICAL_XIDS


def test_device_without_xid_events_reports_none() -> None:
    """A GPU that cannot report Xid events is not registered and has xid_last None, not a made-up 0."""
    gpus = h100_box()
    gpus[6].xid_events = False
    fake = FakeNvml(gpus)
    s = NvmlCollector(fake).sample()
    assert 6 not in fake.registered
    assert s[6].xid_last is None and s[5].xid_last == 0


@pytest.mark.parametrize(("change", "health", "reason"), [
    ({"ecc": (12, 2)}, Health.CRITICAL, "uncorrectable ECC 2"),
    ({"ecc": (12, 0)}, Health.OK, ""),
    ({"remapped": (0, 3, 0, 1)}, Health.CRITICAL, "row remapping failed"),
    ({"remapped": (0, 1, 1, 0)}, Health.ALARM, "row remap pending (reset needed)"),
    ({"temperature_c": 90}, Health.ALARM, "temperature 90 C"),
    ({"temperature_c": 89}, Health.OK, ""),
    ({"temperature_c": 95, "ecc": (0, 1)}, Health.CRITICAL, "uncorrectable ECC 1"),
])
def test_health_from_ecc_remap_and_temperature(change: dict[str, Any], health: Health, reason: str) -> None:
    """Uncorrectable ECC and failed remaps are Critical; a pending remap or temperature >= limit is Alarm."""
    gpus = h100_box()
    for k, v in change.items():
        setattr(gpus[1], k, v)
    s = NvmlCollector(FakeNvml(gpus), temperature_limit_c=90.0).sample()
    assert (s[1].health, s[1].health_reason) == (health, reason)
    assert s[0].health is Health.OK


def test_lost_gpu_is_critical_and_others_still_sampled() -> None:
    """GPU_IS_LOST makes that device Critical (stopping its calls for the sample, energy kept); the others are fine."""
    fake = FakeNvml(h100_box())
    c = NvmlCollector(fake)
    before = c.sample()[7].energy_mj
    fake.gpus[7].lost = True
    calls = sum(n for (_, i), n in fake.calls.items() if i == 7)
    s = c.sample()
    assert (s[7].health, s[7].health_reason) == (Health.CRITICAL, "GPU is lost")
    assert (s[7].utilization_pct, s[7].power_w, s[7].energy_mj) == (0.0, 0.0, before)
    assert sum(n for (_, i), n in fake.calls.items() if i == 7) == calls + 1
    assert all(x.health is Health.OK for x in s[:7])


def test_unknown_device_error_is_critical_and_retried() -> None:
    """A device error other than NOT_SUPPORTED is Critical with NVML's message, and not remembered as unsupported."""
    fake = FakeNvml(h100_box())
    c = NvmlCollector(fake)
    fake.gpus[2].errors["power"] = pynvml.NVML_ERROR_UNKNOWN
    s = c.sample()[2]
    assert (s.health, s.health_reason, s.power_w) == (Health.CRITICAL, "Unknown Error", 0.0)
    del fake.gpus[2].errors["power"]
    s = c.sample()[2]
    assert (s.health, s.power_w) == (Health.OK, 68.0)
    assert fake.calls[("power", 2)] == 2


def test_driver_wide_error_raises_backend_error() -> None:
    """An error about NVML itself (driver not loaded) fails the whole sample with one line."""
    fake = FakeNvml(h100_box())
    c = NvmlCollector(fake)
    fake.gpus[0].errors["util"] = pynvml.NVML_ERROR_DRIVER_NOT_LOADED
    with pytest.raises(BackendError, match=r"^NVML: Driver Not Loaded$"):
        c.sample()


def test_samples_satisfy_device_sample_checks_with_odd_values() -> None:
    """Out-of-range NVML numbers (util > 100, used > total) are clamped, so DeviceSample accepts them."""
    gpus = h100_box(util=(101, 100), memory_used_mib=90000)
    s = NvmlCollector(FakeNvml(gpus)).sample()[0]
    assert isinstance(s, DeviceSample)
    assert (s.utilization_pct, s.memory_used_mib) == (100.0, 81559.0)


# ---------------------------------------------------------------- availability, lifecycle


def test_nvml_available_reasons() -> None:
    """One-line reasons for every way NVML can be absent; never an exception."""
    assert nvml_available(FakeNvml(h100_box())) == (True, "")
    assert nvml_available(FakeNvml([])) == (False, "no NVIDIA devices")
    assert nvml_available(FakeNvml([], init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED)) == (False, "NVML: Driver Not Loaded")
    assert nvml_available(FakeNvml([], init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)) == (False, "libnvidia-ml not found")

    class Broken:
        def nvmlInit(self) -> None:  # noqa: N802
            raise OSError("libnvidia-ml.so.1: cannot open shared object file")

    assert nvml_available(Broken()) == (False, "NVML: OSError: libnvidia-ml.so.1: cannot open shared object file")


def test_real_pynvml_without_a_driver() -> None:
    """The real binding on this GPU-less machine: not available, and the collector refuses in one line."""
    ok, reason = nvml_available()
    if ok:
        pytest.skip("this machine has an NVIDIA driver")
    assert reason == "libnvidia-ml not found"
    with pytest.raises(BackendError, match=r"^libnvidia-ml not found$"):
        NvmlCollector()


def test_constructor_errors_shut_nvml_down() -> None:
    """No devices or a failing inventory read: BackendError in one line, and NVML is shut down again."""
    fake = FakeNvml([])
    with pytest.raises(BackendError, match=r"^no NVIDIA devices$"):
        NvmlCollector(fake)
    assert fake.shutdowns == 1
    gpus = h100_box()
    gpus[0].lost = True
    fake = FakeNvml(gpus)
    with pytest.raises(BackendError, match=r"^NVML: GPU is lost$"):
        NvmlCollector(fake)
    assert fake.shutdowns == 1


def test_close_is_idempotent() -> None:
    """close() frees the event set and shuts NVML down once; sampling afterwards is a BackendError."""
    fake = FakeNvml(h100_box())
    c = NvmlCollector(fake)
    c.close()
    c.close()
    assert (fake.shutdowns, fake.sets_freed) == (1, 1)
    with pytest.raises(BackendError, match="closed"):
        c.sample()


# ---------------------------------------------------------------- topology


def read_fixture(name: str) -> str:
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"fixture {path} not present")
    return path.read_text()


def test_parse_topo_matrix_on_both_fixtures() -> None:
    """The GPU block of both recorded `nvidia-smi topo -m` outputs; NIC rows and affinity columns are left out."""
    nv8 = parse_topo_matrix(read_fixture("nvidia-smi-topo-m-8gpu-nv8-4nic-525.105.17.txt"))
    nv12 = parse_topo_matrix(read_fixture("nvidia-smi-topo-m-8xa100-sxm4-40gb-nv12.txt"))
    for m, word in ((nv8, "NV8"), (nv12, "NV12")):
        assert len(m) == 8 and all(len(r) == 8 for r in m)
        assert all(m[i][j] == ("X" if i == j else word) for i in range(8) for j in range(8))
    assert parse_topo_matrix("") == [] and parse_topo_matrix("garbage\nGPU0 X\n") == []
    assert parse_topo_matrix("\x1b[4m\tGPU0\tGPU1\tCPU Affinity\x1b[0m\nGPU0\t X \tPHB\t0-7\nGPU1\tPHB\t X \t0-7\n") == [
        ["X", "PHB"], ["PHB", "X"]]


@pytest.mark.parametrize(("name", "links"), [
    ("nvidia-smi-topo-m-8xa100-sxm4-40gb-nv12.txt", 12),
    ("nvidia-smi-topo-m-8gpu-nv8-4nic-525.105.17.txt", 8),
])
def test_topology_of_an_nvswitch_box_matches_the_fixture(name: str, links: int) -> None:
    """8 GPUs with `links` NVLinks each to NVSwitches give nvidia-smi's all-pairs NV<links> matrix."""
    gpus = [FakeGpu(index=i, bus_id=f"00000000:{0x07 + i:02X}:00.0",
                    links=[(pynvml.NVML_NVLINK_DEVICE_TYPE_SWITCH, f"00000000:{0xA0 + k % 6:02X}:00.0") for k in range(links)])
            for i in range(8)]
    assert NvmlCollector(FakeNvml(gpus)).topology() == parse_topo_matrix(read_fixture(name))


def test_topology_of_direct_links_and_pcie() -> None:
    """Direct GPU-GPU NVLinks are counted per peer by remote bus id (any domain width); pairs without
    NVLink get the PCIe word of their common ancestor; the result is cached."""
    bus = ["00000000:1A:00.0", "00000000:1B:00.0", "00000000:3D:00.0", "00000000:3E:00.0"]
    gpu = pynvml.NVML_NVLINK_DEVICE_TYPE_GPU
    links = {0: [1, 1, 2], 1: [0, 0], 2: [0], 3: []}
    gpus = [FakeGpu(index=i, bus_id=bus[i], links=[(gpu, bus[p][4:]) for p in links[i]]) for i in range(4)]
    levels = {frozenset({0, 1}): pynvml.NVML_TOPOLOGY_SINGLE, frozenset({2, 3}): pynvml.NVML_TOPOLOGY_MULTIPLE,
              frozenset({0, 2}): pynvml.NVML_TOPOLOGY_HOSTBRIDGE, frozenset({1, 2}): pynvml.NVML_TOPOLOGY_NODE}
    fake = FakeNvml(gpus, levels=lambda i, j: levels.get(frozenset({i, j}), pynvml.NVML_TOPOLOGY_SYSTEM))
    c = NvmlCollector(fake)
    expected = [["X", "NV2", "NV1", "SYS"],
                ["NV2", "X", "NODE", "SYS"],
                ["NV1", "NODE", "X", "PXB"],
                ["SYS", "SYS", "PXB", "X"]]
    assert c.topology() == expected
    fake.levels = lambda i, j: pynvml.NVML_TOPOLOGY_SINGLE
    assert c.topology() == expected


def test_topology_without_nvlink_is_pcie_only() -> None:
    """GPUs that answer NOT_SUPPORTED for NVLink get only PCIe words."""
    gpus = [FakeGpu(index=i, bus_id=f"00000000:{0x18 + i:02X}:00.0") for i in range(2)]
    c = NvmlCollector(FakeNvml(gpus, levels=lambda i, j: pynvml.NVML_TOPOLOGY_HOSTBRIDGE))
    assert c.topology() == [["X", "PHB"], ["PHB", "X"]]


# ---------------------------------------------------------------- exporter


def test_exporter_renders_nvml_samples() -> None:
    """The exporter takes the collector as it is and renders dcgm-exporter families with its UUIDs."""
    fake = FakeNvml(h100_box())
    fake.events.append((2, 79))
    exporter = DeviceExporter(NvmlCollector(fake), "node-a")
    exporter.refresh()
    text = exporter.render().decode()
    assert 'DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-00000000-0000-4000-8000-000000000000"' in text
    assert 'DCGM_FI_DEV_XID_ERRORS{gpu="2",UUID="GPU-00000000-0000-4000-8000-000000000002"' in text
    assert 'suanli_device_healthy{node="node-a",device="2",vendor="nvidia"' in text
    line = next(ln for ln in text.splitlines() if ln.startswith('DCGM_FI_DEV_XID_ERRORS{gpu="2"'))
    assert line.endswith(" 79.0")
