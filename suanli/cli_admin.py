"""`suanli admin …`: the center admin's commands for the fair-share model — quotas, shares,
priority classes, projects. Registered on the main app by `suanli.cli`, whose helpers and
exit codes it uses.

Invariants: the exit codes are those of `suanli.cli` (2 bad input naming the field, 3 not
allowed, 4 not found, 5 conflict, 6 unreachable); `--json` prints JSON and nothing else on
stdout; the server checks everything, the CLI only refuses options that cannot go together.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

admin_app = typer.Typer(help="Center admins: quotas, fair-share weights, priority classes, projects; orgs, prices, "
                             "credit, top-ups, programs, vouchers, reports, audit.",
                        no_args_is_help=True)
quota_app = typer.Typer(help="Guaranteed devices and limits per org or pool and accelerator type.", no_args_is_help=True)
shares_app = typer.Typer(help="Fair-share weights of pools, orgs and projects.", no_args_is_help=True)
class_app = typer.Typer(help="Priority classes jobs may ask for.", no_args_is_help=True)
project_app = typer.Typer(help="Projects of an org (leaves of the fair-share tree).", no_args_is_help=True)
admin_app.add_typer(quota_app, name="quota")
admin_app.add_typer(shares_app, name="shares")
admin_app.add_typer(class_app, name="class")
admin_app.add_typer(project_app, name="project")

# After the apps above: `suanli.cli` imports `admin_app` from here, so either module may be
# imported first.
from suanli.cli import JsonOpt, call, client, fail, out, print_json  # noqa: E402

TypeOpt = Annotated[str, typer.Option("--type", "-t", help="Accelerator type, e.g. nvidia-a100-80g")]
PoolFlag = Annotated[bool, typer.Option("--pool", help="NAME is a pool, not an org")]


def _limit(limit: int | None) -> str:
    return "none" if limit is None else str(limit)


# ---------------------------------------------------------------------------- quotas


@quota_app.command("set")
def quota_set(
    name: Annotated[str, typer.Argument(help="Org (or pool, with --pool)")],
    accelerator_type: TypeOpt,
    guaranteed: Annotated[int, typer.Option(help="Devices guaranteed (reclaimed from borrowers when needed)")],
    limit: Annotated[int | None, typer.Option(help="Most devices in use at once; omit for no limit")] = None,
    pool: PoolFlag = False,
    as_json: JsonOpt = False,
) -> None:
    """Set (or replace) a guarantee and limit."""
    q = call(client().set_quota, name, accelerator_type, guaranteed, limit, "pool" if pool else "org")
    if as_json:
        print_json(q)
        return
    out.print(f"{q['scope']} {q['name']}: {q['accelerator_type']} guaranteed {q['guaranteed']}, limit {_limit(q['limit'])}",
              markup=False)


@quota_app.command("unset")
def quota_unset(name: Annotated[str, typer.Argument(help="Org (or pool, with --pool)")], accelerator_type: TypeOpt,
                pool: PoolFlag = False) -> None:
    """Remove a quota (nothing guaranteed, no limit)."""
    scope = "pool" if pool else "org"
    call(client().delete_quota, name, accelerator_type, scope)
    out.print(f"{scope} {name}: no quota for {accelerator_type}", markup=False)


@quota_app.command("list")
def quota_list(as_json: JsonOpt = False) -> None:
    """Every quota."""
    data = call(client().quotas)
    if as_json:
        print_json(data)
        return
    t = Table("SCOPE", "NAME", "TYPE", "GUARANTEED", "LIMIT")
    for q in data:
        t.add_row(q["scope"], q["name"], q["accelerator_type"], str(q["guaranteed"]), _limit(q["limit"]))
    out.print(t)


# ---------------------------------------------------------------------------- shares


@shares_app.command("set")
def shares_set(
    shares: Annotated[int, typer.Argument(help="Weight against siblings (0: never ahead of them)")],
    pool: Annotated[str | None, typer.Option(help="A pool")] = None,
    org: Annotated[str | None, typer.Option(help="An org")] = None,
    project: Annotated[str | None, typer.Option(help="A project, as ORG/PROJECT")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Set the fair-share weight of one pool, org or project."""
    chosen: list[tuple[str, str]] = [(k, v) for k, v in (("pool", pool), ("org", org), ("project", project)) if v is not None]
    if len(chosen) != 1:
        fail("name exactly one of --pool, --org, --project", 2)
    kind, name = chosen[0]
    e = call(client().set_shares, kind, name, shares)
    if as_json:
        print_json(e)
        return
    out.print(f"{e['kind']} {e['name']}: {e['shares']} shares", markup=False)


@shares_app.command("list")
def shares_list(as_json: JsonOpt = False) -> None:
    """The tenancy tree with each node's shares."""
    data: list[dict[str, Any]] = call(client().shares)
    if as_json:
        print_json(data)
        return
    t = Table("KIND", "NAME", "PARENT", "SHARES")
    for e in data:
        t.add_row(e["kind"], e["name"], e["parent"] or "(center)", str(e["shares"]))
    out.print(t)


# ---------------------------------------------------------------------------- priority classes


@class_app.command("set")
def class_set(
    name: str,
    value: Annotated[float, typer.Option(help="QOS factor in [0, 1]")],
    preemptible: Annotated[bool, typer.Option("--preemptible/--no-preemptible", help="May be preempted for anyone")] = False,
    description: Annotated[str | None, typer.Option(help="What the class is for (omit to keep the current one)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create or replace a priority class."""
    c = call(client().set_priority_class, name, value, preemptible, description)
    if as_json:
        print_json(c)
        return
    out.print(f"class {c['name']}: value {c['value']}{', preemptible' if c['preemptible'] else ''}", markup=False)


@class_app.command("list")
def class_list(as_json: JsonOpt = False) -> None:
    """The priority classes (any signed-in user may list them)."""
    data = call(client().priority_classes)
    if as_json:
        print_json(data)
        return
    t = Table("NAME", "VALUE", "PREEMPTIBLE", "DESCRIPTION")
    for c in data:
        t.add_row(c["name"], f"{c['value']:g}", "yes" if c["preemptible"] else "no", c["description"])
    out.print(t)


# ---------------------------------------------------------------------------- projects


@project_app.command("create")
def project_create(org: str, name: str, as_json: JsonOpt = False) -> None:
    """Create a project of an org."""
    p = call(client().create_project, org, name)
    if as_json:
        print_json(p)
        return
    out.print(f"project {p['org']}/{p['name']} created ({p['shares']} shares)", markup=False)
