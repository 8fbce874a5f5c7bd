"""`suanli up` as a user runs it: the whole center in the foreground, the example job run
through the CLI to SUCCEEDED with its logs and charge, a clean Ctrl-C, and a second start
that reuses the data. Real processes throughout (Ray, uvicorn, scheduler, agents)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_ports(n: int) -> int:
    """A base port with n consecutive free ports after it."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + n < 65000 and all(_free(base + i) for i in range(n)):
            return base
    raise RuntimeError("no free port range")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


class Up:
    def __init__(self, data: Path, env: dict[str, str], port: int, agent_port: int) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [str(BIN / "suanli"), "up", "--data-dir", str(data), "--port", str(port), "--agent-port", str(agent_port)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_ready(self, timeout: float = 180) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            text = "".join(self.lines)
            if "Stop: Ctrl-C" in text:
                return text
            assert self.proc.poll() is None, text
            time.sleep(0.3)
        raise AssertionError("".join(self.lines))

    def interrupt(self, timeout: float = 90) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=timeout)


def test_up_runs_the_example_and_stops_cleanly(tmp_path: Path) -> None:
    """Invariants: `suanli up` prints the API, agents and a token and writes the CLI config;
    the README's commands then run the example to SUCCEEDED with logs and a charge; agents
    serve dcgm-exporter metrics; Ctrl-C exits 0 leaving no process behind; a second `up`
    on the same data dir reuses the data and the same token."""
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "cfg"), PATH=f"{BIN}:{os.environ['PATH']}")
    env.pop("SUANLI_SERVER", None)
    env.pop("SUANLI_TOKEN", None)
    port, agent_port = free_ports(1), free_ports(3)
    data = tmp_path / "data"
    up = Up(data, env, port, agent_port)
    try:
        banner = up.wait_ready()
        token = re.search(r"token\s+(sl_\S+)", banner).group(1)  # type: ignore[union-attr]
        assert f"http://127.0.0.1:{port}/docs" in banner
        assert (tmp_path / "cfg" / "suanli" / "config.toml").read_text().count(token) == 1

        run = subprocess.run([str(BIN / "suanli"), "submit", "examples/train-numpy.yaml", "--wait"], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=180)
        assert run.returncode == 0, run.stdout + run.stderr
        job_id = re.search(r"submitted job (\d+)", run.stdout).group(1)  # type: ignore[union-attr]
        logs = subprocess.run([str(BIN / "suanli"), "logs", job_id], env=env, capture_output=True, text=True, timeout=60)
        assert "test_acc" in logs.stdout
        bal = subprocess.run([str(BIN / "suanli"), "balance"], env=env, capture_output=True, text=True, timeout=60)
        assert "charge" in bal.stdout and f"job {job_id}" in bal.stdout

        metrics = httpx.get(f"http://127.0.0.1:{agent_port}/metrics", timeout=10).text
        assert "DCGM_FI_DEV_GPU_UTIL" in metrics
        assert "npu_chip_info_utilization" in httpx.get(f"http://127.0.0.1:{agent_port + 2}/metrics", timeout=10).text

        tree = descendants(up.proc.pid)
        assert len(tree) > 5  # ray processes, api, scheduler, agents
        assert up.interrupt() == 0, "".join(up.lines)
        time.sleep(1.0)
        left = [p for p in tree if alive(p)]
        assert not left, [Path(f"/proc/{p}/cmdline").read_bytes()[:200] for p in left if alive(p)]
    finally:
        if up.proc.poll() is None:
            os.killpg(up.proc.pid, signal.SIGKILL)

    again = Up(data, env, port, agent_port)
    try:
        banner2 = again.wait_ready()
        assert token in banner2
        jobs = httpx.get(f"http://127.0.0.1:{port}/v1/jobs", headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
        assert [j["id"] for j in jobs["items"]] == [int(job_id)]
        assert again.interrupt() == 0
    finally:
        if again.proc.poll() is None:
            os.killpg(again.proc.pid, signal.SIGKILL)
