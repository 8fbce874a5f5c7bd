"""Launchers: how decided jobs become processes. `RayLauncher` is the only scheduler module
that imports ray.

Invariants:
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
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

from scheduler.runner import ProcessRunner, RankSpec, state_from_dict, state_to_dict
from scheduler.types import LaunchSpec, RunnerPhase, RunnerState

log = logging.getLogger(__name__)

NODE_LABEL = "suanli.io/node"


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
    )
    return RankSpec(
        job_id=spec.job_id,
        rank=rank,
        command=spec.command,
        env=env,
        working_dir=spec.working_dir or spec.job_dir,
        log_path=f"{spec.job_dir}/rank-{rank}.log",
        time_limit_s=spec.time_limit_s,
        grace_s=spec.grace_s,
        visibility_var=spec.vendor.visibility_env,
        devices=list(placement.devices),
    )


def fold(states: list[RunnerState]) -> RunnerState:
    """One job state from its ranks' states: running until every rank has exited; the exit
    code is the first failing rank's; a lost rank makes the job lost."""
    if any(s.phase is RunnerPhase.LOST for s in states):
        lost = next(s for s in states if s.phase is RunnerPhase.LOST)
        return RunnerState(RunnerPhase.LOST, error=lost.error)
    starts = [s.started_at for s in states if s.started_at is not None]
    started = min(starts) if starts else None
    if all(s.phase is RunnerPhase.EXITED for s in states):
        failing = [s for s in states if s.error or (s.exit_code or 0) != 0]
        first = failing[0] if failing else states[0]
        return RunnerState(
            RunnerPhase.EXITED,
            started_at=started,
            ended_at=max((s.ended_at for s in states if s.ended_at is not None), default=None),
            exit_code=first.exit_code,
            stopped_by=next((s.stopped_by for s in states if s.stopped_by), None),
            error=first.error,
        )
    if any(s.phase is RunnerPhase.STARTING for s in states):
        return RunnerState(RunnerPhase.STARTING)
    return RunnerState(RunnerPhase.RUNNING, started_at=started, extra={"exited_ranks": sum(s.phase is RunnerPhase.EXITED for s in states)})


class RunnerActor:
    """The Ray actor around one rank's `ProcessRunner` (methods return plain dicts)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.runner = ProcessRunner(RankSpec(**spec))

    def start(self) -> dict[str, object]:
        return state_to_dict(self.runner.start())

    def poll(self) -> dict[str, object]:
        return state_to_dict(self.runner.poll())

    def stop(self, reason: str, grace_s: float) -> dict[str, object]:
        return state_to_dict(self.runner.stop(reason, grace_s))

    def kill_now(self) -> None:
        self.runner.kill_now()


class RayLauncher:
    def __init__(self, address: str = "auto", namespace: str = "suanli", poll_timeout_s: float = 2.0) -> None:
        import ray

        self._ray = ray
        self.namespace = namespace
        self.poll_timeout_s = poll_timeout_s
        if not ray.is_initialized():
            ray.init(address=address, namespace=namespace, log_to_driver=False, logging_level=logging.WARNING)
        self._actor_cls = ray.remote(RunnerActor)
        self._handles: dict[tuple[int, int], Any] = {}

    @staticmethod
    def actor_name(job_id: int, rank: int) -> str:
        return f"suanli-job-{job_id}-{rank}"

    def launch(self, spec: LaunchSpec) -> None:
        share = spec.device_milli / 1000  # a fraction of each device for fractional jobs
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
            )
            n = len(placement.devices) * share
            if spec.vendor.ray_resource == "GPU":
                opts["num_gpus"] = n
            else:
                resources[spec.vendor.ray_resource] = float(n)
            try:
                handle = self._actor_cls.options(resources=resources, **opts).remote(vars(rank_spec(spec, rank)))
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
            if a.get("namespace") == self.namespace and a["name"].startswith("suanli-job-")
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
