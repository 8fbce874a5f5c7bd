"""CLI commands for statements per org and month (`suanli statement`), and program reports for
the funder (`suanli admin report`).

Invariants: the exit codes are those of `suanli.cli` (2 bad input naming the field, 3 not
allowed, 4 not found, 5 conflict, 6 unreachable), through its `call`/`fail`; `--json` prints
JSON and nothing else on stdout; `--csv -` prints the server's CSV and nothing else; the
server checks everything (months, roles), the CLI only refuses options that cannot go
together. Months are calendar months in the center's billing time zone (Asia/Shanghai by
default): a run belongs to the month it was settled in.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON")]  # as `suanli.cli.JsonOpt`
CsvOpt = Annotated[str | None, typer.Option("--csv", metavar="FILE|-", help="Write the CSV to FILE, or to stdout with -")]


def register(app: typer.Typer, admin_app: typer.Typer) -> None:
    """Add this module's commands to `suanli` (app) and `suanli admin` (admin_app)."""
    # Imported here: `suanli.cli` imports this module after defining its helpers.
    from suanli.cli import call, client, fail, fen, out, print_json
    from suanli.client import ApiError

    def write_csv(text: str, target: str, what: str) -> None:
        if target == "-":
            sys.stdout.write(text)
            return
        try:
            Path(target).write_text(text, encoding="utf-8", newline="")
        except OSError as e:
            fail(f"cannot write {target}: {e.strerror}", 2, [{"field": "--csv", "message": str(e.strerror)}])
        out.print(f"wrote {what} to {target}", markup=False)

    def own_org(c: Any) -> str:
        """The caller's org (from its balance); center admins belong to none."""
        try:
            return str(c.balance(None, 0)["org"])
        except ApiError as e:
            if e.code != "org_required":
                raise  # `call` reports it
            fail("you belong to no org: name one with --org ORG", 2, [{"field": "--org", "message": "required"}])

    def totals_text(t: dict[str, Any]) -> str:
        return (f"{t['runs']} run(s) of {t['jobs']} job(s), {t['device_hours']} device-hours, cost {fen(t['cost_fen'])}, "
                f"subsidy {fen(t['subsidy_fen'])}, paid {fen(t['paid_fen'])}")

    @app.command("statement")
    def statement(
        month: Annotated[str, typer.Argument(help="YYYY-MM (calendar month in the center's billing time zone)")],
        org: Annotated[str | None, typer.Option(help="Whose statement (default: your org; center admins must name one)")] = None,
        csv_to: CsvOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Your org's runs settled in one month: device-hours, price, cost, subsidy, paid; totals."""
        if csv_to is not None and as_json:
            fail("choose one of --csv and --json", 2)
        c = client()
        if org is None:
            org = call(own_org, c)
        if csv_to is not None:
            text = call(c.statement_csv, org, month)
            write_csv(text, csv_to, f"the statement of {org} for {month}")
            return
        st = call(c.statement, org, month)
        if as_json:
            print_json(st)
            return
        t = Table("JOB", "RUN", "NAME", "PROJECT", "USER", "TYPE", "DEVICES", "SETTLED", "DEVICE-H", "PRICE/H", "COST",
                  "SUBSIDY", "PAID", title=f"{st['org']} — {st['month']} ({st['time_zone']})")
        for ln in st["lines"]:
            t.add_row(str(ln["job_id"]), str(ln["run"]), ln["job_name"], ln["project"], ln["user"], ln["accelerator_type"],
                      ln["devices"], ln["settled_at"][:19].replace("T", " "), ln["device_hours"],
                      fen(ln["price_fen_per_device_hour"]), fen(ln["cost_fen"]) + (" (center fault)" if ln["center_fault"] else ""),
                      fen(ln["subsidy_fen"]), fen(ln["paid_fen"]))
        out.print(t)
        out.print(f"Total: {totals_text(st['totals'])}", markup=False)
        if st["opening_balance_fen"] is not None:
            out.print(f"Account (with holds): {fen(st['opening_balance_fen'])} at the start of the month, "
                      f"{fen(st['closing_balance_fen'])} at its end", markup=False)

    @admin_app.command("report")
    def report(
        program: Annotated[str, typer.Argument(help="Program name")],
        month: Annotated[str | None, typer.Option(help="One month, YYYY-MM")] = None,
        from_: Annotated[str | None, typer.Option("--from", help="First month, YYYY-MM")] = None,
        to: Annotated[str | None, typer.Option("--to", help="Last month (inclusive), YYYY-MM")] = None,
        csv_to: CsvOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """What a program's vouchers paid, per org per month, with totals by org kind and pool
        (--csv: the job-level evidence, one row per run). No months given: all of them."""
        if csv_to is not None and as_json:
            fail("choose one of --csv and --json", 2)
        if month is not None and (from_ is not None or to is not None):
            fail("give --month, or --from/--to, not both", 2, [{"field": "--month", "message": "conflicts with --from/--to"}])
        c = client()
        if csv_to is not None:
            write_csv(call(c.program_report_csv, program, month, from_, to), csv_to, f"the evidence of {program}")
            return
        rp = call(c.program_report, program, month, from_, to)
        if as_json:
            print_json(rp)
            return
        p = rp["program"]
        span = f"{rp['from_month'] or 'start'} … {rp['to_month'] or 'now'}"
        t = Table("MONTH", "ORG", "KIND", "POOL", "RUNS", "DEVICE-H", "COST", "SUBSIDY", "PAID",
                  title=f"{p['name']} (rate {p['rate']}, budget {fen(p['budget_fen'])}) — {span} ({rp['time_zone']})")
        for r in rp["rows"]:
            x = r["totals"]
            t.add_row(r["month"], r["org"], r["org_kind"], r["pool"], str(x["runs"]), x["device_hours"], fen(x["cost_fen"]),
                      fen(x["subsidy_fen"]), fen(x["paid_fen"]))
        out.print(t)
        for title, groups in (("By org kind", rp["by_org_kind"]), ("By pool", rp["by_pool"])):
            out.print(f"{title}:", markup=False)
            for g in groups:
                out.print(f"  {g['key']}: {g['orgs']} org(s), {totals_text(g['totals'])}", markup=False)
        out.print(f"Total: {totals_text(rp['total'])}", markup=False)
