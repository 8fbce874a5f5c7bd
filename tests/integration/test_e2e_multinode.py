"""Multi-node jobs end to end on the real local Ray cluster (`ray_center`: one Ray node per
simulated server; only the accelerators are simulated): the torchrun rendezvous and a real
data exchange between two ranks on two servers, per-rank and merged logs (API and
`suanli logs --rank`), a failing rank stopping the gang, the job's stop signal with billing
ending at the signal, and a checkpoint that survives a requeue."""

from __future__ import annotations

import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.conftest import serve
from tests.integration.test_e2e_ray import TERMINAL, alive, logs, submit, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
GANG = {"accelerator": "nvidia-a100-80g", "devices_per_node": 1, "nodes": 2, "cpus_per_node": 1, "memory_per_node": 256}
ENV_LINE = ('echo "env rank=$RANK node_rank=$NODE_RANK world=$WORLD_SIZE nnodes=$NNODES nproc=$NPROC_PER_NODE '
            'lws=$LOCAL_WORLD_SIZE master=$MASTER_ADDR:$MASTER_PORT dev=$CUDA_VISIBLE_DEVICES ckpt=$SUANLI_CHECKPOINT_DIR"')


def rank_log(rc, member, job_id: int, rank: int) -> str:  # type: ignore[no-untyped-def]
    r = rc.client.get(f"/v1/jobs/{job_id}/logs", params={"rank": rank}, headers=rc.headers(member.token))
    assert r.status_code == 200, r.text
    return r.text


def wait_rank_log(rc, member, job_id: int, rank: int, text: str, timeout: float = 30) -> str:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = rank_log(rc, member, job_id, rank)
        if text in got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not in rank {rank}'s log of job {job_id}: {rank_log(rc, member, job_id, rank)!r}")


