"""Ascend `npu-smi` parsers against every recorded fixture, plus robustness and the collector."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.devices import ascend
from agents.devices.ascend import AscendCollector, AscendInfo, parse_info, parse_kv, parse_list
from agents.devices.base import BackendError, Health
from scheduler.types import Vendor

FIXTURES = Path("/work/shared/fixtures/ascend")


def fixture(name: str) -> str:
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"fixture {path} not present")
    return path.read_text()


# ---------------------------------------------------------------- main table fixtures


def test_910b3x8_all_chips_exact():
    """910B 98-column table: 8 NPUs 0..7, one chip each, power/temp/bus/HBM exactly as printed, DDR pair 0/0,
    no process rows, every NPU listed as idle, version from the banner."""
    info = parse_info(fixture("npu-smi-info-910b3x8-23.0.7.txt"))
    assert info.version == "23.0.7"
    assert info.npu_ids == list(range(8))
    assert [c.chip_id for c in info.chips] == [0] * 8
    assert [c.power_w for c in info.chips] == [102.8, 97.6, 96.5, 108.7, 103.9, 99.3, 107.7, 105.1]
    assert [c.temperature_c for c in info.chips] == [55, 54, 56, 57, 58, 56, 58, 59]
    assert [c.hbm_used_mb for c in info.chips] == [3338, 3337, 3334, 3334, 3334, 3334, 3334, 3338]
    assert {c.hbm_total_mb for c in info.chips} == {65536}
    assert {(c.memory_used_mb, c.memory_total_mb) for c in info.chips} == {(0, 0)}
    assert [c.bus_id for c in info.chips][:2] == ["0000:C1:00.0", "0000:C2:00.0"]
    assert info.chips[-1].bus_id == "0000:42:00.0"
    assert all(c.name == "910B3" and c.health == "OK" and c.health_state is Health.OK for c in info.chips)
    assert all(c.aicore_pct == 0 and c.device_id is None for c in info.chips)
    assert (info.chips[0].hugepages_used, info.chips[0].hugepages_total) == (0, 0)
    assert info.processes == ()
    assert info.idle_npus == tuple(range(8))


def test_910b4_gap_no_space_memory_and_process_row():
    """910B4 with a live job: NPU ids keep their gap (0,1,3,4); `29070/ 32768` (no space before the slash)
    parses to 29070 of 32768 exactly; the process row gives npu 0, chip 0, pid 5063, python3.10, 26293 MB."""
    info = parse_info(fixture("npu-smi-info-910b4-24.1.rc3-process.txt"))
    assert info.version == "24.1.rc3"
    assert info.npu_ids == [0, 1, 3, 4]
    by_id = {c.npu_id: c for c in info.chips}
    assert (by_id[0].hbm_used_mb, by_id[0].hbm_total_mb) == (29070, 32768)
    assert [by_id[i].hbm_used_mb for i in (1, 3, 4)] == [2824, 2834, 2826]
    assert [by_id[i].power_w for i in (0, 1, 3, 4)] == [90.8, 86.7, 92.4, 82.6]
    assert [by_id[i].temperature_c for i in (0, 1, 3, 4)] == [39, 40, 39, 40]
    assert by_id[3].bus_id == "0000:02:00.0"
    assert all(c.name == "910B4" for c in info.chips)
    assert len(info.processes) == 1
    p = info.processes[0]
    assert (p.npu_id, p.chip_id, p.pid, p.name, p.memory_mb) == (0, 0, 5063, "python3.10", 26293)
    assert info.idle_npus == (1, 3, 4)


def test_910a_warning_health_and_ddr_plus_hbm():
    """910A with Health `Warning`: kept verbatim and mapped to Health.WARNING (still healthy); the single NPU
    has id 1; the chip row's two pairs are DDR 2681/15137 then HBM 1/32768."""
    info = parse_info(fixture("npu-smi-info-910a-warning-23.0.rc3.txt"))
    assert info.version == "23.0.rc3"
    assert len(info.chips) == 1
    c = info.chips[0]
    assert (c.npu_id, c.chip_id, c.name) == (1, 0, "910A")
    assert c.health == "Warning"
    assert c.health_state is Health.WARNING and c.health_state.healthy
    assert (c.power_w, c.temperature_c, c.aicore_pct) == (69.6, 35, 0)
    assert (c.memory_used_mb, c.memory_total_mb) == (2681, 15137)
    assert (c.hbm_used_mb, c.hbm_total_mb) == (1, 32768)
    assert c.bus_id == "0000:81:00.0"
    assert info.processes == () and info.idle_npus == (1,)


