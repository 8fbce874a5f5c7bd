"""What a heartbeat changes besides the node row: device health events and idle allocations.

Device health: a device whose health word is not OK or Warning (`scheduler.types.
device_healthy`) is kept out of placement by the snapshot until a heartbeat reports it
healthy again. Each change between healthy and unhealthy is one node event with the
agent's reason; a heartbeat that changes nothing writes nothing.

Idle allocations: the agent reports, per device, the highest utilization it sampled since
its previous beat. A device in use whose reported peak stays below `IdleRule.threshold_pct`
beat after beat is idle since the first such beat (`idle_since`, kept in the node's device
JSON with the jobs it was idle for). Once that lasts `IdleRule.window_s`, each job on the
device is flagged once per run: `jobs.idle_since` is set and a job event says which devices
and since when (`suanli describe` shows it); with `IdleRule.stop` a RUNNING job is also
cancelled (charged for the time it ran, like any cancel). A flagged job is unflagged, with
an event, when none of its devices on any server is idle any more.

Invariants:
- `track_idle` is pure: the same previous device, report, holders, time and threshold give
  the same result; a device changes hands → its idle clock restarts.
- A device that is free, or whose utilization the agent did not report, is never idle.
- The idle flag is a side column: it does not bump the job's version, so it never makes
  the scheduler's version-guarded apply stale. The stop goes through `apply_transition`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from scheduler.types import JobStatus, device_healthy
from suanli.db.models import JobEventRow, JobPlacementRow, JobRow, NodeRow
from suanli.db.store import jobs as job_store
from suanli.db.store import nodes as node_store


@dataclass(frozen=True)
class IdleRule:
    threshold_pct: float = 5.0
    window_s: float = 1800.0
    stop: bool = False


def health_changes(before: dict[int, dict[str, Any]], after: Iterable[dict[str, Any]]) -> list[tuple[int, str, str]]:
    """(device, kind, message) for each device whose health crossed healthy/unhealthy;
    a device seen for the first time counts as coming from healthy."""
    out = []
    for d in after:
        i = int(d["index"])
        was = device_healthy(str(before.get(i, {}).get("health", "OK")))
        now_ok = device_healthy(str(d.get("health", "OK")))
        if was and not now_ok:
            why = f": {d['health_reason']}" if d.get("health_reason") else ""
            out.append((i, "device_unhealthy", f"device {i} {d.get('health')}{why}; kept out of placement"))
        elif now_ok and not was:
            out.append((i, "device_healthy", f"device {i} healthy again ({d.get('health')}); placeable"))
    return out


def track_idle(prev: dict[str, Any] | None, dev: dict[str, Any], holders: tuple[int, ...], now: datetime,
               threshold_pct: float) -> dict[str, Any]:
    """`dev` with `idle_since` (ISO time or None) and `idle_jobs` set (see the module doc)."""
    util = dev.get("utilization_pct")
    out = dict(dev)
    if not holders or util is None or float(util) >= threshold_pct:
        out["idle_since"], out["idle_jobs"] = None, []
    elif prev and prev.get("idle_since") and tuple(prev.get("idle_jobs") or ()) == holders:
        out["idle_since"], out["idle_jobs"] = prev["idle_since"], list(holders)
    else:
        out["idle_since"], out["idle_jobs"] = now.isoformat(), list(holders)
    return out


def idle_past(dev: dict[str, Any], now: datetime, window_s: float) -> bool:
    since = dev.get("idle_since")
    return bool(since) and (now - datetime.fromisoformat(since)) >= timedelta(seconds=window_s)


def _idle_devices_of(s: Session, job_id: int, now: datetime, window_s: float) -> list[tuple[str, int, str]]:
    """(node, device, idle since) for each of the job's current devices idle past the window."""
    out = []
    places = s.execute(select(NodeRow.name, NodeRow.devices, JobPlacementRow.devices)
                       .join(NodeRow, NodeRow.id == JobPlacementRow.node_id).where(JobPlacementRow.job_id == job_id))
    for node, devices, mine in places:
        for d in devices or []:
            if int(d["index"]) in (mine or []) and job_id in (d.get("idle_jobs") or []) and idle_past(d, now, window_s):
                out.append((node, int(d["index"]), str(d["idle_since"])))
    return out


