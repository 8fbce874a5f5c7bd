"""Robust parsers for `npu-smi` outputs (Huawei Ascend): pure functions of the text.

The parsers are pure functions of the text: they run nothing, read no files and keep no state,
so the agent's `inspect --from-npu-smi FILE` and the tests use exactly the code the live
collector (`agents.devices.ascend`) uses.

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
import uuid
from dataclasses import dataclass

from agents.devices.base import Health

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
