"""Crash recovery: make Ray agree with the database after a scheduler restart (and now and then).

Invariants:
- Launch order (`SchedulerLoop._apply_starts` / `_start_in`): the PENDING→STARTING change, the device claims
  and the hold commit in one transaction *before* the launcher creates any runner. A crash
  between the two leaves a STARTING job without runner, which the reconciler requeues (the
  launcher reports it LOST at the next poll, or the starting timeout fires) — never a runner
  without a claim.
- Ending a run commits first (status, claim release, settlement under the ledger key
  `charge:job:<id>[:run:<n>]`, one `billing_runs` row), then tears the runners down; a crash
  in between leaves runners of a job that no longer holds devices. Those, and any runner
  whose job is unknown to the database, are orphans: `recover` kills them. Runners of
  STARTING/RUNNING/CANCELLING/PREEMPTING jobs are never killed here; the reconciler owns them.
- A runner is created and then asked to `start` in two Ray calls; a scheduler killed between
  them (or before Ray delivered the queued `start`, which dies with its caller) leaves a
  runner that would wait for ever. A new leader therefore asks every runner of a STARTING job
  to start again (`resume`; the runner's `start` is idempotent); one that never even got
  created is still caught by the starting timeout.
- Runners are listed *before* the database is read: a runner exists only after its job's
  STARTING commit, so a runner listed is always judged against a database state at least as
  new as its claim (no live job's runner is mistaken for an orphan).
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Protocol

from scheduler.launcher import Launcher
from scheduler.types import JobStatus
from suanli.db.engine import Database
from suanli.db.store import jobs as job_store

log = logging.getLogger(__name__)

# `RayLauncher.actor_name`: suanli-job-<job id>-<rank>
RUNNER_NAME = re.compile(r"^suanli-job-(\d+)-(\d+)$")


class RunnerDirectory(Protocol):
    def runners(self) -> dict[int, set[int]]:
        """Every runner that exists now: job id -> ranks."""

    def resume(self, job_id: int, ranks: set[int]) -> None:
        """Ask the job's existing runners to start their process (a no-op where started)."""


@dataclass
class Recovery:
    orphans: dict[int, set[int]] = field(default_factory=dict)  # killed: job -> ranks
    resumed: list[int] = field(default_factory=list)  # STARTING jobs whose runners were asked to start


class RayRunners:
    """The named per-rank runner actors in one Ray namespace (`RayLauncher`'s), from the GCS.
    `SupervisorLauncher` is its own directory (its supervisors' ranks, and these actors)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def runners(self) -> dict[int, set[int]]:
        import ray  # already connected by RayLauncher; imported here so tests need no Ray

        out: dict[int, set[int]] = defaultdict(set)
        for a in ray.util.list_named_actors(all_namespaces=True):
            m = RUNNER_NAME.match(a["name"]) if a.get("namespace") == self.namespace else None
            if m:
                out[int(m.group(1))].add(int(m.group(2)))
        return dict(out)

    def resume(self, job_id: int, ranks: set[int]) -> None:
        import ray

        for rank in sorted(ranks):
            try:
                ray.get_actor(f"suanli-job-{job_id}-{rank}", namespace=self.namespace).start.remote()
            except ValueError:  # gone meanwhile: the reconciler sees it lost
                continue


def recover(db: Database, launcher: Launcher, directory: RunnerDirectory, resume: bool) -> Recovery:
    """Kill orphan runners; with `resume` (a new leader), ask the runners of STARTING jobs to
    start, in case the previous leader died before its `start` reached them."""
    found = directory.runners()  # first: see the module docstring
    out = Recovery()
    if not found:
        return out
    with db.begin() as s:
        active = job_store.active_ids(s, list(found))
        starting = job_store.status_of(s, list(active), JobStatus.STARTING) if resume else set()
    out.orphans = kill_orphans(launcher, {job: ranks for job, ranks in found.items() if job not in active})
    for job in sorted(starting):
        directory.resume(job, found[job])
        out.resumed.append(job)
    return out


def kill_orphans(launcher: Launcher, orphans: dict[int, set[int]]) -> dict[int, set[int]]:
    """Kill the runners of jobs that hold no devices in the database (not STARTING, RUNNING,
    CANCELLING or PREEMPTING, or unknown). `recover` reads that through the leader's fenced
    database first: a loop that lost the lease kills nothing."""
    for job, ranks in sorted(orphans.items()):
        log.warning("job %s: runner ranks %s exist on Ray but the job holds no devices; killing them", job, sorted(ranks))
        launcher.release(job, max(ranks) + 1)
    return orphans
