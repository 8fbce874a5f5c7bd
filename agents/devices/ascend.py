"""Huawei Ascend devices on the Collector protocol, read with `npu-smi`. The parsers live in
`agents.devices.npu_smi` (pure functions of the text) and are re-exported here.

Invariants:
- `AscendCollector.read/query/list_npus` never raise (an empty reading plus one error line);
  `inventory()`/`sample()` (the `base.Collector` protocol) raise only `base.BackendError`.
- Collector mapping: index = position in ascending (npu id, chip id) order (the dense logical
  numbering `ASCEND_RT_VISIBLE_DEVICES` uses); HBM used/total, or the Memory-Usage pair where
  the chip has no HBM (310P); `memory_utilization_pct` = that memory's used %, not bandwidth;
  `NA` power / temperature / AI Core read 0 (the sample's fields are not optional); energy is
  the integral of power over the injected clock; unknown health words are Warning.
"""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from agents.devices.base import BackendError, DeviceInfo, DeviceSample, Health
from agents.devices.npu_smi import (  # noqa: F401 - re-exported: callers import the parsers from here too
    AscendChip,
    AscendInfo,
    AscendProcess,
    DEFAULT_CLOCK_EVERY,
    DEFAULT_TIMEOUT_S,
    NPU_SMI,
    UUID_NAMESPACE,
    aicore_freq_mhz,
    aicore_usage,
    error_code,
    hbm,
    hbm_capacity_mb,
    hbm_ecc,
    hbm_usage_pct,
    health,
    health_state,
    kv_get,
    parse_info,
    parse_kv,
    parse_kv_blocks,
    parse_list,
    power_w,
    temperature_c,
    _num,
)
from scheduler.types import Vendor


# ---------------------------------------------------------------- the collector


Runner = Callable[[list[str]], str]


def subprocess_runner(timeout_s: float = DEFAULT_TIMEOUT_S) -> Runner:
    """A runner that executes the command and returns its stdout (raises on failure)."""

    def run(cmd: list[str]) -> str:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=True).stdout

    return run


@dataclass(frozen=True)
class AscendReading:
    """One run of `npu-smi info`: what it showed, or why it showed nothing."""

    info: AscendInfo = field(default_factory=AscendInfo)
    error: str | None = None

    @property
    def chips(self) -> tuple[AscendChip, ...]:
        return self.info.chips

    @property
    def ok(self) -> bool:
        return self.error is None


def _describe(cmd: list[str], exc: BaseException) -> str:
    what = " ".join(cmd)
    if isinstance(exc, FileNotFoundError):
        return f"{cmd[0]} not found: is the Ascend driver installed and {cmd[0]} on PATH?"
    if isinstance(exc, subprocess.TimeoutExpired):
        return f"`{what}` timed out after {exc.timeout} s"
    if isinstance(exc, subprocess.CalledProcessError):
        err = (exc.stderr or exc.stdout or "").strip().splitlines()
        return f"`{what}` exited with status {exc.returncode}" + (f": {err[-1]}" if err else "")
    return f"`{what}` failed: {type(exc).__name__}: {exc}"


def device_model(name: str) -> str:
    """The model name the agent reports: npu-smi's chip name with the `Ascend` prefix that
    npu-exporter and the simulator use ("910B3" -> "Ascend910B3")."""
    return name if name.lower().startswith("ascend") else f"Ascend{name}"


def device_uuid(vdie_id: str = "", serial: str = "", chip_id: int = 0, bus_id: str = "") -> str:
    """A stable id for a chip (npu-smi has no UUID): the die id when `-t board -c` shows one
    (unique per chip), else the card's serial number plus the chip id, else a name-based UUID
    of the PCI bus id. The last is stable for the slot but not unique across servers (two
    servers with the same layout give the same id); it does not depend on the node name."""
    if vdie_id:
        return "NPU-" + "-".join(vdie_id.split())
    if serial:
        return f"NPU-{serial}-{chip_id}"
    return f"NPU-{uuid.uuid5(UUID_NAMESPACE, 'pci:' + bus_id.lower())}"


def _error_code(word: str | None) -> int | None:
    """npu-smi prints error codes in hex ("80E18008", several separated by spaces): the first as
    an int; `NA` (no error) is 0; anything unreadable is None."""
    if word is None:
        return 0
    try:
        return int(word.split()[0], 16)
    except (ValueError, IndexError):
        return None


