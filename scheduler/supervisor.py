"""Fast launches: one long-lived supervisor actor per server owns the processes of every job
rank placed there (`Supervisor`), and `SupervisorLauncher` drives them. Starting a rank is a
method call on a warm actor (milliseconds), not a new Ray worker process per rank (~0.4 s
each on 2 cores, serialised: `RayLauncher`, the "actors" launcher, kept as the fallback).

Invariants:
- One detached, named supervisor per server (`suanli-server-<name>` in the launcher's
  namespace), pinned with the `suanli.io/node` label selector, num_cpus=0, threaded. It is
  created on the first launch to its server (`get_if_exists`), so a restarted scheduler
  finds the same one by name with its ranks; it is never restarted by Ray (max_restarts=0):
  a supervisor that died (its node died, or it was killed) lost its processes (PDEATHSIG),
  and every rank it held is reported LOST, which the reconciler's node-loss / runner-lost
  paths settle.
- A rank is keyed (job, rank) and carries its run (`restart_count`): `start` of the same run
  is idempotent (also `resume`), a newer run replaces an older one (killing it: the database
  settled the old run before it launched the new one), an older run never replaces a newer.
- Device safety moved here from Ray: `RayLauncher` made Ray refuse a second job on one device
  through per-device `dev-<i>` resources, but Ray resources are held by an actor, i.e. one
  worker process per rank — the cost this module removes. The supervisor of a server sees
  every live rank on it, so it refuses (after `device_wait_s`, for a release still in
  flight) to start a rank whose devices overlap a live rank's — whole devices, or shares
  summing above 1000 milli — and the launch fails saying which job holds them. The command
  still sees exactly its assigned devices (`ProcessRunner` sets the visibility variable).
  CPUs and memory are accounted by the scheduler's claims only, no longer by Ray.
- Processes are spawned by long-lived threads of the supervisor (`_spawner`): the command's
  PDEATHSIG follows the *thread* that forked it, so a short-lived thread would kill it.
- Every rank gets the torchrun rendezvous (`rendezvous_env`, `comm_hints`, as before): rank
  0's supervisor picks a free port for (job, run) when rank 0 registers and answers
  `rendezvous(job, run)`; the other ranks' supervisors ask it by name (retrying within
  `rendezvous_timeout_s`, else a launch failure) before starting their process.
- Shipped code (`gcs://_suanli_code_<sha256>.zip`, uploaded by the launcher as before): a
  per-actor runtime_env cannot serve a shared supervisor, so the supervisor reads the zip from
  Ray's GCS and unpacks a fresh copy per rank and run into a node-local folder
  (`<tmp>/suanli-code/job-<id>-rank-<r>-run-<n>`, removed at release) and runs the command
  there: like Ray's own unpacked working_dir, neither the user's folder nor the job folder.
- `start`, `stop`, `release` return at once; a supervisor's actor methods run concurrently,
  so Ray does not order them: the launcher counts a rank as STARTING until its `start`
  call has returned, and a late `release` only removes runs up to the one it was meant for.
- Polls are one call per server, at most one in flight each; `prefetch` sends them early
  (the loop: at the start of a cycle) and `poll` collects them. An answer vouches for a
  rank being absent (LOST) only for jobs whose start had been answered when it was asked
  and that were not released since (a released job may be relaunched as a newer run the
  older question knew nothing of); a rank of a server that has not answered is STARTING
  (no action), never LOST, unless its supervisor died.
"""

from __future__ import annotations

import io
import logging
import shutil
import tempfile
import threading
import time
import zipfile
from collections import defaultdict
from collections.abc import Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scheduler.launcher import (
    NODE_LABEL,
    RUNNER_PREFIX,
    LaunchError,
    RayLauncher,
    comm_hints,
    fold,
    free_port,
    rank_spec,
    rendezvous_env,
    wait_rendezvous,
)
from scheduler.runner import ProcessRunner, RankSpec, state_from_dict, state_to_dict
from scheduler.types import LaunchSpec, RunnerPhase, RunnerState, Vendor

log = logging.getLogger(__name__)

SUPERVISOR_PREFIX = "suanli-server-"
FULL_MILLI = 1000  # one whole device


