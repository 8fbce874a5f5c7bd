"""CLI commands for subsidy programs and voucher grants (center admins):
`suanli admin program create|list|show` and `suanli admin voucher grant|list|revoke`.

Invariants: the exit codes are those of `suanli.cli` (2 bad input naming the field, 3 not
allowed, 4 not found, 5 conflict, 6 unreachable), through its `call`/`fail`; `--json` prints
JSON and nothing else on stdout; rates go to the server as the exact text typed ("0.3"),
never through a float; dates are YYYY-MM-DD (00:00 UTC that day) or ISO 8601 times (UTC when
no zone is given). The server checks everything else. Tables show money in fen and yuan.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from api.schemas.billing import yuan

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON")]
DATE_HELP = "YYYY-MM-DD (00:00 UTC) or an ISO 8601 time (UTC if no zone)"

program_app = typer.Typer(help="Subsidy programs (算力券): budget, rate, caps, eligibility, window.", no_args_is_help=True)
voucher_app = typer.Typer(help="Vouchers granted from programs to orgs: grant, list, revoke.", no_args_is_help=True)


def _cli():  # type: ignore[no-untyped-def]
    """`suanli.cli` (its helpers: call, client, fail, out, print_json). Imported when a command
    runs, because `suanli.cli` imports this module while it is being loaded."""
    from suanli import cli

    return cli


def register(app: typer.Typer, admin_app: typer.Typer) -> None:
    """Add this module's commands to `suanli` (app) and `suanli admin` (admin_app)."""
    del app
    admin_app.add_typer(program_app, name="program")
    admin_app.add_typer(voucher_app, name="voucher")


def parse_when(text: str, option: str) -> str:
    """ISO 8601 text (UTC) of a date or time typed on the command line; exit 2 naming the
    option when it is neither."""
    value = text.strip()
    try:
        at = datetime.strptime(value, "%Y-%m-%d") if len(value) == 10 else datetime.fromisoformat(value)
    except ValueError:
        _cli().fail(f"{option}: {text!r} is not a date (YYYY-MM-DD) or an ISO 8601 time", 2)
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return at.isoformat()


def money(fen: int | None) -> str:
    """'123456 (¥1234.56)'; '-' for none."""
    return "-" if fen is None else f"{fen} (¥{yuan(fen)})"


def _day(iso: str | None) -> str:
    return "-" if not iso else iso[:19].replace("T", " ")


def _all(items: list[str]) -> str:
    return ", ".join(items) or "all"


# ---------------------------------------------------------------------------- programs


def _show_program(p: dict[str, Any]) -> None:
    rows = [
        ("Program", p["name"]),
        ("Rate", p["rate"]),
        ("Window", f"{_day(p['valid_from'])} – {_day(p['valid_until'])} (UTC)"),
        ("Org kinds", _all(p["org_kinds"])),
        ("Accelerator types", _all(p["accelerator_types"])),
        ("Cap per org and year", money(p["cap_per_org_year_fen"])),
        ("Budget", money(p["budget_fen"])),
        ("Granted", f"{money(p['granted_fen'])} in {p['vouchers']} voucher(s)"),
        ("Left (not granted)", money(p["left_fen"])),
        ("Outstanding (in vouchers)", money(p["outstanding_fen"])),
        ("Held by running jobs", money(p["held_fen"])),
        ("Redeemed (subsidy paid)", money(p["redeemed_fen"])),
        ("Returned (revoked, expired)", money(p["returned_fen"])),
    ]
    for k, v in rows:
        _cli().out.print(f"{k + ':':<30} {v}", markup=False, soft_wrap=True)


