"""The scheduler process's own metrics (scheduler/metrics.py): names, bounded labels, the
size and reason classes, and the HTTP endpoint."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from scheduler.metrics import SchedulerMetrics, preemption_reason, serve_metrics, size_class


@pytest.mark.parametrize("devices, cls", [(0.25, "1"), (1, "1"), (2, "2-8"), (8, "2-8"), (9, "9-32"), (32, "9-32"), (33, "33+"), (512, "33+")])
def test_size_classes_cover_every_size_once(devices: float, cls: str) -> None:
    """Invariant: every job size falls in exactly one class, the boundaries as documented."""
    assert size_class(devices) == cls


@pytest.mark.parametrize("reason, cls", [
    ("requeued by admin root: maintenance", "admin"),
    ("reclaim: org a is below its guarantee of 8 nvidia-a100-80g", "reclaim"),
    ("preempted for job 12 (guarantee)", "reclaim"),
    ("something new", "other"),
])
def test_preemption_reasons_are_classed(reason: str, cls: str) -> None:
    """Invariant: free-text reasons map onto three label values (bounded cardinality)."""
    assert preemption_reason(reason) == cls


def test_recording_and_serving() -> None:
    """Invariants: decisions are counted by kind (all kinds present from the start, at 0), a
    start observes its wait under its type and size class, a preemption counts its reason
    class, and GET /metrics serves this object's registry only (no process-global metrics)."""
    m = SchedulerMetrics()
    m.started("nvidia-a100-80g", 16, 42.0)
    m.preempted("requeued by admin root")
    m.waiting(3)
    m.cycle.observe(0.02)
    m.leader.set(1)
    server, thread = serve_metrics(m, "127.0.0.1", 0)
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=5).read().decode()
    finally:
        server.shutdown()
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert values[("suanli_scheduler_decisions_total", (("kind", "start"),))] == 1
    assert values[("suanli_scheduler_decisions_total", (("kind", "wait"),))] == 3
    assert values[("suanli_scheduler_decisions_total", (("kind", "preempt"),))] == 1
    assert values[("suanli_scheduler_preemptions_total", (("reason", "admin"),))] == 1
    assert values[("suanli_scheduler_preemptions_total", (("reason", "reclaim"),))] == 0
    assert values[("suanli_scheduler_queue_wait_seconds_count", (("accelerator_type", "nvidia-a100-80g"), ("size_class", "9-32")))] == 1
    assert values[("suanli_scheduler_cycle_duration_seconds_count", ())] == 1
    assert values[("suanli_scheduler_is_leader", ())] == 1
    assert not any(name.startswith("python_") or name.startswith("process_") for name, _ in values)
