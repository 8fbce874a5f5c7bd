"""Launchers: how decided jobs become processes. The Launcher protocol, what every rank's
process is given (`rank_spec`, `rendezvous_env`, `comm_hints`), how ranks fold into one job
state, and `RayLauncher`, the "actors" launcher (`ray_launcher: actors`): one Ray actor per
rank. The default, `scheduler.supervisor.SupervisorLauncher`, builds on it with one actor per
server (a worker process per rank is what made this path slow: ~0.4 s per rank on 2 cores).
Only these two modules of the scheduler import ray.

Invariants of `RayLauncher`:
- One detached, named runner actor per rank (`suanli-job-<id>-<rank>` in the suanli
  namespace), so a restarted scheduler finds its runners by name.
- A runner asks Ray for exactly its assignment: the vendor's device count (`num_gpus` or the
  `NPU` resource), one `dev-<i>` resource per assigned device, CPUs and memory, and a label
  selector on `suanli.io/node` = the server's name (a fractional job asks for its share of
  `dev-<i>`). Ray therefore refuses to put two jobs on one device even if the database
  were wrong; the command still sees the assigned device
  numbers (the runner overwrites the visibility variable), never Ray's own GPU ids.
- Calls that start or stop work return at once; `poll` gathers every runner's state in one
  `ray.wait` with a timeout, so one slow actor does not stall the scheduling cycle.
- No placement group: the label selector plus the per-device resources pin each rank to
  exactly its server and devices, and the scheduler claimed every device of the gang in the
  database before `launch`, so all ranks' resources are free and the gang starts whole.
- Every rank's command gets the torchrun rendezvous (`rendezvous_env`): rank 0's runner picks
  a free port on its server when it is created and answers `rendezvous()`; the other ranks
  ask it (by actor name, within `rendezvous_timeout_s`, else a launch failure) before they
  start their process. A single-node job gets the same variables, on its own server.
- The runner actors are threaded (`max_concurrency`), so `poll` and `stop` are answered while
  a rank waits for its rendezvous.
- Shipped code (`LaunchSpec.code_zip`): the zip is put in Ray's GCS once per content
  (`gcs://_suanli_code_<sha256>.zip`, uploaded again if Ray has garbage-collected it) and
  each runner gets it as its runtime_env `working_dir`: Ray unpacks it on the runner's server
  and the command runs there (`RankSpec.working_dir` empty = the runner's own directory).
- A server is *down on Ray* (`servers_down`) when Ray's node table has a dead node carrying
  its `suanli.io/node` label and no live one: a removed or crashed Ray node, told apart from
  a crashed runner (whose node is still alive) and from a server Ray never had.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from scheduler.runner import ProcessRunner, RankSpec, state_from_dict, state_to_dict
from scheduler.types import LaunchSpec, RunnerPhase, RunnerState, Vendor

log = logging.getLogger(__name__)

NODE_LABEL = "suanli.io/node"
RUNNER_PREFIX = "suanli-job-"  # RayLauncher's per-rank actors: suanli-job-<job id>-<rank>


def device_resource(index: int) -> str:
    """The custom resource each Ray node advertises once per device."""
    return f"dev-{index}"


class LaunchError(Exception):
    pass


class Launcher(Protocol):
    def launch(self, spec: LaunchSpec) -> None:
        """Start the job's runners (returns before the processes start)."""

    def poll(self, jobs: Mapping[int, int]) -> dict[int, RunnerState]:
        """State of each job (job id -> number of ranks); ranks are folded into one state."""

    def stop(self, job_id: int, ranks: int, reason: str, grace_s: float) -> None:
        """Signal the job's processes; SIGKILL follows after `grace_s`."""

    def release(self, job_id: int, ranks: int) -> None:
        """Tear down the job's runners and free their Ray resources."""


@runtime_checkable
class NodeWatch(Protocol):
    """A launcher that can tell which servers' engine nodes died (RayLauncher). Launchers
    without one (the simulator, test fakes) never report a dead server."""

    def servers_down(self, servers: Collection[str]) -> set[str]:
        """The servers among `servers` whose node died and has not come back."""


