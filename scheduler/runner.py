"""Process supervisor for one job rank: start the command, stream its output to a log,
enforce the time limit, stop it on request, report its state. No Ray here: `launcher.py`
wraps this class in a Ray actor pinned to the job's server and devices.

Invariants:
- The command runs in its own session (process group); every stop signals the whole group,
  so children of the command go too. After the leader exits, stragglers in the group are
  killed, so "ended" means no process of the job is left.
- Stop = `signal` (default SIGTERM) to the group, then SIGKILL after `grace_s` if still alive.
  The time limit uses the same path, counted from the process start.
- `started_at`/`ended_at` are wall-clock epoch seconds taken around the process's life; they
  are what the job is billed for.
- Device visibility comes from the assignment (`devices`), never from Ray's own GPU ids:
  the vendor's variable is overwritten, the other vendor's is removed.
- Where `setpriv` exists, the command gets PDEATHSIG=KILL, so a runner killed without
  warning does not leave its command behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from scheduler.types import RunnerPhase, RunnerState

VISIBILITY_VARS = ("CUDA_VISIBLE_DEVICES", "ASCEND_RT_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES")


@dataclass
class RankSpec:
    """What one rank runs. Plain data so it crosses Ray as a dict."""

    job_id: int
    rank: int
    command: str
    env: dict[str, str]
    working_dir: str
    log_path: str
    time_limit_s: float
    grace_s: float
    visibility_var: str
    devices: list[int] = field(default_factory=list)


def build_env(spec: RankSpec, base: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in base.items() if not k.startswith("RAY_") and k not in VISIBILITY_VARS}
    # The job's python is the cluster's python environment unless the job says otherwise.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "/usr/bin:/bin")
    env.setdefault("PYTHONUNBUFFERED", "1")  # so logs show progress as it happens
    env.update(spec.env)
    env[spec.visibility_var] = ",".join(str(d) for d in spec.devices)
    return env


class ProcessRunner:
    def __init__(self, spec: RankSpec) -> None:
        self.spec = spec
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._exited = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._state = RunnerState(RunnerPhase.STARTING)
        self._stop_requested: str | None = None
        self._stop_grace = spec.grace_s
        self._stop_signal = signal.SIGTERM

    # -------------------------------------------------------------- public API
    def start(self) -> RunnerState:
        """Start the process (idempotent). A launch error ends the runner with `error` set."""
        with self._lock:
            if self._state.phase is not RunnerPhase.STARTING:
                return self._state
        spec = self.spec
        log_path = Path(spec.log_path)
        try:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        except OSError as e:
            return self._fail(f"cannot open log {log_path}: {e}")
        if not os.path.isdir(spec.working_dir):
            log.close()
            return self._fail(f"working_dir {spec.working_dir} does not exist on this server")
        env = build_env(spec, dict(os.environ))
        argv = ["/bin/bash", "-c", spec.command]
        setpriv = shutil.which("setpriv")
        if setpriv:
            argv = [setpriv, "--pdeathsig", "KILL", "--", *argv]
        header = (
            f"[suanli] job {spec.job_id} rank {spec.rank}: {spec.visibility_var}="
            f"{env[spec.visibility_var]} cwd={spec.working_dir}\n"
        )
        log.write(header.encode())
        log.flush()
        try:
            proc = subprocess.Popen(
                argv,
                cwd=spec.working_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as e:
            log.close()
            return self._fail(f"cannot start command: {e}")
        started = time.time()
        log.close()  # the child holds its own descriptor
        running = RunnerState(RunnerPhase.RUNNING, started_at=started, pid=proc.pid)
        with self._lock:
            self._proc = proc
            self._state = running
        threading.Thread(target=self._wait, name=f"job-{spec.job_id}-wait", daemon=True).start()
        threading.Thread(target=self._control, name=f"job-{spec.job_id}-control", daemon=True).start()
        return running  # what start() did; poll() says what happened since

    def poll(self) -> RunnerState:
        with self._lock:
            return self._state

    def stop(self, reason: str = "cancel", grace_s: float | None = None, sig: int = signal.SIGTERM) -> RunnerState:
        """Ask the process to stop: `sig` now, SIGKILL after the grace period."""
        with self._lock:
            if self._state.phase is RunnerPhase.STARTING:
                self._state = RunnerState(RunnerPhase.EXITED, stopped_by=reason, error="stopped before start")
                return self._state
            if self._state.phase is not RunnerPhase.RUNNING or self._stop_requested:
                return self._state
            self._stop_requested = reason
            if grace_s is not None:
                self._stop_grace = grace_s
            self._stop_signal = signal.Signals(sig)
        self._wake.set()
        return self.poll()

    def kill_now(self) -> None:
        """SIGKILL the whole group at once (teardown)."""
        proc = self._proc
        if proc is not None:
            _killpg(proc.pid, signal.SIGKILL)

    # -------------------------------------------------------------- internals
    def _fail(self, error: str) -> RunnerState:
        now = time.time()
        with self._lock:
            self._state = RunnerState(RunnerPhase.EXITED, started_at=None, ended_at=now, error=error)
        try:
            with open(self.spec.log_path, "ab") as log:
                log.write(f"[suanli] launch failed: {error}\n".encode())
        except OSError:
            pass
        return self._state

    def _wait(self) -> None:
        assert self._proc is not None
        rc = self._proc.wait()
        ended = time.time()
        _killpg(self._proc.pid, signal.SIGKILL)  # stragglers left in the job's group
        with self._lock:
            stopped_by = self._stop_requested
            started = self._state.started_at
        how = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit code {rc}"
        note = f" (stopped: {stopped_by})" if stopped_by else ""
        try:  # the footer goes in before the state says EXITED, so a finished job's log is whole
            with open(self.spec.log_path, "ab") as log:
                log.write(f"[suanli] process ended with {how}{note} after {ended - (started or ended):.1f}s\n".encode())
        except OSError:
            pass
        with self._lock:
            self._state = RunnerState(
                RunnerPhase.EXITED,
                started_at=started,
                ended_at=ended,
                exit_code=rc if rc >= 0 else 128 - rc,
                stopped_by=self._stop_requested,
                pid=self._proc.pid,
            )
        self._exited.set()
        self._wake.set()

    def _control(self) -> None:
        """Enforce the time limit and carry out stop requests."""
        assert self._proc is not None
        started = self._state.started_at or time.time()
        deadline = started + self.spec.time_limit_s
        while True:
            remaining = deadline - time.time()
            woke = self._wake.wait(timeout=max(0.0, remaining))
            self._wake.clear()
            with self._lock:
                if self._state.phase is RunnerPhase.EXITED:
                    return
                if not woke and self._stop_requested is None:
                    self._stop_requested = "timeout"
                reason = self._stop_requested
            if reason is not None:
                self._terminate()
                return

    def _terminate(self) -> None:
        assert self._proc is not None
        _killpg(self._proc.pid, self._stop_signal)
        if not self._exited.wait(timeout=self._stop_grace):
            _killpg(self._proc.pid, signal.SIGKILL)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def state_to_dict(state: RunnerState) -> dict[str, object]:
    d = asdict(state)
    d["phase"] = str(state.phase)
    return d


def state_from_dict(d: dict[str, object]) -> RunnerState:
    d = dict(d)
    d["phase"] = RunnerPhase(d["phase"])
    return RunnerState(**d)  # type: ignore[arg-type]