def test_310p3_layout_sparse_large_ids_and_na_power():
    """310P 106-column table: large sparse ids (0, 32, 96, 32768..32896); `Chip Device` gives chip 0 and
    device 0..7; Power `NA` is None (not 0); one Memory-Usage pair, no HBM pair (None)."""
    info = parse_info(fixture("npu-smi-info-310p3x8-24.1.0.1.txt"))
    assert info.version == "24.1.0.1"
    assert info.npu_ids == [0, 32, 96, 32768, 32800, 32832, 32864, 32896]
    assert [c.device_id for c in info.chips] == list(range(8))
    assert {c.chip_id for c in info.chips} == {0}
    assert all(c.power_w is None for c in info.chips)
    assert [c.temperature_c for c in info.chips] == [56, 58, 60, 56, 59, 60, 60, 61]
    assert [c.memory_used_mb for c in info.chips] == [1844, 1846, 1845, 1846, 1844, 1843, 1844, 1846]
    assert {c.memory_total_mb for c in info.chips} == {21527}
    assert all(c.hbm_used_mb is None and c.hbm_total_mb is None for c in info.chips)
    assert all(c.name == "310P3" and c.health == "OK" for c in info.chips)
    assert info.chips[3].bus_id == "0000:81:00.0"
    assert info.processes == ()
    assert info.idle_npus == tuple(info.npu_ids)


@pytest.mark.parametrize("word, state", [("Alarm", Health.ALARM), ("Critical", Health.CRITICAL), ("Error", None)])
def test_other_health_words_kept_verbatim(word, state):
    """No recorded table has Alarm/Critical: the 910B3 fixture with its first Health cell replaced shows any
    word is kept verbatim and only the known four map onto `Health` (others give None)."""
    text = fixture("npu-smi-info-910b3x8-23.0.7.txt").replace("| OK            |", f"| {word:<14}|", 1)
    info = parse_info(text)
    assert info.chips[0].health == word
    assert info.chips[0].health_state is state
    assert all(c.health == "OK" for c in info.chips[1:])


def test_dash_and_na_cells_are_none():
    """`-` (A3's second die) and `NA` in power / temperature / AICore / memory are None, never 0, and do not
    shift the neighbouring columns."""
    text = fixture("npu-smi-info-910b3x8-23.0.7.txt")
    text = text.replace("| 102.8       55 ", "| -           NA ", 1).replace("| 0           0    / 0          3338 / 65536",
                                                                        "| NA          0    / 0          NA   / 65536", 1)
    c = parse_info(text).chips[0]
    assert (c.power_w, c.temperature_c, c.aicore_pct) == (None, None, None)
    assert (c.hbm_used_mb, c.hbm_total_mb) == (None, 65536)
    assert (c.memory_used_mb, c.memory_total_mb) == (0, 0)


# ---------------------------------------------------------------- `-t` and `-l` fixtures


def test_list_910b():
    """`-l`: NPU ids 0..7, each with one chip; `Total Count` is not an NPU."""
    assert parse_list(fixture("npu-smi-info-l-910b-25.5.1.txt")) == {i: 1 for i in range(8)}


def test_usages_910b_25_5_1():
    """`-t usages` (8-space indent, newer keys): AI Core 0 %, HBM 5 % of 65536 MB, NPU Utilization present."""
    kv = parse_kv(fixture("npu-smi-info-t-usages-i0-910b-25.5.1.txt"))
    assert ascend.aicore_usage(kv) == 0
    assert ascend.hbm_capacity_mb(kv) == 65536 and ascend.hbm_usage_pct(kv) == 5
    assert ascend.hbm(kv) == (65536 * 5 / 100, 65536)
    assert kv["NPU Utilization(%)"] == "0" and kv["Aivector Usage Rate(%)"] == "0"
    assert kv["NPU ID"] == "0" and kv["Chip ID"] == "0"


