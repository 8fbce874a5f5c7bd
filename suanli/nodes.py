"""Node service: heartbeats from agents, the server list."""

from __future__ import annotations

import re

from scheduler.types import Node, NodeReport
from suanli.db.engine import Database
from suanli.db.store import nodes as node_store
from suanli.db.store import tenancy
from suanli.errors import invalid, not_found
from suanli.jobs import utcnow

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def heartbeat(db: Database, report: NodeReport) -> Node:
    if not NAME.match(report.name):
        raise invalid("bad_node_name", f"{report.name!r} is not a node name", "name")
    with db.begin() as s:
        if report.accelerator_type not in tenancy.accelerator_vendors(s):
            raise invalid("unknown_accelerator_type", f"unknown accelerator type {report.accelerator_type}", "accelerator_type")
        node_store.upsert_node(s, report, utcnow())
    for n in list_nodes(db):
        if n.name == report.name:
            return n
    raise not_found("node", report.name)


def list_nodes(db: Database) -> list[Node]:
    with db.begin() as s:
        return node_store.list_nodes(s)