def supervisor_name(server: str) -> str:
    """The named supervisor actor of one server."""
    return f"{SUPERVISOR_PREFIX}{server}"


@dataclass
class _Rank:
    spec: RankSpec
    run: int
    nnodes: int
    vendor: Vendor
    milli: int  # share of each of its devices (1000 = whole)
    master: str  # rank 0's server
    code_uri: str | None
    runner: ProcessRunner
    claimed: bool = False  # its devices are counted against other ranks
    code_dir: str | None = None

    def live(self) -> bool:
        return self.runner.poll().phase is not RunnerPhase.EXITED


class Supervisor:
    """The process owner of one server (a Ray actor in production; plain object in unit
    tests). Methods take and return plain data so they cross Ray."""

    def __init__(self, server: str, namespace: str = "suanli", rendezvous_timeout_s: float = 60.0,
                 device_wait_s: float = 5.0, ip: str | None = None) -> None:
        if ip is None:
            import ray

            ip = ray.util.get_node_ip_address()
        self.server = server
        self.namespace = namespace
        self.rendezvous_timeout_s = rendezvous_timeout_s
        self.device_wait_s = device_wait_s
        self.ip = ip
        self._lock = threading.Lock()
        self._ranks: dict[tuple[int, int], _Rank] = {}
        self._ports: dict[tuple[int, int], int] = {}  # (job, run) -> MASTER_PORT, on rank 0's server
        # Long-lived spawning threads: see the module docstring (PDEATHSIG).
        self._spawner = ThreadPoolExecutor(max_workers=4, thread_name_prefix="suanli-spawn")

    # ------------------------------------------------------------------ actor API
    def ping(self) -> str:
        return self.server

    def start(self, spec: dict[str, Any], run: int, nnodes: int, vendor: str, milli: int, master: str,
              code_uri: str | None = None) -> dict[str, object]:
        """Register one rank and start it in the background; returns its state now."""
        rs = RankSpec(**spec)
        key = (rs.job_id, rs.rank)
        with self._lock:
            old = self._ranks.get(key)
            if old is not None and old.run >= run:  # the same run again (resume), or a stale older call
                return state_to_dict(old.runner.poll())
            rank = _Rank(rs, run, nnodes, Vendor(vendor), milli, master, code_uri, ProcessRunner(rs))
            self._ranks[key] = rank
            if rs.rank == 0:
                self._ports[(rs.job_id, run)] = free_port()
        if old is not None:
            self._discard(old)
        threading.Thread(target=self._launch, args=(rank,), name=f"job-{rs.job_id}-launch", daemon=True).start()
        return state_to_dict(rank.runner.poll())

    def resume(self, job_id: int) -> None:
        """Idempotent start: every rank of the job was started by `start` itself (registration
        and start are one call), so there is nothing left to resend."""

    def poll(self, job_ids: Collection[int]) -> dict[int, dict[int, dict[str, object]]]:
        """Every rank of these jobs that this server holds: job -> rank -> state."""
        wanted = set(job_ids)
        out: dict[int, dict[int, dict[str, object]]] = defaultdict(dict)
        with self._lock:
            ranks = [(k, r) for k, r in self._ranks.items() if k[0] in wanted]
        for (job, rank), r in ranks:
            out[job][rank] = {**state_to_dict(r.runner.poll()), "run": r.run}
        return dict(out)

    def stop(self, job_id: int, reason: str, grace_s: float) -> None:
        for r in self._of(job_id):
            r.runner.stop(reason, grace_s)

    def kill_now(self, job_id: int) -> None:
        for r in self._of(job_id):
            r.runner.kill_now()

    def release(self, job_id: int, upto_run: int | None = None) -> int:
        """Kill and forget the job's ranks (of runs ≤ `upto_run`; all when None)."""
        with self._lock:
            gone = [k for k, r in self._ranks.items() if k[0] == job_id and (upto_run is None or r.run <= upto_run)]
            ranks = [self._ranks.pop(k) for k in gone]
            for key in [k for k in self._ports if k[0] == job_id and (upto_run is None or k[1] <= upto_run)]:
                del self._ports[key]
        for r in ranks:
            self._discard(r)
        return len(ranks)

    def rendezvous(self, job_id: int, run: int) -> tuple[str, int] | None:
        """On rank 0's server: (its address as Ray sees it, the job's port); None until rank 0
        of that run has registered here."""
        with self._lock:
            port = self._ports.get((job_id, run))
        return None if port is None else (self.ip, port)

    def runners(self) -> list[tuple[int, int]]:
        """Every (job, rank) held here, whatever its phase, until released."""
        with self._lock:
            return sorted(self._ranks)

    def stop_all(self, grace_s: float) -> int:
        """Stop every rank (reason "shutdown"), wait up to `grace_s` for the processes, kill
        what is left and forget them all; returns how many ranks there were."""
        with self._lock:
            ranks = list(self._ranks.values())
        for r in ranks:
            r.runner.stop("shutdown", grace_s)
        deadline = time.monotonic() + grace_s + 1
        while any(r.live() for r in ranks) and time.monotonic() < deadline:
            time.sleep(0.1)
        with self._lock:
            self._ranks.clear()
            self._ports.clear()
        for r in ranks:
            self._discard(r)
        return len(ranks)

    # ------------------------------------------------------------------ internals
    def _of(self, job_id: int) -> list[_Rank]:
        with self._lock:
            return [r for k, r in self._ranks.items() if k[0] == job_id]

    def _discard(self, r: _Rank) -> None:
        r.runner.stop("released", 0.0)  # a rank not started yet never starts
        r.runner.kill_now()
        if r.code_dir:
            shutil.rmtree(r.code_dir, ignore_errors=True)

    def _launch(self, r: _Rank) -> None:
        """Rendezvous, shipped code, device check, then the spawn on a long-lived thread."""
        try:
            addr, port = self._master(r)
            if r.code_uri:
                r.spec.working_dir = r.code_dir = self._unpack(r)
            self._claim(r)
        except LaunchError as e:
            r.runner.fail_launch(str(e))
            return
        except Exception as e:  # noqa: BLE001 - whatever it was, the rank must end saying why
            log.exception("job %s rank %s: launch failed", r.spec.job_id, r.spec.rank)
            r.runner.fail_launch(f"{type(e).__name__}: {e}")
            return
        env = rendezvous_env(r.spec.rank, r.nnodes, len(r.spec.devices), addr, port)
        self._spawner.submit(r.runner.start, env, comm_hints(r.vendor, self.ip)).result()

    def _master(self, r: _Rank) -> tuple[str, int]:
        """The job's rendezvous: our own for rank 0, else asked of rank 0's supervisor (which
        may not have registered rank 0 yet: retried until the timeout)."""
        job, run = r.spec.job_id, r.run
        if r.master == self.server:
            got = self.rendezvous(job, run)
            if got is not None:
                return got
        import ray

        def ask(left: float) -> tuple[str, int] | None:
            if r.master == self.server:
                return self.rendezvous(job, run)
            return ray.get(ray.get_actor(supervisor_name(r.master), namespace=self.namespace).rendezvous.remote(job, run),
                           timeout=left)

        return wait_rendezvous(ask, self.rendezvous_timeout_s, lambda: r.runner.poll().phase is RunnerPhase.STARTING,
                               not_found=f"no supervisor on {r.master} yet", no_answer=f"the supervisor on {r.master} did not answer",
                               gone=f"rank 0's supervisor on {r.master} is gone", poll_s=0.1, initially="rank 0 not registered")

    def _unpack(self, r: _Rank) -> str:
        """A fresh node-local copy of the shipped code for this rank and run."""
        from ray.experimental.internal_kv import _internal_kv_get

        data = _internal_kv_get(r.code_uri)
        if data is None:
            raise LaunchError(f"shipped code {r.code_uri} is not in Ray's GCS")
        target = Path(tempfile.gettempdir()) / "suanli-code" / f"job-{r.spec.job_id}-rank-{r.spec.rank}-run-{r.run}"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:  # member paths were checked at upload
                z.extractall(target)
        except (zipfile.BadZipFile, OSError) as e:
            raise LaunchError(f"shipped code {r.code_uri} cannot be unpacked: {e}") from e
        return str(target)

    def _busy(self, r: _Rank) -> list[str]:
        """Devices of `r` that live claimed ranks would overfill with `r`'s share (lock held)."""
        out = []
        for d in r.spec.devices:
            holders = [o for o in self._ranks.values() if o is not r and o.claimed and d in o.spec.devices and o.live()]
            if sum(o.milli for o in holders) + r.milli > FULL_MILLI:
                who = ", ".join(f"job {o.spec.job_id} rank {o.spec.rank}" for o in holders)
                out.append(f"device {d} ({who})")
        return out

    def _claim(self, r: _Rank) -> None:
        """Count the rank's devices as taken, waiting up to `device_wait_s` for them (a
        release may still be on its way); refuse with the holders named otherwise."""
        deadline = time.monotonic() + self.device_wait_s
        while True:
            with self._lock:
                busy = self._busy(r)
                if not busy:
                    r.claimed = True
                    return
            if r.runner.poll().phase is not RunnerPhase.STARTING:
                raise LaunchError("stopped before start")
            if time.monotonic() >= deadline:
                raise LaunchError(f"on {self.server}: {'; '.join(busy)} in use — the supervisor refuses overlapping "
                                  "ranks (the database and the server disagree)")
            time.sleep(0.05)