def test_usages_doc_with_ddr():
    """`-t usages` doc sample (no indent, 910 with DDR): DDR 13553 MB at 6 %, HBM 32768 MB at 0 % → 0 MB used."""
    kv = parse_kv(fixture("npu-smi-info-t-usages-i0-ddr-doc-23.0.5.txt"))
    assert kv["DDR Capacity(MB)"] == "13553" and kv["DDR Usage Rate(%)"] == "6"
    assert ascend.hbm(kv) == (0.0, 32768)
    assert ascend.aicore_usage(kv) == 0
    assert "NPU Utilization(%)" not in kv


def test_board_910b_25_5_1():
    """`-t board` (25.5.1): identity fields verbatim (serial, bus id, uppercase vendor id), `NA` kept in the raw
    dict but None through `kv_get`."""
    kv = parse_kv(fixture("npu-smi-info-t-board-i0-910b-25.5.1.txt"))
    assert kv["Serial Number"] == "1025C9048791"
    assert kv["Product Name"] == "IT21HMDC_Bin5"
    assert kv["PCIe Bus Info"] == "0000:C1:00.0"
    assert kv["PCI Vendor ID"] == "0x19E5" and kv["PCI Device ID"] == "0xD802"
    assert kv["Firmware Version"] == "7.8.0.6.201" and kv["Software Version"] == "25.5.1"
    assert kv["Model"] == "NA" and ascend.kv_get(kv, "model") is None
    assert kv["Chip Count"] == "1"


def test_board_doc_npu_and_chip():
    """`-t board` doc samples: the NPU form (lowercase vendor id 0x19e5, device 0xD801) and the `-c 0` chip
    form, whose values with inner spaces (VDie ID) are kept whole."""
    kv = parse_kv(fixture("npu-smi-info-t-board-i0-doc-23.0.5.txt"))
    assert kv["PCI Vendor ID"] == "0x19e5" and kv["PCI Device ID"] == "0xD801"
    assert kv["Software Version"] == "23.0.5" and kv["PCIe Bus Info"] == "0000:61:00.0"
    chip = parse_kv(fixture("npu-smi-info-t-board-i0-c0-doc-23.0.5.txt"))
    assert chip["VDie ID"] == "42C711D4 20B03704 4A10C8D4 14CC040A D2102003"
    assert chip["Chip Name"] == "xxx" and chip["Chip Version"] == "V1" and chip["PCB ID"] == "NA"


@pytest.mark.parametrize("name, npu, hbm_pct, aicore, temp, power, cur_freq", [
    ("npu-smi-info-t-common-i0-doc.txt", "0", 0, 0, 41, 71.7, 900),
    ("npu-smi-info-t-common-i1-910b4.txt", "1", 91, 6, 46, 130.4, 1800),
    ("npu-smi-info-t-common-i7-910b4-busy.txt", "7", 82, 70, 66, 331.1, 1800),
])
def test_common(name, npu, hbm_pct, aicore, temp, power, cur_freq):
    """`-t common`: AI Core %, HBM %, power and frequency exact; the temperature is the chip's, not the MCU
    block's repeated `Temperature(C)` (40 / 58 in the 910B4 files)."""
    kv = parse_kv(fixture(name))
    assert kv["NPU ID"] == npu
    assert ascend.hbm_usage_pct(kv) == hbm_pct
    assert ascend.aicore_usage(kv) == aicore
    assert ascend.temperature_c(kv) == temp
    assert ascend.power_w(kv) == power
    assert ascend.aicore_freq_mhz(kv) == cur_freq
    assert ascend.hbm(kv) is None  # no capacity in `-t common`


def test_common_mcu_block_kept_in_blocks():
    """The MCU block is left out of `parse_kv` but still available, in order, from `parse_kv_blocks`."""
    blocks = ascend.parse_kv_blocks(fixture("npu-smi-info-t-common-i7-910b4-busy.txt"))
    assert len(blocks) == 3
    assert blocks[2] == {"Chip Name": "mcu", "Temperature(C)": "58"}


