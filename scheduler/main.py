"""The scheduler process (`suanli scheduler`): connect to the database and Ray, then cycle
until SIGTERM/SIGINT. Several may run: the one holding the lease acts, the others stand by and
take over within `scheduler_lease_timeout_s` when it stops renewing (`scheduler.leader`); a
clean stop gives the lease up at once. A new leader first kills orphan runners
(`scheduler.recovery`), so a scheduler may be killed at any point and restarted."""

from __future__ import annotations

import logging
import signal
import threading

from scheduler.loop import LoopConfig, SchedulerLoop
from scheduler.metrics import SchedulerMetrics, serve_metrics
from scheduler.recovery import RayRunners, RunnerDirectory
from scheduler.supervisor import SupervisorLauncher, make_launcher
from scheduler.types import PolicyConfig
from suanli.db.engine import Database
from suanli.settings import Settings

log = logging.getLogger("suanli.scheduler")


def loop_config(settings: Settings) -> LoopConfig:
    """The loop's and the policy's configuration from settings."""
    policy = PolicyConfig(
        weight_fairshare=settings.weight_fairshare,
        weight_age=settings.weight_age,
        weight_size=settings.weight_size,
        weight_qos=settings.weight_qos,
        weight_shortness=settings.weight_shortness,
        max_limit_s=settings.max_time_limit_s,
        max_age_s=settings.max_age_s,
        size_favors_small=settings.size_favors_small,
        backfill_depth=settings.backfill_depth,
        estimate_depth=settings.estimate_depth,
        reclaim=settings.reclaim,
    )
    return LoopConfig(settings.jobs_dir, settings.starting_timeout_s, policy, settings.fairshare_half_life_s,
                      meter_interval_s=settings.meter_interval_s, refund_center_faults=settings.refund_center_faults,
                      node_timeout_s=settings.node_heartbeat_timeout_s, node_lost_after_s=settings.node_lost_after_s,
                      lease_renew_s=settings.scheduler_lease_timeout_s / 3,
                      lease_timeout_s=settings.scheduler_lease_timeout_s, code_dir=settings.code_dir,
                      workload_window_s=settings.placement_workload_window_s)


def run(settings: Settings) -> None:
    db = Database(settings.effective_database_url)
    launcher = make_launcher(settings.ray_launcher, settings.ray_address, settings.ray_namespace)
    # The supervisor launcher lists its supervisors' ranks (and any per-rank actors) itself.
    runners: RunnerDirectory = launcher if isinstance(launcher, SupervisorLauncher) else RayRunners(settings.ray_namespace)
    metrics = SchedulerMetrics()
    if settings.scheduler_metrics_port:
        try:
            serve_metrics(metrics, settings.scheduler_metrics_host, settings.scheduler_metrics_port)
        except OSError as e:  # metrics are for operators: a busy port must not stop scheduling
            log.error("cannot serve scheduler metrics on %s:%d: %s", settings.scheduler_metrics_host,
                      settings.scheduler_metrics_port, e.strerror)
    loop = SchedulerLoop(db, launcher, loop_config(settings), runners=runners, metrics=metrics)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("scheduler %s running: database %s, ray %s (%s launcher), every %.1fs", loop.holder,
             settings.effective_database_url.split("@")[-1], settings.ray_address, settings.ray_launcher,
             settings.scheduler_interval_s)
    loop.run(stop, settings.scheduler_interval_s)
    log.info("scheduler stopped")
