"""The node agent `suanli-agent`: one per server.

It reports the server and its devices to the API (registration and heartbeats, which return
the scheduler's device allocation) and serves device telemetry on `/metrics` under
dcgm-exporter (NVIDIA) or npu-exporter (Ascend) names plus suanli's own unified names.

Invariants: the agent never starts or stops workloads (Ray does); it only observes devices
and reports. `agents` imports `scheduler.types` and `suanli` (version, server spec, Ray
arguments) but never `api/`: the heartbeat body is built to match `api.schemas.nodes`
and the tests check that it does.
"""