def flag_idle_jobs(s: Session, job_ids: Iterable[int], now: datetime, rule: IdleRule,
                   suspects: Iterable[int] | None = None) -> list[int]:
    """Flag or unflag the given jobs from their devices' idle state; returns the newly flagged.
    With `suspects` (the jobs the caller saw idle past the window), only those and the jobs
    flagged already are looked at: a heartbeat of a busy server reads one row set, nothing more."""
    ids = sorted(set(job_ids))
    if not ids:
        return []
    stmt = select(JobRow.id, JobRow.status, JobRow.version, JobRow.grace_s, JobRow.idle_since).where(JobRow.id.in_(ids))
    if suspects is not None:
        stmt = stmt.where(or_(JobRow.idle_since.is_not(None), JobRow.id.in_(sorted(set(suspects)))))
    flagged = []
    for job_id, status, version, grace_s, idle_since in s.execute(stmt).all():
        if JobStatus(status) not in (JobStatus.RUNNING, JobStatus.STARTING):
            continue
        idle = _idle_devices_of(s, job_id, now, rule.window_s)
        if idle and idle_since is None:
            since = min(datetime.fromisoformat(t) for _, _, t in idle)
            where = ", ".join(f"{n}/{d}" for n, d, _ in idle)
            msg = (f"idle allocation: device(s) {where} below {rule.threshold_pct:g}% utilization since "
                   f"{since.isoformat(timespec='seconds')} ({(now - since).total_seconds() / 60:.0f} min)")
            s.execute(update(JobRow).where(JobRow.id == job_id).values(idle_since=since)
                      .execution_options(synchronize_session=False))
            s.add(JobEventRow(job_id=job_id, at=now, from_status=None, to_status=None, reason=msg))
            flagged.append(job_id)
            if rule.stop and status == str(JobStatus.RUNNING):
                job_store.apply_transition(s, job_id, version, JobStatus.RUNNING, JobStatus.CANCELLING,
                                           f"stopped by the center: {msg}",
                                           now, stop_by=now + timedelta(seconds=grace_s))
        elif not idle and idle_since is not None:
            s.execute(update(JobRow).where(JobRow.id == job_id).values(idle_since=None)
                      .execution_options(synchronize_session=False))
            s.add(JobEventRow(job_id=job_id, at=now, from_status=None, to_status=None,
                              reason="devices in use again: no longer an idle allocation"))
    return flagged


def apply_heartbeat(s: Session, row: NodeRow, before: dict[int, dict[str, Any]], was_status: str | None,
                    holders: dict[int, tuple[int, ...]], now: datetime, rule: IdleRule) -> None:
    """After `upsert_node`: node events for health and readiness, idle tracking, job flags."""
    if was_status is None:
        node_store.add_event(s, row.id, "registered", f"registered with {len(row.devices or [])} devices", now)
    elif was_status in (node_store.NOT_READY, node_store.LOST):
        node_store.add_event(s, row.id, "ready", f"heartbeats again (was {was_status}); placeable", now)
    for dev, kind, msg in health_changes(before, row.devices or []):
        node_store.add_event(s, row.id, kind, msg, now, device=dev)
    row.devices = [track_idle(before.get(int(d["index"])), d, holders.get(int(d["index"]), ()), now, rule.threshold_pct)
                   for d in row.devices or []]
    s.flush()
    suspects = {j for d in row.devices if idle_past(d, now, rule.window_s) for j in d.get("idle_jobs") or ()}
    flag_idle_jobs(s, {j for js in holders.values() for j in js}, now, rule, suspects)
    s.flush()
