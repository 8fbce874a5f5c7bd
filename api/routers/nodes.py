"""/v1/nodes: list servers; agents register and heartbeat."""

from __future__ import annotations

from fastapi import APIRouter

from api.auth import require
from api.deps import DbDep, PrincipalDep
from api.schemas.nodes import HeartbeatIn, NodeOut, node_out, report_from_heartbeat
from suanli import nodes as service
from suanli.identity import Role

router = APIRouter(prefix="/v1/nodes", tags=["nodes"])


@router.get("", response_model=list[NodeOut])
def list_nodes(who: PrincipalDep, db: DbDep) -> list[NodeOut]:
    del who  # any signed-in user may see the cluster's servers
    return [node_out(n) for n in service.list_nodes(db)]


@router.put("/{name}/heartbeat", response_model=NodeOut)
def heartbeat(name: str, body: HeartbeatIn, who: PrincipalDep, db: DbDep) -> NodeOut:
    """Register the server or refresh it (agents, or center admins)."""
    require(who, Role.AGENT, Role.CENTER_ADMIN)
    return node_out(service.heartbeat(db, report_from_heartbeat(name, body)))
