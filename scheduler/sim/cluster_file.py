"""The simulated cluster file (YAML): servers, tenancy, quotas, prices and policy knobs,
read into a `SimCluster`.

    servers:            # each entry may have `count: N` to repeat it (names get -0, -1, …)
      - {name: a100, accelerator_type: nvidia-a100-80g, devices: 8, cpu_milli: 128000,
         memory_mib: 1048576, rack: r1, count: 4}
    pools: {universities: {shares: 2}, enterprises: {shares: 1}}
    tenants:            # org -> pool, shares, and per-type guarantees/limits
      lab-a: {pool: universities, shares: 1, quotas: {nvidia-a100-80g: {guaranteed: 8, limit: 16}}}
    pool_quotas: {universities: {nvidia-a100-80g: {guaranteed: 16}}}
    prices: {nvidia-a100-80g: 1200}          # fen per device-hour (integers)
    billing_weights: {nvidia-a100-80g: 1.0}
    priority_classes: {high: {value: 1.0}, normal: {value: 0.5}}   # optional
    policy: {weight_fairshare: 4, backfill_depth: 1}               # optional PolicyConfig fields
    half_life_s: 604800

Invariants:
- Every mapping is validated with extra keys forbidden; any problem raises `TraceError` whose
  `field` is the YAML path (e.g. `tenants.lab-a.quotas.nvidia-a100-80g.limit`) and whose `line`
  is that key's line in the file (0 when no line applies). A key repeated in one mapping is an
  error (plain YAML loaders keep the last silently).
- Server names, after `count` expansion (`name-0` … `name-(N-1)`; without `count` the name is
  kept), are unique. Every quota has limit ≥ guaranteed.
- Every accelerator type named in tenants' quotas, `pool_quotas`, `prices` and
  `billing_weights` is the type of some server; every pool named by a tenant or in `pool_quotas`
  is in `pools`, except `default`: tenants without a pool are in pool `default`, created with
  1 share when used and not listed.
- `priority_classes`, when given, replaces the standard four (`DEFAULT_CLASSES`) and must
  include `normal` (the class of jobs that name none); when absent, the standard four apply.
- `policy` takes `PolicyConfig`'s own fields (numbers ≥ 0); the model is derived from the
  dataclass, so a new knob is accepted without changing this file.
- Pure parsing: the only I/O is reading the given file; a missing file raises OSError.
"""

from __future__ import annotations

from dataclasses import fields as dc_fields
from pathlib import Path
from typing import Annotated, Any, get_type_hints

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, create_model, model_validator

from scheduler.sim.model import SimCluster, SimServer, SimTenant
from scheduler.sim.traces import NAME, TraceError, first_error
from scheduler.types import DEFAULT_CLASSES, PolicyConfig, PriorityClass, Quota

DEFAULT_POOL = "default"
Name = Annotated[str, StringConstraints(pattern=NAME)]
_SERVER_DEFAULTS = {f.name: f.default for f in dc_fields(SimServer)}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerEntry(_Strict):
    """One server, or `count` identical ones named `name-0` … `name-(count-1)`."""

    name: Name
    accelerator_type: Name
    devices: int = Field(ge=0)
    cpu_milli: int = Field(_SERVER_DEFAULTS["cpu_milli"], ge=1)
    memory_mib: int = Field(_SERVER_DEFAULTS["memory_mib"], ge=1)
    rack: Name | None = None
    count: int | None = Field(None, ge=1)

    def expand(self) -> list[SimServer]:
        names = [self.name] if self.count is None else [f"{self.name}-{i}" for i in range(self.count)]
        return [SimServer(name=n, accelerator_type=self.accelerator_type, devices=self.devices,
                          cpu_milli=self.cpu_milli, memory_mib=self.memory_mib, rack=self.rack) for n in names]


class PoolEntry(_Strict):
    shares: float = Field(1.0, gt=0, allow_inf_nan=False)


class QuotaEntry(_Strict):
    """Devices of one type: guaranteed (reclaimable when lent) and a limit (None: none)."""

    guaranteed: int = Field(0, ge=0)
    limit: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> QuotaEntry:
        if self.limit is not None and self.limit < self.guaranteed:
            raise ValueError(f"limit {self.limit} is below guaranteed {self.guaranteed}")
        return self

    def quota(self) -> Quota:
        return Quota(guaranteed=self.guaranteed, limit=self.limit)


class TenantEntry(_Strict):
    pool: Name | None = None
    shares: float = Field(1.0, gt=0, allow_inf_nan=False)
    quotas: dict[Name, QuotaEntry] = Field(default_factory=dict)


class ClassEntry(_Strict):
    value: float = Field(ge=0, le=1)
    preemptible: bool = False


def _policy_model() -> type[BaseModel]:
    hints = get_type_hints(PolicyConfig)
    spec: dict[str, Any] = {}
    for f in dc_fields(PolicyConfig):
        kind = hints[f.name]
        if kind in (int, float):
            spec[f.name] = (kind, Field(f.default, ge=0, allow_inf_nan=False) if kind is float else Field(f.default, ge=0))
        else:
            spec[f.name] = (kind, f.default)
    return create_model("PolicyEntry", __config__=ConfigDict(extra="forbid", frozen=True), **spec)


PolicyEntry = _policy_model()


