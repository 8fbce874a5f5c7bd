"""CLI commands for orgs (kind, pool, status), prices, credit limits, top-ups and the audit log:
`suanli admin org|price|credit|topup|audit …` for center admins, `suanli prices` for everyone.

Invariants: the exit codes are those of `suanli.cli` (2 bad input naming the field, 3 not
allowed, 4 not found, 5 conflict, 6 unreachable), through its `call`/`fail`; `--json` prints
JSON and nothing else on stdout; the server checks everything (kinds, pools, amounts, times),
so the CLI never refuses what the API would accept. Tables show money as yuan.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON")]
OrgArg = Annotated[str, typer.Argument(help="The org's name")]
ReasonOpt = Annotated[str, typer.Option(help="Why (kept in the audit log)")]

org_app = typer.Typer(help="Orgs: register, list, verify, suspend, reinstate.", no_args_is_help=True)
price_app = typer.Typer(help="Prices per accelerator type (fen per device-hour, versioned).", no_args_is_help=True)


def _cli():  # type: ignore[no-untyped-def]
    """`suanli.cli` (its helpers: call, client, fail, out, print_json, fen). Imported when a
    command runs, because `suanli.cli` imports this module while it is being loaded."""
    from suanli import cli

    return cli


def register(app: typer.Typer, admin_app: typer.Typer) -> None:
    """Add this module's commands to `suanli` (app) and `suanli admin` (admin_app)."""
    admin_app.add_typer(org_app, name="org")
    admin_app.add_typer(price_app, name="price")
    admin_app.command("credit")(credit)
    admin_app.command("topup")(topup)
    admin_app.command("audit")(audit)
    app.command("prices")(prices)


# ---------------------------------------------------------------------------- orgs


def _org_line(o: dict[str, Any]) -> str:
    fen = _cli().fen
    return (f"org {o['name']} ({o['kind']}, pool {o['pool']}): {o['status']}; account {fen(o['balance_fen'])}, "
            f"held {fen(o['held_fen'])}, credit limit {fen(o['credit_limit_fen'])}")


def _show_org(o: dict[str, Any], as_json: bool) -> None:
    c = _cli()
    if as_json:
        c.print_json(o)
    else:
        c.out.print(_org_line(o), markup=False)


