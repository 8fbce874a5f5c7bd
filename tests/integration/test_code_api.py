"""POST /v1/code and specs naming uploaded code, through the API (SQLite center; no Ray).

Invariants: a member's zip is stored under its SHA-256 and its id returned (201); the same
zip again gives the same id; a zip over `code_max_bytes` is 413 before it is read; an unsafe
or broken zip is 422 `invalid_code` and nothing is stored; a center admin (no org) may not
upload; a spec naming code nobody uploaded is 422 `unknown_code`; `code` with `working_dir`
is 422; a spec with uploaded code is accepted and the job shows it.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from fastapi.testclient import TestClient

from api.app import create_app
from suanli.code import code_id
from tests.conftest import make_center


def _zip(members: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in members.items():
            z.writestr(name, text)
    return buf.getvalue()


SPEC = {"name": "c", "resources": {"accelerator": "nvidia-a100-80g", "cpus_per_node": 1, "memory_per_node": 256},
        "command": "python run.py"}


def test_code_upload_and_specs_naming_it(tmp_path: Path) -> None:
    c = make_center("", tmp_path, "sqlite")
    c.settings.code_max_bytes = 4096
    client = TestClient(create_app(c.settings, c.db), raise_server_exceptions=False)
    m = c.new_org()
    h = {**c.headers(m.token), "Content-Type": "application/zip"}
    data = _zip({"run.py": "print('shipped')\n"})

    r = client.post("/v1/code", content=data, headers=h)
    assert r.status_code == 201, r.text
    assert r.json() == {"code": code_id(data), "bytes": len(data), "files": 1}
    assert (c.settings.code_dir / f"{code_id(data)[7:]}.zip").read_bytes() == data
    assert client.post("/v1/code", content=data, headers=h).json()["code"] == code_id(data)

    big = client.post("/v1/code", content=b"\0" * 5000, headers=h)
    assert big.status_code == 413 and "4096 bytes" in big.json()["detail"]
    bad = client.post("/v1/code", content=_zip({"../x.py": "x"}), headers=h)
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_code" and "relative path" in bad.json()["detail"]
    bomb = client.post("/v1/code", content=_zip({"z": "0" * 10000}), headers=h)
    assert bomb.status_code == 422 and "unpacks to more than" in bomb.json()["detail"]
    assert len(list(c.settings.code_dir.iterdir())) == 1
    admin = client.post("/v1/code", content=data, headers={**c.headers(c.tokens.admin), "Content-Type": "application/zip"})
    assert admin.status_code == 403

    ghost = client.post("/v1/jobs", json={**SPEC, "code": "sha256:" + "0" * 64}, headers=c.headers(m.token))
    assert ghost.status_code == 422 and ghost.json()["code"] == "unknown_code"
    both = client.post("/v1/jobs", json={**SPEC, "code": code_id(data), "working_dir": "/srv"}, headers=c.headers(m.token))
    assert both.status_code == 422 and "not both" in both.text
    path = client.post("/v1/jobs", json={**SPEC, "code": "./src"}, headers=c.headers(m.token))
    assert path.status_code == 422
    ok = client.post("/v1/jobs", json={**SPEC, "code": code_id(data)}, headers=c.headers(m.token))
    assert ok.status_code == 201, ok.text
    assert ok.json()["code"] == code_id(data) and ok.json()["working_dir"] is None
    assert client.get(f"/v1/jobs/{ok.json()['id']}", headers=c.headers(m.token)).json()["code"] == code_id(data)
    client.close()
    c.db.dispose()
