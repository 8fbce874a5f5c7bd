"""Huawei Ascend telemetry from `npu-smi`: robust parsers for its outputs and a collector.

The parsers are pure functions of the text: they run nothing, read no files and keep no state,
so the agent's `inspect --from-npu-smi FILE` and the tests use exactly the code the live
collector uses.

Invariants:
- Pure parsing that never raises: any `str` gives a result. Lines the parser does not
  recognise (borders, headers, banners, garbage) are skipped; unrecognisable input gives an
  empty result (`AscendInfo()` with no chips, `{}`), never an exception.
- Numbers are exactly as printed: memory (MB) and ids are `int`, power / temperature /
  utilization are `float` of the printed text; nothing is rounded, scaled or invented.
  `NA`, `-` and empty cells are `None`, never 0.
- Health words are kept verbatim (`OK`, `Warning`, `Alarm`, `Critical`, or anything else a
  future npu-smi prints); `health_state()` maps the known ones onto `base.Health`.
- NPU ids are npu-smi's own ids, in the order printed; gaps and large ids are kept as they are
  (mapping them onto the agent's dense 0..n-1 device index is the caller's job).
- `AscendCollector.read/query/list_npus` never raise (an empty reading plus one error line);
  `inventory()`/`sample()` (the `base.Collector` protocol) raise only `base.BackendError`.
- Collector mapping: index = position in ascending (npu id, chip id) order (the dense logical
  numbering `ASCEND_RT_VISIBLE_DEVICES` uses); HBM used/total, or the Memory-Usage pair where
  the chip has no HBM (310P); `memory_utilization_pct` = that memory's used %, not bandwidth;
  `NA` power / temperature / AI Core read 0 (the sample's fields are not optional); energy is
  the integral of power over the injected clock; unknown health words are Warning.

Which recorded fixture (`../shared/fixtures/ascend/`) shows which quirk:
- `npu-smi-info-910b3x8-23.0.7.txt`: the 98-column 910B table, 8 NPUs, DDR `0    / 0` plus
  HBM `3338 / 65536` on the chip row, "No running processes found" rows.
- `npu-smi-info-910b4-24.1.rc3-process.txt`: a gap in NPU ids (0, 1, 3, 4); a five-digit
  value closed up against the slash (`29070/ 32768`); a process row
  (`| 0       0                 | 5063 | python3.10 | 26293 |`).
- `npu-smi-info-910a-warning-23.0.rc3.txt`: Health `Warning`; a lone NPU id 1; DDR
  `2681 / 15137` and HBM `1    / 32768` on one row.
- `npu-smi-info-310p3x8-24.1.0.1.txt`: the 106-column 310P table (`Chip Device` column, one
  `Memory-Usage(MB)` pair, no HBM), Power `NA`, large sparse ids (0, 32, 96, 32768..32896).
- `npu-smi-info-l-910b-25.5.1.txt`: `-l` (NPU ID / Chip Count pairs, 8-space indent).
- `npu-smi-info-t-*`: `key : value` outputs with 0, 1 or 8 spaces of indent, blank lines between
  the NPU, chip and MCU blocks; the MCU block repeats `Temperature(C)` (`-t common` 910B4) or
  carries board sensors (`-t temp`, `LM75A_TE (C)`); key spellings differ
  (`NPU Temperature (C)` vs `Temperature(C)`).
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from agents.devices.base import BackendError, DeviceInfo, DeviceSample, Health
from scheduler.types import Vendor

NPU_SMI = "npu-smi"
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_CLOCK_EVERY = 60  # samples between AI-core clock refreshes: 5 min at the agent's default 5 s interval
UUID_NAMESPACE = uuid.UUID("8e1f6a52-4d0b-4b7e-a3c1-6e70752d736d")  # fixed: the same bus id gives the same id everywhere

_MISSING = {"", "NA", "N/A", "-", "--"}
_BUS_ID = re.compile(r"^[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-9A-Fa-f]$")
_NPU_ROW = re.compile(r"^(\d+)\s+(\S.*)$")  # "0     910B3"
_CHIP_ROW = re.compile(r"^(\d+)(?:\s+(\d+))?$")  # "0" (910) or "0       1" (310P chip, device / A3 phy id)
_PAIR = re.compile(r"\s*/\s*")
_VERSION = re.compile(r"Version:\s*(\S+)")
_SMI_VERSION = re.compile(r"npu-smi\s+(\d\S*)")
_NO_PROCESS = re.compile(r"No running processes found in NPU\s+(\d+)", re.IGNORECASE)
_KV = re.compile(r"^\s*(\S[^:]*?)\s+:(?:\s+(.*?))?\s*$")


# ---------------------------------------------------------------- the `npu-smi info` table


@dataclass(frozen=True)
class AscendChip:
    """One chip row pair of the main table (the NPU row above it gives name, health, power, temp)."""

    npu_id: int
    chip_id: int
    name: str  # "910B3", "310P3", "910A"
    health: str | None  # verbatim: "OK", "Warning", ...
    power_w: float | None
    temperature_c: float | None
    aicore_pct: float | None
    bus_id: str | None  # "0000:C1:00.0"
    device_id: int | None = None  # 310P `Device` column (A3: Phy-ID); None on the 910 layout
    memory_used_mb: int | None = None  # the `Memory-Usage(MB)` pair (DDR on 910, device memory on 310P)
    memory_total_mb: int | None = None
    hbm_used_mb: int | None = None  # the `HBM-Usage(MB)` pair; None where the layout has none (310P)
    hbm_total_mb: int | None = None
    hugepages_used: int | None = None
    hugepages_total: int | None = None

    @property
    def health_state(self) -> Health | None:
        return health_state(self.health)


@dataclass(frozen=True)
class AscendProcess:
    """One row of the process table under the chip rows."""

    npu_id: int
    chip_id: int
    pid: int
    name: str
    memory_mb: int | None


@dataclass(frozen=True)
class AscendInfo:
    """Everything `npu-smi info` printed that this parser understood."""

    version: str | None = None
    chips: tuple[AscendChip, ...] = ()
    processes: tuple[AscendProcess, ...] = ()
    idle_npus: tuple[int, ...] = ()  # "No running processes found in NPU <id>"

    @property
    def npu_ids(self) -> list[int]:
        """Distinct NPU ids in printed order."""
        return list(dict.fromkeys(c.npu_id for c in self.chips))


def health_state(word: str | None) -> Health | None:
    """npu-smi's health word as a `Health`, or None for a word outside the known four."""
    if word is None:
        return None
    for h in Health:
        if word.strip().lower() == h.value.lower():
            return h
    return None


