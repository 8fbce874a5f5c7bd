"""ORM rows. Only the store (`suanli.db.store`) reads and writes them; services and the API
work with domain dataclasses and schemas, joined to these rows by named converters.

Invariants:
- The schema is created and changed only by Alembic migrations (`suanli/db/migrations`);
  `tests/integration/test_migrations.py` checks that the migrations produce these models.
- Timestamps are timezone-aware UTC (`UTCDateTime`), on SQLite as on PostgreSQL.
- Money is integer fen (`BigInteger`), never float.
- `device_claims` has one row per (server, device) in use: its primary key is what makes a
  double allocation impossible even if two schedulers raced. A device shared by fractional
  jobs has one claim row with no job, and one `device_shares` row per job.
- `jobs.version` guards every update of a job (0 rows updated = stale, never overwritten).
- Ledger rows are only ever inserted; a transaction's entries sum to zero and its `key` is
  unique, so replaying a charge is a no-op.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.expression import true as sa_true

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, whatever the backend keeps."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class PoolRow(Base):
    __tablename__ = "pools"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    shares: Mapped[int] = mapped_column(Integer, default=1)


class OrgRow(Base):
    __tablename__ = "orgs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("pools.id"))
    # university, research-institute, enterprise, sme, startup
    kind: Mapped[str] = mapped_column(String(32))
    # applied, verified, suspended
    status: Mapped[str] = mapped_column(String(16), default="verified")
    shares: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # How far below zero the org's account may go (fen, >= 0).
    credit_limit_fen: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class ProjectRow(Base):
    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("org_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("orgs.id"))
    name: Mapped[str] = mapped_column(String(64))
    shares: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


class QuotaRow(Base):
    """Guaranteed devices and a limit, per (org or pool, accelerator type). No row: nothing
    guaranteed, no limit."""

    __tablename__ = "quotas"
    __table_args__ = (UniqueConstraint("scope", "scope_id", "accelerator_type"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scope: Mapped[str] = mapped_column(String(8))  # org | pool
    scope_id: Mapped[int] = mapped_column(Integer)
    accelerator_type: Mapped[str] = mapped_column(ForeignKey("accelerator_types.name"))
    guaranteed: Mapped[int] = mapped_column(Integer, default=0)
    limit: Mapped[int | None] = mapped_column(Integer, nullable=True)


class PriorityClassRow(Base):
    __tablename__ = "priority_classes"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[Decimal] = mapped_column(Numeric(6, 4))  # the QOS factor in [0, 1]
    preemptible: Mapped[bool] = mapped_column(Boolean, default=False)
    description: Mapped[str] = mapped_column(String(200), default="")


class UsageRow(Base):
    """A project's decayed usage in billing units (device-seconds × type weight), kept as
    an accumulator: `units` as of `as_of`; finished runs are added as they end."""

    __tablename__ = "usage"
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    units: Mapped[float] = mapped_column(Float, default=0.0)
    as_of: Mapped[datetime] = mapped_column(UTCDateTime)


class UserRow(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    # None for center admins and service accounts (agents, scheduler).
    org_id: Mapped[int | None] = mapped_column(ForeignKey("orgs.id"), nullable=True)
    # member, org-admin, center-admin, agent
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Set when the member was removed: their tokens no longer authenticate; names are never reused.
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Agents bound to one server (users named `node:<name>`) may act only for that node; at most
    # one such user per node. None for everyone else (and the shared demo agent).
    node: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True, unique=True)


class TokenRow(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    # sha256 of the secret; the secret itself is shown once and never stored.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(12))
    name: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Refreshed at most once a minute per token (`tenancy.principal_for_token`).
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    __table_args__ = (Index("ix_api_tokens_user_id", "user_id"),)  # a user's tokens: list, revoke all


class AcceleratorTypeRow(Base):
    __tablename__ = "accelerator_types"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    vendor: Mapped[str] = mapped_column(String(16))  # nvidia | ascend
    # Billing units per device-second (fair-share usage weight); exact decimal.
    billing_weight: Mapped[Decimal] = mapped_column(Numeric(12, 4), default=Decimal(1))
    description: Mapped[str] = mapped_column(String(200), default="")


class PriceRow(Base):
    __tablename__ = "prices"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    accelerator_type: Mapped[str] = mapped_column(ForeignKey("accelerator_types.name"))
    fen_per_device_hour: Mapped[int] = mapped_column(BigInteger)
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime)


class NodeRow(Base):
    __tablename__ = "nodes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The server's name; also its Ray node label `suanli.io/node`.
    name: Mapped[str] = mapped_column(String(128), unique=True)
    accelerator_type: Mapped[str] = mapped_column(ForeignKey("accelerator_types.name"))
    device_count: Mapped[int] = mapped_column(Integer)
    cpus: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(BigInteger)
    # READY, NOT_READY, DRAINED
    status: Mapped[str] = mapped_column(String(16), default="READY")
    devices: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    labels: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    agent_version: Mapped[str] = mapped_column(String(32), default="")
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    # Set while a center admin has the server drained (status DRAINED: no new jobs; running
    # ones continue): why, who and when (`suanli.nodes.drain`); cleared by undrain.
    drain_reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    drained_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    drained_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # How the devices are linked, as the agent saw it (`nvidia-smi topo -m` words; None when
    # the backend cannot tell), and the Ray node id the agent was told it runs beside.
    topology: Mapped[list[list[str]] | None] = mapped_column(JSON, nullable=True)
    ray_node_id: Mapped[str] = mapped_column(String(64), default="", server_default="")


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_org_status", "org_id", "status"),
        # A retried submit carries the same key: at most one job per (user, key). The index,
        # not a read before the write, is what makes concurrent retries create one job.
        Index("ux_jobs_user_idempotency_key", "user_id", "idempotency_key", unique=True),
        Index("ix_jobs_submitted_at", "submitted_at"),  # `GET /v1/jobs?sort=submitted_at`
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    org_id: Mapped[int] = mapped_column(ForeignKey("orgs.id"))
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    status: Mapped[str] = mapped_column(String(16), index=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    # Resources asked.
    accelerator_types: Mapped[list[str]] = mapped_column(JSON)
    devices_per_node: Mapped[int] = mapped_column(Integer)
    node_count: Mapped[int] = mapped_column(Integer)
    cpus_per_node: Mapped[int] = mapped_column(Integer)
    memory_mb_per_node: Mapped[int] = mapped_column(BigInteger)
    time_limit_s: Mapped[int] = mapped_column(Integer)
    grace_s: Mapped[float] = mapped_column(Float)
    command: Mapped[str] = mapped_column(Text)
    working_dir: Mapped[str | None] = mapped_column(Text, nullable=True)
    env: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    # Outcome.
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    accelerator_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Fixed when the job is scheduled; what the job is billed at.
    price_fen_per_device_hour: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    cost_fen: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Why the job is where it is (pending reason, failure cause); also in its last event.
    reason: Mapped[str] = mapped_column(Text, default="")
    # When STARTING began (for the starting timeout).
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Scheduling: the class asked, what the policy said last, and preemption bookkeeping.
    priority_class: Mapped[str] = mapped_column(String(32), default="normal", server_default="normal")
    requeue: Mapped[bool] = mapped_column(Boolean, default=True, server_default=sa_true())
    # Sent to every rank on cancel, preemption and time limit (SIGTERM, SIGINT, SIGUSR1, SIGUSR2).
    stop_signal: Mapped[str] = mapped_column(String(8), default="SIGTERM", server_default="SIGTERM")
    # Uploaded code (sha256:<hex>, suanli/code.py) shipped to the servers; None: working_dir in place.
    code: Mapped[str | None] = mapped_column(String(71), nullable=True)
    restart_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    reason_code: Mapped[str] = mapped_column(String(32), default="", server_default="")
    priority: Mapped[float | None] = mapped_column(Float, nullable=True)
    priority_factors: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    estimated_start_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Set while the job is being stopped (cancel or preemption): its devices are free by then.
    stop_by: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The fractional share of one device (thousandths); 1000 = whole devices.
    device_milli: Mapped[int] = mapped_column(Integer, default=1000, server_default="1000")
    # Billing of the current run: what was held at its start, split between the org's
    # account and vouchers ({"cash": fen, "vouchers": [[voucher id, fen], ...], "at": iso}),
    # and what has been charged from that hold so far (same shape, no "at"); metering
    # charges in steps `meter_seq`. `subsidy_fen` totals what vouchers paid, all runs.
    hold: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    run_charged: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    meter_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    subsidy_fen: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # The submit's `Idempotency-Key` header (unique per user, with the index above) and the
    # SHA-256 of the normalised spec it came with: a retry with another spec is refused.
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    spec_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Since when the job's devices have been idle (below `idle_utilization_pct` for
    # `idle_window_s`, as the agents report): set once per run with a job event, cleared
    # when the devices work again or the run ends. `suanli describe` shows it as a notice.
    idle_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class JobPlacementRow(Base):
    """Where a job ran (kept after it ends; the live allocation is `device_claims`)."""

    __tablename__ = "job_placements"
    __table_args__ = (UniqueConstraint("job_id", "rank"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    rank: Mapped[int] = mapped_column(Integer)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"))
    devices: Mapped[list[int]] = mapped_column(JSON)


class DeviceClaimRow(Base):
    """One row per device in use. `job_id` is the job holding the whole device, or NULL for
    a device shared by fractional jobs (their shares are `device_shares` rows)."""

    __tablename__ = "device_claims"
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"), primary_key=True)
    device_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"), index=True, nullable=True)


class DeviceShareRow(Base):
    """A fractional job's share of a shared device (thousandths). The shares of a device sum
    to at most 1000; `store.jobs.claim` checks it under the device row's lock."""

    __tablename__ = "device_shares"
    __table_args__ = (
        ForeignKeyConstraint(["node_id", "device_index"], ["device_claims.node_id", "device_claims.device_index"]),
    )
    node_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), primary_key=True, index=True)
    milli: Mapped[int] = mapped_column(Integer)


