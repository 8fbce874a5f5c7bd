"""CLI commands for the cluster: `suanli nodes`, `suanli node NAME` (devices, health, idle
allocations, latest events), `suanli queue`, `suanli usage`, and `suanli admin node
list|events|drain|undrain` for center admins.

Invariants: the exit codes are those of `suanli.cli` (2 bad input naming the field or
option, 3 not allowed, 4 not found, 5 conflict, 6 unreachable), through its `call`/`fail`;
`--json` prints JSON and nothing else on stdout; the server checks everything else (names,
windows, roles). Times without a zone given to `--from`/`--to` are read in this computer's
zone before they are sent (the API wants a zone on every time).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.table import Table

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON")]
NodeArg = Annotated[str, typer.Argument(help="The server's name, e.g. a100-0")]

node_app = typer.Typer(help="Servers: list with health, events, drain (no new jobs; running ones continue) and undrain.",
                       no_args_is_help=True)


class By(StrEnum):
    ORG = "org"
    POOL = "pool"
    TYPE = "type"


class StepOpt(StrEnum):
    HOUR = "hour"
    DAY = "day"


def _cli():  # type: ignore[no-untyped-def]
    """`suanli.cli` (its helpers: call, client, fail, out, print_json, fen). Imported when a
    command runs, because `suanli.cli` imports this module while it is being loaded."""
    from suanli import cli

    return cli


def register(app: typer.Typer, admin_app: typer.Typer) -> None:
    """Add this module's commands to `suanli` (app) and `suanli admin` (admin_app)."""
    app.command("nodes")(nodes)
    app.command("node")(node)
    app.command("queue")(queue)
    app.command("usage")(usage)
    admin_app.add_typer(node_app, name="node")


# ---------------------------------------------------------------------------- nodes


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def _jobs_text(n: dict[str, Any]) -> str:
    """Job ids you may see; devices held by jobs you may not see are counted as busy."""
    ids = sorted({j for d in n["devices"] for j in d["job_ids"]})
    hidden = sum(1 for d in n["devices"] if d["busy"] and not d["job_ids"])
    parts = [",".join(map(str, ids))] if ids else []
    if hidden:
        parts.append(f"{hidden} busy")
    return "; ".join(parts)


def _drain_text(n: dict[str, Any]) -> str:
    d = n.get("drain")
    return f"{d['reason']} ({d['by']}, {d['at'][:16].replace('T', ' ')})" if d else ""


def nodes(as_json: JsonOpt = False) -> None:
    """The center's servers: status, health, free/total devices, jobs, last heartbeat."""
    c = _cli()
    data = c.call(c.client().nodes)
    if as_json:
        c.print_json(data)
        return
    t = Table("NODE", "TYPE", "STATUS", "HEALTH", "UNHEALTHY", "FREE", "JOBS", "IDLE", "HEARTBEAT", "DRAINED BECAUSE")
    for n in data:
        sick = ",".join(map(str, n.get("unhealthy_devices", []))) or "-"
        idle = ",".join(str(d["index"]) for d in n["devices"] if d.get("idle")) or "-"
        t.add_row(n["name"], n["accelerator_type"], n["status"], n["health"], sick, f"{n['devices_free']}/{n['device_count']}",
                  _jobs_text(n), idle, _age(n["heartbeat_age_s"]), _drain_text(n))
    c.out.print(t)


def _show_node(n: dict[str, Any]) -> None:
    c = _cli()
    c.out.print(f"{n['name']} ({n['accelerator_type']}): {n['status']}, health {n['health']}; "
                f"{n['devices_free']}/{n['device_count']} devices free, {n['cpus']} CPUs, {n['memory_mb']} MiB; "
                f"heartbeat {_age(n['heartbeat_age_s'])}", markup=False)
    if n.get("drain"):
        c.out.print(f"drained: {_drain_text(n)}", markup=False)
    t = Table("DEVICE", "MODEL", "MEMORY (MiB)", "HEALTH", "UTIL %", "IN USE BY")
    for d in n["devices"]:
        use = ",".join(map(str, d["job_ids"])) or ("busy" if d["busy"] else "")
        if d["shared"]:
            use = f"shared: {use}"
        if d.get("org"):
            use += f" ({d['org']}/{d['project']})"
        if d.get("idle"):
            use += f" IDLE since {d['idle_since'][:16].replace('T', ' ')}"
        health = d["health"] + (f": {d['health_reason']}" if d.get("health_reason") else "")
        util = "-" if d.get("utilization_pct") is None else f"{d['utilization_pct']:.0f}"
        t.add_row(str(d["index"]), d["model"], str(d["memory_mb"]), health, util, use)
    c.out.print(t)


def _show_events(events: list[dict[str, Any]]) -> None:
    c = _cli()
    for e in events:
        dev = f" device {e['device']}" if e.get("device") is not None else ""
        c.out.print(f"  {e['at'][:19].replace('T', ' ')}  {e['kind']:<16}{dev}  {e['message']}", markup=False, soft_wrap=True)