def _num(tok: str | None) -> float | None:
    if tok is None or tok.strip() in _MISSING:
        return None
    try:
        return float(tok)
    except ValueError:
        return None


def _int(tok: str | None) -> int | None:
    if tok is None or tok.strip() in _MISSING:
        return None
    try:
        return int(tok)
    except ValueError:
        return None


def _pair(tok: str | None) -> tuple[int | None, int | None]:
    if tok is None or "/" not in tok:
        return None, None
    a, _, b = tok.partition("/")
    return _int(a), _int(b)


def _tokens(cell: str) -> list[str]:
    """Whitespace tokens of a cell with `a / b`, `a/ b`, `a /b` closed up into one `a/b` token."""
    return _PAIR.sub("/", cell.strip()).split()


def _cells(line: str) -> list[str] | None:
    s = line.strip()
    if not (s.startswith("|") and s.endswith("|")) or len(s) < 2:
        return None
    return [c.strip() for c in s[1:-1].split("|")]


def parse_info(text: str) -> AscendInfo:
    """Parse the main `npu-smi info` table (910/910B/910A and 310P layouts), its version line
    and its process table. Never raises; unknown lines are skipped."""
    if not isinstance(text, str):
        return AscendInfo()
    version: str | None = None
    chips: list[AscendChip] = []
    procs: list[AscendProcess] = []
    idle: list[int] = []
    npu_row: dict | None = None  # the last NPU row: id, name, health, power, temp, hugepages
    in_processes = False
    for line in text.splitlines():
        try:
            cells = _cells(line)
            if cells is None:
                continue
            joined = " ".join(cells)
            if version is None and "npu-smi" in joined.lower():
                m = _VERSION.search(joined) or _SMI_VERSION.search(joined)
                if m:
                    version = m.group(1)
                continue
            if "Process id" in joined or "Process name" in joined:
                in_processes = True
                continue
            m = _NO_PROCESS.search(joined)
            if m:
                idle.append(int(m.group(1)))
                continue
            if in_processes:
                p = _process_row(cells)
                if p is not None:
                    procs.append(p)
                continue
            if len(cells) < 3:
                continue
            first, second, rest = cells[0], cells[1], " ".join(cells[2:])
            cm = _CHIP_ROW.match(first)
            if cm and (_BUS_ID.match(second) or second in _MISSING) and npu_row is not None:
                toks = _tokens(rest)
                pairs = [t for t in toks[1:] if "/" in t]
                mem = _pair(pairs[0]) if pairs else (None, None)
                hbm = _pair(pairs[1]) if len(pairs) > 1 else (None, None)
                chips.append(AscendChip(
                    npu_id=npu_row["npu_id"], chip_id=int(cm.group(1)), name=npu_row["name"],
                    health=npu_row["health"], power_w=npu_row["power_w"], temperature_c=npu_row["temperature_c"],
                    aicore_pct=_num(toks[0]) if toks and "/" not in toks[0] else None,
                    bus_id=second if _BUS_ID.match(second) else None,
                    device_id=int(cm.group(2)) if cm.group(2) is not None else None,
                    memory_used_mb=mem[0], memory_total_mb=mem[1], hbm_used_mb=hbm[0], hbm_total_mb=hbm[1],
                    hugepages_used=npu_row["hugepages"][0], hugepages_total=npu_row["hugepages"][1],
                ))
                continue
            nm = _NPU_ROW.match(first)
            if nm and not nm.group(2).strip().isdigit() and second and not _BUS_ID.match(second):
                toks = _tokens(rest)
                plain = [t for t in toks if "/" not in t]
                pairs = [t for t in toks if "/" in t]
                npu_row = {
                    "npu_id": int(nm.group(1)), "name": nm.group(2).strip(),
                    "health": None if second in _MISSING else second,
                    "power_w": _num(plain[0]) if plain else None,
                    "temperature_c": _num(plain[1]) if len(plain) > 1 else None,
                    "hugepages": _pair(pairs[0]) if pairs else (None, None),
                }
        except Exception:  # noqa: BLE001 - a line we cannot read is skipped, by contract
            continue
    return AscendInfo(version=version, chips=tuple(chips), processes=tuple(procs), idle_npus=tuple(idle))


