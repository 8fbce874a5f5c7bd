"""The researcher CLI for jobs over real HTTP (uvicorn on loopback, SQLite center, no
scheduler): `run`, `submit --follow`, `logs -f`, `jobs` filters and pages, `hold`/`release`,
`admin requeue`, with the exit codes scripts rely on.

No runner runs here: where a job must produce output or end, a background thread appends
to the job's log file and advances its status through the store, as the reconciler would.
"""

from __future__ import annotations

import json
import shlex
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from scheduler.types import JobStatus
from suanli.cli import app
from suanli.db.models import JobRow
from tests.conftest import Member
from tests.integration.test_jobs_api import A100, B910, add_user, advance, log_file




@pytest.fixture
def cli(server, center, tmp_path):  # type: ignore[no-untyped-def]
    """`cli(*args, expect=0, token=...)` runs `suanli` as a fresh org's member (or `token`)."""
    member = center.new_org()

    def run(*args: str, expect: int = 0, token: str | None = None) -> str:
        env = {"SUANLI_SERVER": server, "SUANLI_TOKEN": token or member.token, "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
               "COLUMNS": "250"}
        result = CliRunner().invoke(app, list(args), env=env)
        assert result.exit_code == expect, (args, result.exit_code, result.output)
        assert "Traceback" not in result.output
        return result.output

    run.member = member  # type: ignore[attr-defined]
    return run


def job_named(center, name: str, timeout: float = 20) -> int:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline:
        with center.db.begin() as s:
            job_id = s.scalar(select(JobRow.id).where(JobRow.name == name))
        if job_id is not None:
            return int(job_id)
        time.sleep(0.05)
    raise AssertionError(f"no job {name}")


def play(center, name: str, lines: list[str], end: JobStatus, exit_code: int = 0) -> threading.Thread:  # type: ignore[no-untyped-def]
    """In the background: wait for the job called `name`, run it (status through the store),
    append `lines` to its log a little apart, then end it with `end`."""
    def go() -> None:
        job_id = job_named(center, name)
        advance(center, job_id, JobStatus.STARTING, JobStatus.RUNNING)
        path = log_file(center, job_id)
        for line in lines:
            time.sleep(0.3)
            with path.open("a") as f:
                f.write(line + "\n")
        time.sleep(0.3)
        advance(center, job_id, end, exit_code=exit_code)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


