"""Multifactor job priority, explainable.

    priority = Σ w_i · f_i / Σ w_i           (every factor f_i in [0, 1], so priority is too)

Factors:
- fairshare: the Fair Tree factor of the job's project (`fairshare.fair_tree`): rank / leaves,
  1.0 for the project that deserves service most. A project missing from the tree gets 0.5.
- age: time since submission / `max_age_s`, capped at 1 (a requeued job keeps its age).
- size: the job's devices / the largest server count × nodes of the cluster … concretely
  devices / total devices of its accepted types (capped at 1); `size_favors_small` flips it.
- qos: the priority class value (high 1.0, normal 0.5, low 0.25, preemptible 0).
- shortness: 1 − log(time limit / 1 min) / log(`max_limit_s` / 1 min), clamped to [0, 1]:
  jobs that ask for less time go first (shortest-job-first on the requested time).
Weights come from `PolicyConfig` (settings). Every decision carries the factors.
"""

from __future__ import annotations

import math

from scheduler.types import JobRequest, PolicyConfig, Priority, PriorityClass


def job_priority(
    job: JobRequest,
    now: float,
    fairshare: float,
    cls: PriorityClass,
    type_devices: int,
    cfg: PolicyConfig,
) -> Priority:
    age = min(1.0, max(0.0, now - job.submitted_at) / cfg.max_age_s) if cfg.max_age_s > 0 else 1.0
    size = min(1.0, job.resources.total_milli / 1000 / type_devices) if type_devices else 0.0
    if cfg.size_favors_small:
        size = 1.0 - size
    # Shorter time limits first (shortest-job-first on what users ask, which cuts average
    # JCT): 1 for a minute or less, 0 at `max_limit_s`, on a log scale.
    short = 1.0 - min(1.0, max(0.0, math.log(max(job.time_limit_s, 60) / 60) / math.log(cfg.max_limit_s / 60)))
    factors = (
        ("fairshare", fairshare, cfg.weight_fairshare),
        ("age", age, cfg.weight_age),
        ("size", size, cfg.weight_size),
        ("qos", cls.value, cfg.weight_qos),
        ("shortness", short, cfg.weight_shortness),
    )
    total_w = sum(w for _, _, w in factors)
    value = sum(f * w for _, f, w in factors) / total_w if total_w else 0.0
    return Priority(round(value, 9), factors)
