"""NVIDIA GPUs through NVML (`nvidia-ml-py`, imported as `pynvml`): inventory, samples, Xid health, topology.

The `nvml` argument is the pynvml module (the default) or anything exposing the same functions;
errors are always matched on the real `pynvml.NVMLError` and its `.value` codes, so a fake used
in tests takes exactly the error paths hardware does.

Invariants:
- Device index i is NVML's index i (PCI bus order, which CUDA follows with
  `CUDA_DEVICE_ORDER=PCI_BUS_ID`); handles and the inventory are read once, at start.
- `sample()` satisfies `DeviceSample`'s checks: utilization 0..100, 0 <= used <= total MiB,
  non-negative power, clocks and energy.
- A field NVML answers NOT_SUPPORTED, NO_PERMISSION or FUNCTION_NOT_FOUND (old driver) for is
  remembered per (device, field) and never asked again: optional fields are then None; the
  required gauges of `DeviceSample` (utilization, power, temperature, clocks) read 0.0, as the
  type has no "unknown" for them (e.g. utilization on a GPU with MIG enabled).
- `energy_mj` never decreases: NVML's counter since driver load where supported, otherwise the
  integral of sampled power over the injected clock (`power_w * elapsed_s * 1000` per sample).
- Xid events are drained without blocking (`nvmlEventSetWait(set, 0)` until TIMEOUT, at most
  `MAX_EVENTS_PER_SAMPLE`), so a sample never waits on the driver's event queue.
  `xid_last` is the last Xid seen on the device (0 = none yet), None where the device cannot
  report Xid events.
- Health: Critical for a critical Xid (`CRITICAL_XIDS`) seen since the collector started,
  uncorrectable volatile ECC > 0, a failed row remap, or any other device error (GPU lost,
  unknown...); Alarm for temperature >= `temperature_limit_c` or a pending row remap; OK
  otherwise. `health_reason` lists the reasons of the level reported ("Xid 79; GPU is lost"). A critical Xid is sticky for the collector's (the agent's)
  life: every one of them needs a GPU reset or a reboot, and NVML offers no way to know it
  happened, so only a restart of the agent (after the reset) clears it.
- Errors that are not about one device (driver not loaded, NVML uninitialized, library/driver
  version mismatch) make `sample()` raise `BackendError` with one line; so does a closed collector.
- `close()` frees the event set and shuts NVML down once; calling it again does nothing.
- Thread-safe: `sample`, `topology` and `close` share one lock.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import pynvml

from agents.devices.base import BackendError, DeviceInfo, DeviceSample, Health
from scheduler.types import Vendor

log = logging.getLogger(__name__)

MIB = 1024 * 1024
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
MAX_EVENTS_PER_SAMPLE = 256  # an event storm must not turn one sample into an endless loop

# Xids that need a GPU reset or a reboot and make the device unfit for jobs until then
# (NVIDIA "Xid Errors" catalogue and DCGM's health watches).
CRITICAL_XIDS: frozenset[int] = frozenset({
    48,  # double-bit ECC error
    63,  # ECC page retirement / row remap recorded: reset needed for it to take effect
    64,  # ECC page retirement / row remapping failure
    74,  # NVLink error
    79,  # GPU has fallen off the bus
    92,  # high single-bit ECC error rate
    94,  # contained ECC error (the affected context is killed, reset to reclaim the row)
    95,  # uncontained ECC error
    119,  # GSP RPC timeout
    120,  # GSP error
})

# Errors that say a field does not exist on this device or driver (an old libnvidia-ml lacks
# newer functions), or that we may not read it: not a fault.
_UNSUPPORTED = frozenset({pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_NO_PERMISSION,
                          pynvml.NVML_ERROR_FUNCTION_NOT_FOUND})
# Errors that are about NVML or the driver as a whole: no device can be sampled.
_SYSTEM = frozenset({pynvml.NVML_ERROR_UNINITIALIZED, pynvml.NVML_ERROR_DRIVER_NOT_LOADED,
                     pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH, pynvml.NVML_ERROR_LIBRARY_NOT_FOUND})

# What one sample reads per device: (field, pynvml function, arguments after the handle).
_FIELDS: tuple[tuple[str, str, tuple[int, ...]], ...] = (
    ("util", "nvmlDeviceGetUtilizationRates", ()),
    ("memory", "nvmlDeviceGetMemoryInfo", ()),
    ("power", "nvmlDeviceGetPowerUsage", ()),  # mW
    ("energy", "nvmlDeviceGetTotalEnergyConsumption", ()),  # mJ since driver load (Volta+)
    ("temperature", "nvmlDeviceGetTemperature", (pynvml.NVML_TEMPERATURE_GPU,)),
    ("sm_clock", "nvmlDeviceGetClockInfo", (pynvml.NVML_CLOCK_SM,)),
    ("mem_clock", "nvmlDeviceGetClockInfo", (pynvml.NVML_CLOCK_MEM,)),
    ("ecc_corrected", "nvmlDeviceGetTotalEccErrors", (pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, pynvml.NVML_VOLATILE_ECC)),
    ("ecc_uncorrected", "nvmlDeviceGetTotalEccErrors", (pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC)),
    # Page retirement is pre-Ampere, row remapping Ampere+: each answers NOT_SUPPORTED on the other.
    ("retired_sbe", "nvmlDeviceGetRetiredPages", (pynvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS,)),
    ("retired_dbe", "nvmlDeviceGetRetiredPages", (pynvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR,)),
    ("remapped", "nvmlDeviceGetRemappedRows", ()),
    ("mig", "nvmlDeviceGetMigMode", ()),
)

_TOPOLOGY_WORDS = {
    # Two GPUs of one board (K80-style) share only its on-board switch; "X" is kept for self.
    pynvml.NVML_TOPOLOGY_INTERNAL: "PIX",
    pynvml.NVML_TOPOLOGY_SINGLE: "PIX",
    pynvml.NVML_TOPOLOGY_MULTIPLE: "PXB",
    pynvml.NVML_TOPOLOGY_HOSTBRIDGE: "PHB",
    pynvml.NVML_TOPOLOGY_NODE: "NODE",
    pynvml.NVML_TOPOLOGY_SYSTEM: "SYS",
}


def _text(value: Any) -> str:
    """pynvml returns `str` on Python 3, older bindings `bytes`."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _bus_key(bus_id: Any) -> str:
    """'00000000:18:00.0' (NVML) and '0000:18:00.0' (sysfs) name one device: compare without the domain's width."""
    text = _text(bus_id).strip().upper()
    parts = text.split(":")
    if len(parts) == 3:
        try:
            return f"{int(parts[0], 16):04X}:{parts[1]}:{parts[2]}"
        except ValueError:
            return text
    return f"0000:{text}" if len(parts) == 2 else text


