"""The API against a real database — SQLite and the PostgreSQL server — with no scheduler
running: submission, visibility between orgs, cancel, bad input, auth, errors, metrics."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from suanli.db.models import JobEventRow, JobRow, LedgerEntryRow

SPEC_YAML = """
name: yaml-job
resources:
  accelerator: [ascend-910b, nvidia-a100-80g]
  devices_per_node: 2
time_limit: 30m
command: python train.py
working_dir: /tmp
env: {SEED: 3}
"""


def good(**over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": "job", "resources": {"accelerator": "nvidia-a100-80g"}, "command": "echo hi"}
    spec.update(over)
    return spec


def counts(center) -> tuple[int, int, int]:  # type: ignore[no-untyped-def]
    with center.db.begin() as s:
        return (
            s.scalar(select(func.count()).select_from(JobRow)),
            s.scalar(select(func.count()).select_from(JobEventRow)),
            s.scalar(select(func.count()).select_from(LedgerEntryRow)),
        )


def test_submit_json_and_yaml_then_get_and_list(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: a valid spec (JSON or YAML) is stored PENDING with one event, exactly as
    asked, and shows up in get and list for its org."""
    m = center.new_org()
    r = center.client.post("/v1/jobs", json=good(), headers=center.headers(m.token))
    assert r.status_code == 201, r.text
    j = r.json()
    assert (j["status"], j["org"], j["user"], j["project"]) == ("PENDING", m.org, m.user, "default")
    r2 = center.client.post("/v1/jobs", content=SPEC_YAML, headers={**center.headers(m.token), "Content-Type": "application/yaml"})
    assert r2.status_code == 201, r2.text
    y = r2.json()
    assert y["resources"]["accelerator_types"] == ["ascend-910b", "nvidia-a100-80g"]
    assert (y["resources"]["devices_per_node"], y["time_limit_s"], y["working_dir"]) == (2, 1800, "/tmp")
    got = center.client.get(f"/v1/jobs/{y['id']}", headers=center.headers(m.token)).json()
    assert got == y
    listed = center.client.get("/v1/jobs", headers=center.headers(m.token)).json()["items"]
    assert [x["id"] for x in listed] == [y["id"], j["id"]]  # newest first, only this org's
    events = center.client.get(f"/v1/jobs/{j['id']}/events", headers=center.headers(m.token)).json()
    assert [(e["from_status"], e["to_status"]) for e in events] == [(None, "PENDING")]
    assert m.user in events[0]["reason"]


def test_members_see_only_their_own_orgs_jobs(center) -> None:  # type: ignore[no-untyped-def]
    """Invariant: another org's job is invisible (404 on get, events, logs, cancel; absent
    from lists), while a center admin sees every org's jobs."""
    a, b = center.new_org(), center.new_org()
    job = center.client.post("/v1/jobs", json=good(), headers=center.headers(a.token)).json()
    for method, path in [("GET", ""), ("GET", "/events"), ("GET", "/logs"), ("POST", "/cancel")]:
        r = center.client.request(method, f"/v1/jobs/{job['id']}{path}", headers=center.headers(b.token))
        assert r.status_code == 404 and r.json()["code"] == "job_not_found", (path, r.text)
    assert job["id"] not in [x["id"] for x in center.client.get("/v1/jobs", headers=center.headers(b.token)).json()["items"]]
    admin = center.client.get(f"/v1/jobs?org={a.org}", headers=center.headers(center.tokens.admin)).json()["items"]
    assert job["id"] in [x["id"] for x in admin]
    assert center.client.get(f"/v1/jobs/{job['id']}", headers=center.headers(b.token)).status_code == 404
    assert center.client.get(f"/v1/jobs/{job['id']}", headers=center.headers(a.token)).json()["status"] == "PENDING"


