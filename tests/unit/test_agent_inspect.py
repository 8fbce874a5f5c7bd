"""`suanli-agent inspect`: what an operator sees — from a captured `npu-smi info` output
(`--from-npu-smi FILE`, offline, on real recorded outputs in ../shared/fixtures/ascend) or
from the devices through the same backend `run` builds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agents.main import main

# ../shared next to the checkout, or the workspace's copy (CI may check out elsewhere).
ASCEND = next((d for d in (Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "ascend",
                           Path("/work/shared/fixtures/ascend")) if d.is_dir()), Path("/nonexistent"))
pytestmark = pytest.mark.skipif(not ASCEND.is_dir(), reason="recorded fixtures not present")


def test_inspect_json_reports_chips_processes_and_id_gaps(capsys) -> None:  # type: ignore[no-untyped-def]
    """Invariants: the JSON lists every chip with its health, HBM pair and power as printed
    by npu-smi (NPU ids with their gap: 0, 1, 3, 4), the process row, the version; exit 0."""
    rc = main(["inspect", "--from-npu-smi", str(ASCEND / "npu-smi-info-910b4-24.1.rc3-process.txt"), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and doc["version"] == "24.1.rc3" and doc["npus"] == [0, 1, 3, 4]
    first = doc["chips"][0]
    assert (first["name"], first["health_state"], first["hbm_used_mb"], first["hbm_total_mb"], first["power_w"]) == \
        ("910B4", "OK", 29070, 32768, 90.8)
    assert doc["processes"] == [{"npu_id": 0, "chip_id": 0, "pid": 5063, "name": "python3.10", "memory_mb": 26293}]


def test_inspect_of_a_warning_card_and_of_garbage(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """Invariants: a chip in Warning is reported as such in the table; a file that is not an
    npu-smi output gives exit 1 with an empty result; a missing file gives exit 2 and a
    message naming the option — never a traceback."""
    assert main(["inspect", "--from-npu-smi", str(ASCEND / "npu-smi-info-910a-warning-23.0.rc3.txt")]) == 0
    assert "Warning" in capsys.readouterr().out
    junk = tmp_path / "junk.txt"
    junk.write_text("this is not npu-smi\n| | |\n")
    assert main(["inspect", "--from-npu-smi", str(junk), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["chips"] == []
    assert main(["inspect", "--from-npu-smi", str(tmp_path / "missing.txt")]) == 2
    assert "--from-npu-smi" in capsys.readouterr().err


# ------------------------------------------------------------------ metrics and live inspect


def families(text: str) -> dict[str, list[Any]]:
    """Metric family name -> its samples, through prometheus_client's own parser."""
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_inspect_file_shows_the_metrics_it_would_export(capsys) -> None:  # type: ignore[no-untyped-def]
    """Invariants: `--from-npu-smi` JSON carries the metrics text the agent would serve for that output;
    it parses as Prometheus text; npu_chip_info_utilization has one series per chip with `id` labels 0..3
    (the gap in NPU ids closed), device 2 is NPU 3 (bus 0000:02:00.0) and device 0's HBM used is 29070."""
    assert main(["inspect", "--from-npu-smi", str(ASCEND / "npu-smi-info-910b4-24.1.rc3-process.txt"), "--json",
                 "--node", "npu-7"]) == 0
    fams = families(json.loads(capsys.readouterr().out)["metrics"])
    util = fams["npu_chip_info_utilization"]
    assert [s.labels["id"] for s in util] == ["0", "1", "2", "3"] and {s.value for s in util} == {0.0}
    assert util[2].labels["pcie_bus_info"] == "0000:02:00.0" and util[2].labels["model_name"] == "Ascend910B4"
    assert fams["npu_chip_info_hbm_used_memory"][0].value == 29070
    assert fams["machine_npu_nums"][0].value == 4
    assert {s.labels["node"] for s in fams["suanli_device_utilization_ratio"]} == {"npu-7"}


def test_inspect_file_warning_chip_in_metrics(capsys) -> None:  # type: ignore[no-untyped-def]
    """Invariant: a Warning chip still counts as healthy in the exported metrics (health_status 1)."""
    assert main(["inspect", "--from-npu-smi", str(ASCEND / "npu-smi-info-910a-warning-23.0.rc3.txt"), "--json"]) == 0
    fams = families(json.loads(capsys.readouterr().out)["metrics"])
    assert [(s.labels["id"], s.value) for s in fams["npu_chip_info_health_status"]] == [("0", 1.0)]


def test_inspect_simulated_json(capsys) -> None:  # type: ignore[no-untyped-def]
    """Invariants: `inspect --backend simulated` (the same server flags as `run`) lists every device with its
    inventory and sample, the health of each, no topology (the simulator has none), and the metrics `run`
    would serve: npu-exporter names with id labels for an Ascend type."""
    assert main(["inspect", "--backend", "simulated", "--accelerator-type", "ascend-910b", "--devices", "4",
                 "--node", "sim-1", "--seed", "3", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) >= {"devices", "topology", "health", "metrics"} and doc["backend"] == "simulated"
    assert [d["index"] for d in doc["devices"]] == [0, 1, 2, 3]
    assert {d["model"] for d in doc["devices"]} == {"Ascend910B3"} and {d["memory_total_mib"] for d in doc["devices"]} == {65536}
    assert all(d["sample"]["index"] == d["index"] and 0 <= d["sample"]["utilization_pct"] <= 100 for d in doc["devices"])
    assert doc["health"] == [{"index": i, "health": "OK", "healthy": True, "reason": ""} for i in range(4)]
    assert doc["topology"] is None
    fams = families(doc["metrics"])
    assert [s.labels["id"] for s in fams["npu_chip_info_utilization"]] == ["0", "1", "2", "3"]
    assert fams["machine_npu_nums"][0].value == 4


def test_inspect_nvidia_with_topology(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """Invariants: with the nvidia backend the topology of the collector is in the JSON and the metrics are
    dcgm-exporter's (gpu labels). NVML is a fake here (no GPU on the test machine; see test_agent_backends)."""
    from tests.unit.test_agent_backends import fake_nvml

    fake_nvml(monkeypatch, usable=True)
    assert main(["inspect", "--backend", "nvidia", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["backend"] == "nvidia" and doc["topology"] == [["X", "NV18"], ["NV18", "X"]]
    assert [s.labels["gpu"] for s in families(doc["metrics"])["DCGM_FI_DEV_GPU_UTIL"]] == ["0", "1"]


def test_inspect_live_ascend_text_and_failure(monkeypatch, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """Invariants: `inspect --backend ascend` reads npu-smi like `run` (a script printing the recorded 910B3
    table stands in for it: no Ascend card here) and prints one line per device and the metrics; without
    npu-smi it exits 2 with one line naming the backend, never a traceback."""
    from tests.unit.test_agent_backends import fake_npu_smi_bin

    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["inspect", "--backend", "ascend"]) == 2
    assert capsys.readouterr().err.startswith("suanli-agent: ascend backend: npu-smi not found")
    fake_npu_smi_bin(tmp_path)
    assert main(["inspect", "--backend", "ascend", "--node", "a1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("node a1: 8 ascend device(s) via the ascend backend")
    assert "  0 Ascend910B3 NPU-" in out and "mem 3338/65536 MiB  102.8 W  55 C" in out
    assert 'npu_chip_info_utilization{container_name="",id="7"' in out
