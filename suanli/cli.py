"""`suanli`: the command line for researchers and operators.

Exit codes (stable, for scripts): 0 ok; 1 the job ended unsuccessfully (`--wait`) or an
unexpected error; 2 bad input (the message names the field); 3 not signed in or not
allowed; 4 not found; 5 conflict with the current state; 6 the API cannot be reached.
Every listing command takes `--json` (machine-readable, nothing else on stdout).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from suanli.client import ApiError, ApiUnreachable, Client

app = typer.Typer(help="suanli (算力): submit and follow jobs on a public AI compute center.", no_args_is_help=True,
                  add_completion=True, pretty_exceptions_enable=False)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

EXIT_BY_STATUS = {400: 2, 401: 3, 403: 3, 404: 4, 409: 5, 413: 2, 422: 2}
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON")]


def fail(message: str, code: int, fields: list[dict[str, str]] | None = None) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(message)}", markup=True, soft_wrap=True)
    for f in fields or []:
        err.print(f"  {f.get('field')}: {f.get('message')}", markup=False)
    raise typer.Exit(code)


def client() -> Client:
    return Client.from_config()


def call(fn: Any, *args: Any, **kw: Any) -> Any:
    try:
        return fn(*args, **kw)
    except ApiError as e:
        if e.errors:
            fail(f"{e.code}: fix {len(e.errors)} field(s):", EXIT_BY_STATUS.get(e.status, 1), e.errors)
        fail(f"{e.detail} [{e.code}]", EXIT_BY_STATUS.get(e.status, 1))
    except ApiUnreachable as e:
        fail(f"{e}. Is the center running (`make demo`)? Set SUANLI_SERVER or edit ~/.config/suanli/config.toml.", 6)


def fen(amount: int | None) -> str:
    if amount is None:
        return "-"
    sign = "-" if amount < 0 else ""
    return f"{sign}¥{abs(amount) // 100:,}.{abs(amount) % 100:02d}"


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------------- jobs

# submit, run, jobs, describe, logs, cancel, hold, release (and `admin requeue`, below). Imported
# here, after the helpers above, because `suanli.cli_jobs` takes them from this module.
from suanli import cli_jobs  # noqa: E402

cli_jobs.register(app)


@app.command()
def balance(
    org: Annotated[str | None, typer.Option(help="Center admins: whose balance")] = None,
    recent: Annotated[int, typer.Option(help="How many recent transactions")] = 10,
    as_json: JsonOpt = False,
) -> None:
    """Your org's account, holds, vouchers (with expiry) and latest transactions."""
    data = call(client().balance, org, recent)
    if as_json:
        print_json(data)
        return
    out.print(f"[bold]{data['org']}[/]: account {fen(data['balance_fen'])}, held for running jobs {fen(data['held_fen'])}"
              + (f", credit limit {fen(data['credit_limit_fen'])}" if data["credit_limit_fen"] else ""))
    if data["vouchers"]:
        vt = Table("VOUCHER", "PROGRAM", "RATE", "LEFT", "HELD", "EXPIRES", "STATUS")
        for v in data["vouchers"]:
            state = "usable" if v["usable"] else ("revoked" if v["revoked_at"] else "not valid now")
            vt.add_row(str(v["id"]), v["program"], f"{float(v['rate']) * 100:g}%", fen(v["remaining_fen"]), fen(v["held_fen"]),
                       v["expires_at"][:10], state)
        out.print(vt)
    t = Table("WHEN", "KIND", "JOB", "ACCOUNT", "VOUCHERS", "MEMO")
    for x in data["recent"]:
        t.add_row((x["at"] or "")[:19].replace("T", " "), x["kind"], str(x["job_id"] or ""), fen(x["amount_fen"]),
                  fen(x["voucher_fen"]) if x["voucher_fen"] else "", x["memo"])
    out.print(t)


# ---------------------------------------------------------------------------- simulation