def test_ddp_example_exchanges_data_between_two_servers(ray_center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: the 2-node example runs one rank per server, each with its rank, the
    torchrun world (2 × 1), the same master (rank 0's server, one port), its assigned device
    and the job's checkpoint directory; the ranks really exchange their vectors, so both logs
    hold the all-reduced sum; the merged view prefixes every line with its rank (rank 0's
    lines first), `?rank=N` serves one rank unprefixed, and `suanli logs JOB --rank 1`
    prints rank 1 only."""
    m = ray_center.new_org()
    job = submit(ray_center, m, name="ddp", resources=GANG, working_dir=str(REPO / "examples"),
                 command=f"{ENV_LINE}; python ddp_numpy.py --size 4")
    done = wait_for(ray_center, m, job["id"], TERMINAL, timeout=60)
    assert done["status"] == "SUCCEEDED", (done["reason"], logs(ray_center, m, job["id"]))
    nodes = [p["node"] for p in done["placements"]]
    assert len(set(nodes)) == 2
    ckpt = str((ray_center.settings.jobs_dir / str(job["id"]) / "checkpoint").resolve())
    masters = set()
    for rank, p in enumerate(done["placements"]):
        text = rank_log(ray_center, m, job["id"], rank)
        env = re.search(r"env rank=(\d) node_rank=(\d) world=(\d+) nnodes=(\d) nproc=(\d) lws=(\d) master=(\S+) dev=(\S+) ckpt=(\S+)", text)
        assert env, text
        assert env.groups()[:6] == (str(rank), str(rank), "2", "2", "1", "1")
        assert env.group(8) == ",".join(map(str, p["devices"])) and env.group(9) == ckpt
        masters.add(env.group(7))
        assert f"rank {rank}: local {[(rank + 1) * i for i in (1, 2, 3, 4)]} allreduce sum [3, 6, 9, 12] ok" in text
        assert "[rank" not in text  # one rank's log is served as written
    assert len(masters) == 1 and re.fullmatch(r"[\d.]+:\d+", masters.pop())
    merged = logs(ray_center, m, job["id"])
    lines = merged.splitlines()
    assert all(re.match(r"\[rank [01]\] ", line) for line in lines), merged
    ranks = [int(line[6]) for line in lines]
    assert ranks == sorted(ranks) and set(ranks) == {0, 1}  # a finished job: ordered by rank, then line
    assert "[rank 1] rank 1: local [2, 4, 6, 8] allreduce sum [3, 6, 9, 12] ok" in lines
    with serve(ray_center) as url:
        env = {"SUANLI_SERVER": url, "SUANLI_TOKEN": m.token, "XDG_CONFIG_HOME": str(ray_center.settings.data_dir / "cfg")}
        out = CliRunner().invoke(_app(), ["logs", str(job["id"]), "--rank", "1"], env=env)
        assert out.exit_code == 0, out.output
        assert "rank 1: local [2, 4, 6, 8]" in out.output and "rank 0: local" not in out.output
        merged_cli = CliRunner().invoke(_app(), ["logs", str(job["id"])], env=env)
        assert merged_cli.output.splitlines() == lines
        bad = CliRunner().invoke(_app(), ["logs", str(job["id"]), "--rank", "2"], env=env)
        assert bad.exit_code != 0 and "ranks 0..1" in bad.output and "Traceback" not in bad.output


def _app() -> Any:
    from suanli.cli import app

    return app


def test_a_failing_rank_stops_the_other_and_fails_the_job(ray_center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: when rank 1 exits 7 while rank 0 still runs, rank 0's process is stopped
    (gone), the job ends FAILED with exit code 7 and a reason naming rank 1, and its devices
    on both servers are free."""
    m = ray_center.new_org()
    cmd = 'if [ "$RANK" = 1 ]; then sleep 1; echo failing; exit 7; fi; echo pid=$$; exec sleep 600'
    job = submit(ray_center, m, name="bad-rank", resources=GANG, command=cmd, grace_period=1)
    pid = int(re.search(r"pid=(\d+)", wait_rank_log(ray_center, m, job["id"], 0, "pid=")).group(1))  # type: ignore[union-attr]
    done = wait_for(ray_center, m, job["id"], TERMINAL, timeout=30)
    assert (done["status"], done["exit_code"]) == ("FAILED", 7), done["reason"]
    assert done["reason"].startswith("rank 1 exited with code 7")
    assert not alive(pid)
    nodes = ray_center.client.get("/v1/nodes", headers=ray_center.headers(m.token)).json()
    assert all(d["job_id"] != job["id"] for n in nodes for d in n["devices"])


def test_requeued_gang_saves_a_checkpoint_on_sigterm_and_resumes_from_it(ray_center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: an admin requeue sends SIGTERM to every rank; each rank's handler writes
    its checkpoint into SUANLI_CHECKPOINT_DIR, which the requeued run (restart 1) finds and
    resumes from; the preempted run is billed until the signal, not through the 2 s its
    handler took."""
    m = ray_center.new_org()
    cmd = ('F="$SUANLI_CHECKPOINT_DIR/ckpt-$RANK"; '
           'if [ -f "$F" ]; then echo "resumed $(cat $F) restart=$SUANLI_RESTART_COUNT"; exit 0; fi; '
           "trap 'echo \"sig_at=$(date +%s.%N)\"; echo \"step=5 rank=$RANK\" > \"$F\"; sleep 2; exit 0' TERM; "
           "echo running; while true; do sleep 0.1; done")
    job = submit(ray_center, m, name="ckpt", resources=GANG, command=cmd, grace_period=10)
    for rank in (0, 1):
        wait_rank_log(ray_center, m, job["id"], rank, "running")
    r = ray_center.client.post(f"/v1/jobs/{job['id']}/requeue", headers=ray_center.headers(ray_center.tokens.admin))
    assert r.status_code == 200, r.text
    done = wait_for(ray_center, m, job["id"], TERMINAL, timeout=60)
    assert done["status"] == "SUCCEEDED" and done["restart_count"] == 1, done["reason"]
    for rank in (0, 1):
        assert f"resumed step=5 rank={rank} restart=1" in rank_log(ray_center, m, job["id"], rank)
    from sqlalchemy import select

    from suanli.db.models import BillingRunRow

    with ray_center.db.begin() as s:
        run0 = s.scalars(select(BillingRunRow).where(BillingRunRow.job_id == job["id"], BillingRunRow.run == 0)).one()
    sig_at = min(float(x) for x in re.findall(r"sig_at=([\d.]+)", logs(ray_center, m, job["id"])))
    assert abs(run0.ended_at.timestamp() - sig_at) < 0.5  # not sig_at + 2 s


def test_cancel_sends_the_jobs_stop_signal(ray_center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: a job that chose `stop_signal: SIGUSR1` gets SIGUSR1 on cancel (its handler
    runs), ends CANCELLED, and its ended time is when the signal was sent; a signal outside
    the allowed set is refused at submit with 422."""
    m = ray_center.new_org()
    cmd = "trap 'echo \"got USR1 at $(date +%s.%N)\"; sleep 1.5; exit 0' USR1; echo running; while true; do sleep 0.1; done"
    job = submit(ray_center, m, name="usr1", command=cmd, stop_signal="SIGUSR1", grace_period=5)
    assert job["stop_signal"] == "SIGUSR1"
    wait_rank_log(ray_center, m, job["id"], 0, "running")
    ray_center.client.post(f"/v1/jobs/{job['id']}/cancel", headers=ray_center.headers(m.token))
    done = wait_for(ray_center, m, job["id"], TERMINAL, timeout=30)
    assert done["status"] == "CANCELLED"
    got = float(re.search(r"got USR1 at ([\d.]+)", logs(ray_center, m, job["id"])).group(1))  # type: ignore[union-attr]
    assert abs(datetime.fromisoformat(done["ended_at"]).timestamp() - got) < 0.5
    r = ray_center.client.post("/v1/jobs", json={"name": "k", "resources": {"accelerator": "nvidia-a100-80g"},
                                                  "command": "true", "stop_signal": "SIGKILL"},
                               headers=ray_center.headers(m.token))
    assert r.status_code == 422 and "stop_signal" in r.text


def test_follow_merged_logs_of_a_running_gang(ray_center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: `suanli logs -f` on a running 2-node job prints both ranks' lines, each
    whole (a line written in two pieces arrives as one prefixed line) and prefixed with its
    rank, and returns when the job has ended; `-f --rank 0` prints rank 0 only, unprefixed."""
    m = ray_center.new_org()
    cmd = 'sleep 1; echo "tick 1 of $RANK"; printf "part"; sleep 0.6; echo "ial $RANK"; sleep 0.5; echo "tick 2 of $RANK"'
    job = submit(ray_center, m, name="follow", resources=GANG, command=cmd)
    wait_for(ray_center, m, job["id"], {"RUNNING", *TERMINAL})
    with serve(ray_center) as url:
        env = {"SUANLI_SERVER": url, "SUANLI_TOKEN": m.token, "XDG_CONFIG_HOME": str(ray_center.settings.data_dir / "cfg")}
        out = CliRunner().invoke(_app(), ["logs", "-f", str(job["id"])], env=env)
        assert out.exit_code == 0, out.output
        one = CliRunner().invoke(_app(), ["logs", "-f", str(job["id"]), "--rank", "0"], env=env)
    status = ray_center.client.get(f"/v1/jobs/{job['id']}", headers=ray_center.headers(m.token)).json()["status"]
    assert status == "SUCCEEDED"
    lines = out.output.splitlines()
    for rank in (0, 1):
        mine = [line for line in lines if line.startswith(f"[rank {rank}] ") and "[suanli]" not in line]
        assert mine == [f"[rank {rank}] tick 1 of {rank}", f"[rank {rank}] partial {rank}", f"[rank {rank}] tick 2 of {rank}"]
    assert all(re.match(r"\[rank [01]\] ", line) for line in lines)
    assert "tick 2 of 0" in one.output and "of 1" not in one.output and "[rank" not in one.output
