"""Center-admin requests and views: quotas, shares, priority classes, projects.

Invariants: requests refuse unknown fields and are strict (`true` is not 1, `"16"` is not
16); numbers are bounded to what the database columns hold; `quota_out`, `share_out`,
`class_out` and `project_out` are the only ways from the admin service's entries
(`suanli.admin`) to these views.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from suanli.admin import ClassEntry, ProjectEntry, QuotaEntry, Scope, ShareEntry, ShareKind

NAME64 = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"  # orgs, pools and projects are VARCHAR(64)
CLASS_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$"  # priority classes are VARCHAR(32)
MAX_DEVICES = 1_000_000
MAX_SHARES = 1_000_000


class QuotaIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [{"guaranteed": 16, "limit": 64}]})
    guaranteed: int = Field(ge=0, le=MAX_DEVICES, description="Devices promised; reclaimed from borrowers when needed")
    limit: int | None = Field(None, ge=0, le=MAX_DEVICES, description="Most devices in use at once (null: no limit); >= guaranteed")


class QuotaOut(BaseModel):
    scope: Scope
    name: str
    accelerator_type: str
    guaranteed: int
    limit: int | None


def quota_out(q: QuotaEntry) -> QuotaOut:
    return QuotaOut(scope=q.scope, name=q.name, accelerator_type=q.accelerator_type, guaranteed=q.guaranteed, limit=q.limit)


class SharesIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [{"shares": 4}]})
    shares: int = Field(ge=0, le=MAX_SHARES, description="Weight against siblings; 0: never ahead of siblings with shares")


class ShareOut(BaseModel):
    kind: ShareKind
    name: str = Field(description="Pool, org, or ORG/PROJECT")
    parent: str | None = Field(description="Pools: null (the center); orgs: their pool; projects: their org")
    shares: int


def share_out(e: ShareEntry) -> ShareOut:
    return ShareOut(kind=e.kind, name=e.name, parent=e.parent, shares=e.shares)


class PriorityClassIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True,
                              json_schema_extra={"examples": [{"value": 0.8, "preemptible": False, "description": "deadline runs"}]})
    value: float = Field(ge=0, le=1, allow_inf_nan=False, description="The QOS factor in [0, 1], at most 4 decimal places")
    preemptible: bool = Field(False, description="Jobs of this class may be preempted for anyone")
    description: str | None = Field(None, max_length=200, description="null keeps the current description")


class PriorityClassOut(BaseModel):
    name: str
    value: float
    preemptible: bool
    description: str


def class_out(c: ClassEntry) -> PriorityClassOut:
    return PriorityClassOut(name=c.name, value=float(c.value), preemptible=c.preemptible, description=c.description)


class ProjectIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [{"org": "city-university", "name": "nlp"}]})
    org: str = Field(pattern=NAME64)
    name: str = Field(pattern=NAME64)


class ProjectOut(BaseModel):
    org: str
    name: str
    shares: int


def project_out(p: ProjectEntry) -> ProjectOut:
    return ProjectOut(org=p.org, name=p.name, shares=p.shares)
