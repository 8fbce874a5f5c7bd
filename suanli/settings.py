"""Typed settings for every suanli process.

Invariants:
- Settings are read only when `Settings()` is constructed (never at import time), from
  environment variables prefixed `SUANLI_` (e.g. `SUANLI_DATABASE_URL`) and keyword arguments.
- Every field has a safe embedded default, so `suanli up` works on a fresh checkout.
- Derived paths (`log_dir`, the default SQLite file) live under `data_dir`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, computed_field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SUANLI_", extra="ignore")

    # Where the embedded database, job folders (logs) and demo tokens are kept.
    data_dir: Path = Path(".suanli")
    # SQLAlchemy URL. Empty means the embedded SQLite file `<data_dir>/suanli.db` (WAL mode).
    # Production: postgresql+psycopg://user@host:5432/suanli
    database_url: str = ""

    # API service.
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # Seconds an authenticated token is remembered per API process (0: look it up every
    # request). Revocations through another replica take effect within this (suanli/authcache.py).
    auth_cache_s: float = Field(default=5.0, ge=0, le=55)
    # Largest accepted request body (bytes); bigger bodies get 413 before parsing.
    max_body_bytes: int = 1_048_576
    # Largest job code upload (`POST /v1/code`, suanli/code.py), zipped and unpacked alike;
    # Ray's own limit on a runtime_env package is 500 MiB.
    code_max_bytes: int = Field(default=100 * 1024 * 1024, ge=1024, le=500 * 1024 * 1024)
    # Per-token rate limit (api/ratelimit.py): requests per second, refilling a burst of
    # `rate_limit_burst`; over it → 429 with Retry-After. Requests without a working token are
    # limited per client IP by the same rule. Each API replica counts on its own. 0: no limit.
    rate_limit_per_s: float = Field(default=20.0, ge=0)
    rate_limit_burst: int = Field(default=100, ge=1)
    # Connections of the async job-submit path per API process, PostgreSQL only (its commits
    # are short; more would only queue inside PostgreSQL on a small machine); 0 turns the
    # async path off (`suanli bench api --compare-sync` measures the sync path that way).
    submit_pool_size: int = Field(default=8, ge=0, le=64)

    # Scheduler loop.
    # Seconds between scheduling cycles (snapshot -> decide -> apply -> reconcile).
    scheduler_interval_s: float = 1.0
    # The scheduler process serves its own metrics (cycle time, decisions, queue waits,
    # leadership; docs/metrics.md) on this address; port 0 serves none.
    scheduler_metrics_host: str = "0.0.0.0"
    scheduler_metrics_port: int = Field(default=9402, ge=0, le=65535)
    # Seconds a job may stay STARTING (runner not yet confirmed by Ray) before it is requeued.
    starting_timeout_s: float = 120.0
    # Default seconds between the stop signal (SIGTERM) and SIGKILL on cancel and time limit.
    default_grace_s: float = Field(default=10.0, ge=0)
    # Ray address the scheduler connects to ("auto" finds a local cluster).
    ray_address: str = "auto"
    # Ray namespace where the launcher's actors are registered by name (`suanli-server-<server>`
    # supervisors, or `suanli-job-<id>-<rank>` runners).
    ray_namespace: str = "suanli"
    # How jobs start on Ray (scheduler/supervisor.py): "supervisor" = one long-lived actor per
    # server spawns every rank placed there (a method call, milliseconds); "actors" = a new
    # detached actor, i.e. a new worker process, per rank (~0.4 s each; the older path).
    ray_launcher: Literal["supervisor", "actors"] = "supervisor"

    # Billing (see docs/billing.md).
    # Seconds between meters of running jobs, so balances stay live (0: charge only at the end).
    meter_interval_s: float = Field(default=300.0, ge=0)
    # A run lost through the center's fault (node lost, runner gone) is not charged; False
    # charges the time it ran like any other run.
    refund_center_faults: bool = True
    # IANA time zone of billing months: a run belongs to the calendar month of its settlement
    # time in this zone (statements per org and month, program reports).
    billing_timezone: str = "Asia/Shanghai"

    # Fair-share policy (see scheduler/policy/multifactor.py and priority.py).
    # Half-life of usage decay, seconds (Slurm's PriorityDecayHalfLife; default 7 days).
    fairshare_half_life_s: float = Field(default=7 * 24 * 3600, gt=0)
    # Weights of the priority factors (any non-negative numbers; priority is normalised to [0, 1]).
    weight_fairshare: float = Field(default=4.0, ge=0)
    weight_age: float = Field(default=2.0, ge=0)
    weight_size: float = Field(default=1.0, ge=0)
    weight_qos: float = Field(default=3.0, ge=0)
    # Shorter requested time limits first (shortest-job-first; cuts average JCT, see
    # docs/benchmarks.md), reaching 0 at `max_time_limit_s`.
    weight_shortness: float = Field(default=6.0, ge=0)
    # The age factor reaches 1 after this many seconds of waiting.
    max_age_s: float = Field(default=7 * 24 * 3600, gt=0)
    # Favour small jobs in the size factor (Slurm's PriorityFavorSmall); default favours large.
    size_favors_small: bool = False
    # Reservations per accelerator type for blocked jobs (1 = EASY backfill).
    backfill_depth: int = Field(default=1, ge=0)
    # How many blocked jobs get an estimated start time each cycle.
    estimate_depth: int = Field(default=50, ge=0)
    # Preempt borrowing jobs so that orgs below their guarantee can start.
    reclaim: bool = True
    # One-server jobs are placed where GPU fragmentation grows least for the shapes of the
    # jobs submitted in this window (FGD less a scarcity penalty, docs/benchmarks.md); 0 turns
    # it off (best fit by free devices).
    placement_workload_window_s: float = Field(default=7 * 24 * 3600, ge=0)

    # Job limits.
    # Time limit applied when a spec gives none, and the longest accepted.
    default_time_limit_s: int = 3600
    max_time_limit_s: int = 14 * 24 * 3600

    # API tokens (see suanli/members.py).
    # Longest lifetime of a token, days; members' and org admins' tokens must expire within it
    # (center admins' and agents' tokens may also have no expiry).
    max_token_lifetime_days: int = Field(default=365, ge=1, le=3650)

    # Cluster views and readiness (see suanli/nodes.py, suanli/cluster_views.py).
    # Agents heartbeat every `node_heartbeat_interval_s` (their `--interval`, default 5 s); a
    # server that missed `node_missed_heartbeats` in a row is NOT_READY (health "down"): the
    # scheduler places nothing on it, running jobs are left alone for now.
    node_heartbeat_interval_s: float = Field(default=5.0, gt=0)
    node_missed_heartbeats: int = Field(default=12, ge=1)
    # A server silent this long is lost for good: its jobs are ended (NODE_LOST) or requeued
    # when their spec allows it, not charged for the lost run; 0 never gives up on a server.
    node_lost_after_s: float = Field(default=600.0, ge=0)
    # A device allocated to a job but below `idle_utilization_pct` for `idle_window_s` is an
    # idle allocation: an event on the job, a notice in `suanli describe`, a metric; with
    # `stop_idle_jobs` the job is also cancelled (charged for the time it ran).
    idle_utilization_pct: float = Field(default=5.0, ge=0, le=100)
    idle_window_s: float = Field(default=1800.0, gt=0)
    stop_idle_jobs: bool = False
    # `/readyz` answers 503 when the scheduler has not renewed its lease for this long; the
    # loop renews it every third of this (so two missed renewals are tolerated).
    scheduler_lease_timeout_s: float = Field(default=30.0, gt=0)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def jobs_dir(self) -> Path:
        """Per-job folders: `<jobs_dir>/<job id>/rank-0.log` (stdout+stderr, served by the API)
        and the default working directory. On a multi-server center this is a shared
        filesystem mounted at the same path on every server and on the API."""
        return self.data_dir / "jobs"

    @property
    def code_dir(self) -> Path:
        """Uploaded job code, `<code_dir>/<sha256>.zip`: written by the API, read by the
        scheduler (which hands it to Ray), so both must see it."""
        return self.data_dir / "code"

    @property
    def node_heartbeat_timeout_s(self) -> float:
        """Silence after which a server is NOT_READY: the missed heartbeats times the interval."""
        return self.node_heartbeat_interval_s * self.node_missed_heartbeats

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'suanli.db').resolve()}"

    @property
    def api_url(self) -> str:
        return f"http://{self.api_host}:{self.api_port}"