class SupervisorLauncher(RayLauncher):
    """The Launcher protocol (and `servers_down`, the runner directory for recovery,
    `stop_all`) over one supervisor per server. Jobs still run by per-rank runner actors
    (`RayLauncher`'s, e.g. from before a switch of `ray_launcher`) are listed, polled and
    killed too, so a switch of launcher across a restart loses nothing."""

    def __init__(self, address: str = "auto", namespace: str = "suanli", poll_timeout_s: float = 2.0,
                 rendezvous_timeout_s: float = 60.0, device_wait_s: float = 5.0) -> None:
        super().__init__(address, namespace, poll_timeout_s, rendezvous_timeout_s)
        import ray

        self.device_wait_s = device_wait_s
        self._sup_cls = ray.remote(Supervisor)
        self._sups: dict[str, Any] = {}  # server -> supervisor handle
        self._where: dict[int, dict[int, str]] = {}  # job -> rank -> server
        self._runs: dict[int, int] = {}  # job -> the run this launcher launched last
        self._pending: dict[tuple[int, int], Any] = {}  # start calls not yet answered
        self._polls: dict[str, tuple[Any, set[int]]] = {}  # at most one poll in flight per server
        self._legacy: set[int] = set()  # jobs with per-rank runner actors

    @staticmethod
    def supervisor_name(server: str) -> str:
        return supervisor_name(server)

    def _supervisor(self, server: str) -> Any:
        h = self._sups.get(server)
        if h is None:
            h = self._sup_cls.options(
                name=supervisor_name(server), namespace=self.namespace, get_if_exists=True, lifetime="detached",
                label_selector={NODE_LABEL: server}, num_cpus=0, max_restarts=0, max_task_retries=0,
                max_concurrency=64,  # poll/stop/rendezvous answered while ranks start
            ).remote(server, self.namespace, self.rendezvous_timeout_s, self.device_wait_s)
            self._sups[server] = h
        return h

    def _discover(self) -> None:
        """Every supervisor in the namespace (after a restart the launcher knows none)."""
        for a in self._ray.util.list_named_actors(all_namespaces=True):
            name = a["name"]
            if a.get("namespace") == self.namespace and name.startswith(SUPERVISOR_PREFIX):
                server = name[len(SUPERVISOR_PREFIX):]
                if server not in self._sups:
                    try:
                        self._sups[server] = self._ray.get_actor(name, namespace=self.namespace)
                    except ValueError:
                        continue

    def _drop(self, server: str) -> None:
        self._sups.pop(server, None)
        self._polls.pop(server, None)

    # ------------------------------------------------------------------ Launcher
    def launch(self, spec: LaunchSpec) -> None:
        code_uri = self._code_uri(spec.code_zip) if spec.code_zip else None
        master = spec.placements[0].node
        self._where[spec.job_id] = {r: p.node for r, p in enumerate(spec.placements)}
        self._runs[spec.job_id] = spec.restart_count
        for rank, p in enumerate(spec.placements):
            try:
                h = self._supervisor(p.node)
            except ValueError as e:  # Ray refused the actor's options or name
                raise LaunchError(f"no supervisor on {p.node}: {e}") from e
            self._pending[(spec.job_id, rank)] = h.start.remote(
                vars(rank_spec(spec, rank)), spec.restart_count, len(spec.placements), str(spec.vendor),
                spec.device_milli, master, code_uri)

    def poll(self, jobs: Mapping[int, int]) -> dict[int, RunnerState]:
        ray = self._ray
        legacy = {j: n for j, n in jobs.items() if j in self._legacy}
        out = super().poll(legacy) if legacy else {}
        mine = {j: n for j, n in jobs.items() if j not in self._legacy}
        if not mine:
            return out
        per_rank: dict[tuple[int, int], RunnerState] = {}
        starts = {self._pending[k]: k for k in self._pending if k[0] in mine}
        if starts:  # start calls answered (or failed) since the last poll
            ready, _ = ray.wait(list(starts), num_returns=len(starts), timeout=0)
            for ref in ready:
                key = starts[ref]
                del self._pending[key]
                try:
                    ray.get(ref)
                except ray.exceptions.RayActorError as e:
                    self._drop(self._where.get(key[0], {}).get(key[1], ""))
                    per_rank[key] = RunnerState(RunnerPhase.LOST, error=f"supervisor died: {type(e).__name__}")
        unknown = [j for j in mine if j not in self._where]
        if unknown:
            self._discover()
        asks: dict[str, set[int]] = defaultdict(set)
        for job in mine:
            for server in (set(self._where[job].values()) if job in self._where else set(self._sups)):
                if server in self._sups:
                    asks[server].add(job)
        self._ask(asks)
        refs = {self._polls[s][0]: s for s in asks}
        answered: dict[str, set[int]] = {}
        dead: set[str] = set()
        if refs:
            ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=self.poll_timeout_s)
            for ref in ready:
                server = refs[ref]
                _, ids = self._polls.pop(server)
                try:
                    got = ray.get(ref)
                except ray.exceptions.RayActorError:
                    dead.add(server)
                    self._drop(server)
                    continue
                answered[server] = ids
                for job, ranks in got.items():
                    for rank, st in ranks.items():
                        run = st.pop("run")
                        if (job, rank) in self._pending or run < self._runs.get(job, run):
                            continue  # a newer run's start is on its way: that one counts
                        per_rank.setdefault((job, rank), state_from_dict(st))
                        self._where.setdefault(job, {})[rank] = server
        for job, n in mine.items():
            states = []
            for rank in range(n):
                st = per_rank.get((job, rank))
                if st is None:
                    st = self._missing(job, rank, answered, dead)
                states.append(st)
            out[job] = fold(states)
        return out

    def prefetch(self) -> None:
        """Ask every server holding ranks this launcher knows of for their states now, so
        that the answers travel while the caller does other work (the loop calls this at the
        start of a cycle, `poll` collects them at its end): the Ray round trips no longer add
        to the cycle. Nothing is waited for here; a server with a poll still in flight is not
        asked again."""
        asks: dict[str, set[int]] = defaultdict(set)
        for job, where in self._where.items():
            if job not in self._legacy:
                for server in where.values():
                    if server in self._sups:
                        asks[server].add(job)
        self._ask(asks)

    def _ask(self, asks: Mapping[str, set[int]]) -> None:
        """One poll call per server (not per rank) unless one is in flight already."""
        starting = {j for j, _ in self._pending}
        for server, ids in asks.items():
            if server not in self._polls:
                # An answer vouches only for jobs whose start had been answered when it was
                # asked: a start still on its way may run after the poll on a threaded actor.
                self._polls[server] = (self._sups[server].poll.remote(sorted(ids)), set(ids - starting))

    def _missing(self, job: int, rank: int, answered: dict[str, set[int]], dead: set[str]) -> RunnerState:
        """A rank no supervisor reported this time: still starting, or lost."""
        if (job, rank) in self._pending:
            return RunnerState(RunnerPhase.STARTING)
        server = self._where.get(job, {}).get(rank)
        if server is not None:
            if server in dead or server not in self._sups:
                return RunnerState(RunnerPhase.LOST, error=f"the supervisor on {server} died")
            if job in answered.get(server, ()):
                return RunnerState(RunnerPhase.LOST, error=f"no runner on Ray (not on {server}'s supervisor)")
            return RunnerState(RunnerPhase.STARTING)  # it did not answer in time
        if all(job in answered.get(s, ()) for s in self._sups):  # (none at all: lost too)
            return RunnerState(RunnerPhase.LOST, error="no runner on Ray")
        return RunnerState(RunnerPhase.STARTING)

    def _servers_of(self, job_id: int) -> set[str]:
        where = self._where.get(job_id)
        if where is None:
            self._discover()
            return set(self._sups)
        return set(where.values())

    def stop(self, job_id: int, ranks: int, reason: str, grace_s: float) -> None:
        if job_id in self._legacy:
            super().stop(job_id, ranks, reason, grace_s)
        for server in self._servers_of(job_id):
            if server in self._sups:
                self._sups[server].stop.remote(job_id, reason, grace_s)

    def release(self, job_id: int, ranks: int) -> None:
        if job_id in self._legacy:
            super().release(job_id, ranks)
            self._legacy.discard(job_id)
        run = self._runs.pop(job_id, None)
        for server in self._servers_of(job_id):
            if server in self._sups:
                self._sups[server].release.remote(job_id, run)
        self._where.pop(job_id, None)
        for _, vouched in self._polls.values():  # an answer asked before this cannot speak for a later run
            vouched.discard(job_id)
        for rank in range(max(ranks, 1)):
            self._pending.pop((job_id, rank), None)

    # ------------------------------------------------------------------ recovery (RunnerDirectory)
    def runners(self) -> dict[int, set[int]]:
        """Every rank held by a supervisor, plus per-rank runner actors, by job."""
        ray = self._ray
        self._discover()
        out: dict[int, set[int]] = defaultdict(set)
        refs = {h.runners.remote(): s for s, h in self._sups.items()}
        if refs:
            ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=self.poll_timeout_s)
            for ref in ready:
                try:
                    for job, rank in ray.get(ref):
                        out[job].add(rank)
                        self._where.setdefault(job, {})[rank] = refs[ref]
                except ray.exceptions.RayActorError:
                    self._drop(refs[ref])
        for a in ray.util.list_named_actors(all_namespaces=True):
            name = a["name"]
            if a.get("namespace") == self.namespace and name.startswith(RUNNER_PREFIX):
                job, _, rank = name[len(RUNNER_PREFIX):].partition("-")
                if job.isdigit() and rank.isdigit():
                    out[int(job)].add(int(rank))
                    self._legacy.add(int(job))
        return dict(out)

    def resume(self, job_id: int, ranks: set[int]) -> None:
        if job_id in self._legacy:
            for rank in sorted(ranks):
                h = self._handle(job_id, rank)
                if h is not None:
                    h.start.remote()
        for server in self._servers_of(job_id):
            if server in self._sups:
                self._sups[server].resume.remote(job_id)

    def stop_all(self, grace_s: float) -> int:
        """Stop every rank of every supervisor (and per-rank runner) in the namespace, then
        kill the supervisors; returns how many ranks there were."""
        ray = self._ray
        n = super().stop_all(grace_s)
        self._discover()
        refs = {h.stop_all.remote(grace_s): s for s, h in self._sups.items()}
        if refs:
            ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=grace_s + 5)
            for ref in ready:
                try:
                    n += int(ray.get(ref))
                except ray.exceptions.RayActorError:
                    pass
        for h in self._sups.values():
            ray.kill(h, no_restart=True)
        self._sups.clear()
        self._polls.clear()
        return n


def make_launcher(kind: str, address: str = "auto", namespace: str = "suanli") -> RayLauncher:
    """The launcher `ray_launcher` names: "supervisor" (one actor per server) or "actors"
    (one actor per rank)."""
    if kind == "supervisor":
        return SupervisorLauncher(address, namespace)
    if kind == "actors":
        return RayLauncher(address, namespace)
    raise ValueError(f"ray_launcher must be 'supervisor' or 'actors', not {kind!r}")
