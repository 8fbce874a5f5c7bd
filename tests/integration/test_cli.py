"""The `suanli` CLI through the real API over HTTP (uvicorn on loopback), with the
scheduler running on the local Ray cluster: submit --wait, jobs, describe, logs, cancel,
balance, and errors that name the field with stable exit codes."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from typer.testing import CliRunner

from api.app import create_app
from suanli.cli import app

pytestmark = [pytest.mark.ray, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(ray_center) -> Iterator[str]:  # type: ignore[no-untyped-def]
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(ray_center.settings, ray_center.db), host="127.0.0.1", port=port,
                                        log_level="warning"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    deadline = time.time() + 20
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    t.join(timeout=10)


@pytest.fixture
def cli(server, ray_center, tmp_path):  # type: ignore[no-untyped-def]
    member = ray_center.new_org()
    env = {"SUANLI_SERVER": server, "SUANLI_TOKEN": member.token, "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
           "COLUMNS": "200"}

    def run(*args: str, expect: int = 0) -> str:
        result = CliRunner().invoke(app, list(args), env=env)
        assert result.exit_code == expect, (args, result.exit_code, result.output)
        return result.output

    run.member = member  # type: ignore[attr-defined]
    return run


def test_submit_wait_logs_describe_balance(cli) -> None:  # type: ignore[no-untyped-def]
    """Invariants: `submit --wait` on the example exits 0 when the job SUCCEEDED; `logs`
    prints the training output; `describe --json` shows events and the charge; `balance`
    shows the charge for that job; `jobs --json` lists it."""
    out = cli("submit", str(REPO / "examples" / "train-numpy.yaml"), "--wait")
    job_id = int(out.split("submitted job ")[1].split()[0])
    assert "SUCCEEDED" in out
    assert "test_acc" in cli("logs", str(job_id))
    desc = json.loads(cli("describe", str(job_id), "--json"))
    assert desc["status"] == "SUCCEEDED" and desc["working_dir"] == str(REPO / "examples")
    assert [e["to_status"] for e in desc["events"]][-1] == "SUCCEEDED"
    bal = json.loads(cli("balance", "--json"))
    mine = [t for t in bal["recent"] if t["job_id"] == job_id]
    assert sum(t["amount_fen"] for t in mine) == -desc["cost_fen"]  # hold, charge, release: net the cost
    assert [t["amount_fen"] for t in mine if t["kind"] == "charge"] == [-desc["cost_fen"]]
    assert [j["id"] for j in json.loads(cli("jobs", "--json"))] == [job_id]
    human = cli("describe", str(job_id))
    assert "Events:" in human and "SUCCEEDED" in human and "fairshare" in human
    assert "¥" in cli("balance")


def test_cancel_and_failed_wait_exit_codes(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Invariants: `--wait` exits 1 for a failed job; `cancel` moves a running job to
    CANCELLING/CANCELLED; a second cancel after the end exits 5 (conflict)."""
    failing = tmp_path / "fail.yaml"
    failing.write_text("name: f\nresources: {accelerator: nvidia-a100-80g, cpus_per_node: 1, memory_per_node: 256}\n"
                       "command: exit 3\n")
    out = cli("submit", str(failing), "--wait", expect=1)
    assert "FAILED" in out and "exit code 3" in out
    sleeper = tmp_path / "sleep.yaml"
    sleeper.write_text("name: s\nresources: {accelerator: nvidia-a100-80g, cpus_per_node: 1, memory_per_node: 256}\n"
                       "command: sleep 600\n")
    job = json.loads(cli("submit", str(sleeper), "--json"))
    out = cli("cancel", str(job["id"]))
    assert "CANCEL" in out
    deadline = time.time() + 30
    while json.loads(cli("describe", str(job["id"]), "--json"))["status"] != "CANCELLED":
        assert time.time() < deadline
        time.sleep(0.3)
    cli("cancel", str(job["id"]), expect=5)


def test_follow_streams_the_log_until_the_job_ends(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Invariants: `logs -f` on a running job prints lines as they come and returns when the
    job ends, with every line once; `submit --follow` does the same from submission."""
    spec = tmp_path / "tick.yaml"
    spec.write_text("name: tick\nresources: {accelerator: nvidia-a100-80g, cpus_per_node: 1, memory_per_node: 256}\n"
                    "command: for i in 1 2 3 4; do echo tick$i; sleep 0.4; done\n")
    job = json.loads(cli("submit", str(spec), "--json"))
    out = cli("logs", str(job["id"]), "-f")
    assert [line for line in out.splitlines() if line.startswith("tick")] == ["tick1", "tick2", "tick3", "tick4"]
    assert "process ended with exit code 0" in out
    out = cli("submit", str(spec), "--follow")
    assert out.count("tick4") == 1 and "SUCCEEDED" in out


def test_errors_name_the_field_and_use_stable_exit_codes(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Invariants: bad specs exit 2 naming the field; malformed YAML exits 2; unknown jobs
    exit 4; no traceback is ever printed."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: b\nresources: {accelerator: nvidia-a100-80g, devices_per_node: -1}\ncommand: x\n")
    out = cli("submit", str(bad), expect=2)
    assert "resources.devices_per_node" in out and "Traceback" not in out
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [oops\n")
    assert "not valid YAML" in cli("submit", str(broken), expect=2)
    missing = cli("describe", "999999", expect=4)
    assert "not found" in missing and "[job_not_found]" in missing
    assert "cannot read" in cli("submit", str(tmp_path / "missing.yaml"), expect=2)


def test_unreachable_server_exits_6(tmp_path: Path) -> None:
    """Invariant: with no API listening, commands exit 6 with a hint, not a traceback."""
    env = {"SUANLI_SERVER": f"http://127.0.0.1:{free_port()}", "SUANLI_TOKEN": "x", "XDG_CONFIG_HOME": str(tmp_path)}
    result = CliRunner().invoke(app, ["jobs"], env=env)
    assert result.exit_code == 6 and "cannot reach" in result.output and "Traceback" not in result.output
