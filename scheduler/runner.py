"""Process supervisor for one job rank: start the command, stream its output to a log,
enforce the time limit, stop it on request, report its state. No Ray here: `launcher.py`
wraps this class in a Ray actor pinned to the job's server and devices.

Invariants:
- The command runs in its own session (process group); every stop signals the whole group,
  so children of the command go too. After the leader exits, stragglers in the group are
  killed, so "ended" means no process of the job is left.
- Stop = the job's `stop_signal` (SIGTERM unless the spec says SIGINT, SIGUSR1 or SIGUSR2)
  to the group, then SIGKILL after `grace_s` if still alive. The time limit uses the same
  path, counted from the process start.
- `started_at`/`ended_at` are wall-clock epoch seconds; they are what the job is billed for.
  `ended_at` is when the process ended by itself, or — when we stopped it — when the stop
  signal was sent: the grace period a job spends saving its work is not billed.
- The checkpoint directory (`checkpoint_dir`) and the log's directory exist before the
  command starts; nothing here ever deletes them (they outlive requeues).
- `start` may be given the rendezvous variables (MASTER_ADDR, …), which win over the job's
  own env, and communication hints (HCCL_IF_IP, …), which the job's env may override.
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
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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
    stop_signal: str = "SIGTERM"  # sent on cancel, preemption and timeout (STOP_SIGNALS)
    checkpoint_dir: str = ""  # created before the start when set


# The signals a job may choose as its stop signal (the job spec's `stop_signal`).
STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2")


def build_env(spec: RankSpec, base: Mapping[str, str], rendezvous: Mapping[str, str] | None = None,
              hints: Mapping[str, str] | None = None) -> dict[str, str]:
    """The command's environment, in order of precedence (last wins): the server's own
    environment (less Ray's variables and any device visibility), communication `hints`,
    the job's env (with the SUANLI_* variables), the `rendezvous` variables, and the
    visibility variable from the assignment."""
    env = {k: v for k, v in base.items() if not k.startswith("RAY_") and k not in VISIBILITY_VARS}
    # The job's python is the cluster's python environment unless the job says otherwise.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "/usr/bin:/bin")
    env.setdefault("PYTHONUNBUFFERED", "1")  # so logs show progress as it happens
    env.update(hints or {})
    env.update(spec.env)
    env.update(rendezvous or {})
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
        self._stop_signal = signal.Signals[spec.stop_signal]
        self._starting = False  # a start() is under way (actors may call methods concurrently)
        self._signalled_at: float | None = None  # when the stop signal went out (billing ends there)

    # -------------------------------------------------------------- public API
    def start(self, rendezvous: Mapping[str, str] | None = None, hints: Mapping[str, str] | None = None) -> RunnerState:
        """Start the process (idempotent). A launch error ends the runner with `error` set;
        a stop that came first leaves it stopped."""
        with self._lock:
            if self._state.phase is not RunnerPhase.STARTING or self._starting:
                return self._state
            self._starting = True
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
        if spec.checkpoint_dir:
            try:
                os.makedirs(spec.checkpoint_dir, exist_ok=True)
            except OSError as e:
                log.close()
                return self._fail(f"cannot create the checkpoint directory {spec.checkpoint_dir}: {e}")
        env = build_env(spec, os.environ, rendezvous, hints)
        argv = ["/bin/bash", "-c", spec.command]
        setpriv = shutil.which("setpriv")
        if setpriv:
            argv = [setpriv, "--pdeathsig", "KILL", "--", *argv]
        master = f" MASTER_ADDR={env['MASTER_ADDR']} MASTER_PORT={env['MASTER_PORT']}" if rendezvous else ""
        header = (
            f"[suanli] job {spec.job_id} rank {spec.rank}: {spec.visibility_var}="
            f"{env[spec.visibility_var]}{master} cwd={spec.working_dir}\n"
        )
        with self._lock:
            if self._state.phase is not RunnerPhase.STARTING:  # stopped while we got ready
                log.close()
                return self._state
            log.write(header.encode())
            log.flush()
            proc = self._spawn(argv, env, log)
            if isinstance(proc, str):
                log.close()
                return self._fail_locked(proc)
            started = time.time()
            log.close()  # the child holds its own descriptor
            running = RunnerState(RunnerPhase.RUNNING, started_at=started, pid=proc.pid)
            self._proc = proc
            self._state = running
        threading.Thread(target=self._wait, name=f"job-{spec.job_id}-wait", daemon=True).start()
        threading.Thread(target=self._control, name=f"job-{spec.job_id}-control", daemon=True).start()
        return running  # what start() did; poll() says what happened since

    def _spawn(self, argv: list[str], env: dict[str, str], log: Any) -> subprocess.Popen[bytes] | str:
        """The command in its own session, or why it could not start."""
        try:
            return subprocess.Popen(
                argv,
                cwd=self.spec.working_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as e:
            return f"cannot start command: {e}"

    def poll(self) -> RunnerState:
        with self._lock:
            return self._state

    def stop(self, reason: str = "cancel", grace_s: float | None = None, sig: int | None = None) -> RunnerState:
        """Ask the process to stop: `sig` (default: the spec's stop signal) now, SIGKILL after
        the grace period. Before the start, the runner ends without starting anything."""
        with self._lock:
            if self._state.phase is RunnerPhase.STARTING:
                self._state = RunnerState(RunnerPhase.EXITED, stopped_by=reason, error="stopped before start")
                return self._state
            if self._state.phase is not RunnerPhase.RUNNING or self._stop_requested:
                return self._state
            self._stop_requested = reason
            if grace_s is not None:
                self._stop_grace = grace_s
            if sig is not None:
                self._stop_signal = signal.Signals(sig)
        self._wake.set()
        return self.poll()

    def kill_now(self) -> None:
        """SIGKILL the whole group at once (teardown)."""
        proc = self._proc
        if proc is not None:
            _killpg(proc.pid, signal.SIGKILL)

    def fail_launch(self, error: str) -> RunnerState:
        """End a runner that has not started its process, saying why (e.g. no rendezvous)."""
        with self._lock:
            if self._state.phase is not RunnerPhase.STARTING or self._starting:
                return self._state
            self._starting = True
        return self._fail(error)

    # -------------------------------------------------------------- internals
    def _fail(self, error: str) -> RunnerState:
        with self._lock:
            return self._fail_locked(error)

    def _fail_locked(self, error: str) -> RunnerState:
        if self._state.phase is not RunnerPhase.STARTING:  # stopped meanwhile: that stands
            return self._state
        self._state = RunnerState(RunnerPhase.EXITED, started_at=None, ended_at=time.time(), error=error)
        try:
            with open(self.spec.log_path, "ab") as log:
                log.write(f"[suanli] launch failed: {error}\n".encode())
        except OSError:
            pass
        return self._state

    def _wait(self) -> None:
        assert self._proc is not None
        rc = self._proc.wait()
        died = time.time()
        _killpg(self._proc.pid, signal.SIGKILL)  # stragglers left in the job's group
        with self._lock:
            stopped_by = self._stop_requested
            started = self._state.started_at
            # Billed until the stop signal when we stopped it, not through its grace period.
            ended = min(died, self._signalled_at) if self._signalled_at is not None else died
        how = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit code {rc}"
        note = f" (stopped: {stopped_by})" if stopped_by else ""
        try:  # the footer goes in before the state says EXITED, so a finished job's log is whole
            with open(self.spec.log_path, "ab") as log:
                log.write(f"[suanli] process ended with {how}{note} after {died - (started or died):.1f}s\n".encode())
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
        with self._lock:
            self._signalled_at = time.time()
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