@program_app.command("create")
def program_create(
    name: Annotated[str, typer.Argument(help="Unique name, e.g. '2026 算力券 第一批'")],
    budget_fen: Annotated[int, typer.Option("--budget-fen", help="Total budget in fen (> 0)")],
    rate: Annotated[str, typer.Option(help="Share of eligible costs vouchers pay, in (0, 1], e.g. 0.3")],
    valid_from: Annotated[str, typer.Option("--from", help=f"Start: {DATE_HELP}")],
    valid_until: Annotated[str, typer.Option("--until", help=f"End (exclusive): {DATE_HELP}")],
    cap_per_org_year_fen: Annotated[int | None, typer.Option("--cap-per-org-year-fen",
                                                             help="Most granted to one org per calendar year")] = None,
    org_kinds: Annotated[list[str] | None, typer.Option("--org-kind", help="Eligible org kind (repeatable; none = all): "
                                                        "university, research-institute, enterprise, sme, startup")] = None,
    types: Annotated[list[str] | None, typer.Option("--type", "-t", help="Eligible accelerator type (repeatable; none = all)")]
    = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a program and fund its budget."""
    c = _cli()
    start, end = parse_when(valid_from, "--from"), parse_when(valid_until, "--until")
    p = c.call(c.client().create_program, name, budget_fen, rate, start, end, cap_per_org_year_fen, org_kinds or [], types or [])
    if as_json:
        c.print_json(p)
        return
    c.out.print(f"program {p['name']} created: budget {money(p['budget_fen'])}, rate {p['rate']}", markup=False)


@program_app.command("list")
def program_list(as_json: JsonOpt = False) -> None:
    """Every program with its money."""
    c = _cli()
    data = c.call(c.client().programs)
    if as_json:
        c.print_json(data)
        return
    t = Table("NAME", "RATE", "UNTIL", "BUDGET", "GRANTED", "LEFT", "OUTSTANDING", "HELD", "REDEEMED", "RETURNED")
    for p in data:
        t.add_row(escape(p["name"]), p["rate"], _day(p["valid_until"])[:10], *(money(p[k]) for k in (
            "budget_fen", "granted_fen", "left_fen", "outstanding_fen", "held_fen", "redeemed_fen", "returned_fen")))
    c.out.print(t)


@program_app.command("show")
def program_show(name: str, as_json: JsonOpt = False) -> None:
    """One program: its rules and its money."""
    c = _cli()
    p = c.call(c.client().program, name)
    if as_json:
        c.print_json(p)
        return
    _show_program(p)


# ---------------------------------------------------------------------------- vouchers


def _voucher_line(v: dict[str, Any]) -> str:
    return (f"voucher {v['id']} ({v['program']} → {v['org']}): {v['status']}; face {money(v['face_fen'])}, "
            f"remaining {money(v['remaining_fen'])}, held {money(v['held_fen'])}, "
            f"{_day(v['valid_from'])} – {_day(v['expires_at'])} UTC")


@voucher_app.command("grant")
def voucher_grant(
    program: Annotated[str, typer.Argument(help="The program")],
    org: Annotated[str, typer.Argument(help="The org")],
    face_fen: Annotated[int, typer.Option("--face-fen", help="Face value in fen (> 0)")],
    expires: Annotated[str, typer.Option(help=f"End (exclusive): {DATE_HELP}")],
    valid_from: Annotated[str | None, typer.Option("--from", help=f"Start (default now): {DATE_HELP}")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Grant a voucher from a program to an org."""
    c = _cli()
    end = parse_when(expires, "--expires")
    start = parse_when(valid_from, "--from") if valid_from is not None else None
    v = c.call(c.client().grant_voucher, program, org, face_fen, end, start)
    if as_json:
        c.print_json(v)
        return
    c.out.print("granted " + _voucher_line(v), markup=False, soft_wrap=True)


@voucher_app.command("list")
def voucher_list(
    org: Annotated[str | None, typer.Option(help="Only this org's")] = None,
    program: Annotated[str | None, typer.Option(help="Only this program's")] = None,
    active: Annotated[bool, typer.Option("--active", help="Only active vouchers")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Vouchers, oldest first."""
    c = _cli()
    data = c.call(c.client().vouchers, org, program, True if active else None)
    if as_json:
        c.print_json(data)
        return
    t = Table("ID", "PROGRAM", "ORG", "STATUS", "FACE", "REMAINING", "HELD", "FROM", "EXPIRES", "REVOKED")
    for v in data:
        t.add_row(str(v["id"]), escape(v["program"]), escape(v["org"]), v["status"], money(v["face_fen"]), money(v["remaining_fen"]),
                  money(v["held_fen"]), _day(v["valid_from"]), _day(v["expires_at"]), _day(v["revoked_at"]))
    c.out.print(t)


@voucher_app.command("revoke")
def voucher_revoke(
    voucher_id: Annotated[int, typer.Argument(help="The voucher's id")],
    reason: Annotated[str, typer.Option(help="Why (kept in the audit log)")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Revoke a voucher: what it has left goes back to its program (held money stays held)."""
    c = _cli()
    v = c.call(c.client().revoke_voucher, voucher_id, reason)
    if as_json:
        c.print_json(v)
        return
    c.out.print(f"revoked voucher {v['id']}: {money(v['returned_fen'])} back to {v['program']}; "
                f"{money(v['held_fen'])} still held by running jobs", markup=False, soft_wrap=True)