def _process_row(cells: list[str]) -> AscendProcess | None:
    if len(cells) < 3:
        return None
    m = _CHIP_ROW.match(cells[0])
    if not m or m.group(2) is None:
        return None
    pid = _int(cells[1])
    if pid is None:
        return None
    mem = _int(cells[3]) if len(cells) > 3 else None
    return AscendProcess(npu_id=int(m.group(1)), chip_id=int(m.group(2)), pid=pid, name=cells[2], memory_mb=mem)


# ---------------------------------------------------------------- `npu-smi info -t ... / -l`


def _norm(key: str) -> str:
    return re.sub(r"\s+", "", key).lower()


def parse_kv_blocks(text: str) -> list[dict[str, str]]:
    """Every blank-line-separated block of a `key : value` output, in order, MCU block included.
    Keys are stripped with inner runs of whitespace collapsed to one space; values stripped."""
    if not isinstance(text, str):
        return []
    blocks: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if cur:
                blocks.append(cur)
                cur = {}
            continue
        m = _KV.match(line)
        if not m:
            continue
        key = " ".join(m.group(1).split())
        cur.setdefault(key, (m.group(2) or "").strip())
    if cur:
        blocks.append(cur)
    return blocks


def _is_mcu(block: dict[str, str]) -> bool:
    return any(_norm(k) == "chipname" and v.strip().lower() == "mcu" for k, v in block.items())