@org_app.command("create")
def org_create(
    name: OrgArg,
    pool: Annotated[str, typer.Option(help="An existing pool, e.g. universities")],
    kind: Annotated[str, typer.Option(help="university, research-institute, enterprise, sme or startup")],
    status: Annotated[str | None, typer.Option(help="applied (default) or verified")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Register an org (with its "default" project). It may submit jobs once verified."""
    c = _cli()
    _show_org(c.call(c.client().create_org, name, pool, kind, status), as_json)


@org_app.command("list")
def org_list(
    kind: Annotated[str | None, typer.Option(help="Only this kind")] = None,
    pool: Annotated[str | None, typer.Option(help="Only this pool")] = None,
    status: Annotated[str | None, typer.Option(help="Only this status")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Orgs with kind, pool, status, account, holds and credit limit."""
    c = _cli()
    data = c.call(c.client().orgs, kind, pool, status)
    if as_json:
        c.print_json(data)
        return
    t = Table("ORG", "POOL", "KIND", "STATUS", "ACCOUNT", "HELD", "CREDIT LIMIT")
    for o in data:
        t.add_row(o["name"], o["pool"], o["kind"], o["status"], c.fen(o["balance_fen"]), c.fen(o["held_fen"]),
                  c.fen(o["credit_limit_fen"]))
    c.out.print(t)


def _set_status(name: str, status: str, reason: str, as_json: bool) -> None:
    c = _cli()
    _show_org(c.call(c.client().set_org_status, name, status, reason), as_json)


@org_app.command("verify")
def org_verify(name: OrgArg, reason: ReasonOpt = "", as_json: JsonOpt = False) -> None:
    """applied → verified: the org may submit jobs."""
    _set_status(name, "verified", reason, as_json)


@org_app.command("suspend")
def org_suspend(name: OrgArg, reason: ReasonOpt = "", as_json: JsonOpt = False) -> None:
    """verified → suspended: no new jobs (running ones go on)."""
    _set_status(name, "suspended", reason, as_json)


@org_app.command("reinstate")
def org_reinstate(name: OrgArg, reason: ReasonOpt = "", as_json: JsonOpt = False) -> None:
    """suspended → verified."""
    _set_status(name, "verified", reason, as_json)


def credit(name: OrgArg, limit_fen: Annotated[int, typer.Option("--limit-fen", help="Credit limit in fen (>= 0)")],
           as_json: JsonOpt = False) -> None:
    """Set how far below zero an org's account may go."""
    c = _cli()
    _show_org(c.call(c.client().set_credit_limit, name, limit_fen), as_json)


def topup(
    name: OrgArg,
    amount_fen: Annotated[int, typer.Option("--amount-fen", help="Amount in fen (1 yuan = 100 fen), > 0")],
    key: Annotated[str, typer.Option(help="Idempotency key, e.g. the bank transfer's reference: the same key credits once")],
    memo: Annotated[str, typer.Option(help="Note on the ledger")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Credit an org's prepaid account."""
    c = _cli()
    b = c.call(c.client().top_up, name, amount_fen, key, memo)
    if as_json:
        c.print_json(b)
        return
    c.out.print(f"org {b['org']}: account {c.fen(b['balance_fen'])}, held {c.fen(b['held_fen'])}", markup=False)


# ---------------------------------------------------------------------------- prices


@price_app.command("set")
def price_set(
    accelerator_type: Annotated[str, typer.Argument(help="e.g. nvidia-a100-80g")],
    fen_per_hour: Annotated[int, typer.Option("--fen-per-hour", help="Fen per device-hour (¥12.00 = 1200)")],
    effective_from: Annotated[str | None, typer.Option("--from", help="ISO 8601 time with zone (default now)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """A new price version (running jobs keep the price they started with)."""
    c = _cli()
    p = c.call(c.client().set_price, accelerator_type, fen_per_hour, effective_from)
    if as_json:
        c.print_json(p)
        return
    c.out.print(f"{p['accelerator_type']}: {c.fen(p['fen_per_device_hour'])} per device-hour from {p['effective_from']}",
                markup=False)


def _print_prices(as_json: bool) -> None:
    c = _cli()
    data = c.call(c.client().prices)
    if as_json:
        c.print_json(data)
        return
    t = Table("TYPE", "PER DEVICE-HOUR", "SINCE", "SCHEDULED")
    for p in data:
        now = p["current"]
        later = "; ".join(f"{c.fen(x['fen_per_device_hour'])} from {x['effective_from'][:19].replace('T', ' ')}"
                          for x in p["scheduled"])
        t.add_row(p["accelerator_type"], c.fen(now["fen_per_device_hour"]) if now else "-",
                  now["effective_from"][:19].replace("T", " ") if now else "-", later)
    c.out.print(t)


@price_app.command("list")
def price_list(as_json: JsonOpt = False) -> None:
    """Per accelerator type: the price now and scheduled changes."""
    _print_prices(as_json)


def prices(as_json: JsonOpt = False) -> None:
    """What an hour of each accelerator type costs now, and scheduled changes."""
    _print_prices(as_json)


# ---------------------------------------------------------------------------- audit log


def audit(
    action: Annotated[str | None, typer.Option(help="e.g. org.status, price.set, org.topup, org.credit_limit")] = None,
    target: Annotated[str | None, typer.Option(help="e.g. org:city-university, price:ascend-910b")] = None,
    actor: Annotated[str | None, typer.Option(help="Who made the change")] = None,
    since: Annotated[str | None, typer.Option(help="ISO 8601 time with zone")] = None,
    limit: Annotated[int, typer.Option(help="At most this many (<= 500), newest first")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Admin changes: who, what, when, before and after."""
    c = _cli()
    data = c.call(c.client().audit, action, target, actor, since, limit)
    if as_json:
        c.print_json(data)
        return
    t = Table("ID", "AT", "ACTOR", "ACTION", "TARGET", "BEFORE", "AFTER")
    for a in data:
        t.add_row(str(a["id"]), a["at"][:19].replace("T", " "),
                  *(escape(x) for x in (a["actor"], a["action"], a["target"], _compact(a["before"]), _compact(a["after"]))))
    c.out.print(t)


def _compact(d: dict[str, Any] | None) -> str:
    return "-" if d is None else json.dumps(d, ensure_ascii=False, separators=(",", ":"))
