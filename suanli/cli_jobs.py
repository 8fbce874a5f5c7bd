"""Researcher job commands: `suanli submit | run | jobs | describe | logs | cancel | hold |
release`, and `suanli admin requeue` for center admins.

Invariants:
- Exit codes are those of `suanli.cli` (through its `call`/`fail`): 2 bad input naming the
  field, 3 not allowed, 4 not found, 5 conflict, 6 unreachable. `--wait` and `--follow`
  exit 0 only if the job SUCCEEDED, 1 otherwise.
- `--json` prints JSON and nothing else on stdout (a followed log is not printed then).
- Every submit carries a fresh `Idempotency-Key` and is retried on a broken connection with
  that key, so a retry can never create a second job.
- `run` builds the same spec a YAML file would hold; the server checks it (the CLI refuses
  only what it cannot even build, such as `--env` without `=`).
- A spec's `code: ./dir` (or `run --code DIR`) is zipped here and uploaded before the submit
  (`ship_code`): the API cannot read the user's disk. The submitted spec carries its id.
"""

from __future__ import annotations

import codecs
import re
import sys
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from suanli.cli import JsonOpt, call, client, fail, fen, out, print_json  # noqa: E402 - cli imports us after these
from suanli.client import TERMINAL, Client
from suanli.code import CODE_ID, CodeError, pack

SUBMIT_RETRIES = 2
# What the CLI zips at most (Ray's own package limit); the center's `code_max_bytes` (100 MiB
# by default) is checked by the API, which answers 413 naming it.
CLIENT_CODE_LIMIT = 500 * 1024 * 1024
STATUS_STYLE = {"SUCCEEDED": "green", "FAILED": "red", "TIMEOUT": "red", "CANCELLED": "yellow", "RUNNING": "cyan",
                "HELD": "magenta", "PREEMPTED": "red", "NODE_LOST": "red"}
WaitOpt = Annotated[bool, typer.Option("--wait", help="Wait until the job ends; exit 0 only if it succeeded")]
FollowOpt = Annotated[bool, typer.Option("--follow", "-f", help="Stream the job's log until it ends; exit 0 only if it "
                                         "succeeded")]


def load_spec(path: Path) -> dict[str, Any]:
    """Read a YAML job spec and make `working_dir` absolute: relative paths are taken from the
    spec file's folder; with none given, the folder `suanli submit` runs in (as sbatch does)."""
    try:
        text = path.read_text()
    except OSError as e:
        fail(f"cannot read {path}: {e.strerror}", 2)
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as e:
        fail(f"{path} is not valid YAML: {e}", 2)
    if not isinstance(spec, dict):
        fail(f"{path} must hold a mapping of job fields (name, resources, command, …)", 2)
    code = spec.get("code")
    if isinstance(code, str) and not CODE_ID.match(code):
        spec["code"] = {"dir": code}
    if isinstance(spec.get("code"), dict) and isinstance(spec["code"].get("dir"), str):
        spec["code"]["dir"] = str((path.parent / spec["code"]["dir"]).resolve())  # relative to the spec file
    wd = spec.get("working_dir")
    if wd is None and code is None:
        spec["working_dir"] = str(Path.cwd())
    elif isinstance(wd, str) and not wd.startswith("/"):
        spec["working_dir"] = str((path.parent / wd).resolve())
    return spec


