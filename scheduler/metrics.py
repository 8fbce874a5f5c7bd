"""What only the scheduler process knows, as Prometheus metrics (docs/metrics.md): how long
cycles take, what was decided, how long started jobs waited, whether this process leads.

The center's state (queue, allocation, money) is read from the database by the API
(`suanli.metrics`); this module never reads the database.

Invariants:
- Everything lives in this object's own `CollectorRegistry` (never the global one), so
  several loops in one process (tests) do not collide.
- Labels are bounded: decision kind, preemption reason class, accelerator type and a
  size class of the job (1, 2-8, 9-32, 33+ devices) — never a job id.
- Recording never raises and costs microseconds; a loop without metrics passes `None`
  and records nothing (`SchedulerLoop.metrics`).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 2 * 3600, 6 * 3600, 12 * 3600, 24 * 3600, 3 * 86400, 7 * 86400)
CYCLE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def size_class(devices: float) -> str:
    """The job-size class of `devices` devices in total (fractions count as 1)."""
    if devices <= 1:
        return "1"
    if devices <= 8:
        return "2-8"
    if devices <= 32:
        return "9-32"
    return "33+"


def preemption_reason(reason: str) -> str:
    """The class of a preemption's reason text: reclaim of a guarantee, an admin's requeue, other."""
    text = reason.lower()
    if "requeued by admin" in text:
        return "admin"
    if "reclaim" in text or "guarantee" in text:
        return "reclaim"
    return "other"


class SchedulerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.cycle = Histogram("suanli_scheduler_cycle_duration_seconds",
                               "One scheduling cycle: sweep, snapshot, decide, apply, reconcile", buckets=CYCLE_BUCKETS, registry=r)
        self.decisions = Counter("suanli_scheduler_decisions", "Decisions applied, by kind", ["kind"], registry=r)
        self.preemptions = Counter("suanli_scheduler_preemptions", "Preemptions started, by reason class", ["reason"], registry=r)
        self.wait = Histogram("suanli_scheduler_queue_wait_seconds", "Submit to start of each started job",
                              ["accelerator_type", "size_class"], buckets=WAIT_BUCKETS, registry=r)
        self.leader = Gauge("suanli_scheduler_is_leader", "1 while this process holds the scheduler lease", registry=r)
        self.lost = Counter("suanli_scheduler_node_lost_jobs", "Jobs taken off servers declared lost", registry=r)
        for kind in ("start", "preempt", "wait"):
            self.decisions.labels(kind)  # present from the first scrape, at 0
        for reason in ("reclaim", "admin", "other"):
            self.preemptions.labels(reason)

    def started(self, accelerator_type: str, devices: float, waited_s: float) -> None:
        self.decisions.labels("start").inc()
        self.wait.labels(accelerator_type, size_class(devices)).observe(max(0.0, waited_s))

    def preempted(self, reason: str) -> None:
        self.decisions.labels("preempt").inc()
        self.preemptions.labels(preemption_reason(reason)).inc()

    def waiting(self, n: int) -> None:
        self.decisions.labels("wait").inc(n)


def serve_metrics(metrics: SchedulerMetrics, host: str = "0.0.0.0", port: int = 9402):  # type: ignore[no-untyped-def]
    """Serve `GET /metrics` in a daemon thread; returns (server, thread) — `server.shutdown()`
    stops it; `server.server_port` is the port (useful with port 0)."""
    return start_http_server(port, addr=host, registry=metrics.registry)