def _error_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _num(value: Any, scale: float = 1.0) -> float:
    """A required gauge: NVML's number in our unit, never negative; 0.0 where NVML gave none."""
    return max(0.0, float(value) / scale) if value is not None else 0.0


def _reason(e: pynvml.NVMLError) -> str:
    return "libnvidia-ml not found" if e.value == pynvml.NVML_ERROR_LIBRARY_NOT_FOUND else f"NVML: {_error_line(e)}"


def nvml_available(nvml: Any | None = None) -> tuple[bool, str]:
    """(True, "") when nvmlInit works and at least one device is present; else (False, reason) with a
    one-line reason ("libnvidia-ml not found", "NVML: Driver Not Loaded", "no NVIDIA devices"). Never raises."""
    nvml = pynvml if nvml is None else nvml
    try:
        nvml.nvmlInit()
    except pynvml.NVMLError as e:
        return False, _reason(e)
    except Exception as e:  # noqa: BLE001 - a probe must answer, whatever the binding does
        return False, f"NVML: {type(e).__name__}: {_error_line(e)}"
    try:
        count = int(nvml.nvmlDeviceGetCount())
        return (True, "") if count > 0 else (False, "no NVIDIA devices")
    except Exception as e:  # noqa: BLE001
        return False, f"NVML: {_error_line(e)}"
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001, S110 - nothing useful to do about a failing shutdown of a probe
            pass


class _DeviceError(Exception):
    """A device failed in a way that is not "unsupported": it is Critical this sample."""

    def __init__(self, code: int, line: str) -> None:
        super().__init__(line)
        self.code, self.line = code, line


