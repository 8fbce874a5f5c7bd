"""`suanli-agent`'s backend selection (`make_collector`): which collector each `--backend`
gives, and one clear line (exit 2, no traceback) when the chosen backend cannot start.

There is no GPU and no Ascend card on the test machine. NVML is replaced by a fake
`agents.devices.nvml` module (its two entry points only: `nvml_available`, `NvmlCollector`);
npu-smi is replaced by a small shell script on PATH that prints a recorded `npu-smi info`
table (../shared/fixtures/ascend), so the real subprocess path of the Ascend collector runs.
"""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from agents.devices.ascend import AscendCollector
from agents.devices.base import BackendError, DeviceInfo, DeviceSample
from agents.main import NO_ACCELERATOR, build_parser, main, make_collector
from scheduler.types import Vendor

ASCEND = next((d for d in (Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "ascend",
                           Path("/work/shared/fixtures/ascend")) if d.is_dir()), Path("/nonexistent"))
TABLE = ASCEND / "npu-smi-info-910b3x8-23.0.7.txt"
needs_fixtures = pytest.mark.skipif(not TABLE.exists(), reason="recorded fixtures not present")


def fake_npu_smi_bin(directory: Path, table: Path | None = TABLE, fail: str = "") -> Path:
    """Write an executable `npu-smi` into `directory`: `npu-smi info` prints `table` (or, with
    `fail`, prints that to stderr and exits 255 as a broken driver does); other queries exit 1."""
    script = directory / "npu-smi"
    body = (f'echo "{fail}" >&2; exit 255' if fail else f'if [ "$#" = 1 ] && [ "$1" = info ]; then exec /bin/cat "{table}"; fi\n'
            'echo "Usage: npu-smi info -t <type> -i <id>" >&2; exit 1')
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return script


class FakeGpus:
    """Stands in for NvmlCollector: two GPUs with a topology (no NVIDIA hardware here)."""

    vendor = Vendor.NVIDIA

    def __init__(self, *_: Any, fail: str = "", **__: Any) -> None:
        if fail:
            raise BackendError(fail)

    def inventory(self) -> list[DeviceInfo]:
        return [DeviceInfo(i, f"GPU-{i}", "NVIDIA H100 80GB HBM3", 81559, f"00000000:{0x18 + i:02X}:00.0") for i in range(2)]

    def sample(self) -> list[DeviceSample]:
        return [DeviceSample(i, 50.0, 10.0, 1000.0, 81559.0, 300.0, 1000, 40.0, 1980.0, 2619.0, xid_last=0) for i in range(2)]

    def topology(self) -> list[list[str]]:
        return [["X", "NV18"], ["NV18", "X"]]


def fake_nvml(monkeypatch: pytest.MonkeyPatch, usable: bool, collector: Any = FakeGpus) -> None:
    module = types.ModuleType("agents.devices.nvml")
    module.nvml_available = lambda nvml=None: (True, "") if usable else (False, "NVML: Driver Not Loaded")  # type: ignore[attr-defined]
    module.NvmlCollector = collector  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "agents.devices.nvml", module)


def args(*argv: str) -> Any:
    return build_parser().parse_args(["run", *argv])