def rendezvous_env(node_rank: int, nnodes: int, nproc_per_node: int, master_addr: str, master_port: int) -> dict[str, str]:
    """torchrun's rendezvous variables for one server's rank. WORLD_SIZE has torchrun's
    meaning: every process of the job when each server runs one per device (nodes × devices
    per node); RANK is the server's rank (= NODE_RANK): the global rank when a server runs
    one process, and what torchrun overwrites for the workers it starts."""
    return {
        "MASTER_ADDR": master_addr,
        "MASTER_PORT": str(master_port),
        "WORLD_SIZE": str(nnodes * nproc_per_node),
        "RANK": str(node_rank),
        "NODE_RANK": str(node_rank),
        "NNODES": str(nnodes),
        "NPROC_PER_NODE": str(nproc_per_node),
        "LOCAL_WORLD_SIZE": str(nproc_per_node),
    }


def comm_hints(vendor: Vendor, node_ip: str) -> dict[str, str]:
    """Collective-library settings we know for sure (the job's env may override them):
    Ascend's HCCL takes the address its root listens on from HCCL_IF_IP, and this server's
    address as Ray reaches it is the right one. NCCL gets nothing: its interface
    (NCCL_SOCKET_IFNAME, NCCL_IB_HCA) depends on the center's network and is set on the Ray
    nodes' environment, which the command inherits, or in the job's env."""
    return {"HCCL_IF_IP": node_ip} if vendor is Vendor.ASCEND else {}


def wait_rendezvous(ask: Callable[[float], tuple[str, int] | None], timeout_s: float, starting: Callable[[], bool], *,
                    not_found: str, no_answer: str, gone: str, poll_s: float, initially: str | None = None) -> tuple[str, int]:
    """Rank 0's (address, port), asked with `ask(seconds left)` until `timeout_s`: a missing
    actor (ValueError) or no answer is retried, None (rank 0 not registered yet) too; a dead
    one, the timeout, or the rank leaving STARTING (`starting()` false: stopped meanwhile) is
    a LaunchError saying which. Shared by the supervisor and the per-rank actor launchers."""
    import ray

    deadline = time.monotonic() + timeout_s
    last = initially or not_found
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise LaunchError(f"no rendezvous from rank 0 within {timeout_s:g}s ({last})")
        try:
            got = ask(left)
            if got is not None:
                return str(got[0]), int(got[1])
        except ValueError:  # not registered yet
            last = not_found
        except ray.exceptions.GetTimeoutError:
            last = no_answer
        except ray.exceptions.RayActorError as e:
            raise LaunchError(f"{gone} ({type(e).__name__})") from e
        if not starting():
            raise LaunchError("stopped while waiting for the rendezvous")
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))


def free_port() -> int:
    """A TCP port free on this server now (the OS's choice, as torchrun does it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def checkpoint_dir(job_dir: str) -> str:
    """The job's persistent directory: `<jobs_dir>/<id>/checkpoint`, the same for every run."""
    return f"{job_dir}/checkpoint"


def rank_spec(spec: LaunchSpec, rank: int) -> RankSpec:
    placement = spec.placements[rank]
    env = dict(spec.env)
    env.update(
        SUANLI_JOB_ID=str(spec.job_id),
        SUANLI_JOB_NAME=spec.name,
        SUANLI_ORG=spec.org,
        SUANLI_NODE=placement.node,
        SUANLI_ACCELERATOR_TYPE=spec.accelerator_type,
        SUANLI_DEVICES=",".join(map(str, placement.devices)),
        SUANLI_RANK=str(rank),
        SUANLI_NNODES=str(len(spec.placements)),
        SUANLI_RESTART_COUNT=str(spec.restart_count),
        SUANLI_DEVICE_FRACTION=f"{spec.device_milli / 1000:g}",
        SUANLI_CHECKPOINT_DIR=checkpoint_dir(spec.job_dir),
    )
    return RankSpec(
        job_id=spec.job_id,
        rank=rank,
        command=spec.command,
        env=env,
        # Empty: the runner's own directory, where Ray unpacked the shipped code.
        working_dir="" if spec.code_zip else spec.working_dir or spec.job_dir,
        log_path=f"{spec.job_dir}/rank-{rank}.log",
        time_limit_s=spec.time_limit_s,
        grace_s=spec.grace_s,
        visibility_var=spec.vendor.visibility_env,
        devices=list(placement.devices),
        stop_signal=spec.stop_signal,
        checkpoint_dir=checkpoint_dir(spec.job_dir),
    )


