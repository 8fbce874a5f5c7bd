"""/v1/nodes: the servers with devices, health and allocation; agents register and heartbeat.
Drain and undrain are `/v1/admin/nodes/{name}/drain|undrain` (`api/routers/cluster.py`).

Invariant: any signed-in principal may list servers, but job ids are shown only to center
admins and to members of the job's org (others see the device as busy); the heartbeat's
answer shows every job id on the node, for its agent.
"""

from __future__ import annotations

from fastapi import APIRouter

from api.auth import require_node_agent
from api.deps import DbDep, PrincipalDep, SettingsDep
from api.schemas.nodes import HeartbeatIn, NodeEventOut, NodeOut, node_out, report_from_heartbeat
from suanli import nodes as service
from suanli.node_health import IdleRule

router = APIRouter(prefix="/v1/nodes", tags=["nodes"])


@router.get("", response_model=list[NodeOut])
def list_nodes(who: PrincipalDep, db: DbDep, settings: SettingsDep) -> list[NodeOut]:
    """Every server by name: status (READY, DRAINING, DRAINED, NOT_READY, LOST), health, devices and who
    holds them, drain reason (any signed-in user)."""
    return [node_out(n) for n in service.list_nodes(db, who, settings.node_heartbeat_timeout_s)]


@router.get("/{name}", response_model=NodeOut)
def get_node(name: str, who: PrincipalDep, db: DbDep, settings: SettingsDep) -> NodeOut:
    """One server (404 `node_not_found` if there is none by that name)."""
    return node_out(service.get_node(db, who, name, settings.node_heartbeat_timeout_s))


@router.put("/{name}/heartbeat", response_model=NodeOut)
def heartbeat(name: str, body: HeartbeatIn, who: PrincipalDep, db: DbDep, settings: SettingsDep) -> NodeOut:
    """Register the server or refresh it (its agent — an agent bound to another node is
    refused —, the shared demo agent, or center admins)."""
    require_node_agent(who, name)
    rule = IdleRule(settings.idle_utilization_pct, settings.idle_window_s, settings.stop_idle_jobs)
    return node_out(service.heartbeat(db, report_from_heartbeat(name, body), settings.node_heartbeat_timeout_s, rule))


@router.get("/{name}/events", response_model=list[NodeEventOut])
def node_events(name: str, who: PrincipalDep, db: DbDep) -> list[NodeEventOut]:
    """The server's latest 100 events, newest first: registered, not_ready, ready, lost,
    device_unhealthy, device_healthy (any signed-in user; 404 `node_not_found`)."""
    return [NodeEventOut(at=e.at, kind=e.kind, device=e.device_index, message=e.message)
            for e in service.node_events(db, who, name)]