from suanli.cli_sim import simulate_command  # noqa: E402

app.command("simulate")(simulate_command)


# ---------------------------------------------------------------------------- benchmarks

bench_app = typer.Typer(help="Benchmarks (speed is measured here, not in tests).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("scheduler")
def bench_scheduler(
    nodes: Annotated[int, typer.Option(help="Servers in the synthetic cluster")] = 1000,
    devices_per_node: Annotated[int, typer.Option(help="Devices per server")] = 8,
    pending: Annotated[int, typer.Option(help="Pending jobs")] = 10000,
    repeat: Annotated[int, typer.Option(help="Best of this many runs")] = 3,
    as_json: JsonOpt = False,
) -> None:
    """Time one full decide() over the pending jobs, on an empty and on a full cluster."""
    from suanli.bench import bench_scheduler as run

    result = run(nodes, devices_per_node, pending, repeat)
    if as_json:
        print_json(result)
    else:
        for k, v in result.items():
            out.print(f"{k:<24} {v}")


# ---------------------------------------------------------------------------- center admins

# Imported here, after the helpers above, because `suanli.cli_admin` takes them from this module.
from suanli.cli_admin import admin_app  # noqa: E402

app.add_typer(admin_app, name="admin")
cli_jobs.register_admin(admin_app)

# Billing commands (accounts, programs and vouchers, statements and reports), in their own modules.
from suanli import cli_accounts, cli_cluster, cli_identity, cli_programs, cli_reports  # noqa: E402
from suanli.bench_agent import register as register_bench_agent  # noqa: E402
from suanli.bench_api import register as register_bench_api  # noqa: E402
from suanli.bench_launch import register as register_bench_launch  # noqa: E402
from suanli.bench_ledger import register as register_bench_ledger  # noqa: E402

for _module in (cli_accounts, cli_programs, cli_reports, cli_identity, cli_cluster):
    _module.register(app, admin_app)
register_bench_ledger(bench_app)
register_bench_api(bench_app)
register_bench_agent(bench_app)
register_bench_launch(bench_app)


@bench_app.command("simulate")
def bench_simulate(
    jobs: Annotated[int, typer.Option(help="Synthetic jobs to replay")] = 100_000,
    servers: Annotated[int, typer.Option(help="Servers (8 devices each)")] = 1000,
    policy: Annotated[str, typer.Option(help="Policy to time (FIFO is the baseline)")] = "suanli",
    load: Annotated[float, typer.Option(help="Offered load as a fraction of capacity")] = 0.9,
    as_json: JsonOpt = False,
) -> None:
    """Time a time-mode replay of a synthetic multi-tenant workload."""
    from suanli.bench import bench_simulate as run

    result = run(jobs, servers, policy, load)
    if as_json:
        print_json(result)
    else:
        for k, v in result.items():
            out.print(f"{k:<20} {v}")


# ---------------------------------------------------------------------------- processes


@app.command()
def up(
    data_dir: Annotated[Path, typer.Option(help="Database, job logs and demo tokens")] = Path(".suanli"),
    port: Annotated[int, typer.Option(help="API port")] = 8000,
    cluster: Annotated[Path | None, typer.Option(help="Servers to simulate (YAML); default: 2x A100 + 1x 910B")] = None,
    agent_port: Annotated[int, typer.Option(help="First agent /metrics port")] = 9401,
) -> None:
    """Start the whole center on this machine (database, Ray, API, scheduler, agents)."""
    from suanli.up import UpError, run_up

    try:
        raise typer.Exit(run_up(data_dir, port, cluster, agent_port))
    except UpError as e:
        fail(str(e), 1)


@app.command()
def scheduler() -> None:
    """Run the scheduling loop (settings from SUANLI_* variables)."""
    import logging

    from scheduler.main import run
    from suanli.settings import Settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(Settings())


def main() -> None:
    app()


if __name__ == "__main__":
    main()
