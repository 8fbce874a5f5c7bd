"""The center's state as Prometheus metrics, read from the database at scrape time (served by
the API's `/metrics`; the catalogue with units and labels is docs/metrics.md).

Queue, allocation, capacity, fair share, quotas, nodes and money are facts in the database,
so any API replica can report them and none needs the scheduler's memory. What only a
process knows (cycle time, decisions, queue waits, leadership) is exported by that process
(`scheduler.metrics`).

Invariants:
- One collection reads the database in one short transaction and is cached for `ttl_s`
  seconds: scrapes from several Prometheus servers (or a dashboard refresh storm) cost one
  read per `ttl_s`, and a scrape never waits on another scrape's read for long.
- Bounded cardinality: labels are orgs, projects, pools, accelerator types, programs, nodes
  and statuses — never job ids, users or tokens.
- Money is exported in integer fen (`_fen` in the name); a family is a counter only when it
  never decreases (charges and subsidy are sums over settled runs, which are append-only).
- A failing read (database down) yields only `suanli_center_metrics_up 0`, never an error:
  the scrape succeeds and the alert on it fires.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import func, select

from quota.settlement import bill_from_json
from quota.types import org_cash
from scheduler.policy.fairshare import fair_tree, level_fairshares
from scheduler.types import ACTIVE, JobStatus, PolicyConfig, device_healthy
from suanli.db.engine import Database
from suanli.db.models import BillingRunRow, JobRow, NodeRow, OrgRow, ProgramRow
from suanli.db.store import billing as billing_store
from suanli.db.store import cluster as cluster_store
from suanli.db.store import nodes as node_store
from suanli.db.store.snapshot import load_snapshot

log = logging.getLogger(__name__)
NODE_STATUSES = ("READY", "NOT_READY", "LOST", "DRAINING", "DRAINED")


def _g(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


class CenterCollector:
    def __init__(self, db: Database, node_timeout_s: float, half_life_s: float, ttl_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.db, self.node_timeout_s, self.half_life_s, self.ttl_s, self.clock = db, node_timeout_s, half_life_s, ttl_s, clock
        self._lock = threading.Lock()
        self._cached: list[Metric] = []
        self._at: float | None = None

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = self.clock()
            if self._at is None or now - self._at >= self.ttl_s:
                try:
                    self._cached = [*self._read(datetime.now(UTC)), GaugeMetricFamily(
                        "suanli_center_metrics_up", "1 if the center metrics could be read from the database", value=1)]
                except Exception:  # noqa: BLE001 - a scrape must succeed and say the read failed
                    log.exception("center metrics: database read failed")
                    self._cached = [GaugeMetricFamily("suanli_center_metrics_up",
                                                      "1 if the center metrics could be read from the database", value=0)]
                self._at = now
            yield from self._cached

    def describe(self) -> Iterator[Metric]:
        return iter(())  # collected lazily: registering must not read the database

    # ------------------------------------------------------------------ the read

    def _read(self, now: datetime) -> list[Metric]:
        out: list[Metric] = []
        with self.db.begin() as s:
            loaded = load_snapshot(s, now, PolicyConfig(), self.half_life_s, self.node_timeout_s)
            snap = loaded.snapshot
            pending = s.execute(select(OrgRow.name, JobRow.accelerator_types, JobRow.reason_code, JobRow.submitted_at)
                                .join(OrgRow, OrgRow.id == JobRow.org_id).where(JobRow.status == str(JobStatus.PENDING))).all()
            active = s.execute(select(OrgRow.name, JobRow.accelerator_type, JobRow.idle_since, JobRow.hold, JobRow.run_charged,
                                      JobRow.node_count, JobRow.devices_per_node, JobRow.device_milli)
                               .join(OrgRow, OrgRow.id == JobRow.org_id)
                               .where(JobRow.status.in_([str(x) for x in ACTIVE]))).all()
            nodes = list(s.scalars(select(NodeRow)))
            busy = node_store.allocations(s)
            charges = s.execute(select(OrgRow.name, BillingRunRow.accelerator_type, func.sum(BillingRunRow.cost_fen),
                                       func.sum(BillingRunRow.subsidy_fen))
                                .join(OrgRow, OrgRow.id == BillingRunRow.org_id)
                                .group_by(OrgRow.name, BillingRunRow.accelerator_type)).all()
            orgs = {o.id: o.name for o in s.scalars(select(OrgRow))}
            cash = billing_store.balances_many(s, [org_cash(i) for i in orgs])
            vouchers = billing_store.all_voucher_balances(s)
            programs = list(s.scalars(select(ProgramRow)))
            left = {p.id: billing_store.program_left(s, p.id) for p in programs}
            paid_by_program = billing_store.subsidy_by_program(s)
            lease = cluster_store.get_lease(s)
        program_names = {p.id: p.name for p in programs}

        # Queue.
        g = _g("suanli_pending_jobs", "Jobs waiting, by org, accepted accelerator types and the scheduler's reason code.",
               ["org", "accelerator_type", "reason"])
        for (org, types, reason), n in sorted(Counter((o, "|".join(t or []), r or "new") for o, t, r, _ in pending).items()):
            g.add_metric([org, types, reason], n)
        out.append(g)
        oldest: dict[str, float] = {}
        for _, types, _, submitted in pending:
            key = "|".join(types or [])
            oldest[key] = max(oldest.get(key, 0.0), (now - submitted).total_seconds())
        g = _g("suanli_pending_oldest_age_seconds", "Age of the longest-waiting pending job, by accepted accelerator types "
               "(the queue-wait histogram sees only jobs that started).", ["accelerator_type"])
        for key, age in sorted(oldest.items()):
            g.add_metric([key], max(0.0, age))
        out.append(g)

        # Allocation, by org / pool / type.
        running: Counter[tuple[str, str, str]] = Counter()
        devices: dict[tuple[str, str, str], float] = defaultdict(float)
        for j in snap.running:
            key = (j.org, j.pool, j.accelerator_type)
            running[key] += 1
            devices[key] += sum(len(p.devices) for p in j.placements) * j.device_milli / 1000
        g = _g("suanli_running_jobs", "Jobs holding devices (starting, running or being stopped).", ["org", "pool", "accelerator_type"])
        for key, n in sorted(running.items()):
            g.add_metric(list(key), n)
        out.append(g)
        g = _g("suanli_allocated_devices", "Devices given to jobs (fractional shares count their fraction).",
               ["org", "pool", "accelerator_type"])
        for key, n in sorted(devices.items()):
            g.add_metric(list(key), n)
        out.append(g)
        idle: Counter[tuple[str, str]] = Counter()
        held: Counter[str] = Counter()
        for org, atype, idle_since, hold, charged, n_nodes, per_node, milli in active:
            if idle_since is not None:
                idle[(org, atype or "")] += n_nodes * per_node * milli / 1000
            if hold:
                held[org] += max(0, _total(hold) - _total(charged))
        g = _g("suanli_idle_allocated_devices", "Devices of jobs flagged as idle allocations (below the utilization "
               "threshold for the idle window).", ["org", "accelerator_type"])
        for key, n in sorted(idle.items()):
            g.add_metric(list(key), n)
        out.append(g)

        # Capacity: every device of a registered server; free = placeable now.
        cap: Counter[str] = Counter()
        free: Counter[str] = Counter()
        unhealthy = _g("suanli_node_unhealthy_devices", "Devices whose agent reports them unhealthy (kept out of placement).",
                       ["node", "accelerator_type"])
        status = _g("suanli_node_status", "1 for the server's current status, 0 for the others.", ["node", "accelerator_type", "status"])
        views = {v.name: v for v in snap.nodes}
        for n in sorted(nodes, key=lambda r: r.name):
            cap[n.accelerator_type] += n.device_count
            view = views.get(n.name)
            if view is not None and view.schedulable:
                free[n.accelerator_type] += len(view.free_devices)
            sick = sum(1 for d in (n.devices or []) if not device_healthy(str(d.get("health", "OK"))))
            unhealthy.add_metric([n.name, n.accelerator_type], sick)
            current = _node_status(n, bool(busy.get(n.id)), now, self.node_timeout_s)
            for st in NODE_STATUSES:
                status.add_metric([n.name, n.accelerator_type, st], 1 if st == current else 0)
        g = _g("suanli_capacity_devices", "Devices of registered servers, by accelerator type.", ["accelerator_type"])
        for t, n in sorted(cap.items()):
            g.add_metric([t], n)
        out.append(g)
        g = _g("suanli_free_devices", "Devices a new job could get now: healthy, unclaimed, on ready servers.", ["accelerator_type"])
        for t in sorted(cap):
            g.add_metric([t], free.get(t, 0))
        out += [g, unhealthy, status]

        # Fair share and quotas.
        tree = list(snap.share_tree)
        factor = _g("suanli_fairshare_factor", "Fair Tree factor of each project, in [0, 1] (1 = most under-served).",
                    ["org", "project"])
        usage = _g("suanli_fairshare_usage", "Half-life decayed usage of each project, billing units (device-seconds x type weight).",
                   ["org", "project"])
        level = _g("suanli_fairshare_level", "Level fair share of each org among its pool's orgs (shares / usage; >1 under-served).",
                   ["org"])
        if len(tree) > 1:
            by_id = {n.id: n for n in tree}
            for leaf, fs in sorted(fair_tree(tree, "center").items()):
                org = (by_id[leaf].parent or "org:").removeprefix("org:")
                project = leaf.split("/", 1)[-1]
                factor.add_metric([org, project], fs.factor)
                usage.add_metric([org, project], by_id[leaf].usage)
            for node_id, lf in sorted(level_fairshares(tree, "center").items()):
                if node_id.startswith("org:"):
                    level.add_metric([node_id.removeprefix("org:")], lf)  # +Inf: shares but no usage yet
        out += [factor, usage, level]
        guaranteed = _g("suanli_quota_guaranteed_devices", "Devices guaranteed to the org, by type.", ["org", "accelerator_type"])
        limit = _g("suanli_quota_limit_devices", "Most devices the org may hold, by type (absent: no limit).", ["org", "accelerator_type"])
        for (org, t), q in sorted(snap.quotas.items()):
            guaranteed.add_metric([org, t], q.guaranteed)
            if q.limit is not None:
                limit.add_metric([org, t], q.limit)
        out += [guaranteed, limit]

        # Money (fen).
        charged = CounterMetricFamily("suanli_charged_fen", "What settled runs cost, fen, by org and type.", labels=["org", "accelerator_type"])
        subsidy = CounterMetricFamily("suanli_subsidy_fen", "Of that, what compute vouchers paid, fen.", labels=["org", "accelerator_type"])
        for org, t, cost, sub in sorted(charges, key=lambda r: (r[0], r[1])):
            charged.add_metric([org, t], int(cost or 0))
            subsidy.add_metric([org, t], int(sub or 0))
        out += [charged, subsidy]
        g = _g("suanli_account_balance_fen", "The org's prepaid account balance, fen.", ["org"])
        for org_id, name in sorted(orgs.items(), key=lambda x: x[1]):
            g.add_metric([name], int(cash.get(org_cash(org_id), 0)))
        out.append(g)
        g = _g("suanli_holds_outstanding_fen", "Held at job start and not yet charged, fen, by org.", ["org"])
        for org, fen in sorted(held.items()):
            g.add_metric([org], fen)
        out.append(g)
        remaining: Counter[tuple[str, str]] = Counter()
        for org_id, balances in vouchers.items():
            for b in balances:
                remaining[(orgs.get(org_id, str(org_id)), program_names.get(b.voucher.program_id, str(b.voucher.program_id)))] += b.remaining_fen
        g = _g("suanli_voucher_remaining_fen", "What the org's usable vouchers can still pay, fen, by program.", ["org", "program"])
        for key, fen in sorted(remaining.items()):
            g.add_metric(list(key), fen)
        out.append(g)
        budget = _g("suanli_program_budget_fen", "A subsidy program's budget, fen.", ["program"])
        budget_left = _g("suanli_program_budget_remaining_fen", "What the program can still grant, fen.", ["program"])
        for p in sorted(programs, key=lambda p: p.name):
            budget.add_metric([p.name], p.budget_fen)
            budget_left.add_metric([p.name], left[p.id])
        out += [budget, budget_left]
        paid = CounterMetricFamily("suanli_program_subsidy_fen", "What a program's vouchers paid for settled runs, fen.",
                                   labels=["program"])
        for p in sorted(programs, key=lambda p: p.name):
            paid.add_metric([p.name], paid_by_program.get(p.id, 0))
        out.append(paid)

        # The scheduler, as the database sees it.
        age = (now - lease.renewed_at).total_seconds() if lease is not None else -1
        out.append(GaugeMetricFamily("suanli_scheduler_lease_age_seconds",
                                     "Seconds since the scheduler last renewed its lease; -1 if no scheduler ever ran.", value=age))
        return out


def _total(bill: dict | None) -> int:  # type: ignore[type-arg]
    split = bill_from_json(bill)
    return split.cash_fen + split.voucher_fen


def _node_status(row: NodeRow, busy: bool, now: datetime, timeout_s: float) -> str:
    from suanli.nodes import node_status

    return node_status(row.status, int(busy), row.last_heartbeat_at, now, timeout_s)
