"""CLI commands for signing in, who-am-I, tokens, org members, pools and node agents' tokens:
`suanli login|whoami`, `suanli token create|list|revoke`, `suanli members
add|list|set-role|remove`, `suanli admin pool create|list`, `suanli admin node-token NODE`.

Invariants: the exit codes are those of `suanli.cli` (2 bad input naming the field, 3 not
signed in or not allowed, 4 not found, 5 conflict, 6 unreachable), through its `call`/`fail`;
`--json` prints JSON and nothing else on stdout. `login` writes the config file (mode 0600)
only after the server accepted the token, and never writes a value that would not read back
as the same TOML string. A new token's secret is printed once, on a line of its own.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Any

import typer
from rich.table import Table

from suanli.client import DEFAULT_SERVER, Client, write_config

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON")]
OrgOpt = Annotated[str | None, typer.Option("--org", help="The org (default: your own)")]
ExpiresIn = Annotated[str | None, typer.Option("--expires-in", help="Lifetime: 90m, 12h, 30d, 4w")]

# What `write_config` can put between TOML double quotes as is: no quote, backslash,
# whitespace or control character.
SERVER = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~/%-]*)?$")
TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,200}$")

token_app = typer.Typer(help="Your API tokens: create (shown once), list, revoke.", no_args_is_help=True)
members_app = typer.Typer(help="Members of an org (org admins and center admins): add, list, set-role, remove.",
                          no_args_is_help=True)
pool_app = typer.Typer(help="Pools of orgs (universities, enterprises, …).", no_args_is_help=True)


def _cli():  # type: ignore[no-untyped-def]
    """`suanli.cli` (its helpers: call, client, fail, out, err, print_json). Imported when a
    command runs, because `suanli.cli` imports this module while it is being loaded."""
    from suanli import cli

    return cli


def register(app: typer.Typer, admin_app: typer.Typer) -> None:
    """Add this module's commands to `suanli` (app) and `suanli admin` (admin_app)."""
    app.command("login")(login)
    app.command("whoami")(whoami)
    app.add_typer(token_app, name="token")
    app.add_typer(members_app, name="members")
    admin_app.add_typer(pool_app, name="pool")
    admin_app.command("node-token")(node_token)


def _when(t: str | None, never: str = "never") -> str:
    return never if t is None else t[:16].replace("T", " ") + " UTC"


def _me_line(m: dict[str, Any]) -> str:
    where = f" of {m['org']}" if m["org"] else f" for node {m['node']}" if m["node"] else ""
    token = f"; token {m['token_name'] or '-'}, expires {_when(m['token_expires_at'])}"
    return f"{m['user']} ({m['role']}{where}){token}"


# ---------------------------------------------------------------------------- sign in


def login(
    server: Annotated[str | None, typer.Option(help="The API's URL (default: $SUANLI_SERVER or http://127.0.0.1:8000)")] = None,
    token: Annotated[str | None, typer.Option(help="Your token (asked for, without echo, when omitted)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a token with the server, then save both to ~/.config/suanli/config.toml (0600).

    SUANLI_SERVER and SUANLI_TOKEN, when set, still override the file."""
    c = _cli()
    url = (server or os.environ.get("SUANLI_SERVER") or DEFAULT_SERVER).rstrip("/")
    if not SERVER.match(url):
        c.fail(f"--server: give the API's URL, e.g. https://suanli.example.cn or http://127.0.0.1:8000, not {url!r}", 2)
    if token is None:
        token = typer.prompt("token", hide_input=True)
    token = token.strip()
    if not TOKEN.match(token):
        c.fail("--token: not a suanli token (it looks like sl_… and has no spaces or quotes)", 2)
    me = c.call(Client(url, token).me)
    path = write_config(url, token)
    if as_json:
        c.print_json({"server": url, "config": str(path), **me})
        return
    c.out.print(f"signed in to {url} as {_me_line(me)}", markup=False)
    c.out.print(f"saved to {path}", markup=False)


def whoami(as_json: JsonOpt = False) -> None:
    """Who your token belongs to: user, role, org, and the token's name and expiry."""
    c = _cli()
    client = c.client()
    me = c.call(client.me)
    if as_json:
        c.print_json({"server": client.server, **me})
        return
    c.out.print(f"{_me_line(me)} at {client.server}", markup=False)


# ---------------------------------------------------------------------------- tokens


def _show_new_token(t: dict[str, Any], as_json: bool) -> None:
    c = _cli()
    if as_json:
        c.print_json(t)
        return
    c.out.print(f"token {t['id']} ({t['name']}) for {t['user']}, expires {_when(t['expires_at'])}:", markup=False)
    c.out.print(t["token"], markup=False, soft_wrap=True)
    c.err.print("Store it now: it is not shown again.", markup=False)


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="What it is for, e.g. laptop or ci")],
    expires_in: ExpiresIn = None,
    expires_at: Annotated[str | None, typer.Option("--expires-at", help="Or an ISO 8601 time with zone")] = None,
    as_json: JsonOpt = False,
) -> None:
    """A new token for yourself, printed once. Members' tokens must expire."""
    c = _cli()
    _show_new_token(c.call(c.client().create_token, name, expires_in, expires_at), as_json)


