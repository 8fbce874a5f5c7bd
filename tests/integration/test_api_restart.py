"""An API restart loses nothing: everything it knows is in the database (issue 8).

Two API processes are stood for by two app instances with their own engines and caches on
the same database (SQLite and PostgreSQL): what the first accepted, the second serves."""

from __future__ import annotations

from fastapi.testclient import TestClient

from api.app import create_app
from suanli.db.engine import Database


def test_a_new_api_process_serves_what_the_old_one_accepted(center) -> None:  # type: ignore[no-untyped-def]
    """Invariants: after the first app is gone, a fresh app on the same database shows the job
    with its events, accepts the same token, replays the same Idempotency-Key to the same job
    (200, not a second job), and cancels it."""
    m = center.new_org()
    spec = {"name": "survives", "resources": {"accelerator": "nvidia-a100-80g", "cpus_per_node": 1, "memory_per_node": 256},
            "command": "true"}
    key = {"Idempotency-Key": f"restart-{m.org}"}
    first_db = Database(center.settings.effective_database_url)
    with TestClient(create_app(center.settings, first_db)) as first:
        r = first.post("/v1/jobs", json=spec, headers=center.headers(m.token) | key)
        assert r.status_code == 201, r.text
        job = r.json()
    first_db.dispose()

    second_db = Database(center.settings.effective_database_url)
    try:
        with TestClient(create_app(center.settings, second_db)) as second:
            got = second.get(f"/v1/jobs/{job['id']}", headers=center.headers(m.token))
            assert got.status_code == 200 and got.json()["name"] == "survives"
            events = second.get(f"/v1/jobs/{job['id']}/events", headers=center.headers(m.token)).json()
            assert [e["to_status"] for e in events][:1] == ["PENDING"]
            again = second.post("/v1/jobs", json=spec, headers=center.headers(m.token) | key)
            assert again.status_code == 200 and again.json()["id"] == job["id"]
            assert again.headers["Idempotent-Replayed"] == "true"
            assert second.post(f"/v1/jobs/{job['id']}/cancel", headers=center.headers(m.token)).json()["status"] == "CANCELLED"
    finally:
        second_db.dispose()
