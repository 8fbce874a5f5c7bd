"""`suanli-agent inspect --from-npu-smi FILE`: what an operator sees from a captured
`npu-smi info` output, offline — on real recorded outputs (../shared/fixtures/ascend)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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