def test_memory_910b4():
    """`-t memory`: HBM capacity 32768 MB, clock 1600 MHz; no usage rate so `hbm()` is None, not a guess."""
    kv = parse_kv(fixture("npu-smi-info-t-memory-i1-910b4.txt"))
    assert ascend.hbm_capacity_mb(kv) == 32768
    assert kv["HBM Clock Speed(MHz)"] == "1600" and kv["HBM Manufacturer ID"] == "0x57"
    assert ascend.hbm(kv) is None


def test_temp_910b():
    """`-t temp`: `NPU Temperature (C)` (space before the unit) is 39; the MCU block's sensors are not merged."""
    kv = parse_kv(fixture("npu-smi-info-t-temp-i0-910b-25.5.1.txt"))
    assert ascend.temperature_c(kv) == 39
    assert "LM75A_TE (C)" not in kv and "Chip Name" not in kv


def test_power_910b():
    """`-t power`: 103.5 W exactly."""
    assert ascend.power_w(parse_kv(fixture("npu-smi-info-t-power-i0-910b-25.5.1.txt"))) == 103.5


def test_health_doc():
    """`-t health` (1-space indent): status OK, error code `NA` → None."""
    kv = parse_kv(fixture("npu-smi-info-t-health-i0-c0-doc-23.0.5.txt"))
    assert ascend.health(kv) == "OK" and ascend.health_state(ascend.health(kv)) is Health.OK
    assert ascend.error_code(kv) is None
    assert kv["Error Information"] == "NA"


def test_ecc_doc():
    """`-t ecc` (keys padded to 40): HBM single/double bit error counts are 0 and 0 (ints, present)."""
    kv = parse_kv(fixture("npu-smi-info-t-ecc-i1-doc-23.0.5.txt"))
    assert ascend.hbm_ecc(kv) == (0, 0)
    assert kv["DDR Double Bit Isolated Pages Count"] == "0" and kv["Chip ID"] == "0"


def test_tab_indent_and_key_spacing_tolerated():
    """Live output likely starts with a TAB; keys match regardless of case and inner spacing."""
    kv = parse_kv("\tNPU Temperature (C)            : 39\n\tAicore Usage Rate(%)   :   12\n")
    assert ascend.temperature_c(kv) == 39 and ascend.aicore_usage(kv) == 12
    assert ascend.kv_get(kv, "npu temperature(c)") == "39"


def test_every_fixture_has_a_test():
    """Every recorded `npu-smi` fixture file is named in this module (none silently untested)."""
    if not FIXTURES.exists():
        pytest.skip("fixtures not present")
    source = Path(__file__).read_text()
    missing = [p.name for p in FIXTURES.glob("npu-smi-*.txt") if f'"{p.name}"' not in source]
    assert missing == []


# ---------------------------------------------------------------- robustness


GARBAGE = ["", "\n\n", "hello world", "| a | b | c |", "+-----+", "| 0  910B | OK |", "NPU ID\nChip Count",
           "| No running processes found in NPU |", "\x00\x01|||", "| 1 2 | 3 | 4 | 5 | 6 |"]


@pytest.mark.parametrize("text", GARBAGE)
def test_garbage_gives_empty_results(text):
    """Text that is not npu-smi output gives empty results, never an exception."""
    info = parse_info(text)
    assert info.chips == () and info.processes == ()
    assert parse_list(text) == {}
    assert parse_kv(text) == {}


def test_nvidia_smi_output_is_not_ascend():
    """An nvidia-smi table (also `|`-bordered) yields no Ascend chips."""
    path = FIXTURES.parent / "nvidia" / "nvidia-smi-8xh100-sxm-550.127.05.txt"
    if not path.exists():
        pytest.skip("nvidia fixture not present")
    assert parse_info(path.read_text()).chips == ()


def test_truncated_table_keeps_complete_rows():
    """A table cut mid-way keeps the chips whose two rows were printed and drops the half row."""
    lines = fixture("npu-smi-info-910b3x8-23.0.7.txt").splitlines()
    cut = "\n".join(lines[:13])  # header + NPU 0, 1 complete + NPU 2's first row
    assert parse_info(cut).npu_ids == [0, 1]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.sampled_from(list("|+=-/ :.\n\t0123456789OKNAabcWarning910BPHM%()")) | st.characters(), max_size=400))