@token_app.command("list")
def token_list(
    user: Annotated[str | None, typer.Option(help="Another user's (admins)")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Also revoked and expired tokens")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Your tokens (never their secrets), newest first."""
    c = _cli()
    data = c.call(c.client().tokens, user, all_)
    if as_json:
        c.print_json(data)
        return
    t = Table("ID", "USER", "NAME", "PREFIX", "CREATED", "EXPIRES", "LAST USED", "REVOKED")
    for k in data:
        t.add_row(str(k["id"]), k["user"], k["name"], k["prefix"] + "…", _when(k["created_at"]), _when(k["expires_at"]),
                  _when(k["last_used_at"], "-"), _when(k["revoked_at"], "-"))
    c.out.print(t)


@token_app.command("revoke")
def token_revoke(token_id: Annotated[int, typer.Argument(help="The token's id (suanli token list)")],
                 as_json: JsonOpt = False) -> None:
    """Revoke a token at once (yours; admins also others')."""
    c = _cli()
    c.call(c.client().revoke_token, token_id)
    if as_json:
        c.print_json({"id": token_id, "revoked": True})
    else:
        c.out.print(f"token {token_id} revoked", markup=False)


# ---------------------------------------------------------------------------- members


def _org(org: str | None) -> str:
    """The org named, or the caller's own."""
    if org is not None:
        return org
    c = _cli()
    mine = c.call(c.client().me)["org"]
    if mine is None:
        c.fail("--org: you belong to no org; name one", 2)
    return str(mine)


def _show_member(m: dict[str, Any], as_json: bool) -> None:
    c = _cli()
    if as_json:
        c.print_json(m)
    else:
        c.out.print(f"{m['name']}: {m['role']} of {m['org']}", markup=False)


@members_app.command("add")
def members_add(
    name: Annotated[str, typer.Argument(help="The new user's name (unique; never reused)")],
    org: OrgOpt = None,
    role: Annotated[str, typer.Option(help="member or org-admin")] = "member",
    expires_in: ExpiresIn = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a user to an org; prints their first token once: hand it to them."""
    c = _cli()
    r = c.call(c.client().add_member, _org(org), name, role, expires_in)
    if as_json:
        c.print_json(r)
        return
    _show_member(r["member"], False)
    _show_new_token(r["token"], False)


@members_app.command("list")
def members_list(org: OrgOpt = None, as_json: JsonOpt = False) -> None:
    """The org's members and their roles."""
    c = _cli()
    data = c.call(c.client().members, _org(org))
    if as_json:
        c.print_json(data)
        return
    t = Table("USER", "ROLE", "SINCE")
    for m in data:
        t.add_row(m["name"], m["role"], _when(m["created_at"]))
    c.out.print(t)


@members_app.command("set-role")
def members_set_role(
    user: Annotated[str, typer.Argument(help="The member")],
    role: Annotated[str, typer.Argument(help="member or org-admin")],
    org: OrgOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make a member org-admin, or an org admin member."""
    c = _cli()
    _show_member(c.call(c.client().set_member_role, _org(org), user, role), as_json)


@members_app.command("remove")
def members_remove(user: Annotated[str, typer.Argument(help="The member")], org: OrgOpt = None,
                   as_json: JsonOpt = False) -> None:
    """Remove a member: revokes all their tokens and disables the user (jobs are left alone)."""
    c = _cli()
    name = _org(org)
    c.call(c.client().remove_member, name, user)
    if as_json:
        c.print_json({"org": name, "user": user, "removed": True})
    else:
        c.out.print(f"{user} removed from {name}; their tokens are revoked", markup=False)


# ---------------------------------------------------------------------------- center admins


@pool_app.command("create")
def pool_create(
    name: Annotated[str, typer.Argument(help="e.g. hospitals")],
    shares: Annotated[int, typer.Option(help="Fair-share weight against the other pools")] = 1,
    as_json: JsonOpt = False,
) -> None:
    """A new pool of orgs."""
    c = _cli()
    p = c.call(c.client().create_pool, name, shares)
    if as_json:
        c.print_json(p)
    else:
        c.out.print(f"pool {p['name']}: shares {p['shares']}", markup=False)


@pool_app.command("list")
def pool_list(as_json: JsonOpt = False) -> None:
    """Pools with their shares and how many orgs each holds."""
    c = _cli()
    data = c.call(c.client().pools)
    if as_json:
        c.print_json(data)
        return
    t = Table("POOL", "SHARES", "ORGS")
    for p in data:
        t.add_row(p["name"], str(p["shares"]), str(p["orgs"]))
    c.out.print(t)


def node_token(
    node: Annotated[str, typer.Argument(help="The server's name, as its agent reports it")],
    expires_in: ExpiresIn = None,
    as_json: JsonOpt = False,
) -> None:
    """A token for one server's agent (it may act only as that node), printed once. Give it to
    the agent as SUANLI_TOKEN."""
    c = _cli()
    _show_new_token(c.call(c.client().node_token, node, expires_in), as_json)