def node(name: NodeArg, as_json: JsonOpt = False) -> None:
    """One server: status, health, each device and who uses it, why it is drained."""
    c = _cli()
    n = c.call(c.client().node, name)
    if as_json:
        c.print_json(n)
        return
    _show_node(n)
    events = c.call(c.client().node_events, name)[:10]
    if events:
        c.out.print("latest events:")
        _show_events(events)


@node_app.command("list")
def admin_list(as_json: JsonOpt = False) -> None:
    """Every server with status, health and its unhealthy devices (same as `suanli nodes`)."""
    nodes(as_json)


@node_app.command("events")
def events(name: NodeArg, as_json: JsonOpt = False) -> None:
    """The server's latest events, newest first: registered, not_ready, ready, lost,
    device_unhealthy, device_healthy."""
    c = _cli()
    found = c.call(c.client().node_events, name)
    if as_json:
        c.print_json(found)
    else:
        _show_events(found)


@node_app.command("drain")
def drain(name: NodeArg, reason: Annotated[str, typer.Option(help="Why (shown with the node, kept in the audit log)")],
          as_json: JsonOpt = False) -> None:
    """No new jobs on the server; running ones continue (DRAINING, then DRAINED)."""
    c = _cli()
    n = c.call(c.client().drain_node, name, reason)
    if as_json:
        c.print_json(n)
    else:
        c.out.print(f"{n['name']}: {n['status']} ({n['jobs']} job(s) still on it)", markup=False)


@node_app.command("undrain")
def undrain(name: NodeArg, as_json: JsonOpt = False) -> None:
    """The server takes new jobs again."""
    c = _cli()
    n = c.call(c.client().undrain_node, name)
    if as_json:
        c.print_json(n)
    else:
        c.out.print(f"{n['name']}: {n['status']}", markup=False)


# ---------------------------------------------------------------------------- queue and usage


def _wait(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _devices(x: float) -> str:
    return f"{x:g}"


def queue(as_json: JsonOpt = False) -> None:
    """Pending jobs by org and type (oldest wait, median estimated wait) and running jobs.
    Orgs other than yours are shown together as "(other orgs)"."""
    c = _cli()
    q = c.call(c.client().queue)
    if as_json:
        c.print_json(q)
        return
    c.out.print(f"pending: {q['pending_jobs']} job(s), {_devices(q['pending_devices'])} device(s); "
                f"running: {q['running_jobs']} job(s), {_devices(q['running_devices'])} device(s)", markup=False)
    t = Table("ORG", "TYPES", "PENDING", "DEVICES", "OLDEST WAIT", "EST. WAIT (MEDIAN)")
    for g in q["pending"]:
        est = _wait(g["median_estimated_wait_s"]) + (f" ({g['estimated_jobs']} estimated)" if g["estimated_jobs"] else "")
        t.add_row(g["org"] or "(other orgs)", g["accelerator_types"], str(g["jobs"]), _devices(g["devices"]),
                  _wait(g["oldest_wait_s"]), est)
    c.out.print(t)
    r = Table("ORG", "TYPE", "RUNNING", "DEVICES")
    for g in q["running"]:
        r.add_row(g["org"] or "(other orgs)", g["accelerator_type"], str(g["jobs"]), _devices(g["devices"]))
    c.out.print(r)


def _when(value: str | None, option: str) -> str | None:
    """An ISO 8601 date or time; without a zone, this computer's zone."""
    if value is None:
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        _cli().fail(f"{option}: {value!r} is not a date or time (use e.g. 2026-11-01 or 2026-11-01T08:00+08:00)", 2)
    return (t if t.tzinfo else t.astimezone()).isoformat()


def usage(
    by: Annotated[By, typer.Option("--by", help="Group by org, pool or accelerator type")] = By.ORG,
    from_: Annotated[str | None, typer.Option("--from", help="Start: ISO date or time (default: 30 days, or 1 day by hour)")] = None,
    to: Annotated[str | None, typer.Option("--to", help="End, excluded (default now)")] = None,
    step: Annotated[StepOpt, typer.Option("--step", help="Hours or days of the billing time zone")] = StepOpt.DAY,
    as_json: JsonOpt = False,
) -> None:
    """Device-hours, runs and cost per day or hour (members: your org; center admins: all)."""
    c = _cli()
    u = c.call(c.client().usage, str(by), _when(from_, "--from"), _when(to, "--to"), str(step))
    if as_json:
        c.print_json(u)
        return
    c.out.print(f"usage by {u['group_by']} per {u['step']} ({u['timezone']}), {u['from'][:16].replace('T', ' ')} "
                f"to {u['to'][:16].replace('T', ' ')}", markup=False)
    t = Table("FROM", by.value.upper(), "RUNS", "DEVICE-HOURS", "COST")
    cut = 10 if u["step"] == "day" else 16
    for p in u["points"]:
        t.add_row(p["start"][:cut].replace("T", " "), p["group"], str(p["runs"]), f"{p['device_hours']:.2f}", c.fen(p["cost_fen"]))
    for x in u["totals"]:
        t.add_row("total", x["group"], str(x["runs"]), f"{x['device_hours']:.2f}", c.fen(x["cost_fen"]), style="bold")
    c.out.print(t)