def failed_rank(states: list[RunnerState]) -> int | None:
    """The first rank (by end time) that failed by itself — exited non-zero or could not
    launch — rather than being stopped by us; None if none did."""
    failed = [
        (s.ended_at if s.ended_at is not None else float("inf"), r)
        for r, s in enumerate(states)
        if s.phase is RunnerPhase.EXITED and s.stopped_by is None and (s.error or (s.exit_code or 0) != 0)
    ]
    return min(failed)[1] if failed else None


def fold(states: list[RunnerState]) -> RunnerState:
    """One job state from its ranks' states: running until every rank has exited; the exit
    code is the first failing rank's (`failed_rank`, named in `extra["failed_rank"]` as
    soon as it fails, so the others can be stopped); a lost rank makes the job lost."""
    if any(s.phase is RunnerPhase.LOST for s in states):
        lost = next(s for s in states if s.phase is RunnerPhase.LOST)
        return RunnerState(RunnerPhase.LOST, error=lost.error)
    starts = [s.started_at for s in states if s.started_at is not None]
    started = min(starts) if starts else None
    bad = failed_rank(states)
    extra: dict[str, object] = {"ranks": len(states)}
    if bad is not None:
        extra["failed_rank"] = bad
    if all(s.phase is RunnerPhase.EXITED for s in states):
        failing = [s for s in states if s.error or (s.exit_code or 0) != 0]
        first = states[bad] if bad is not None else failing[0] if failing else states[0]
        return RunnerState(
            RunnerPhase.EXITED,
            started_at=started,
            ended_at=max((s.ended_at for s in states if s.ended_at is not None), default=None),
            exit_code=first.exit_code,
            stopped_by=next((s.stopped_by for s in states if s.stopped_by), None),
            error=first.error,
            extra=extra,
        )
    extra["exited_ranks"] = sum(s.phase is RunnerPhase.EXITED for s in states)
    if any(s.phase is RunnerPhase.STARTING for s in states):
        return RunnerState(RunnerPhase.STARTING, extra=extra)
    return RunnerState(RunnerPhase.RUNNING, started_at=started, extra=extra)


class RunnerActor:
    """The Ray actor around one rank's `ProcessRunner` (methods return plain dicts). Rank 0
    picks the job's MASTER_PORT when it is created; the others ask it in `start`."""

    def __init__(self, spec: dict[str, Any], nnodes: int, vendor: str, master: str | None = None,
                 namespace: str = "suanli", rendezvous_timeout_s: float = 60.0) -> None:
        import ray

        self.spec = RankSpec(**spec)
        if not self.spec.working_dir:  # shipped code: Ray started this actor in its unpacked copy
            self.spec.working_dir = os.getcwd()
        self.runner = ProcessRunner(self.spec)
        self.nnodes = nnodes
        self.vendor = Vendor(vendor)
        self.master = master  # rank 0's actor name (None for rank 0 itself)
        self.namespace = namespace
        self.rendezvous_timeout_s = rendezvous_timeout_s
        self.ip = ray.util.get_node_ip_address()
        self.port = free_port() if master is None else 0

    def rendezvous(self) -> tuple[str, int]:
        """Rank 0: (its server's address as Ray sees it, the port it chose)."""
        return self.ip, self.port

    def _master(self) -> tuple[str, int]:
        """Ask rank 0's actor for the rendezvous, retrying until the timeout (rank 0's actor
        may still be being created)."""
        import ray

        if self.master is None:
            return self.rendezvous()
        master = self.master

        def ask(left: float) -> tuple[str, int]:
            return ray.get(ray.get_actor(master, namespace=self.namespace).rendezvous.remote(), timeout=left)

        return wait_rendezvous(ask, self.rendezvous_timeout_s, lambda: self.runner.poll().phase is RunnerPhase.STARTING,
                               not_found="rank 0's runner not found", no_answer="rank 0's runner did not answer",
                               gone="rank 0's runner is gone", poll_s=0.2)

    def start(self) -> dict[str, object]:
        try:
            addr, port = self._master()
        except LaunchError as e:
            return state_to_dict(self.runner.fail_launch(str(e)))
        nproc = len(self.spec.devices)
        env = rendezvous_env(self.spec.rank, self.nnodes, nproc, addr, port)
        return state_to_dict(self.runner.start(env, comm_hints(self.vendor, self.ip)))

    def poll(self) -> dict[str, object]:
        return state_to_dict(self.runner.poll())

    def stop(self, reason: str, grace_s: float) -> dict[str, object]:
        return state_to_dict(self.runner.stop(reason, grace_s))

    def kill_now(self) -> None:
        self.runner.kill_now()


