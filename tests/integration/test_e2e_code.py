"""Code shipping end to end on the local Ray cluster: `suanli submit` with `code: ./dir`
zips the directory (excludes applied), uploads it to the API, and the job's command runs a
script that exists only in the shipped copy, which Ray unpacked on the job's server.

The API runs on a real loopback port (the CLI needs one); the scheduler is the session's
`ray_center` loop. Only the accelerator hardware is simulated.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from suanli.cli import app
from tests.conftest import serve
from tests.integration.test_e2e_ray import TERMINAL, logs, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_submit_ships_a_local_directory_and_the_job_runs_in_it(ray_center, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Invariants: the job runs in Ray's unpacked copy of the directory (not the user's
    folder, not the job folder): its script is found by a relative path, its package
    imports, the excluded files (`.git`, the user's `data/`) are not there, and the job
    SUCCEEDS with the script's output in its log; the job records the uploaded code's id."""
    src = tmp_path / "project"
    (src / "lib").mkdir(parents=True)
    (src / "lib" / "__init__.py").write_text("GREETING = 'hello from shipped code'\n")
    (src / "main.py").write_text(
        "import os, sys\nfrom lib import GREETING\n"
        "print(GREETING, 'cwd', os.getcwd())\n"
        "print('has git', os.path.exists('.git'), 'has data', os.path.exists('data'))\n")
    (src / ".git").mkdir()
    (src / ".git" / "HEAD").write_text("ref: x\n")
    (src / "data").mkdir()
    (src / "data" / "big.bin").write_bytes(b"\0" * 4096)
    spec = tmp_path / "job.yaml"
    spec.write_text("name: shipped\nresources: {accelerator: nvidia-a100-80g, cpus_per_node: 1, memory_per_node: 256}\n"
                    "time_limit: 120\ncode: {dir: ./project, excludes: [data/]}\ncommand: python main.py\n")
    m = ray_center.new_org()
    with serve(ray_center) as url:
        env = {"SUANLI_SERVER": url, "SUANLI_TOKEN": m.token, "XDG_CONFIG_HOME": str(tmp_path / "cfg"), "COLUMNS": "250"}
        result = CliRunner().invoke(app, ["submit", str(spec)], env=env)
    assert result.exit_code == 0, result.output
    assert re.search(r"uploaded .*project: 2 files", result.output), result.output
    job_id = int(re.search(r"submitted job (\d+)", result.output).group(1))  # type: ignore[union-attr]
    done = wait_for(ray_center, m, job_id, TERMINAL, timeout=120)
    text = logs(ray_center, m, job_id)
    assert done["status"] == "SUCCEEDED", (done["reason"], text)
    assert done["code"] and done["code"].startswith("sha256:") and done["working_dir"] is None
    cwd = re.search(r"hello from shipped code cwd (\S+)", text)
    assert cwd, text
    assert not cwd.group(1).startswith(str(src)) and str(ray_center.settings.jobs_dir) not in cwd.group(1)
    assert "has git False has data False" in text