class AscendCollector:
    """This server's chips through `npu-smi`, on the `base.Collector` protocol.

    `read`, `query` and `list_npus` never raise (value plus error string); `inventory` and
    `sample` raise `base.BackendError` (one line) when npu-smi is missing, fails, hangs or
    prints no chips, and nothing else. Device index = position of the chip in ascending
    (npu id, chip id) order, fixed at the first inventory (see the agent guide)."""

    def __init__(self, runner: Runner | None = None, *, binary: str = NPU_SMI, timeout_s: float = DEFAULT_TIMEOUT_S,
                 clock: Callable[[], float] = time.monotonic, clock_every: int = DEFAULT_CLOCK_EVERY) -> None:
        self.binary = binary
        self._run = runner if runner is not None else subprocess_runner(timeout_s)
        self._clock = clock
        self.clock_every = clock_every  # samples between `-t common` clock refreshes; 0: only at inventory
        self._lock = threading.Lock()  # the sampler and the heartbeat's first beat may sample at once
        self._devices: list[DeviceInfo] | None = None
        self._keys: list[tuple[int, int]] = []  # (npu id, chip id) of device index i
        self._core_mhz: list[float] = []
        self._mem_mhz: list[float] = []
        self._energy_mj: list[float] = []
        self._last_t: float | None = None
        self._samples = 0
        self._health_seen: dict[int, tuple[str, int | None, str]] = {}  # index -> (word, error code, info)

    @property
    def vendor(self) -> Vendor:
        return Vendor.ASCEND

    def _call(self, args: list[str]) -> tuple[str | None, str | None]:
        cmd = [self.binary, *args]
        try:
            out = self._run(cmd)
        except Exception as exc:  # noqa: BLE001 - the collector reports, it never raises
            return None, _describe(cmd, exc)
        if not isinstance(out, str):
            return None, f"`{' '.join(cmd)}` returned {type(out).__name__}, not text"
        return out, None

    def read(self) -> AscendReading:
        """Run `npu-smi info` and parse it; an empty reading plus one error line on any failure."""
        out, err = self._call(["info"])
        if err is not None or out is None:
            return AscendReading(error=err)
        info = parse_info(out)
        if not info.chips:
            return AscendReading(info=info, error=f"`{self.binary} info` printed no NPU rows")
        return AscendReading(info=info)

    def query(self, kind: str, npu_id: int, chip_id: int | None = None) -> tuple[dict[str, str], str | None]:
        """`npu-smi info -t <kind> -i <npu_id> [-c <chip_id>]` as a dict (see `parse_kv`)."""
        args = ["info", "-t", kind, "-i", str(npu_id)] + ([] if chip_id is None else ["-c", str(chip_id)])
        out, err = self._call(args)
        if err is not None or out is None:
            return {}, err
        return parse_kv(out), None

    def list_npus(self) -> tuple[dict[int, int], str | None]:
        """`npu-smi info -l`: NPU id -> chip count."""
        out, err = self._call(["info", "-l"])
        if err is not None or out is None:
            return {}, err
        return parse_list(out), None

    # ------------------------------------------------------------ Collector protocol

    def _info(self) -> AscendInfo:
        reading = self.read()
        if reading.error is not None:
            raise BackendError(reading.error)
        return reading.info

    def inventory(self) -> list[DeviceInfo]:
        """The chips, taken once and kept (hardware changes need an agent restart). Besides one
        `npu-smi info`, runs per chip `-t board -c` (die id), `-t common` (AI-core clock) and
        `-t memory` (HBM clock), and `-t board` once per NPU (serial); these are optional: a
        kind that fails once is not asked again, and its fields stay empty."""
        with self._lock:
            return list(self._inventory())

    def _inventory(self) -> list[DeviceInfo]:
        if self._devices is not None:
            return self._devices
        info = self._info()
        chips = sorted(info.chips, key=lambda c: (c.npu_id, c.chip_id))
        failed: set[tuple[str, bool]] = set()  # `-t board` per NPU and per chip fail separately

        def ask(kind: str, npu: int, chip: int | None) -> dict[str, str]:
            if (kind, chip is None) in failed:
                return {}
            kv, err = self.query(kind, npu, chip)
            if err is not None:
                failed.add((kind, chip is None))
            return kv

        serials: dict[int, dict[str, str]] = {}
        devices: list[DeviceInfo] = []
        for i, c in enumerate(chips):
            die = kv_get(ask("board", c.npu_id, c.chip_id), "VDie ID") or ""
            if c.npu_id not in serials:
                serials[c.npu_id] = ask("board", c.npu_id, None)
            board = serials[c.npu_id]
            serial = kv_get(board, "Serial Number") or ""
            total = c.hbm_total_mb if c.hbm_total_mb else (c.memory_total_mb or 0)
            devices.append(DeviceInfo(
                index=i, uuid=device_uuid(die, serial, c.chip_id, c.bus_id or f"npu{c.npu_id}.{c.chip_id}"),
                model=device_model(c.name), memory_total_mib=total, pci_bus_id=c.bus_id or "", serial=serial,
                driver_version=info.version or kv_get(board, "Software Version") or "", vdie_id=die))
            self._core_mhz.append(aicore_freq_mhz(ask("common", c.npu_id, c.chip_id)) or 0.0)
            self._mem_mhz.append(_num(kv_get(ask("memory", c.npu_id, c.chip_id), "HBM Clock Speed(MHz)")) or 0.0)
        self._keys = [(c.npu_id, c.chip_id) for c in chips]
        self._energy_mj = [0.0] * len(chips)
        self._devices = devices
        return devices

    def _refresh_clocks(self) -> None:
        for i, (npu, chip) in enumerate(self._keys):
            kv, err = self.query("common", npu, chip)
            if err is not None:
                return  # keep the last known clocks; a clock is not worth failing a sample for
            self._core_mhz[i] = aicore_freq_mhz(kv) or self._core_mhz[i]

    def _health(self, index: int, chip: AscendChip | None) -> tuple[Health, str, int | None]:
        """(state, reason, error code) of a chip. Unknown words and a missing health cell are
        Warning (the chip keeps running; the word is in the reason); the error code comes from
        `-t health`, asked only when the chip's health word changes to something not OK."""
        if chip is None:
            return Health.CRITICAL, "missing from npu-smi info", None
        word = chip.health or "NA"
        state = health_state(word) or Health.WARNING
        if state is Health.OK:
            self._health_seen.pop(index, None)
            return state, "", 0
        seen = self._health_seen.get(index)
        if seen is None or seen[0] != word:
            kv, err = self.query("health", chip.npu_id, chip.chip_id)
            code = None if err is not None else _error_code(error_code(kv))
            seen = (word, code, "" if err is not None else (kv_get(kv, "Error Information") or ""))
            self._health_seen[index] = seen
        _, code, detail = seen
        reason = f"npu-smi health {word}" + (f", error code {code:X}" if code else "") + (f": {detail}" if detail else "")
        return state, reason, code

    def sample(self) -> list[DeviceSample]:
        """One `npu-smi info` (plus `-t common` every `clock_every` samples, `-t health` when a
        chip's health word changes). A chip of the inventory that npu-smi no longer lists is
        Critical ("missing from npu-smi info") with zero readings; a new one is ignored."""
        with self._lock:
            devices = self._inventory()
            info = self._info()
            now = self._clock()
            dt = 0.0 if self._last_t is None else max(0.0, now - self._last_t)
            self._last_t = now
            self._samples += 1
            if self.clock_every > 0 and self._samples % self.clock_every == 0:
                self._refresh_clocks()
            by_key = {(c.npu_id, c.chip_id): c for c in info.chips}
            out: list[DeviceSample] = []
            for d, key in zip(devices, self._keys, strict=True):
                c = by_key.get(key)
                state, reason, code = self._health(d.index, c)
                hbm = c is not None and bool(c.hbm_total_mb)
                used = (c.hbm_used_mb if hbm else c.memory_used_mb) if c is not None else None
                total = float((c.hbm_total_mb if hbm else c.memory_total_mb) or d.memory_total_mib) if c is not None else float(d.memory_total_mib)
                used_f = min(max(float(used or 0), 0.0), total)
                power = max(c.power_w or 0.0, 0.0) if c is not None else 0.0
                self._energy_mj[d.index] += power * dt * 1000.0
                out.append(DeviceSample(
                    index=d.index, utilization_pct=min(max((c.aicore_pct if c else None) or 0.0, 0.0), 100.0),
                    memory_utilization_pct=round(100.0 * used_f / total, 3) if total > 0 else 0.0,
                    memory_used_mib=used_f, memory_total_mib=total, power_w=power,
                    energy_mj=int(self._energy_mj[d.index]), temperature_c=(c.temperature_c if c else None) or 0.0,
                    core_clock_mhz=self._core_mhz[d.index], memory_clock_mhz=self._mem_mhz[d.index],
                    health=state, health_reason=reason, error_code=code))
            return out