class ClusterFile(_Strict):
    """The whole cluster file (see the module docstring for an example)."""

    servers: list[ServerEntry] = Field(min_length=1)
    pools: dict[Name, PoolEntry] = Field(default_factory=dict)
    tenants: dict[Name, TenantEntry] = Field(default_factory=dict)
    pool_quotas: dict[Name, dict[Name, QuotaEntry]] = Field(default_factory=dict)
    prices: dict[Name, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)
    billing_weights: dict[Name, Annotated[float, Field(gt=0, allow_inf_nan=False)]] = Field(default_factory=dict)
    priority_classes: dict[Name, ClassEntry] | None = None
    policy: PolicyEntry | None = None  # type: ignore[valid-type]
    half_life_s: float = Field(7 * 24 * 3600, gt=0, allow_inf_nan=False)


# --- YAML with line numbers ---------------------------------------------------------------------


def _check_duplicates(path: str | Path, node: yaml.Node | None, where: tuple[Any, ...] = ()) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else str(k)
            if key in seen:
                raise TraceError(path, k.start_mark.line + 1, _dotted((*where, key)), "key repeated in this mapping")
            seen.add(key)
            _check_duplicates(path, v, (*where, key))
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _check_duplicates(path, v, (*where, i))


def _line_of(root: yaml.Node | None, loc: tuple[Any, ...]) -> int:
    """The line of the deepest key (or list item) of `loc` found in the YAML tree; 0 if none."""
    if root is None:
        return 0
    node, line = root, root.start_mark.line + 1
    for p in loc:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == str(p):
                    node, line = v, k.start_mark.line + 1
                    break
            else:
                break
        elif isinstance(node, yaml.SequenceNode) and isinstance(p, int) and 0 <= p < len(node.value):
            node = node.value[p]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "cluster"


def read_cluster(path: str | Path) -> SimCluster:
    """The `SimCluster` described by a cluster YAML file (see the module invariants)."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise TraceError(path, mark.line + 1 if mark else 0, "yaml", str(exc.problem or exc)) from None
    except yaml.YAMLError as exc:
        raise TraceError(path, 0, "yaml", str(exc)) from None
    if data is None:
        raise TraceError(path, 0, "servers", "empty file: a cluster needs servers")
    if not isinstance(data, dict):
        raise TraceError(path, _line_of(root, ()), "cluster", f"expected a mapping at the top, got {type(data).__name__}")
    _check_duplicates(path, root)
    try:
        spec = ClusterFile.model_validate(data)
    except ValidationError as exc:
        field, msg = first_error(exc)
        loc = tuple(exc.errors()[0]["loc"])
        raise TraceError(path, _line_of(root, loc), field if loc else "cluster", msg) from None

    def fail(loc: tuple[Any, ...], message: str) -> TraceError:
        return TraceError(path, _line_of(root, loc), _dotted(loc), message)

    return _build(spec, fail)


def _build(spec: ClusterFile, fail: Any) -> SimCluster:
    servers: list[SimServer] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(spec.servers):
        for s in entry.expand():
            if s.name in seen:
                raise fail(("servers", i, "name"), f"server name {s.name!r} is already used by servers[{seen[s.name]}]")
            seen[s.name] = i
            servers.append(s)
    types = {s.accelerator_type for s in servers}
    known_types = ", ".join(sorted(types))

    def check_type(loc: tuple[Any, ...], t: str) -> None:
        if t not in types:
            raise fail(loc, f"no server has accelerator type {t!r} (types: {known_types})")

    pool_shares = {name: p.shares for name, p in spec.pools.items()}

    def check_pool(loc: tuple[Any, ...], pool: str) -> None:
        if pool not in pool_shares:
            if pool != DEFAULT_POOL:
                raise fail(loc, f"pool {pool!r} is not in `pools` ({', '.join(sorted(spec.pools)) or 'none listed'})")
            pool_shares[DEFAULT_POOL] = 1.0

    tenants, quotas = [], {}
    for org, t in spec.tenants.items():
        pool = t.pool or DEFAULT_POOL
        check_pool(("tenants", org, "pool"), pool)
        tenants.append(SimTenant(org=org, pool=pool, shares=t.shares))
        for typ, q in t.quotas.items():
            check_type(("tenants", org, "quotas", typ), typ)
            quotas[(org, typ)] = q.quota()
    pool_quotas = {}
    for pool, per_type in spec.pool_quotas.items():
        check_pool(("pool_quotas", pool), pool)
        for typ, q in per_type.items():
            check_type(("pool_quotas", pool, typ), typ)
            pool_quotas[(pool, typ)] = q.quota()
    for section in ("prices", "billing_weights"):
        for typ in getattr(spec, section):
            check_type((section, typ), typ)
    if spec.priority_classes is None:
        classes = dict(DEFAULT_CLASSES)
    else:
        if "normal" not in spec.priority_classes:
            raise fail(("priority_classes",), "must include `normal`, the class of jobs that name none")
        classes = {n: PriorityClass(value=c.value, preemptible=c.preemptible) for n, c in spec.priority_classes.items()}
    policy = PolicyConfig(**spec.policy.model_dump()) if spec.policy is not None else PolicyConfig()
    return SimCluster(
        servers=tuple(servers),
        tenants=tuple(tenants),
        pool_shares=pool_shares,
        quotas=quotas,
        pool_quotas=pool_quotas,
        prices=dict(spec.prices),
        billing_weights=dict(spec.billing_weights),
        classes=classes,
        policy=policy,
        half_life_s=spec.half_life_s,
    )