def test_run_builds_the_spec_and_refuses_what_it_cannot_build(cli, center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: `suanli run` submits exactly the options given (types in order, devices,
    nodes, time, cpus, memory, class, env, project, name, argv as the command, the current
    folder as working dir); an `--env` without `=` exits 2 naming it; a server refusal
    exits 2 naming the spec field; without `--type` it exits 2."""
    job = json.loads(cli("run", "--type", A100, "--type", B910, "--devices", "2", "--nodes", "1", "--time", "90m",
                         "--cpus", "3", "--memory", "2Gi", "--class", "low", "--env", "A=1", "-e", "B=x=y", "--name", "r-1",
                         "--json", "--", "python", "-c", "print('hi there')"))
    assert (job["name"], job["status"], job["priority_class"], job["time_limit_s"]) == ("r-1", "PENDING", "low", 5400)
    r = job["resources"]
    assert (r["accelerator_types"], r["devices_per_node"], r["nodes"], r["cpus_per_node"], r["memory_mb_per_node"]) == \
        ([A100, B910], 2, 1, 3, 2048)
    assert shlex.split(job["command"]) == ["python", "-c", "print('hi there')"]
    assert job["working_dir"] == str(Path.cwd().resolve())
    with center.db.begin() as s:
        assert s.scalar(select(JobRow.env).where(JobRow.id == job["id"])) == {"A": "1", "B": "x=y"}
    plain = json.loads(cli("run", "-t", A100, "--json", "--", "torchrun", "--nproc_per_node", "8", "train.py"))
    assert plain["name"] == "train.py" and plain["resources"]["devices_per_node"] == 1
    assert "--env 'NOPE'" in cli("run", "-t", A100, "--env", "NOPE", "--", "true", expect=2)
    out = cli("run", "-t", "tpu-v9", "--", "true", expect=2)
    assert "resources.accelerator" in out
    cli("run", "--", "true", expect=2)


def test_submit_follow_streams_the_log_and_exits_with_the_result(cli, center, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Invariants: `submit --follow` prints the job's lines as they come, each once, then the
    end, and exits 0 when it SUCCEEDED and 1 when it FAILED; `run --follow` does the same."""
    ok = tmp_path / "ok.yaml"
    ok.write_text(f"name: follow-ok-{tmp_path.name}\nresources: {{accelerator: {A100}, cpus_per_node: 1, memory_per_node: 256}}\n"
                  "command: echo\n")
    t = play(center, f"follow-ok-{tmp_path.name}", ["step 1", "step 2", "done"], JobStatus.SUCCEEDED)
    out = cli("submit", str(ok), "--follow")
    t.join(timeout=10)
    assert [line for line in out.splitlines() if line.startswith(("step", "done"))] == ["step 1", "step 2", "done"]
    assert "ended SUCCEEDED" in out
    t = play(center, f"follow-bad-{tmp_path.name}", ["oops"], JobStatus.FAILED, exit_code=3)
    out = cli("run", "-t", A100, "--cpus", "1", "--memory", "256", "--name", f"follow-bad-{tmp_path.name}", "--follow",
              "--", "false", expect=1)
    t.join(timeout=10)
    assert out.count("oops") == 1 and "ended FAILED, exit code 3" in out


def test_logs_follow_prints_until_the_job_ends(cli, center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: `logs -f` on a running job prints what is already there and what comes,
    and returns (exit 0) when the job ends; plain `logs` prints the whole log; another org's
    job is exit 4."""
    job = json.loads(cli("run", "-t", A100, "--cpus", "1", "--memory", "256", "--name", "tail-me", "--json", "--", "true"))
    advance(center, job["id"], JobStatus.STARTING, JobStatus.RUNNING)
    log_file(center, job["id"]).write_text("before\n")
    t = play_more(center, job["id"], ["after 1", "after 2"])
    out = cli("logs", "-f", str(job["id"]))
    t.join(timeout=10)
    assert out.splitlines() == ["before", "after 1", "after 2"]
    assert cli("logs", str(job["id"])).splitlines() == ["before", "after 1", "after 2"]
    stranger = center.new_org()
    cli("logs", "-f", str(job["id"]), token=stranger.token, expect=4)


def play_more(center, job_id: int, lines: list[str]) -> threading.Thread:  # type: ignore[no-untyped-def]
    def go() -> None:
        for line in lines:
            time.sleep(0.4)
            with log_file(center, job_id).open("a") as f:
                f.write(line + "\n")
        time.sleep(0.3)
        advance(center, job_id, JobStatus.SUCCEEDED)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


def test_jobs_filters_pages_and_table(cli, center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: `jobs` narrows by --status (repeatable), --user and --type, lists every
    job with --all-pages even with a page size of 2, and shows a table with the columns;
    a bad status exits 2."""
    m: Member = cli.member  # type: ignore[attr-defined]
    other = add_user(center, m.org)
    mine = [json.loads(cli("run", "-t", A100, "--cpus", "1", "--memory", "256", "--json", "--", "true"))["id"] for _ in range(3)]
    theirs = json.loads(cli("run", "-t", B910, "--cpus", "1", "--memory", "256", "--json", "--", "true", token=other.token))["id"]
    cli("hold", str(mine[0]))
    ids = lambda *a: [j["id"] for j in json.loads(cli("jobs", "--json", *a))]  # noqa: E731
    assert ids() == [theirs, *reversed(mine)]
    assert ids("--status", "held") == [mine[0]]
    assert ids("-s", "HELD", "-s", "pending", "--user", m.user) == list(reversed(mine))
    assert ids("--type", B910) == [theirs]
    assert ids("--limit", "2") == [theirs, mine[2]]
    assert ids("--limit", "2", "--all-pages") == [theirs, *reversed(mine)]
    table = cli("jobs", "--limit", "2")
    assert "STATUS" in table and "PROJECT" in table and str(theirs) in table and "--all-pages" in table
    cli("jobs", "--status", "nope", expect=2)


def test_hold_release_and_admin_requeue_commands(cli, center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: `hold` and `release` change the job and print its status; releasing a
    pending job exits 5; `admin requeue` exits 3 for a member and 5 for a center admin
    asking to requeue a job that is not running; a missing job exits 4."""
    job = json.loads(cli("run", "-t", A100, "--cpus", "1", "--memory", "256", "--json", "--", "true"))
    assert "HELD" in cli("hold", str(job["id"]))
    released: dict[str, Any] = json.loads(cli("release", str(job["id"]), "--json"))
    assert released["status"] == "PENDING"
    assert "job_not_held" in cli("release", str(job["id"]), expect=5)
    cli("admin", "requeue", str(job["id"]), expect=3)
    assert "job_not_running" in cli("admin", "requeue", str(job["id"]), token=center.tokens.admin, expect=5)
    cli("hold", "999999999", expect=4)