def submit(
    file: Annotated[Path, typer.Argument(help="Job spec (YAML)")],
    wait: WaitOpt = False,
    follow: FollowOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Submit a job spec."""
    _submit_and_watch(client(), load_spec(file), wait, follow, as_json)


def run(
    command: Annotated[list[str], typer.Argument(help="The command and its arguments, after `--`", show_default=False)],
    accelerator: Annotated[list[str], typer.Option("--type", "-t", help="Accelerator type (repeat for a list of "
                                                   "acceptable types, preferred first)")],
    devices: Annotated[int, typer.Option("--devices", "-d", help="Devices per server")] = 1,
    nodes: Annotated[int, typer.Option("--nodes", "-N", help="Servers (all start together, or none)")] = 1,
    time_limit: Annotated[str | None, typer.Option("--time", help="Time limit: seconds, or '30m', '12h', '1d'")] = None,
    name: Annotated[str | None, typer.Option(help="Job name (default: from the command)")] = None,
    project: Annotated[str | None, typer.Option(help="Project of your org (default: 'default')")] = None,
    cpus: Annotated[int | None, typer.Option("--cpus", help="CPUs per server")] = None,
    memory: Annotated[str | None, typer.Option("--memory", help="Memory per server: MiB, or '64Gi'")] = None,
    priority_class: Annotated[str | None, typer.Option("--class", help="Priority class (high, normal, low, preemptible, …)")] = None,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="K=V for the job's environment (repeatable)")] = None,
    working_dir: Annotated[Path | None, typer.Option("--workdir", help="Working directory (default: this folder)")] = None,
    no_requeue: Annotated[bool, typer.Option("--no-requeue", help="End PREEMPTED if preempted, instead of requeueing")] = False,
    code: Annotated[Path | None, typer.Option("--code", help="Ship this directory to the servers and run there "
                                              "(instead of a working dir on a shared filesystem)")] = None,
    wait: WaitOpt = False,
    follow: FollowOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Submit a command as a job, without writing a spec file. For example:

    suanli run --type nvidia-a100-80g --devices 8 --nodes 2 --time 12h -- torchrun train.py
    """
    _submit_and_watch(client(), build_spec(command, accelerator, devices, nodes, time_limit, name, project, cpus, memory,
                                           priority_class, env or [], working_dir, not no_requeue, code), wait, follow,
                      as_json)


def build_spec(command: list[str], accelerator: list[str], devices: int, nodes: int, time_limit: str | None,
               name: str | None, project: str | None, cpus: int | None, memory: str | None, priority_class: str | None,
               env: list[str], working_dir: Path | None, requeue: bool = True, code: Path | None = None) -> dict[str, Any]:
    """The spec `suanli run` submits; unset options are left to the server's defaults."""
    if not command:
        fail("give the command after `--`, e.g. `suanli run --type nvidia-a100-80g -- python train.py`", 2)
    resources: dict[str, Any] = {"accelerator": accelerator[0] if len(accelerator) == 1 else accelerator,
                                 "devices_per_node": devices, "nodes": nodes}
    if cpus is not None:
        resources["cpus_per_node"] = cpus
    if memory is not None:
        resources["memory_per_node"] = int(memory) if memory.isdigit() else memory
    variables: dict[str, str] = {}
    for item in env:
        key, eq, value = item.partition("=")
        if not eq or not key:
            fail(f"--env {item!r}: write it as KEY=VALUE", 2)
        variables[key] = value
    spec: dict[str, Any] = {
        "name": name or default_name(command),
        "resources": resources,
        "command": command,
    }
    if code is not None:
        spec["code"] = {"dir": str(code.resolve())}
        if working_dir is not None:
            fail("give --code (shipped) or --workdir (in place), not both", 2)
    else:
        spec["working_dir"] = str((working_dir or Path.cwd()).resolve())
    for k, v in (("project", project), ("priority_class", priority_class), ("time_limit", time_limit)):
        if v is not None:
            spec[k] = int(v) if k == "time_limit" and v.isdigit() else v
    if variables:
        spec["env"] = variables
    if not requeue:
        spec["requeue"] = False
    return spec


def default_name(command: list[str]) -> str:
    """A job name from the command: its first script (`train.py` in `torchrun --nproc_per_node
    8 train.py`), else its program, reduced to the characters names allow."""
    words = [Path(w).name for w in command if w and not w.startswith("-") and "=" not in w]
    script = next((w for w in words[1:] if re.search(r"\.(py|sh|bash|jl|R)$", w)), None)
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", script or (words[0] if words else "job")).lstrip("._-")[:64]
    return name or "job"


def ship_code(c: Client, spec: dict[str, Any], quiet: bool = False) -> dict[str, Any]:
    """Zip and upload a spec's `code` directory (`code: ./dir`, or `code: {dir: ./dir,
    excludes: [...]}`) and put the uploaded code's id in its place; a spec without one, or
    with an id already, is returned as it is."""
    code = spec.get("code")
    if code is None or isinstance(code, str) and CODE_ID.match(code):
        return spec
    if isinstance(code, str):
        code = {"dir": code}
    if not isinstance(code, dict) or not isinstance(code.get("dir"), str) or set(code) - {"dir", "excludes"}:
        fail("code: give a directory (code: ./src) or {dir: ./src, excludes: [data/, '*.ckpt']}", 2)
    excludes = code.get("excludes") or []
    if not isinstance(excludes, list) or not all(isinstance(e, str) for e in excludes):
        fail("code.excludes: give a list of patterns, e.g. [data/, '*.ckpt']", 2)
    try:
        zipped = pack(Path(code["dir"]), CLIENT_CODE_LIMIT, excludes)
    except CodeError as e:
        fail(str(e), 2)
    up = call(c.upload_code, zipped)
    if not quiet:
        out.print(f"uploaded {code['dir']}: {up['files']} files, {up['bytes']} bytes ({up['code'][:19]}…)", markup=False)
    return {**spec, "code": up["code"]}


def _submit_and_watch(c: Client, spec: dict[str, Any], wait: bool, follow: bool, as_json: bool) -> None:
    spec = ship_code(c, spec, quiet=as_json)
    job = call(c.submit, spec, idempotency_key=str(uuid.uuid4()), retries=SUBMIT_RETRIES)
    if not as_json:
        out.print(f"submitted job {job['id']} ({job['name']}): {job['status']}", markup=False)
    if follow and not as_json:
        follow_log(c, job["id"])
    if wait or follow:
        job = wait_for(c, job["id"], quiet=as_json or follow)
        if not as_json:
            out.print(f"job {job['id']} ended {job['status']}, exit code {job['exit_code']}, cost {fen(job['cost_fen'])}",
                      markup=False)
    if as_json:
        print_json(job)
    if (wait or follow) and job["status"] != "SUCCEEDED":
        raise typer.Exit(1)


def wait_for(c: Client, job_id: int, quiet: bool) -> dict[str, Any]:
    """Poll until the job has ended, printing each new status and reason unless `quiet`."""
    last = None
    while True:
        job = call(c.job, job_id)
        if not quiet and (job["status"], job["reason"]) != last:
            out.print(f"job {job_id}: {job['status']} — {job['reason']}", markup=False)
            last = (job["status"], job["reason"])
        if job["status"] in TERMINAL:
            return job  # type: ignore[no-any-return]
        time.sleep(0.5)


def follow_log(c: Client, job_id: int, rank: int | None = None) -> None:
    """Print the job's output as the server streams it; returns when the job has ended."""
    call(_print_stream, c, job_id, rank)


def _print_stream(c: Client, job_id: int, rank: int | None = None) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a chunk may end inside a character
    for chunk in c.follow_logs(job_id, rank=rank):
        sys.stdout.write(decoder.decode(chunk))
        sys.stdout.flush()
    sys.stdout.write(decoder.decode(b"", final=True))


def jobs(
    status: Annotated[list[str] | None, typer.Option("--status", "-s", help="Only these statuses (repeatable)")] = None,
    project: Annotated[str | None, typer.Option(help="Only this project's jobs")] = None,
    user: Annotated[str | None, typer.Option(help="Only this user's jobs")] = None,
    accelerator: Annotated[str | None, typer.Option("--type", help="Only jobs that asked for this accelerator type")] = None,
    org: Annotated[str | None, typer.Option(help="Center admins: only this org's jobs")] = None,
    since: Annotated[str | None, typer.Option(help="Only jobs submitted since (ISO time with zone, e.g. "
                                              "2026-11-29T08:00:00+08:00)")] = None,
    sort: Annotated[str, typer.Option(help="id (newest first) | submitted_at | priority")] = "id",
    limit: Annotated[int, typer.Option(help="At most this many (per page with --all-pages)")] = 50,
    all_pages: Annotated[bool, typer.Option("--all-pages", help="Every matching job, page after page")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List your org's jobs (center admins: every org's), newest first."""
    c = client()
    filters = dict(project=project, user=user, accelerator_type=accelerator, org=org, since=since, sort=sort)
    statuses = [s.upper() for s in status] if status else None
    if all_pages:
        items = call(lambda: list(c.all_jobs(statuses, min(limit, 500), **filters)))
        more = False
    else:
        page = call(c.jobs, statuses, limit, None, **filters)
        items, more = page["items"], bool(page["next_cursor"])
    if as_json:
        print_json(items)
        return
    t = Table("ID", "NAME", "USER", "PROJECT", "STATUS", "TYPE", "DEVICES", "SUBMITTED", "COST", "REASON")
    for j in items:
        r = j["resources"]
        t.add_row(
            str(j["id"]), j["name"], j["user"], j["project"], f"[{STATUS_STYLE.get(j['status'], 'white')}]{j['status']}[/]",
            j["accelerator_type"] or "|".join(r["accelerator_types"]),
            f"{r['nodes']}x{r['devices_per_node']}", j["submitted_at"][:19].replace("T", " "), fen(j["cost_so_far_fen"]),
            j["reason"][:60],
        )
    out.print(t)
    if more:
        out.print(f"(first {len(items)}; --all-pages for every job, or narrow with --status/--project/--user/--type)")


def describe(job_id: int, as_json: JsonOpt = False) -> None:
    """Everything about one job: status and why, placement, cost, events."""
    c = client()
    job = call(c.job, job_id)
    events = call(c.events, job_id)
    if as_json:
        print_json({**job, "events": events})
        return
    r = job["resources"]
    rows = [
        ("Job", f"{job['id']} {job['name']}"),
        ("Org / project / user", f"{job['org']} / {job['project']} / {job['user']}"),
        ("Status", job["status"] + (f" (restarted {job['restart_count']}x)" if job["restart_count"] else "")),
        ("Reason", job["reason"] + (f" [{job['reason_code']}]" if job["reason_code"] else "")),
        ("Priority", _priority_text(job)),
        ("Estimated start", job["estimated_start_at"] or "-"),
        ("Asked", f"{r['nodes']} node(s) x {r['devices_per_node']} {'|'.join(r['accelerator_types'])}, "
                  f"{r['cpus_per_node']} CPUs, {r['memory_mb_per_node']} MiB per node"),
        ("Time limit", f"{job['time_limit_s']}s (grace {job['grace_s']}s)"),
        ("Command", job["command"]),
        ("Working dir", job["working_dir"] or "(job folder)"),
        ("Placement", ", ".join(f"{p['node']}[{','.join(map(str, p['devices']))}]" for p in job["placements"]) or "-"),
        ("Submitted / started / ended", f"{job['submitted_at']} / {job['started_at'] or '-'} / {job['ended_at'] or '-'}"),
        ("Exit code", str(job["exit_code"]) if job["exit_code"] is not None else "-"),
        ("Price", f"{fen(job['price_fen_per_device_hour'])} per device-hour" if job["price_fen_per_device_hour"] is not None else "-"),
        ("Cost", fen(job["cost_fen"]) + (f" (so far {fen(job['cost_so_far_fen'])})"
                                         if job["cost_so_far_fen"] != (job["cost_fen"] or 0) else "")),
    ]
    for k, v in rows:
        out.print(f"[bold]{k + ':':<30}[/] {v}", soft_wrap=True)
    for notice in job.get("notices", []):
        out.print(f"[bold yellow]Notice:[/] {notice}", soft_wrap=True)
    out.print("[bold]Events:[/]")
    for e in events:
        out.print(f"  {e['at'][:23].replace('T', ' ')}  {e['from_status'] or '-':>10} → {e['to_status'] or '-':<10} {e['reason']}",
                  markup=False, soft_wrap=True)


def _priority_text(job: dict[str, Any]) -> str:
    if job["priority"] is None:
        return f"class {job['priority_class']}"
    factors = ", ".join(f"{f['name']} {f['factor']:.3f}×{f['weight']:g}" for f in job["priority_factors"])
    return f"{job['priority']:.4f} = weighted mean of ({factors}); class {job['priority_class']}"


def logs(
    job_id: int,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the job ends")] = False,
    rank: Annotated[int | None, typer.Option("--rank", "-r", min=0,
                                             help="Only this rank's output (multi-node jobs; default: all, each line prefixed [rank N])")] = None,
) -> None:
    """Print a job's output (stdout and stderr); a multi-node job's ranks merged unless --rank."""
    c = client()
    if follow:
        follow_log(c, job_id, rank)
        return
    offset: int | str = 0
    while True:
        data, offset, _ = call(c.logs, job_id, offset, rank)
        if not data:
            return
        sys.stdout.write(data.decode(errors="replace"))


def _act(fn: Any, job_id: int, as_json: bool) -> None:
    job = call(fn, job_id)
    if as_json:
        print_json(job)
    else:
        out.print(f"job {job_id}: {job['status']} — {job['reason']}", markup=False)


def cancel(job_id: int, as_json: JsonOpt = False) -> None:
    """Cancel a job (a running one gets SIGTERM, then SIGKILL after its grace period)."""
    _act(client().cancel, job_id, as_json)


def hold(job_id: int, as_json: JsonOpt = False) -> None:
    """Keep a pending job out of scheduling until `suanli release` (yours, or as an admin)."""
    _act(client().hold, job_id, as_json)


def release(job_id: int, as_json: JsonOpt = False) -> None:
    """Put a held job back in the queue; it keeps its place by submit time."""
    _act(client().release, job_id, as_json)


def requeue(job_id: int, as_json: JsonOpt = False) -> None:
    """Center admins: stop a running job (grace period, then SIGKILL) and put it back in the
    queue with its submit time. Others get exit 3."""
    _act(client().requeue, job_id, as_json)


def register(app: typer.Typer) -> None:
    """Add the researcher commands to `suanli`."""
    for fn in (submit, run, jobs, describe, logs, cancel, hold, release):
        app.command()(fn)


def register_admin(admin_app: typer.Typer) -> None:
    """Add `suanli admin requeue`."""
    admin_app.command("requeue")(requeue)