def test_never_raises_on_arbitrary_text(text):
    """Property: every parser returns (never raises) on arbitrary text."""
    assert isinstance(parse_info(text), AscendInfo)
    assert isinstance(parse_kv(text), dict)
    assert isinstance(parse_list(text), dict)
    ascend.aicore_usage(parse_kv(text))
    ascend.hbm(parse_kv(text))


# ---------------------------------------------------------------- collector


def test_collector_with_fixture_runner():
    """The collector runs `npu-smi info` through the injected runner and returns the parsed chips, no error."""
    text = fixture("npu-smi-info-910b4-24.1.rc3-process.txt")
    calls: list[list[str]] = []

    def runner(cmd: list[str]) -> str:
        calls.append(cmd)
        return text

    reading = AscendCollector(runner).read()
    assert calls == [["npu-smi", "info"]]
    assert reading.ok and reading.error is None
    assert [c.npu_id for c in reading.chips] == [0, 1, 3, 4]
    assert reading.info.processes[0].pid == 5063


def test_collector_query_and_list():
    """`query` builds `info -t <kind> -i N [-c C]` and parses the key : value output; `list_npus` parses `-l`."""
    outputs = {"usages": fixture("npu-smi-info-t-usages-i0-910b-25.5.1.txt"),
               "health": fixture("npu-smi-info-t-health-i0-c0-doc-23.0.5.txt"),
               "-l": fixture("npu-smi-info-l-910b-25.5.1.txt")}
    calls: list[list[str]] = []

    def runner(cmd: list[str]) -> str:
        calls.append(cmd)
        return outputs[cmd[3] if len(cmd) > 3 else cmd[2]]

    c = AscendCollector(runner)
    kv, err = c.query("usages", 0)
    assert err is None and ascend.hbm(kv) == (65536 * 5 / 100, 65536)
    kv, err = c.query("health", 0, 0)
    assert err is None and ascend.health(kv) == "OK"
    ids, err = c.list_npus()
    assert err is None and ids == {i: 1 for i in range(8)}
    assert calls == [["npu-smi", "info", "-t", "usages", "-i", "0"], ["npu-smi", "info", "-t", "health", "-i", "0", "-c", "0"],
                     ["npu-smi", "info", "-l"]]


@pytest.mark.parametrize("exc, phrase", [
    (FileNotFoundError(2, "No such file or directory", "npu-smi"), "npu-smi not found"),
    (subprocess.TimeoutExpired(["npu-smi", "info"], 10), "timed out after 10"),
    (subprocess.CalledProcessError(255, ["npu-smi", "info"], stderr="dcmi module initialize failed. ret is -8005\n"),
     "exited with status 255: dcmi module initialize failed"),
    (PermissionError(13, "Permission denied"), "PermissionError"),
    (RuntimeError("boom"), "boom"),
])
def test_collector_failure_gives_empty_reading_and_one_error(exc, phrase):
    """A missing, hanging or failing npu-smi gives an empty reading and one clear error line; nothing raises,
    from `read`, `query` or `list_npus`."""

    def runner(cmd: list[str]) -> str:
        raise exc

    c = AscendCollector(runner)
    reading = c.read()
    assert reading.chips == () and not reading.ok
    assert phrase in reading.error and "\n" not in reading.error
    assert c.query("usages", 0)[0] == {} and phrase in c.query("usages", 0)[1]
    assert c.list_npus()[0] == {} and c.list_npus()[1]


def test_collector_output_without_chips_is_an_error():
    """npu-smi printing something that has no NPU rows is reported as an error, not as zero devices silently."""
    reading = AscendCollector(lambda cmd: "npu-smi: command crashed\n").read()
    assert reading.chips == () and "no NPU rows" in reading.error


def test_default_runner_missing_binary():
    """The default subprocess runner with a binary that does not exist: error message, no exception."""
    reading = AscendCollector(binary="/nonexistent/npu-smi-for-test", timeout_s=2).read()
    assert reading.chips == () and "not found" in reading.error