def parse_kv(text: str) -> dict[str, str]:
    """The `npu-smi info -t <type> -i N [-c C]` output as one dict: the NPU and chip blocks
    merged (first occurrence of a key wins); the MCU block (`Chip Name : mcu`), which repeats
    keys such as `Temperature(C)` for the board controller, is left out (see
    `parse_kv_blocks`). Tolerant of indentation (none, spaces or a tab) and padding."""
    out: dict[str, str] = {}
    for block in parse_kv_blocks(text):
        if _is_mcu(block):
            continue
        for k, v in block.items():
            out.setdefault(k, v)
    return out


def kv_get(kv: dict[str, str], *keys: str) -> str | None:
    """The value of the first of `keys` present, matching keys without regard to case or spaces
    (`NPU Temperature (C)` == `npu temperature(c)`); None when absent or `NA`/`-`."""
    index = {_norm(k): v for k, v in kv.items()}
    for key in keys:
        v = index.get(_norm(key))
        if v is not None:
            return None if v.strip() in _MISSING else v
    return None


def aicore_usage(kv: dict[str, str]) -> float | None:
    """AI Core utilization (%) from `-t usages` / `-t common`."""
    return _num(kv_get(kv, "Aicore Usage Rate(%)"))


def hbm_usage_pct(kv: dict[str, str]) -> float | None:
    return _num(kv_get(kv, "HBM Usage Rate(%)"))


def hbm_capacity_mb(kv: dict[str, str]) -> int | None:
    return _int(kv_get(kv, "HBM Capacity(MB)"))


def hbm(kv: dict[str, str]) -> tuple[float, int] | None:
    """(used MB, total MB) of HBM from `-t usages`. npu-smi prints only the capacity and an
    integer usage rate, so `used` is derived: capacity * rate / 100 (precise to 1 % of the
    capacity). None when either is missing (e.g. `-t memory` has the capacity only)."""
    total, rate = hbm_capacity_mb(kv), hbm_usage_pct(kv)
    if total is None or rate is None:
        return None
    return total * rate / 100.0, total


def health(kv: dict[str, str]) -> str | None:
    """`Health Status` (`-t health`), verbatim."""
    return kv_get(kv, "Health Status")


def error_code(kv: dict[str, str]) -> str | None:
    """`Error Code` (`-t health`), verbatim; None when `NA`."""
    return kv_get(kv, "Error Code")


def power_w(kv: dict[str, str]) -> float | None:
    """`NPU Real-time Power(W)` (`-t power`, `-t common`)."""
    return _num(kv_get(kv, "NPU Real-time Power(W)", "Power Dissipation(W)"))


def temperature_c(kv: dict[str, str]) -> float | None:
    """The chip's temperature: `NPU Temperature (C)` (`-t temp`) or `Temperature(C)` (`-t common`;
    the MCU block's is not it)."""
    return _num(kv_get(kv, "NPU Temperature (C)", "Temperature(C)"))


def aicore_freq_mhz(kv: dict[str, str]) -> float | None:
    """Current AI Core frequency (`Aicore curFreq(MHZ)`, `-t common`)."""
    return _num(kv_get(kv, "Aicore curFreq(MHZ)"))


def hbm_ecc(kv: dict[str, str]) -> tuple[int | None, int | None]:
    """(single-bit, double-bit) HBM ECC error counts (`-t ecc`)."""
    return _int(kv_get(kv, "HBM Single Bit Error Count")), _int(kv_get(kv, "HBM Double Bit Error Count"))


def parse_list(text: str) -> dict[int, int]:
    """`npu-smi info -l`: NPU id -> chip count, in printed order. Never raises."""
    out: dict[int, int] = {}
    current: int | None = None
    for block in parse_kv_blocks(text):
        for k, v in block.items():
            n = _norm(k)
            if n == "npuid":
                current = _int(v)
                if current is not None:
                    out.setdefault(current, 1)
            elif n == "chipcount" and current is not None:
                count = _int(v)
                if count is not None:
                    out[current] = count
    return out


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
