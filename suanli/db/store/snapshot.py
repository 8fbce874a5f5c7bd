"""Store: the scheduler's snapshot — everything `decide(snapshot, now)` needs, read in one
short session.

Invariants:
- Free devices are the server's devices minus the `device_claims` rows; shared devices
  (fractional jobs) show what their shares leave; CPUs and memory are what active jobs
  (STARTING, RUNNING, CANCELLING, PREEMPTING) have not taken.
- Usage per project = its stored decayed accumulator seen at `now`, plus the decayed usage
  of its runs still going (from their start to now), in billing units
  (device-seconds × the type's billing weight).
- What an org can pay new holds with (its wallet) = its account balance plus its credit
  limit (running jobs' holds already left the account: quota.settlement), and its
  vouchers' balances.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from quota.types import Wallet, org_cash
from quota.usage import Accumulator, run_usage
from scheduler.policy.fragment import SUANLI_CUT, Workload
from scheduler.types import (
    ACTIVE,
    JobRequest,
    JobStatus,
    NodeView,
    Placement,
    PolicyConfig,
    Resources,
    RunningJob,
    ShareNode,
    Snapshot,
    device_healthy,
    project_key,
)
from suanli.db.models import (
    AcceleratorTypeRow,
    DeviceClaimRow,
    DeviceShareRow,
    JobPlacementRow,
    JobRow,
    LedgerEntryRow,
    NodeRow,
    OrgRow,
    PoolRow,
    ProjectRow,
    UsageRow,
)
from suanli.db.store import billing as billing_store
from suanli.db.store import nodes as node_store
from suanli.db.store import tenancy


@dataclass(frozen=True)
class Loaded:
    """A snapshot plus what applying decisions needs and the policy does not."""

    snapshot: Snapshot
    versions: dict[int, int]  # job id -> version (guards every change decided on this snapshot)
    shown: dict[int, tuple[str, str, datetime | None]]  # pending job -> (reason, code, estimate) stored
    node_ids: dict[str, int]
    grace: dict[int, float]  # active job -> grace seconds


def load_snapshot(s: Session, now: datetime, config: PolicyConfig, half_life_s: float,
                  node_timeout_s: float | None = None) -> Loaded:
    """The policy's snapshot at `now`. A server is schedulable when it is READY (not drained)
    and, with `node_timeout_s`, has sent a heartbeat within that many seconds (else NOT_READY);
    only its devices reported healthy (OK or Warning) are free for new work."""
    t = now.timestamp()
    nodes = list(s.scalars(select(NodeRow).order_by(NodeRow.name)))
    node_names = {n.id: n.name for n in nodes}
    claimed: dict[int, set[int]] = defaultdict(set)
    for node_id, dev in s.execute(select(DeviceClaimRow.node_id, DeviceClaimRow.device_index)):
        claimed[node_id].add(dev)
    shares: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for node_id, dev, milli in s.execute(select(DeviceShareRow.node_id, DeviceShareRow.device_index, DeviceShareRow.milli)):
        shares[node_id][dev] += milli
    orgs = {o.id: o for o in s.scalars(select(OrgRow))}
    pools = {p.id: p for p in s.scalars(select(PoolRow))}
    projects = {p.id: p for p in s.scalars(select(ProjectRow))}
    weights = {a.name: float(a.billing_weight) for a in s.scalars(select(AcceleratorTypeRow))}
    prices = tenancy.current_prices(s, now)

    def pool_of(org_id: int) -> str:
        return pools[orgs[org_id].pool_id].name

    # Active jobs: what they hold, their timelines and their usage so far.
    active = list(s.scalars(select(JobRow).where(JobRow.status.in_([str(x) for x in ACTIVE]))))
    placements: dict[int, list[tuple[int, list[int]]]] = defaultdict(list)
    if active:
        for job_id, node_id, devices in s.execute(
            select(JobPlacementRow.job_id, JobPlacementRow.node_id, JobPlacementRow.devices)
            .where(JobPlacementRow.job_id.in_([j.id for j in active]))
            .order_by(JobPlacementRow.job_id, JobPlacementRow.rank)
        ):
            placements[job_id].append((node_id, devices))
    used_cpu: dict[int, int] = defaultdict(int)
    used_mem: dict[int, int] = defaultdict(int)
    running: list[RunningJob] = []
    live_usage: dict[int, float] = defaultdict(float)
    for j in active:
        for node_id, _ in placements[j.id]:
            used_cpu[node_id] += j.cpus_per_node
            used_mem[node_id] += j.memory_mb_per_node
        started = (j.started_at or j.scheduled_at or now).timestamp()
        devices = sum(len(d) for _, d in placements[j.id])
        if j.accelerator_type:
            units = devices * j.device_milli / 1000 * weights.get(j.accelerator_type, 1.0)
            if j.started_at is not None and started < t:
                live_usage[j.project_id] += run_usage(units, started, t, t, half_life_s)
        running.append(RunningJob(
            id=j.id, org=orgs[j.org_id].name, accelerator_type=j.accelerator_type or "",
            placements=tuple(Placement(node_names[n], tuple(d)) for n, d in placements[j.id]),
            started_at=started, time_limit_s=j.time_limit_s, submitted_at=j.submitted_at.timestamp(),
            project=projects[j.project_id].name, pool=pool_of(j.org_id), priority_class=j.priority_class,
            device_milli=j.device_milli, grace_s=j.grace_s, stop_by=j.stop_by.timestamp() if j.stop_by else None,
        ))
    # Devices whose agent reports them unhealthy (Alarm, Critical, Unknown) take no new work.
    sick = {n.id: {int(d["index"]) for d in (n.devices or []) if not device_healthy(str(d.get("health", "OK")))}
            for n in nodes}
    views = tuple(
        NodeView(
            name=n.name, accelerator_type=n.accelerator_type, device_count=n.device_count,
            free_devices=tuple(i for i in range(n.device_count) if i not in claimed[n.id] and i not in sick[n.id]),
            free_cpus=n.cpus - used_cpu[n.id], free_memory_mb=n.memory_mb - used_mem[n.id],
            # NOT_READY / LOST are stored by the sweep; a fresh heartbeat is what counts.
            schedulable=n.status != node_store.DRAINED and (
                node_timeout_s is None or not node_store.heartbeat_stale(n.last_heartbeat_at, now, node_timeout_s)),
            rack=(n.labels or {}).get("rack") or None,
            shared=tuple(sorted((dev, 1000 - used) for dev, used in shares[n.id].items() if used < 1000 and dev not in sick[n.id])),
        )
        for n in nodes
    )
    pending_rows = list(s.scalars(select(JobRow).where(JobRow.status == str(JobStatus.PENDING))))
    pending = tuple(_request(j, orgs[j.org_id].name, projects[j.project_id].name, pool_of(j.org_id)) for j in pending_rows)
    # The share tree: center -> pools -> orgs -> projects, usage on the projects.
    stored = {u.project_id: Accumulator(u.units, u.as_of.timestamp(), half_life_s) for u in s.scalars(select(UsageRow))}
    tree = [ShareNode("center", None, 1.0)]
    with_orgs = {o.pool_id for o in orgs.values()}
    tree += [ShareNode(f"pool:{p.name}", "center", float(p.shares)) for p in pools.values() if p.id in with_orgs]
    tree += [ShareNode(f"org:{o.name}", f"pool:{pools[o.pool_id].name}", float(o.shares)) for o in orgs.values()]
    for p in projects.values():
        acc = stored.get(p.id)
        usage = (acc.at(max(t, acc.as_of)) if acc else 0.0) + live_usage[p.id]
        tree.append(ShareNode(project_key(orgs[p.org_id].name, p.name), f"org:{orgs[p.org_id].name}", float(p.shares), usage))
    org_quotas, pool_quotas = tenancy.quotas(s)
    balances = dict(
        s.execute(
            select(LedgerEntryRow.account, func.sum(LedgerEntryRow.amount_fen))
            .where(LedgerEntryRow.account.like("org:%:cash")).group_by(LedgerEntryRow.account)
        ).all()
    )
    vouchers = billing_store.all_voucher_balances(s)
    wallets = {o.name: Wallet(int(balances.get(org_cash(o.id), 0) or 0) + o.credit_limit_fen, tuple(vouchers.get(o.id, ())))
               for o in orgs.values()}
    snapshot = Snapshot(
        nodes=views, pending=pending, running=tuple(running), share_tree=tuple(tree),
        quotas=org_quotas, pool_quotas=pool_quotas, classes=tenancy.priority_classes(s),
        prices=prices, wallets=wallets, config=config,
        inactive_orgs={o.name: o.status for o in orgs.values() if o.status != "verified"},
    )
    return Loaded(
        snapshot,
        versions={j.id: j.version for j in [*active, *pending_rows]},
        shown={j.id: (j.reason, j.reason_code, j.estimated_start_at) for j in pending_rows},
        node_ids={n.name: n.id for n in nodes},
        grace={j.id: j.grace_s for j in active},
    )


def _request(j: JobRow, org: str, project: str, pool: str) -> JobRequest:
    return JobRequest(
        id=j.id, org=org,
        resources=Resources(tuple(j.accelerator_types), j.devices_per_node, j.node_count, j.cpus_per_node,
                            j.memory_mb_per_node, j.device_milli),
        submitted_at=j.submitted_at.timestamp(), time_limit_s=j.time_limit_s, project=project, pool=pool,
        priority_class=j.priority_class,
    )


def recent_workload(s: Session, now: datetime, window_s: float, limit: int = 20_000) -> Workload | None:
    """The center's target workload for fragmentation-aware placement: the per-server shapes
    (CPUs, per-device share, devices, accepted types) of the jobs submitted in the last
    `window_s` seconds, at most the `limit` newest, counted into popularity as the FGD paper's
    typical pods (`Workload.from_requests`), every shape kept (`SUANLI_CUT`: the rare ones are
    the big jobs). None when no job was submitted in the window (the policy then places by
    best fit)."""
    since = datetime.fromtimestamp(now.timestamp() - window_s, tz=now.tzinfo)
    rows = s.execute(select(JobRow.cpus_per_node, JobRow.device_milli, JobRow.devices_per_node, JobRow.accelerator_types)
                     .where(JobRow.submitted_at >= since).order_by(JobRow.submitted_at.desc()).limit(limit)).all()
    if not rows:
        return None
    return Workload.from_requests(((cpus, milli if devices else 0, devices, tuple(types or ())) for cpus, milli, devices, types in rows),
                                  threshold=SUANLI_CUT)