# ---------------------------------------------------------------- the Collector protocol


def fake_npu_smi(table: str, answers: dict[tuple[str, ...], str] | None = None,
                 calls: list[list[str]] | None = None) -> ascend.Runner:
    """A runner standing in for the `npu-smi` binary (no Ascend hardware here): `npu-smi info`
    answers the recorded table, `info -t ...` the recorded outputs in `answers` keyed by the
    arguments after `info`; anything else fails as npu-smi does for an unknown query."""

    def run(cmd: list[str]) -> str:
        if calls is not None:
            calls.append(cmd)
        if cmd == ["npu-smi", "info"]:
            return table
        key = tuple(cmd[2:])
        if answers and key in answers:
            return answers[key]
        raise subprocess.CalledProcessError(255, cmd, stderr="Usage: npu-smi info <watch|proc-mem|...>\n")

    return run


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_inventory_910b3x8_models_memory_bus_and_ids():
    """910B3 x8: 8 devices 0..7 in npu-id order, model Ascend910B3, 65536 MiB each, bus ids as printed,
    the driver version from the banner; NPU 0's `-t board` serial gives uuid `NPU-<serial>-<chip>`; the rest
    (no board output) get `NPU-<uuid5 of the bus id>`, distinct and the same in a second collector;
    AI-core clock from `-t common`, HBM clock from `-t memory`; the inventory is taken once."""
    table = fixture("npu-smi-info-910b3x8-23.0.7.txt")
    answers = {("-t", "board", "-i", "0"): fixture("npu-smi-info-t-board-i0-910b-25.5.1.txt"),
               ("-t", "common", "-i", "0", "-c", "0"): fixture("npu-smi-info-t-common-i1-910b4.txt"),
               ("-t", "memory", "-i", "0", "-c", "0"): fixture("npu-smi-info-t-memory-i1-910b4.txt")}
    calls: list[list[str]] = []
    c = AscendCollector(fake_npu_smi(table, answers, calls))
    devices = c.inventory()
    assert c.vendor is Vendor.ASCEND
    assert [d.index for d in devices] == list(range(8))
    assert {d.model for d in devices} == {"Ascend910B3"} and {d.memory_total_mib for d in devices} == {65536}
    assert [d.pci_bus_id for d in devices][:2] == ["0000:C1:00.0", "0000:C2:00.0"] and devices[7].pci_bus_id == "0000:42:00.0"
    assert {d.driver_version for d in devices} == {"23.0.7"}
    assert (devices[0].serial, devices[0].uuid) == ("1025C9048791", "NPU-1025C9048791-0")
    others = [d.uuid for d in devices[1:]]
    assert len(set(others)) == 7 and all(u.startswith("NPU-") and len(u) == 40 for u in others)
    assert [d.uuid for d in AscendCollector(fake_npu_smi(table)).inventory()][1:] == others
    s = c.sample()
    assert (s[0].core_clock_mhz, s[0].memory_clock_mhz) == (1800, 1600)
    assert (s[1].core_clock_mhz, s[1].memory_clock_mhz) == (0, 0)  # not shown for NPU 1: unknown reads 0
    n = len(calls)
    c.inventory()
    assert len(calls) == n


def test_vdie_id_is_the_uuid_when_board_shows_it():
    """`-t board -i N -c C` with a `VDie ID`: the die id becomes `vdie_id` (npu-exporter's label) and the
    uuid `NPU-<die id words joined by ->`, preferred over the serial."""
    answers = {("-t", "board", "-i", "1", "-c", "0"): fixture("npu-smi-info-t-board-i0-c0-doc-23.0.5.txt"),
               ("-t", "board", "-i", "1"): fixture("npu-smi-info-t-board-i0-910b-25.5.1.txt")}
    d = AscendCollector(fake_npu_smi(fixture("npu-smi-info-910a-warning-23.0.rc3.txt"), answers)).inventory()[0]
    assert d.vdie_id == "42C711D4 20B03704 4A10C8D4 14CC040A D2102003"
    assert d.uuid == "NPU-42C711D4-20B03704-4A10C8D4-14CC040A-D2102003"
    assert d.serial == "1025C9048791" and d.model == "Ascend910A" and d.memory_total_mib == 32768