class NvmlCollector:
    """All NVIDIA GPUs NVML sees on this server."""

    def __init__(self, nvml: Any | None = None, *, temperature_limit_c: float = 90.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._nvml = pynvml if nvml is None else nvml
        self.temperature_limit_c = temperature_limit_c
        self._clock = clock
        self._lock = threading.Lock()
        self._closed = False
        self._event_set: Any = None
        try:
            self._nvml.nvmlInit()
        except pynvml.NVMLError as e:
            raise BackendError(_reason(e)) from None
        try:
            count = int(self._nvml.nvmlDeviceGetCount())
            if count < 1:
                raise BackendError("no NVIDIA devices")
            self._handles = [self._nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            self._inventory = self._read_inventory()
            self._xid_capable = self._register_xid_events()
        except pynvml.NVMLError as e:
            self._shutdown()
            raise BackendError(f"NVML: {_error_line(e)}") from None
        except BackendError:
            self._shutdown()
            raise
        self._unsupported: set[tuple[int, str]] = set()
        self._energy_mj = [0.0] * count  # per device: last reported energy (counter or integral)
        self._xid_last = [0] * count
        self._critical_xids: list[list[int]] = [[] for _ in range(count)]
        self._last_t = clock()
        self._topology: list[list[str]] | None = None

    # ---------------------------------------------------------------- identity

    @property
    def vendor(self) -> Vendor:
        return Vendor.NVIDIA

    def inventory(self) -> list[DeviceInfo]:
        return list(self._inventory)

    def _read_inventory(self) -> list[DeviceInfo]:
        nv = self._nvml
        driver = self._optional(lambda: _text(nv.nvmlSystemGetDriverVersion())) or ""
        out = []
        for i, h in enumerate(self._handles):
            out.append(DeviceInfo(
                index=i,
                uuid=_text(nv.nvmlDeviceGetUUID(h)),
                model=_text(nv.nvmlDeviceGetName(h)),
                memory_total_mib=int(nv.nvmlDeviceGetMemoryInfo(h).total) // MIB,
                pci_bus_id=self._optional(lambda h=h: _text(nv.nvmlDeviceGetPciInfo(h).busId)) or "",
                serial=self._optional(lambda h=h: _text(nv.nvmlDeviceGetSerial(h))) or "",  # GeForce: not supported
                driver_version=driver,
            ))
        return out

    @staticmethod
    def _optional(fn: Callable[[], str]) -> str | None:
        try:
            return fn()
        except pynvml.NVMLError as e:
            if e.value in _UNSUPPORTED:
                return None
            raise

    def _register_xid_events(self) -> list[bool]:
        """One event set for all devices; a device that cannot report Xids is left out of it."""
        nv, xid = self._nvml, pynvml.nvmlEventTypeXidCriticalError
        capable = [False] * len(self._handles)
        try:
            self._event_set = nv.nvmlEventSetCreate()
        except pynvml.NVMLError as e:
            log.warning("NVML events unavailable (%s): Xid errors will not be reported", _error_line(e))
            return capable
        for i, h in enumerate(self._handles):
            try:
                if nv.nvmlDeviceGetSupportedEventTypes(h) & xid:
                    nv.nvmlDeviceRegisterEvents(h, xid, self._event_set)
                    capable[i] = True
            except pynvml.NVMLError as e:
                log.warning("GPU %d: cannot watch Xid events (%s)", i, _error_line(e))
        return capable

    # ---------------------------------------------------------------- sampling

    def sample(self) -> list[DeviceSample]:
        with self._lock:
            if self._closed:
                raise BackendError("NVML collector is closed")
            try:
                self._drain_events()
                now = self._clock()
                elapsed = max(0.0, now - self._last_t)  # a clock stepping back adds no energy
                self._last_t = now
                return [self._sample_one(i, elapsed) for i in range(len(self._handles))]
            except pynvml.NVMLError as e:  # only _SYSTEM errors get here
                raise BackendError(f"NVML: {_error_line(e)}") from None

    def _drain_events(self) -> None:
        if self._event_set is None or not any(self._xid_capable):
            return
        nv = self._nvml
        for _ in range(MAX_EVENTS_PER_SAMPLE):
            try:
                data = nv.nvmlEventSetWait(self._event_set, 0)
            except pynvml.NVMLError as e:
                if e.value == pynvml.NVML_ERROR_TIMEOUT:
                    return  # queue empty
                if e.value in _SYSTEM:
                    raise
                # GPU_IS_LOST and friends: the per-device reads below report the device itself.
                log.warning("NVML event wait failed: %s", _error_line(e))
                return
            if data.eventType & pynvml.nvmlEventTypeXidCriticalError:
                self._record_xid(data.device, int(data.eventData))

    def _record_xid(self, device: Any, xid: int) -> None:
        # The event carries a new handle object (a fresh ctypes struct on hardware): match it by
        # NVML's index, never by identity.
        try:
            index = int(self._nvml.nvmlDeviceGetIndex(device))
        except pynvml.NVMLError as e:
            log.error("Xid %d on a GPU NVML cannot name (%s); not attributed", xid, _error_line(e))
            return
        if not 0 <= index < len(self._handles):
            log.error("Xid %d on GPU %d, which this collector does not know; not attributed", xid, index)
            return
        self._xid_last[index] = xid
        if xid in CRITICAL_XIDS and xid not in self._critical_xids[index]:
            self._critical_xids[index].append(xid)
            log.error("GPU %d: critical Xid %d; the device stays Critical until the agent restarts", index, xid)

    def _read(self, i: int, field: str, fn: Callable[..., Any], *args: Any) -> Any:
        """One NVML field: its value, or None if unsupported (remembered). Device faults raise
        `_DeviceError`; NVML-wide faults propagate as NVMLError."""
        if (i, field) in self._unsupported:
            return None
        try:
            return fn(self._handles[i], *args)
        except pynvml.NVMLError as e:
            if e.value in _UNSUPPORTED:
                self._unsupported.add((i, field))
                return None
            if e.value in _SYSTEM:
                raise
            raise _DeviceError(e.value, _error_line(e)) from None

    def _sample_one(self, i: int, elapsed: float) -> DeviceSample:
        mem_total = float(self._inventory[i].memory_total_mib)
        values: dict[str, Any] = {}
        fault = ""
        for field, fn, args in _FIELDS:
            try:
                values[field] = self._read(i, field, getattr(self._nvml, fn), *args)
            except _DeviceError as e:
                fault = fault or e.line
                if e.code == pynvml.NVML_ERROR_GPU_IS_LOST:
                    break  # every further call fails the same way: keep the sample cheap
        util, mem = values.get("util"), values.get("memory")
        used = min(mem_total, max(0.0, int(mem.used) / MIB)) if mem is not None else 0.0
        power_w = _num(values.get("power"), 1000.0)
        energy = values.get("energy")
        if energy is not None:
            self._energy_mj[i] = max(self._energy_mj[i], float(energy))
        elif (i, "energy") in self._unsupported:
            self._energy_mj[i] += power_w * elapsed * 1000.0
        # else: a failing device keeps its last energy (no guess, and never a decrease)
        ecc_unc = values.get("ecc_uncorrected")
        retired = (None if values.get("retired_sbe") is None and values.get("retired_dbe") is None
                   else len(values.get("retired_sbe") or ()) + len(values.get("retired_dbe") or ()))
        remap = values.get("remapped")  # (corrected rows, uncorrected rows, pending flag, failure flag)
        failed = int(remap[3]) if remap is not None else None
        pending = int(remap[2]) if remap is not None else None
        mig = values.get("mig")  # [current, pending]
        temp = max(0.0, float(values["temperature"])) if values.get("temperature") is not None else None
        health, reason = self._health(i, fault, ecc_unc, failed, pending, temp)
        return DeviceSample(
            index=i,
            utilization_pct=min(100.0, _num(util.gpu)) if util is not None else 0.0,
            memory_utilization_pct=min(100.0, _num(util.memory)) if util is not None else 0.0,
            memory_used_mib=used,
            memory_total_mib=mem_total,
            power_w=power_w,
            energy_mj=int(self._energy_mj[i]),
            temperature_c=temp if temp is not None else 0.0,
            core_clock_mhz=_num(values.get("sm_clock")),
            memory_clock_mhz=_num(values.get("mem_clock")),
            health=health,
            health_reason=reason,
            xid_last=self._xid_last[i] if self._xid_capable[i] else None,
            ecc_corrected_total=int(values["ecc_corrected"]) if values.get("ecc_corrected") is not None else None,
            ecc_uncorrected_total=int(ecc_unc) if ecc_unc is not None else None,
            retired_pages=retired,
            remapped_rows_failed=failed,
            remapped_rows_pending=pending,
            mig_enabled=(int(mig[0]) == pynvml.NVML_DEVICE_MIG_ENABLE) if mig is not None else None,
        )

    def _health(self, i: int, fault: str, ecc_unc: int | None, failed: int | None, pending: int | None,
                temp: float | None) -> tuple[Health, str]:
        critical = [f"Xid {x}" for x in self._critical_xids[i]]
        if fault:
            critical.append(fault)
        if ecc_unc:
            critical.append(f"uncorrectable ECC {int(ecc_unc)}")
        if failed:
            critical.append("row remapping failed")
        if critical:
            return Health.CRITICAL, "; ".join(critical)
        alarm = []
        if temp is not None and temp >= self.temperature_limit_c:
            alarm.append(f"temperature {temp:g} C")
        if pending:
            alarm.append("row remap pending (reset needed)")
        if alarm:
            return Health.ALARM, "; ".join(alarm)
        return Health.OK, ""

    # ---------------------------------------------------------------- topology

    def topology(self) -> list[list[str]]:
        """The GPU block of `nvidia-smi topo -m`, computed once (links do not change while NVML runs)."""
        with self._lock:
            if self._topology is None:
                if self._closed:
                    raise BackendError("NVML collector is closed")
                try:
                    self._topology = self._read_topology()
                except pynvml.NVMLError as e:
                    raise BackendError(f"NVML topology: {_error_line(e)}") from None
            return [list(row) for row in self._topology]

    def _read_topology(self) -> list[list[str]]:
        nv, n = self._nvml, len(self._handles)
        by_bus = {_bus_key(d.pci_bus_id): d.index for d in self._inventory if d.pci_bus_id}
        direct = [[0] * n for _ in range(n)]
        switch_links = [0] * n
        for i, h in enumerate(self._handles):
            for link in range(pynvml.NVML_NVLINK_MAX_LINKS):
                try:
                    if nv.nvmlDeviceGetNvLinkState(h, link) != pynvml.NVML_FEATURE_ENABLED:
                        continue
                    try:
                        kind = nv.nvmlDeviceGetNvLinkRemoteDeviceType(h, link)
                    except pynvml.NVMLError:
                        kind = pynvml.NVML_NVLINK_DEVICE_TYPE_GPU  # older drivers: peers only
                    if kind == pynvml.NVML_NVLINK_DEVICE_TYPE_SWITCH:
                        switch_links[i] += 1
                        continue
                    peer = by_bus.get(_bus_key(nv.nvmlDeviceGetNvLinkRemotePciInfo(h, link).busId))
                except pynvml.NVMLError as e:
                    if e.value in _SYSTEM:
                        raise
                    if e.value in _UNSUPPORTED and link == 0:
                        break  # no NVLink on this GPU
                    continue  # INVALID_ARGUMENT past the GPU's last link, or a link that is down
                if peer is not None and peer != i:
                    direct[i][peer] += 1
        out = [["X"] * n for _ in range(n)]
        for i in range(n):
            for j in range(n):
                if i == j:
                    continue
                # Through NVSwitches every pair uses all links of the GPU with fewer of them
                # (what nvidia-smi shows as NV12 on an HGX A100, NV18 on an HGX H100).
                k = max(direct[i][j], direct[j][i]) + min(switch_links[i], switch_links[j])
                if k > 0:
                    out[i][j] = f"NV{k}"
                else:
                    level = nv.nvmlDeviceGetTopologyCommonAncestor(self._handles[i], self._handles[j])
                    out[i][j] = _TOPOLOGY_WORDS.get(int(level), "SYS")
        return out

    # ---------------------------------------------------------------- shutdown

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._shutdown()

    def _shutdown(self) -> None:
        if self._event_set is not None:
            try:
                self._nvml.nvmlEventSetFree(self._event_set)
            except pynvml.NVMLError as e:
                log.warning("NVML event set free failed: %s", _error_line(e))
            self._event_set = None
        try:
            self._nvml.nvmlShutdown()
        except pynvml.NVMLError as e:
            log.warning("NVML shutdown failed: %s", _error_line(e))


def parse_topo_matrix(text: str) -> list[list[str]]:
    """The GPU x GPU block of `nvidia-smi topo -m` output ("X", "NV12", "PIX", ...), row i =
    GPUi. Pure and never raises: text without a GPU header gives []; rows it cannot read are skipped.
    The header is the indented line starting with GPU0 (a terminal's underline codes removed)."""
    lines = _ANSI.sub("", text).splitlines()
    header = next((ln.split() for ln in lines if ln[:1].isspace() and ln.split()[:1] == ["GPU0"]), None)
    if header is None:
        return []
    n = 0
    while n < len(header) and header[n] == f"GPU{n}":
        n += 1
    rows: dict[int, list[str]] = {}
    for ln in lines:
        cells = ln.split()
        if ln[:1].isspace() or len(cells) <= n or not re.fullmatch(r"GPU\d+", cells[0]):
            continue
        idx = int(cells[0][3:])
        if idx < n:
            rows.setdefault(idx, cells[1:1 + n])
    return [rows[i] for i in range(n) if i in rows]