@pytest.fixture
def no_tools(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty PATH (no npu-smi) and no SUANLI_AGENT_BACKEND / _ACCELERATOR_TYPE from the environment."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("SUANLI_AGENT_BACKEND", raising=False)
    monkeypatch.delenv("SUANLI_AGENT_ACCELERATOR_TYPE", raising=False)
    monkeypatch.delenv("SUANLI_AGENT_TOKEN", raising=False)
    return tmp_path


def test_auto_prefers_nvml_when_usable(monkeypatch: pytest.MonkeyPatch, no_tools: Path) -> None:
    """auto + NVML usable → the NVIDIA collector, even with npu-smi on PATH too."""
    fake_nvml(monkeypatch, usable=True)
    fake_npu_smi_bin(no_tools)
    c = make_collector(args("--backend", "auto"))
    assert isinstance(c, FakeGpus) and c.vendor is Vendor.NVIDIA


@needs_fixtures
def test_auto_takes_npu_smi_when_no_nvml(monkeypatch: pytest.MonkeyPatch, no_tools: Path) -> None:
    """auto + NVML unusable + an answering npu-smi on PATH → the Ascend collector, with the 8 chips the
    table shows (read through the real subprocess runner)."""
    fake_nvml(monkeypatch, usable=False)
    fake_npu_smi_bin(no_tools)
    c = make_collector(args())
    assert isinstance(c, AscendCollector)
    assert [d.index for d in c.inventory()] == list(range(8)) and c.sample()[0].power_w == 102.8


def test_auto_with_nothing_is_no_accelerator(monkeypatch: pytest.MonkeyPatch, no_tools: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """auto + no NVML + no npu-smi → exit 2 and exactly the NO_ACCELERATOR line (it never simulates)."""
    fake_nvml(monkeypatch, usable=False)
    assert main(["run", "--accelerator-type", "nvidia-a100-80g"]) == 2
    assert capsys.readouterr().err == f"suanli-agent: {NO_ACCELERATOR}\n"


def test_auto_with_a_broken_npu_smi_says_why(monkeypatch: pytest.MonkeyPatch, no_tools: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """auto + npu-smi on PATH that fails → exit 2, one line: NO_ACCELERATOR plus npu-smi's own error."""
    fake_nvml(monkeypatch, usable=False)
    fake_npu_smi_bin(no_tools, fail="dcmi module initialize failed. ret is -8005")
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"suanli-agent: {NO_ACCELERATOR} (ascend backend: ") and err.count("\n") == 1
    assert "exited with status 255: dcmi module initialize failed" in err


@pytest.mark.parametrize("backend, setup, phrase", [
    ("nvidia", "unusable", "nvidia backend: NVML: Driver Not Loaded"),
    ("nvidia", "init fails", "nvidia backend: NVML: GPU is lost"),
    ("ascend", "no npu-smi", "ascend backend: npu-smi not found"),
    ("ascend", "npu-smi fails", "ascend backend: `npu-smi info` exited with status 255: dcmi module initialize failed"),
])
def test_explicit_backend_that_cannot_start_exits_2_with_one_line(
        backend: str, setup: str, phrase: str, monkeypatch: pytest.MonkeyPatch, no_tools: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """--backend nvidia|ascend that cannot start: exit 2, one stderr line naming the backend and the reason."""
    fake_nvml(monkeypatch, usable=setup != "unusable",
              collector=lambda *a, **k: FakeGpus(fail="NVML: GPU is lost"))
    if setup == "npu-smi fails":
        fake_npu_smi_bin(no_tools, fail="dcmi module initialize failed. ret is -8005")
    assert main(["run", "--backend", backend, "--accelerator-type", f"{backend}-x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"suanli-agent: {phrase}") and err.count("\n") == 1


@needs_fixtures
def test_real_backend_still_needs_the_accelerator_type(monkeypatch: pytest.MonkeyPatch, no_tools: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A working ascend backend without --accelerator-type: exit 2 naming the flag (heartbeats need it);
    SUANLI_AGENT_ACCELERATOR_TYPE stands in for the flag."""
    fake_npu_smi_bin(no_tools)
    assert main(["run", "--backend", "ascend"]) == 2
    assert "--accelerator-type is required" in capsys.readouterr().err
    monkeypatch.setenv("SUANLI_AGENT_ACCELERATOR_TYPE", "ascend-910b")  # the flag's env form is enough
    assert main(["run", "--backend", "ascend"]) == 2
    assert "no agent token" in capsys.readouterr().err  # got past the type, stopped at the next check


def test_as_a_process_no_traceback(tmp_path: Path) -> None:
    """The real command (own process, PATH without npu-smi): `run --backend ascend` exits 2 with one line on
    stderr and no traceback."""
    proc = subprocess.run([sys.executable, "-m", "agents.main", "run", "--backend", "ascend", "--accelerator-type", "ascend-910b"],
                          capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2],
                          env={"PATH": str(tmp_path), "SUANLI_AGENT_TOKEN": "t"})
    assert proc.returncode == 2
    assert proc.stderr.startswith("suanli-agent: ascend backend: npu-smi not found") and proc.stderr.count("\n") == 1