def test_sample_910b3x8_values_exact():
    """One `npu-smi info` per sample: AI Core % → utilization, HBM pair → memory MiB, HBM used % →
    memory_utilization_pct, power, temperature as printed; health OK with error code 0 and no reason."""
    calls: list[list[str]] = []
    c = AscendCollector(fake_npu_smi(fixture("npu-smi-info-910b3x8-23.0.7.txt"), calls=calls), clock_every=0)
    c.inventory()
    calls.clear()
    s = c.sample()
    assert calls == [["npu-smi", "info"]]
    assert [x.memory_used_mib for x in s] == [3338, 3337, 3334, 3334, 3334, 3334, 3334, 3338]
    assert {x.memory_total_mib for x in s} == {65536}
    assert s[0].memory_utilization_pct == round(100 * 3338 / 65536, 3)
    assert [x.power_w for x in s] == [102.8, 97.6, 96.5, 108.7, 103.9, 99.3, 107.7, 105.1]
    assert [x.temperature_c for x in s] == [55, 54, 56, 57, 58, 56, 58, 59]
    assert all(x.utilization_pct == 0 and x.health is Health.OK and x.health_reason == "" and x.error_code == 0 for x in s)
    assert all(x.xid_last is None and x.ecc_uncorrected_total is None for x in s)


def test_gap_and_sparse_ids_become_contiguous_indices():
    """NPU ids 0,1,3,4 (910B4) are devices 0..3 (device 2 is NPU 3: 92.4 W, bus 0000:02:00.0); the 310P's ids
    0..32896 are devices 0..7 with the Memory-Usage pair as memory (no HBM) and power `NA` read as 0."""
    c = AscendCollector(fake_npu_smi(fixture("npu-smi-info-910b4-24.1.rc3-process.txt")))
    d, s = c.inventory(), c.sample()
    assert [x.index for x in d] == [0, 1, 2, 3] and d[2].pci_bus_id == "0000:02:00.0"
    assert (s[0].memory_used_mib, s[0].memory_total_mib, s[2].power_w) == (29070, 32768, 92.4)
    p = AscendCollector(fake_npu_smi(fixture("npu-smi-info-310p3x8-24.1.0.1.txt")))
    d, s = p.inventory(), p.sample()
    assert [x.index for x in d] == list(range(8)) and d[3].pci_bus_id == "0000:81:00.0"
    assert {x.memory_total_mib for x in d} == {21527} and {x.model for x in d} == {"Ascend310P3"}
    assert [x.memory_used_mib for x in s] == [1844, 1846, 1845, 1846, 1844, 1843, 1844, 1846]
    assert all(x.power_w == 0 and x.energy_mj == 0 for x in s)


def test_warning_fixture_is_warning_with_reason_and_error_code():
    """910A in `Warning`: Health.WARNING (still healthy) with reason "npu-smi health Warning"; the error code
    comes from `-t health` (hex, here the doc sample's `NA` → 0), asked once while the word stays the same."""
    calls: list[list[str]] = []
    answers = {("-t", "health", "-i", "1", "-c", "0"): fixture("npu-smi-info-t-health-i0-c0-doc-23.0.5.txt")}
    c = AscendCollector(fake_npu_smi(fixture("npu-smi-info-910a-warning-23.0.rc3.txt"), answers, calls), clock_every=0)
    s = c.sample()[0]
    assert s.health is Health.WARNING and s.healthy and s.health_reason == "npu-smi health Warning" and s.error_code == 0
    c.sample()
    assert sum(cmd[3:4] == ["health"] for cmd in calls) == 1
    coded = {("-t", "health", "-i", "1", "-c", "0"): " Health Status : Warning\n Error Code : 80E18008 80E18402\n"}
    s = AscendCollector(fake_npu_smi(fixture("npu-smi-info-910a-warning-23.0.rc3.txt"), coded)).sample()[0]
    assert s.error_code == 0x80E18008 and s.health_reason == "npu-smi health Warning, error code 80E18008"


@pytest.mark.parametrize("word, state", [("Alarm", Health.ALARM), ("Critical", Health.CRITICAL), ("Error", Health.WARNING),
                                         ("NA", Health.WARNING)])