def test_cancel_pending_job(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: a pending job cancels at once (CANCELLED, event with who), is not billed,
    and a second cancel is a 409 conflict."""
    m = center.new_org()
    job = center.client.post("/v1/jobs", json=good(), headers=center.headers(m.token)).json()
    r = center.client.post(f"/v1/jobs/{job['id']}/cancel", headers=center.headers(m.token))
    assert r.status_code == 200 and r.json()["status"] == "CANCELLED" and r.json()["cost_fen"] is None
    again = center.client.post(f"/v1/jobs/{job['id']}/cancel", headers=center.headers(m.token))
    assert again.status_code == 409 and again.json()["code"] == "job_finished"
    events = center.client.get(f"/v1/jobs/{job['id']}/events", headers=center.headers(m.token)).json()
    assert events[-1]["to_status"] == "CANCELLED" and m.user in events[-1]["reason"]


BAD = [
    # (body, content type, status, code, field)
    ("name: [unclosed", "application/yaml", 400, "invalid_yaml", None),
    ("a: &x [1]\nb: *x\n", "application/yaml", 400, "invalid_yaml", None),
    ("{not json", "application/json", 400, "invalid_json", None),
    (b"name: \xff\xfe", "application/yaml", 400, "invalid_encoding", None),
    ("- just\n- a list\n", "application/yaml", 422, "invalid_spec", None),
    (good(resources={"accelerator": "tpu-v9"}), None, 422, "unknown_accelerator_type", "resources.accelerator"),
    (good(resources={"accelerator": "nvidia-a100-80g", "devices_per_node": -2}), None, 422, "invalid_spec", "resources.devices_per_node"),
    (good(resources={"accelerator": "nvidia-a100-80g", "devices_per_node": 16}), None, 422, "job_too_large", "resources.devices_per_node"),
    (good(resources={"accelerator": "ascend-910b", "nodes": 2}), None, 422, "job_too_large", "resources.nodes"),
    (good(project="no-such-project"), None, 422, "unknown_project", "project"),
    (good(time_limit="99d"), None, 422, "time_limit_too_long", "time_limit"),
    (good(colour="blue"), None, 422, "invalid_spec", "colour"),
    (good(env={"CUDA_VISIBLE_DEVICES": "0"}), None, 422, "invalid_spec", "env"),
]


@pytest.mark.parametrize(("body", "ctype", "status", "code", "field"), BAD)
def test_bad_input_is_refused_with_a_code_and_writes_nothing(center, body, ctype, status, code, field) -> None:  # type: ignore[no-untyped-def]
    """Invariant: malformed or impossible specs get a 4xx problem+json with a stable code
    (and the offending field where there is one), and nothing is written."""
    m = center.new_org()
    before = counts(center)
    headers = center.headers(m.token)
    if ctype:
        r = center.client.post("/v1/jobs", content=body, headers={**headers, "Content-Type": ctype})
    else:
        r = center.client.post("/v1/jobs", json=body, headers=headers)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    p = r.json()
    assert p["code"] == code and p["status"] == status and p["detail"]
    if field:
        assert field in [e["field"] for e in p["errors"]]
    assert counts(center) == before


def test_authentication_and_roles(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: no or a wrong token is 401 with WWW-Authenticate; members cannot send
    heartbeats or top up (403); the center admin cannot submit jobs without an org (403)."""
    r = center.client.get("/v1/jobs")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer" and r.json()["code"] == "unauthenticated"
    assert center.client.get("/v1/jobs", headers={"Authorization": "Bearer sl_wrong"}).status_code == 401
    assert center.client.get("/v1/jobs", headers={"Authorization": "Basic abc"}).status_code == 401
    hb = {"accelerator_type": "nvidia-a100-80g", "cpus": 8, "memory_mb": 1024, "devices": [{"index": 0}]}
    assert center.client.put("/v1/nodes/x/heartbeat", json=hb, headers=center.headers()).status_code == 403
    assert center.client.post("/v1/orgs/city-university/topups", json={"amount_fen": 1, "key": "k"},
                              headers=center.headers()).status_code == 403
    r = center.client.post("/v1/jobs", json=good(), headers=center.headers(center.tokens.admin))
    assert r.status_code == 403 and r.json()["code"] == "forbidden"


def test_nodes_balance_and_topup(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: registered servers are listed with their devices; a top-up credits the
    exact amount once per key; members cannot read other orgs' balances."""
    nodes = center.client.get("/v1/nodes", headers=center.headers()).json()
    assert {n["name"] for n in nodes} >= {"a100-0", "a100-1", "910b-0"}
    assert all(n["device_count"] == 8 and len(n["devices"]) == 8 for n in nodes if n["name"] in ("a100-0", "910b-0"))
    m = center.new_org(prepaid_fen=500)
    assert center.client.get("/v1/balance", headers=center.headers(m.token)).json()["balance_fen"] == 500
    admin = center.headers(center.tokens.admin)
    for _ in range(2):
        r = center.client.post(f"/v1/orgs/{m.org}/topups", json={"amount_fen": 12345, "key": f"wire-{m.org}"}, headers=admin)
        assert r.status_code == 201, r.text
    b = center.client.get("/v1/balance", headers=center.headers(m.token)).json()
    assert (b["balance_fen"], b["balance_yuan"]) == (12845, "128.45")
    other = center.client.get("/v1/balance?org=city-university", headers=center.headers(m.token))
    assert other.status_code == 404
    bad = center.client.post(f"/v1/orgs/{m.org}/topups", json={"amount_fen": -5, "key": "x"}, headers=admin)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "amount_fen"


def test_heartbeat_registers_and_validates(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: an agent heartbeat registers a new server; gaps in device indices and
    unknown types are refused and register nothing."""
    agent = center.headers(center.tokens.agent)
    hb = {"accelerator_type": "ascend-910b", "cpus": 8, "memory_mb": 4096, "devices": [{"index": i} for i in range(4)]}
    name = f"hb-{center.backend}"
    assert center.client.put(f"/v1/nodes/{name}/heartbeat", json=hb, headers=agent).json()["device_count"] == 4
    gap = {**hb, "devices": [{"index": 0}, {"index": 2}]}
    r = center.client.put(f"/v1/nodes/{name}-gap/heartbeat", json=gap, headers=agent)
    assert r.status_code == 422 and r.json()["code"] == "bad_device_indices"
    r = center.client.put(f"/v1/nodes/{name}-x/heartbeat", json={**hb, "accelerator_type": "tpu"}, headers=agent)
    assert r.status_code == 422 and r.json()["code"] == "unknown_accelerator_type"
    names = {n["name"] for n in center.client.get("/v1/nodes", headers=agent).json()}
    assert name in names and f"{name}-gap" not in names and f"{name}-x" not in names


def test_body_limit_unknown_route_and_health(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: oversized bodies are 413 before parsing; unknown routes are problem+json
    404; /healthz answers with the database reachable."""
    big = "x" * (center.settings.max_body_bytes + 1)
    r = center.client.post("/v1/jobs", content=big, headers={**center.headers(), "Content-Type": "application/yaml"})
    assert r.status_code == 413 and r.json()["code"] == "body_too_large"
    r = center.client.get("/v1/nothing-here")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert center.client.get("/healthz").json()["status"] == "ok"


def test_metrics_count_requests_and_jobs(center) -> None:  # type: ignore[no-untyped-def]
    """Invariant: /metrics parses as Prometheus text and reports jobs per status from the
    database and requests per route."""
    m = center.new_org()
    center.client.post("/v1/jobs", json=good(), headers=center.headers(m.token))
    with center.db.begin() as s:
        pending = s.scalar(select(func.count()).select_from(JobRow).where(JobRow.status == "PENDING"))
    fams = {f.name: f for f in text_string_to_metric_families(center.client.get("/metrics").text)}
    jobs = {s.labels["status"]: s.value for s in fams["suanli_jobs"].samples}
    assert jobs["PENDING"] == pending
    reqs = [s for s in fams["suanli_http_requests"].samples
            if s.name == "suanli_http_requests_total" and s.labels["route"] == "/v1/jobs" and s.labels["status"] == "201"]
    assert reqs and reqs[0].value >= 1


def test_openapi_documents_the_spec_body(center) -> None:  # type: ignore[no-untyped-def]
    """Invariant: the OpenAPI document describes job submission in JSON and YAML."""
    doc = center.client.get("/openapi.json").json()
    body = doc["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "application/yaml"}
    assert "JobSpecIn" in doc["components"]["schemas"]