class NodeEventRow(Base):
    """What happened to a server: NOT_READY, back READY, lost (with its jobs' fate), a device
    turning unhealthy or healthy again. Written by the heartbeat and the scheduler's sweep;
    shown by `suanli admin node events` and `GET /v1/nodes/{name}/events`."""

    __tablename__ = "node_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(32))  # not_ready, ready, lost, device_unhealthy, device_healthy
    device_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    message: Mapped[str] = mapped_column(Text)


class JobEventRow(Base):
    __tablename__ = "job_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    from_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    reason: Mapped[str] = mapped_column(Text)


class LedgerTxnRow(Base):
    __tablename__ = "ledger_transactions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Idempotency key, e.g. "charge:job:42" or "topup:<uuid>".
    key: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(32))  # charge, topup
    org_id: Mapped[int | None] = mapped_column(ForeignKey("orgs.id"), nullable=True, index=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"), nullable=True)
    memo: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LedgerEntryRow(Base):
    __tablename__ = "ledger_entries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    txn_id: Mapped[int] = mapped_column(ForeignKey("ledger_transactions.id"), index=True)
    # "org:<id>:cash", "center:revenue", "center:topups"
    account: Mapped[str] = mapped_column(String(64), index=True)
    amount_fen: Mapped[int] = mapped_column(BigInteger)  # signed; a txn's entries sum to 0


class ProgramRow(Base):
    """A subsidy program of the funder (e.g. "2026 算力券 第一批"): its budget is funded once,
    vouchers are granted from it, and it pays `rate` of eligible costs."""

    __tablename__ = "programs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    budget_fen: Mapped[int] = mapped_column(BigInteger)
    rate: Mapped[Decimal] = mapped_column(Numeric(5, 4))
    cap_per_org_year_fen: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    org_kinds: Mapped[list[str]] = mapped_column(JSON, default=list)  # empty = every kind
    accelerator_types: Mapped[list[str]] = mapped_column(JSON, default=list)  # empty = every type
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime)
    valid_until: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class VoucherRow(Base):
    __tablename__ = "vouchers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id"), index=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("orgs.id"), index=True)
    face_fen: Mapped[int] = mapped_column(BigInteger)
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Set once what was left went back to the program (revocation or expiry).
    returned_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuditRow(Base):
    """Every state-changing admin action: who, what, when, before and after."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(200))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class BillingRunRow(Base):
    """One settled run of a job: the evidence statements and program reports are built from
    (who, what type, how many device-hours at what price, what it cost, who paid)."""

    __tablename__ = "billing_runs"
    __table_args__ = (UniqueConstraint("job_id", "run"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    run: Mapped[int] = mapped_column(Integer)
    org_id: Mapped[int] = mapped_column(ForeignKey("orgs.id"), index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    accelerator_type: Mapped[str] = mapped_column(String(64))
    devices_milli: Mapped[int] = mapped_column(BigInteger)  # devices in thousandths
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ended_at: Mapped[datetime] = mapped_column(UTCDateTime)
    duration_ms: Mapped[int] = mapped_column(BigInteger)
    price_fen_per_device_hour: Mapped[int] = mapped_column(BigInteger)
    cost_fen: Mapped[int] = mapped_column(BigInteger)
    cash_fen: Mapped[int] = mapped_column(BigInteger)
    subsidy_fen: Mapped[int] = mapped_column(BigInteger)
    # program id -> fen its vouchers paid for this run
    programs: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    center_fault: Mapped[bool] = mapped_column(Boolean, default=False)
    settled_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class SchedulerLeaseRow(Base):
    """The scheduler's leadership lease and heartbeat: the leading loop renews its row every
    few seconds; `/readyz` reports not ready when it is older than `scheduler_lease_timeout_s`;
    another loop takes it over only once it is that old. One row per lease name."""

    __tablename__ = "scheduler_lease"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))  # host:pid of the loop that renewed it last
    renewed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Fencing token: +1 at every acquisition (a new term); the leader's writes check it.
    token: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