def test_health_words_on_samples(word, state):
    """Alarm/Critical map to themselves (unhealthy); an unknown word or `NA` is Warning (the chip keeps
    running) with the word in the reason; a `-t health` that fails leaves the error code None."""
    text = fixture("npu-smi-info-910b3x8-23.0.7.txt").replace("| OK            |", f"| {word:<14}|", 1)
    s = AscendCollector(fake_npu_smi(text)).sample()
    assert s[0].health is state and s[0].health_reason == f"npu-smi health {word}" and s[0].error_code is None
    assert s[0].healthy == state.healthy and s[1].health is Health.OK


def test_energy_is_the_integral_of_power_and_never_decreases():
    """energy_mj starts at 0 and grows by power × elapsed × 1000 on the injected clock (102.8 W for 2 s →
    205600 mJ); a clock that does not move adds nothing; it never decreases."""
    clock = Clock()
    c = AscendCollector(fake_npu_smi(fixture("npu-smi-info-910b3x8-23.0.7.txt")), clock=clock)
    seen = [c.sample()[0].energy_mj]
    for dt in (2.0, 0.0, 0.5, 3.0):
        clock.t += dt
        seen.append(c.sample()[0].energy_mj)
    assert seen[:2] == [0, 205600] and seen == sorted(seen) and seen[2] == seen[1]
    assert seen[-1] == int(102.8 * 5.5 * 1000)


def test_clock_refreshed_every_n_samples_only():
    """`-t common` (one call per chip) runs at inventory and then every `clock_every` samples, not per sample."""
    calls: list[list[str]] = []
    c = AscendCollector(fake_npu_smi(fixture("npu-smi-info-910a-warning-23.0.rc3.txt"), calls=calls), clock_every=3)
    for _ in range(7):
        c.sample()
    assert sum(cmd[3:4] == ["common"] for cmd in calls) == 1 + 2  # inventory, samples 3 and 6
    assert sum(cmd == ["npu-smi", "info"] for cmd in calls) == 1 + 7


@pytest.mark.parametrize("exc, phrase", [
    (FileNotFoundError(2, "No such file or directory", "npu-smi"), "npu-smi not found"),
    (subprocess.TimeoutExpired(["npu-smi", "info"], 10), "timed out after 10"),
    (subprocess.CalledProcessError(255, ["npu-smi", "info"], stderr="dcmi module initialize failed. ret is -8005\n"),
     "dcmi module initialize failed"),
])
def test_broken_npu_smi_raises_backend_error_only(exc, phrase):
    """A missing, hanging or failing npu-smi makes `inventory()` and `sample()` raise base.BackendError with
    one line, also after a good inventory; garbage output is a BackendError too."""
    broken = [False]

    def runner(cmd: list[str]) -> str:
        if broken[0]:
            raise exc
        return fixture("npu-smi-info-910b3x8-23.0.7.txt")

    c = AscendCollector(runner)
    c.inventory()
    broken[0] = True
    with pytest.raises(BackendError) as e:
        c.sample()
    assert phrase in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(BackendError, match=phrase):
        AscendCollector(runner).inventory()
    with pytest.raises(BackendError, match="no NPU rows"):
        AscendCollector(lambda cmd: "garbage\n").sample()


def test_chip_gone_after_inventory_is_critical():
    """A chip of the inventory that npu-smi stops listing is Critical ("missing from npu-smi info") at its
    index; the others keep their own values."""
    full = fixture("npu-smi-info-910b4-24.1.rc3-process.txt")
    text = [full]
    c = AscendCollector(lambda cmd: text[0] if cmd == ["npu-smi", "info"] else 1 / 0)
    c.inventory()
    text[0] = "\n".join(line for line in full.splitlines() if "| 3     910B4" not in line and "0000:02:00.0" not in line)
    s = c.sample()
    assert s[2].health is Health.CRITICAL and s[2].health_reason == "missing from npu-smi info"
    assert (s[1].power_w, s[1].memory_used_mib) == (86.7, 2824) and s[3].power_w == 82.6 and s[3].health is Health.OK