class RayLauncher:
    def __init__(self, address: str = "auto", namespace: str = "suanli", poll_timeout_s: float = 2.0,
                 rendezvous_timeout_s: float = 60.0) -> None:
        import ray

        self._ray = ray
        self.namespace = namespace
        self.poll_timeout_s = poll_timeout_s
        self.rendezvous_timeout_s = rendezvous_timeout_s
        if not ray.is_initialized():
            ray.init(address=address, namespace=namespace, log_to_driver=False, logging_level=logging.WARNING)
        self._actor_cls = ray.remote(RunnerActor)
        self._handles: dict[tuple[int, int], Any] = {}

    @staticmethod
    def actor_name(job_id: int, rank: int) -> str:
        return f"{RUNNER_PREFIX}{job_id}-{rank}"

    def _code_uri(self, zip_path: str) -> str:
        """The shipped code's package in Ray's GCS, uploaded when Ray does not have it (first
        use, or garbage-collected since: packages no live actor references are dropped).
        Ray's runtime_env accepts local paths only in `ray.init`, so we upload it ourselves
        through Ray's packaging module — what `ray.init(runtime_env=…)` does."""
        from ray._private.runtime_env import packaging

        try:
            data = Path(zip_path).read_bytes()
        except OSError as e:
            raise LaunchError(f"shipped code {zip_path} cannot be read: {e}") from e
        uri = f"gcs://_suanli_code_{hashlib.sha256(data).hexdigest()}.zip"
        if not packaging.package_exists(uri):
            packaging.upload_package_to_gcs(uri, data)
        return uri

    def launch(self, spec: LaunchSpec) -> None:
        share = spec.device_milli / 1000  # a fraction of each device for fractional jobs
        env_opts: dict[str, Any] = {}
        if spec.code_zip:
            env_opts["runtime_env"] = {"working_dir": self._code_uri(spec.code_zip)}
        for rank, placement in enumerate(spec.placements):
            resources = {device_resource(d): share for d in placement.devices}
            opts: dict[str, Any] = dict(
                name=self.actor_name(spec.job_id, rank),
                namespace=self.namespace,
                lifetime="detached",
                num_cpus=spec.cpus_per_node,
                memory=spec.memory_mb_per_node * 1024 * 1024,
                label_selector={NODE_LABEL: placement.node},
                max_restarts=0,
                max_task_retries=0,
                max_concurrency=4,  # poll/stop answered while start waits for the rendezvous
                **env_opts,
            )
            n = len(placement.devices) * share
            if spec.vendor.ray_resource == "GPU":
                opts["num_gpus"] = n
            else:
                resources[spec.vendor.ray_resource] = float(n)
            try:
                master = None if rank == 0 else self.actor_name(spec.job_id, 0)
                handle = self._actor_cls.options(resources=resources, **opts).remote(
                    vars(rank_spec(spec, rank)), len(spec.placements), str(spec.vendor), master,
                    self.namespace, self.rendezvous_timeout_s)
            except ValueError as e:  # e.g. the name is taken by a runner that is still alive
                raise LaunchError(str(e)) from e
            handle.start.remote()
            self._handles[(spec.job_id, rank)] = handle

    def _handle(self, job_id: int, rank: int) -> Any | None:
        key = (job_id, rank)
        if key not in self._handles:
            try:
                self._handles[key] = self._ray.get_actor(self.actor_name(job_id, rank), namespace=self.namespace)
            except ValueError:
                return None
        return self._handles[key]

    def poll(self, jobs: Mapping[int, int]) -> dict[int, RunnerState]:
        ray = self._ray
        per_rank: dict[tuple[int, int], RunnerState] = {}
        refs: dict[Any, tuple[int, int]] = {}
        for job_id, ranks in jobs.items():
            for rank in range(ranks):
                h = self._handle(job_id, rank)
                if h is None:
                    per_rank[(job_id, rank)] = RunnerState(RunnerPhase.LOST, error="no runner on Ray")
                else:
                    refs[h.poll.remote()] = (job_id, rank)
        if refs:
            ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=self.poll_timeout_s)
            for ref in ready:
                key = refs[ref]
                try:
                    per_rank[key] = state_from_dict(ray.get(ref))
                except ray.exceptions.RayActorError as e:
                    self._handles.pop(key, None)
                    per_rank[key] = RunnerState(RunnerPhase.LOST, error=f"runner died: {type(e).__name__}")
        out: dict[int, RunnerState] = {}
        for job_id, ranks in jobs.items():
            # A rank that did not answer in time is still being created or is busy: STARTING.
            out[job_id] = fold([per_rank.get((job_id, r), RunnerState(RunnerPhase.STARTING)) for r in range(ranks)])
        return out

    def stop(self, job_id: int, ranks: int, reason: str, grace_s: float) -> None:
        for rank in range(ranks):
            h = self._handle(job_id, rank)
            if h is not None:
                h.stop.remote(reason, grace_s)

    def servers_down(self, servers: Collection[str]) -> set[str]:
        """Servers whose Ray node (the one labelled `suanli.io/node=<server>`) is dead in
        Ray's node table with no live node carrying the label (a restarted server's new node
        brings it back). A server Ray never had is not down: it was never up."""
        alive: set[str] = set()
        dead: set[str] = set()
        for node in self._ray.nodes():
            name = (node.get("Labels") or {}).get(NODE_LABEL)
            if name:
                (alive if node.get("Alive") else dead).add(name)
        return (dead - alive) & set(servers)

    def release(self, job_id: int, ranks: int) -> None:
        for rank in range(ranks):
            h = self._handle(job_id, rank)
            self._handles.pop((job_id, rank), None)
            if h is None:
                continue
            try:
                self._ray.get(h.kill_now.remote(), timeout=self.poll_timeout_s)
            except Exception:  # noqa: BLE001 - the runner may be gone already; kill it anyway
                pass
            self._ray.kill(h, no_restart=True)

    def stop_all(self, grace_s: float) -> int:
        """Stop every runner in the namespace, waiting up to `grace_s` for the processes to
        exit before killing them (used when the whole local center shuts down)."""
        import time

        ray = self._ray
        names = [
            a["name"]
            for a in ray.util.list_named_actors(all_namespaces=True)
            if a.get("namespace") == self.namespace and a["name"].startswith(RUNNER_PREFIX)
        ]
        handles = []
        for name in names:
            try:
                handles.append(ray.get_actor(name, namespace=self.namespace))
            except ValueError:
                continue
        for h in handles:
            h.stop.remote("shutdown", grace_s)
        deadline = time.time() + grace_s + 1
        waiting = list(handles)
        while waiting and time.time() < deadline:
            still = []
            for h in waiting:
                try:
                    if ray.get(h.poll.remote(), timeout=1.0)["phase"] != "EXITED":
                        still.append(h)
                except Exception:  # noqa: BLE001 - dead or unresponsive: nothing to wait for
                    pass
            waiting = still
            if waiting:
                time.sleep(0.2)
        for h in handles:
            try:
                ray.get(h.kill_now.remote(), timeout=1.0)
            except Exception:  # noqa: BLE001
                pass
            ray.kill(h, no_restart=True)
        return len(handles)
