"""The simulator's input readers (`scheduler/sim/{traces,cluster_file,alibaba,sacct}.py`):
round trips, the documented mappings, the real Alibaba v2023 files' published counts, and that
every malformed input raises `TraceError` naming file, line and field."""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from collections import Counter
from dataclasses import fields
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.sim.alibaba import (
    AlibabaPod,
    fgd_arrivals,
    pods_to_jobs,
    read_nodes,
    read_pods,
    tenant_of,
)
from scheduler.sim.cluster_file import read_cluster
from scheduler.sim.model import SimJob
from scheduler.sim.sacct import SacctSkips, parse_memory_mib, parse_timelimit, parse_tres, read_sacct, read_sacct_counted
from scheduler.sim.traces import COLUMNS, REQUIRED, TraceError, TraceRow, read_trace, trace_row_schema, write_trace
from scheduler.types import DEFAULT_CLASSES, PolicyConfig, Quota

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "sim"
ALIBABA = Path("/work/shared/traces/alibaba-gpu-v2023")
HEADER = ",".join(COLUMNS)


def write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def raises_at(path: Path, line: int, field: str, reader=read_trace) -> TraceError:
    with pytest.raises(TraceError) as info:
        reader(path)
    err = info.value
    assert (err.file, err.line, err.field) == (str(path), line, field), str(err)
    assert str(err).startswith(f"{path}:{line}: {field}: ")
    return err


# --- generic trace CSV ------------------------------------------------------------------------

NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,10}", fullmatch=True)
TYPES = ["nvidia-a100-80g", "ascend-910b", "T4", "G2", "v100.32g"]


@st.composite
def sim_jobs(draw) -> list[SimJob]:
    out = []
    for i in range(draw(st.integers(0, 6))):
        devices = draw(st.integers(0, 16))
        nodes = draw(st.integers(1, 8))
        milli = draw(st.integers(1, 1000)) if devices == 1 and nodes == 1 else 1000
        out.append(SimJob(
            id=i + 1,
            submit_time=draw(st.floats(min_value=0, max_value=1e12, allow_nan=False)),
            duration_s=draw(st.floats(min_value=0, max_value=1e12, exclude_min=True)),
            devices=devices,
            nodes=nodes,
            device_milli=milli,
            accelerators=tuple(draw(st.lists(st.sampled_from(TYPES), unique=True, max_size=3))),
            tenant=draw(NAMES),
            pool=draw(st.none() | NAMES),
            time_limit_s=draw(st.none() | st.floats(min_value=0, max_value=1e12, exclude_min=True)),
            priority_class=draw(st.sampled_from(["normal", "high", "low", "preemptible"])),
            cpu_milli=draw(st.integers(0, 10**7)),
            memory_mib=draw(st.integers(0, 10**8)),
            name=draw(st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=12)),
        ))
    return out


@settings(max_examples=150, deadline=None)
@given(sim_jobs())
def test_csv_round_trip(jobs: list[SimJob]) -> None:
    """Invariant: read_trace(write_trace(jobs)) == jobs for any valid jobs with ids 1..n
    (floats exact, fractions, type lists, optional cells, names with commas/quotes/spaces)."""
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "rt.csv"
        write_trace(jobs, p)
        assert read_trace(p) == jobs


def test_iso_times_start_at_zero(tmp_path: Path) -> None:
    """Invariant: ISO 8601 submit times (any zone) become seconds since the earliest one."""
    p = write(tmp_path, "tenant,submit_time,duration_s,devices\n"
                        "a,2024-03-01T10:00:30+08:00,60,1\n"
                        "b,2024-03-01T02:00:00Z,60,1\n"
                        "a,2024-03-01T02:00:00.5+00:00,60,1\n")
    jobs = read_trace(p)
    assert [j.submit_time for j in jobs] == [30.0, 0.0, 0.5]
    assert [j.id for j in jobs] == [1, 2, 3]
    assert [j.tenant for j in jobs] == ["a", "b", "a"]


def test_defaults_and_blank_lines(tmp_path: Path) -> None:
    """Invariant: only the required columns are needed; empty cells take SimJob's defaults;
    blank lines are not rows (ids are data row numbers); numeric times are kept as given."""
    p = write(tmp_path, "submit_time,duration_s,devices,tenant\n\n5,10,2,org-1\n\n7.5,1,0,org-2\n")
    a, b = read_trace(p)
    assert a == SimJob(id=1, submit_time=5.0, duration_s=10.0, devices=2, tenant="org-1")
    assert b.id == 2 and b.submit_time == 7.5 and b.devices == 0
    assert write(tmp_path, HEADER + "\n", "empty.csv") and read_trace(tmp_path / "empty.csv") == []


def test_trace_row_defaults_match_simjob() -> None:
    """Invariant: TraceRow's defaults are SimJob's, and its JSON schema lists every column
    with the required ones marked."""
    defaults = {f.name: f.default for f in fields(SimJob)}
    for col, field in (("nodes", "nodes"), ("priority", "priority_class"), ("cpu_milli", "cpu_milli"),
                       ("memory_mib", "memory_mib"), ("name", "name"), ("time_limit_s", "time_limit_s"),
                       ("pool", "pool")):
        assert TraceRow.model_fields[col].default == defaults[field]
    schema = trace_row_schema()
    assert tuple(schema["properties"]) == COLUMNS
    assert tuple(schema["required"]) == REQUIRED == ("submit_time", "duration_s", "devices", "tenant")
    assert schema["additionalProperties"] is False


def test_docs_show_the_current_schema() -> None:
    """Invariant: docs/simulation-inputs.md prints exactly trace_row_schema()."""
    text = (ROOT / "docs" / "simulation-inputs.md").read_text()
    blocks = re.findall(r"```json\n(.*?)```", text, re.S)
    assert any(json.loads(b) == trace_row_schema() for b in blocks)


ROW = {"submit_time": "0", "duration_s": "60", "devices": "1", "tenant": "lab-a"}


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"duration_s": "abc"}, "duration_s", "number"),
        ({"duration_s": "-5"}, "duration_s", "greater than 0"),
        ({"duration_s": "0"}, "duration_s", "greater than 0"),
        ({"duration_s": "inf"}, "duration_s", "finite"),
        ({"devices": "1.5"}, "devices", "integer"),
        ({"devices": "-1"}, "devices", "greater than or equal to 0"),
        ({"nodes": "0"}, "nodes", "greater than or equal to 1"),
        ({"submit_time": "-1"}, "submit_time", "≥ 0"),
        ({"submit_time": "yesterday"}, "submit_time", "ISO 8601"),
        ({"submit_time": "2024-03-01T10:00:00"}, "submit_time", "timezone"),
        ({"devices": "2", "device_fraction": "0.5"}, "device_fraction", "devices == 1 and nodes == 1"),
        ({"nodes": "2", "device_fraction": "0.5"}, "device_fraction", "devices == 1 and nodes == 1"),
        ({"device_fraction": "0.4605"}, "device_fraction", "thousandths"),
        ({"device_fraction": "1.5"}, "device_fraction", "less than or equal to 1"),
        ({"device_fraction": "0"}, "device_fraction", "greater than 0"),
        ({"tenant": ""}, "tenant", "required"),
        ({"tenant": "lab a"}, "tenant", "not a valid name"),
        ({"accelerator": "a100,h100"}, "accelerator", "'|'"),
        ({"accelerator": "a100|a100"}, "accelerator", "twice"),
        ({"time_limit_s": "0"}, "time_limit_s", "greater than 0"),
        ({"cpu_milli": "-1"}, "cpu_milli", "greater than or equal to 0"),
    ],
)
def test_malformed_row(tmp_path: Path, change: dict[str, str], field: str, words: str) -> None:
    """Invariant: a bad cell raises TraceError at its line (header = 1) naming its column."""
    row = {**ROW, **change}
    cols = list(row)
    good = ",".join(ROW[c] if c in ROW else "" for c in cols)
    p = write(tmp_path, ",".join(cols) + "\n" + good + "\n" + ",".join(f'"{row[c]}"' for c in cols) + "\n")
    err = raises_at(p, 3, field)
    assert words in err.message


@pytest.mark.parametrize(
    ("text", "line", "field"),
    [
        ("", 1, "header"),
        ("submit_time,duration_s,tenant\n0,1,a\n", 1, "devices"),  # missing column
        ("submit_time,duration_s,devices,tenant,gpus,colour\n0,1,1,a,1,red\n", 1, "gpus"),  # unknown
        ("submit_time,duration_s,devices,tenant,devices\n", 1, "devices"),  # repeated
        ("0,60,1,lab-a\n", 1, "0"),  # no header
        ("submit_time,duration_s,devices,tenant\n0,60,1\n", 2, "row"),  # short row
        ("submit_time,duration_s,devices,tenant\n0,60,1,a,b\n", 2, "row"),  # long row
        ("submit_time,duration_s,devices,tenant\n0,60,1,a\n2024-03-01T10:00:00Z,60,1,a\n", 3, "submit_time"),
        ("submit_time,duration_s,devices,tenant\n2024-03-01T10:00:00Z,60,1,a\n\n5,60,1,a\n", 4, "submit_time"),
    ],
)
def test_malformed_file(tmp_path: Path, text: str, line: int, field: str) -> None:
    """Invariant: header problems (missing, unknown, repeated columns), ragged rows and mixed
    time kinds raise TraceError with the right line and field — never a bare exception."""
    err = raises_at(write(tmp_path, text), line, field)
    if field in ("gpus",):
        assert "'gpus'" in err.message and "'colour'" in err.message


def test_write_refuses_invalid_jobs(tmp_path: Path) -> None:
    """Invariant: write_trace writes nothing read_trace would refuse (and no file at all then)."""
    p = tmp_path / "bad.csv"
    for bad in (SimJob(1, 0, 10, devices=2, device_milli=500), SimJob(1, 0, 0, 1), SimJob(1, 0, 1, 1, tenant="a b"),
                SimJob(1, -1, 1, 1), SimJob(1, 0, 1, 1, device_milli=0)):
        with pytest.raises(ValueError, match="job 1 cannot be written"):
            write_trace([bad], p)
        assert not p.exists()


def test_sample_trace_fits_sample_cluster() -> None:
    """Invariant: the sample trace has ~30 jobs mixing whole, fractional, gang, CPU-only and
    multi-type jobs, and every job can run on the sample cluster (types, tenants, classes,
    nodes, and limits)."""
    jobs = read_trace(DATA / "trace-small.csv")
    cluster = read_cluster(DATA / "cluster-small.yaml")
    assert len(jobs) == 30 and [j.id for j in jobs] == list(range(1, 31))
    assert any(j.device_milli < 1000 for j in jobs)
    assert any(j.nodes > 1 and j.devices > 0 for j in jobs)
    assert any(len(j.accelerators) > 1 for j in jobs)
    assert any(j.devices == 0 for j in jobs)
    tenants = {t.org: t for t in cluster.tenants}
    servers = Counter(s.accelerator_type for s in cluster.servers)
    for j in jobs:
        assert j.tenant in tenants and j.priority_class in cluster.classes
        assert j.pool in (None, tenants[j.tenant].pool)
        types = j.accelerators or tuple(servers)
        assert set(types) <= set(servers)
        fits = [t for t in types if servers[t] >= j.nodes and j.devices <= 8
                and (cluster.quotas.get((j.tenant, t), Quota()).limit or 10**9) >= j.devices * j.nodes]
        assert fits, j


# --- cluster YAML -----------------------------------------------------------------------------


def test_cluster_sample() -> None:
    """Invariant: `count` expands to name-0.., tenants keep their pools, quotas and pool quotas
    are keyed by (org|pool, type), prices are integer fen, policy overrides only the given knobs."""
    c = read_cluster(DATA / "cluster-small.yaml")
    assert [s.name for s in c.servers] == ["a100-0", "a100-1", "a100-2", "a100-3", "910b-0", "910b-1"]
    assert c.total_devices == 48
    assert c.servers[4].accelerator_type == "ascend-910b" and c.servers[4].cpu_milli == 192000
    assert c.servers[0].rack == "r1" and c.servers[0].memory_mib == 1048576
    assert [(t.org, t.pool, t.shares) for t in c.tenants] == [
        ("lab-a", "universities", 1.0), ("lab-b", "universities", 1.0), ("acme-ai", "enterprises", 2.0)]
    assert c.pool_shares == {"universities": 2.0, "enterprises": 1.0}
    assert c.quotas[("lab-a", "nvidia-a100-80g")] == Quota(8, 16)
    assert c.quotas[("lab-a", "ascend-910b")] == Quota(4, None)
    assert c.pool_quotas == {("universities", "nvidia-a100-80g"): Quota(16, None)}
    assert c.prices == {"nvidia-a100-80g": 1200, "ascend-910b": 800}
    assert c.billing_weights["ascend-910b"] == 0.7
    assert c.classes is not None and c.classes["preemptible"].preemptible and c.classes["high"].value == 1.0
    assert c.policy == PolicyConfig(weight_fairshare=4, weight_age=2, backfill_depth=1)
    assert c.half_life_s == 604800


def test_cluster_minimal_defaults(tmp_path: Path) -> None:
    """Invariant: only `servers` is required; tenants without a pool land in an implicit
    `default` pool (1 share); the standard four priority classes and PolicyConfig() apply."""
    p = write(tmp_path, "servers: [{name: n, accelerator_type: t, devices: 4}]\ntenants: {x: {}, y: {shares: 3}}\n", "c.yaml")
    c = read_cluster(p)
    assert c.servers[0].name == "n" and c.servers[0].cpu_milli == 64_000
    assert [(t.org, t.pool, t.shares) for t in c.tenants] == [("x", "default", 1.0), ("y", "default", 3.0)]
    assert c.pool_shares == {"default": 1.0}
    assert c.classes == DEFAULT_CLASSES and c.policy == PolicyConfig() and c.half_life_s == 7 * 24 * 3600


SERVERS = "servers:\n  - {name: a, accelerator_type: t, devices: 8, count: 2}\n"


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        ("", 0, "servers", "empty"),
        ("- a\n", 1, "cluster", "mapping"),
        ("servers: [\n", 2, "yaml", ""),
        ("servers: []\n", 1, "servers", "at least 1"),
        (SERVERS + "colour: red\n", 3, "colour", "Extra inputs"),
        (SERVERS + "  - {name: a-1, accelerator_type: t, devices: 8}\n", 3, "servers.1.name", "already used"),
        (SERVERS + "  - {name: b, accelerator_type: t, devices: -1}\n", 3, "servers.1.devices", "greater than or equal"),
        (SERVERS + "  - {name: b, accelerator_type: t, devices: 1, gpus: 2}\n", 3, "servers.1.gpus", "Extra inputs"),
        (SERVERS + "tenants:\n  x: {quotas: {t: {guaranteed: 8, limit: 4}}}\n", 4, "tenants.x.quotas.t", "below guaranteed"),
        (SERVERS + "tenants:\n  x: {pool: nowhere}\n", 4, "tenants.x.pool", "not in `pools`"),
        (SERVERS + "tenants:\n  x:\n    quotas:\n      h100: {guaranteed: 1}\n", 6, "tenants.x.quotas.h100", "no server"),
        (SERVERS + "tenants:\n  x: {shares: 0}\n", 4, "tenants.x.shares", "greater than 0"),
        (SERVERS + "pool_quotas: {p: {t: {guaranteed: 1}}}\n", 3, "pool_quotas.p", "not in `pools`"),
        (SERVERS + "prices: {t: 12.5}\n", 3, "prices.t", "integer"),
        (SERVERS + "prices: {h100: 12}\n", 3, "prices.h100", "no server"),
        (SERVERS + "billing_weights: {h100: 1.0}\n", 3, "billing_weights.h100", "no server"),
        (SERVERS + "priority_classes: {high: {value: 1}}\n", 3, "priority_classes", "normal"),
        (SERVERS + "priority_classes: {normal: {value: 2}}\n", 3, "priority_classes.normal.value", "less than or equal"),
        (SERVERS + "policy: {weight_fairness: 1}\n", 3, "policy.weight_fairness", "Extra inputs"),
        (SERVERS + "policy: {backfill_depth: -1}\n", 3, "policy.backfill_depth", "greater than or equal"),
        (SERVERS + "half_life_s: 0\n", 3, "half_life_s", "greater than 0"),
        (SERVERS + "pools: {p: {}}\npools: {q: {}}\n", 4, "pools", "repeated"),
    ],
)
def test_cluster_errors(tmp_path: Path, text: str, line: int, field: str, words: str) -> None:
    """Invariant: every cluster-file problem is a TraceError with the YAML path as field and
    the line of that key (duplicate keys too, which YAML would silently merge)."""
    err = raises_at(write(tmp_path, text, "c.yaml"), line, field, reader=read_cluster)
    assert words in err.message


# --- Alibaba v2023 ----------------------------------------------------------------------------

needs_alibaba = pytest.mark.skipif(not ALIBABA.is_dir(), reason="the shared Alibaba trace is not here")


@pytest.fixture(scope="module")
def default_pods() -> list[AlibabaPod]:
    return read_pods(ALIBABA / "openb_pod_list_default.csv")


@needs_alibaba
def test_alibaba_nodes() -> None:
    """Invariant: the GPU node list is the FGD cluster: 1,213 nodes and 6,212 GPUs with the
    README's model breakdown; the full list adds 310 CPU-only nodes only when asked."""
    nodes = read_nodes(ALIBABA / "openb_node_list_gpu_node.csv")
    assert len(nodes) == 1213 and sum(n.devices for n in nodes) == 6212
    shape = Counter((n.accelerator_type, n.devices) for n in nodes)
    assert shape == {("G2", 8): 549, ("T4", 2): 387, ("P100", 2): 131, ("G3", 8): 39, ("V100M16", 4): 28,
                     ("V100M32", 8): 21, ("V100M16", 1): 19, ("T4", 4): 17, ("V100M32", 4): 9, ("V100M16", 8): 8,
                     ("P100", 1): 3, ("A10", 1): 2}
    assert nodes[0].name == "openb-node-0000" and nodes[0].cpu_milli == 64000 and nodes[0].memory_mib == 262144
    every = read_nodes(ALIBABA / "openb_node_list_all_node.csv", gpu_only=False)
    assert len(every) == 1523 and sum(n.devices == 0 for n in every) == 310
    assert len(read_nodes(ALIBABA / "openb_node_list_all_node.csv")) == 1213


@needs_alibaba
def test_alibaba_default_pods(default_pods: list[AlibabaPod]) -> None:
    """Invariant: the default list parses to the README's counts: 8,152 pods = 1,088 CPU-only,
    6,989 single-GPU (3,078 fractional), 16×2, 15×4, 44×8; qos and phase breakdowns; ≈ 6,087 GPUs."""
    pods = default_pods
    assert len(pods) == 8152
    assert Counter(p.num_gpu for p in pods) == {0: 1088, 1: 6989, 2: 16, 4: 15, 8: 44}
    assert sum(p.num_gpu == 1 and p.gpu_milli < 1000 for p in pods) == 3078
    assert Counter(p.qos for p in pods) == {"LS": 4647, "BE": 3398, "Burstable": 100, "Guaranteed": 7}
    assert Counter(p.pod_phase for p in pods) == {"Running": 5193, "Failed": 1870, "Pending": 897, "Succeeded": 192}
    assert sum(p.gpu_request_milli for p in pods) == 6_086_800
    assert pods[1] == AlibabaPod("openb-pod-0001", 6000, 12288, 1, 460, (), "LS", "Running", 427061, 12902960, 427061)
    assert any(p.scheduled_time is None for p in pods)


@needs_alibaba
def test_alibaba_other_lists() -> None:
    """Invariant: the 5-column multigpu lists parse (times and qos None); gpu_spec becomes a tuple."""
    multi = read_pods(ALIBABA / "openb_pod_list_multigpu50.csv")
    assert len(multi) == 9061 and all(p.creation_time is None and p.qos is None and p.gpu_spec == () for p in multi)
    assert sum(p.num_gpu > 1 for p in multi) == 222 + 206 + 556
    with pytest.raises(ValueError, match="fgd_arrivals"):
        pods_to_jobs(multi[:3])
    spec = read_pods(ALIBABA / "openb_pod_list_gpuspec33.csv")
    assert len(spec) == 8152 and ("P100", "V100M16", "V100M32") in {p.gpu_spec for p in spec}


@needs_alibaba
def test_alibaba_time_mode(default_pods: list[AlibabaPod]) -> None:
    """Invariant: pods_to_jobs maps creation → submit, deletion − creation → duration,
    num_gpu → devices, gpu_milli → device_milli for one GPU; ids are 1 + list position; the one
    default pod with no positive duration is skipped and counted."""
    jobs, skipped = pods_to_jobs(default_pods)
    assert skipped == 1 and len(jobs) == 8151
    by_id = {j.id: j for j in jobs}
    j = by_id[2]
    assert (j.submit_time, j.duration_s, j.devices, j.device_milli, j.cpu_milli, j.memory_mib, j.name) == (
        427061.0, 12902960.0 - 427061.0, 1, 460, 6000, 12288, "openb-pod-0001")
    assert all(j.duration_s > 0 and j.nodes == 1 and j.time_limit_s is None for j in jobs)
    assert all(default_pods[j.id - 1].name == j.name for j in jobs)
    assert all(j.device_milli == 1000 for j in jobs if j.devices != 1)
    dup = AlibabaPod("p", 1000, 1024, 1, 1000, ("T4", "V100M32", "V100M32"), "LS", "Running", 5, 9, 5)
    (only,), _ = pods_to_jobs([dup])
    assert only.accelerators == ("T4", "V100M32") and only.duration_s == 4.0


def test_tenant_rule() -> None:
    """Invariant: tenant_of is sha256(f"{seed}:{name}")[:8] big-endian mod tenants — fixed
    across runs and machines — and changes with the seed."""
    digest = hashlib.sha256(b"0:openb-pod-0001").digest()
    assert tenant_of("openb-pod-0001") == f"tenant-{int.from_bytes(digest[:8], 'big') % 8}"
    names = [f"openb-pod-{i:04d}" for i in range(2000)]
    assert [tenant_of(n, 8, 3) for n in names] == [tenant_of(n, 8, 3) for n in names]
    assert [tenant_of(n, 8, 3) for n in names] != [tenant_of(n, 8, 4) for n in names]
    with pytest.raises(ValueError):
        tenant_of("x", 0)


@needs_alibaba
def test_tenants_balanced(default_pods: list[AlibabaPod]) -> None:
    """Invariant: over the default list every tenant gets within 15% of an equal share, and the
    same pods always get the same tenants."""
    for tenants, seed in ((8, 0), (3, 1), (16, 7)):
        jobs, _ = pods_to_jobs(default_pods, tenants=tenants, seed=seed)
        counts = Counter(j.tenant for j in jobs)
        assert set(counts) == {f"tenant-{k}" for k in range(tenants)}
        assert max(abs(c - len(jobs) / tenants) for c in counts.values()) < 0.15 * len(jobs) / tenants
        assert pods_to_jobs(default_pods, tenants=tenants, seed=seed)[0] == jobs


@needs_alibaba
def test_fgd_arrivals(default_pods: list[AlibabaPod]) -> None:
    """Invariant: arrivals are a function of the seed; the GPU sum first reaches 1.3 × 6,212
    (≈ 8,076) at the last pod; CPU-only pods are drawn too."""
    a = fgd_arrivals(default_pods, 6212, seed=42)
    assert a == fgd_arrivals(default_pods, 6212, seed=42)
    assert a != fgd_arrivals(default_pods, 6212, seed=43)
    target = 1.3 * 6212 * 1000
    total = sum(p.gpu_request_milli for p in a)
    assert total >= target and total - a[-1].gpu_request_milli < target
    assert 8075.6 <= total / 1000 < 8075.6 + 8  # ≈ 8,076 GPU-equivalents; one pod asks ≤ 8
    assert any(p.num_gpu == 0 for p in a)
    assert set(p.name for p in a) <= set(p.name for p in default_pods)
    with pytest.raises(ValueError):
        fgd_arrivals([AlibabaPod("c", 1000, 1024, 0, 0)], 10, seed=0)


@pytest.mark.parametrize(
    ("text", "line", "field", "reader"),
    [
        ("sn,cpu,memory_mib,gpu,model\n", 1, "header", read_nodes),
        ("sn,cpu_milli,memory_mib,gpu,model\nn0,64000,262144,2,\n", 2, "model", read_nodes),
        ("sn,cpu_milli,memory_mib,gpu,model\nn0,64000,262144,two,T4\n", 2, "gpu", read_nodes),
        ("sn,cpu_milli,memory_mib,gpu,model\nn0,64000,1,1,T4\nn0,64000,1,1,T4\n", 3, "sn", read_nodes),
        ("name,cpu_milli,memory_mib,num_gpu,gpu_milli\np,1,1,2,500\n", 2, "gpu_milli", read_pods),
        ("name,cpu_milli,memory_mib,num_gpu,gpu_milli\np,1,1,0,100\n", 2, "gpu_milli", read_pods),
        ("name,cpu_milli,memory_mib,num_gpu,gpu_milli\np,1,1,1,1500\n", 2, "gpu_milli", read_pods),
        ("name,cpu_milli,memory_mib,num_gpu,gpu_milli\np,1,-1,1,100\n", 2, "memory_mib", read_pods),
        ("name,cpu_milli,memory_mib,num_gpu,gpu_milli\np,1,1,1\n", 2, "row", read_pods),
        (",".join(("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli", "gpu_spec", "qos", "pod_phase",
                   "creation_time", "deletion_time", "scheduled_time")) + "\np,1,1,1,100,,LS,Running,5.5,9,\n",
         2, "creation_time", read_pods),
        (",".join(("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli", "gpu_spec", "qos", "pod_phase",
                   "creation_time", "deletion_time", "scheduled_time")) + "\np,1,1,1,100,,XX,Running,5,9,\n",
         2, "qos", read_pods),
    ],
)
def test_alibaba_malformed(tmp_path: Path, text: str, line: int, field: str, reader) -> None:
    """Invariant: a malformed node or pod line raises TraceError naming file, line and column."""
    raises_at(write(tmp_path, text), line, field, reader=reader)


# --- Slurm sacct ------------------------------------------------------------------------------


def test_sacct_sample() -> None:
    """Invariant: steps, never-started, unfinished and zero-length jobs are skipped and counted;
    submits count from the earliest kept submit; devices and CPUs are per node; gres types
    become accelerators; Account is the tenant (User without one); Partition is the pool."""
    jobs, skips = read_sacct_counted(DATA / "sacct-sample.txt")
    assert skips == SacctSkips(steps=13, never_started=2, unfinished=1, zero_duration=1)
    assert read_sacct(DATA / "sacct-sample.txt") == jobs
    assert [j.name for j in jobs] == ["1001", "1002", "1003", "1006", "1009_1", "1009_2", "1010", "1011"]
    by = {j.name: j for j in jobs}
    assert by["1001"] == SimJob(id=1, submit_time=0.0, duration_s=4.5 * 3600, devices=2, nodes=1,
                                accelerators=("a100",), tenant="lab-a", pool="a100", time_limit_s=8 * 3600.0,
                                cpu_milli=16000, memory_mib=128 * 1024, name="1001")
    gang = by["1002"]
    assert (gang.nodes, gang.devices, gang.cpu_milli, gang.memory_mib) == (2, 8, 64000, 500 * 1024)
    assert gang.submit_time == 6 * 60 + 48 and gang.duration_s == 22 * 3600 and gang.time_limit_s == 86400
    assert by["1003"].time_limit_s is None and by["1003"].devices == 0 and by["1003"].memory_mib == 16000
    assert by["1006"].accelerators == ("910b",) and by["1006"].devices == 4
    assert by["1009_1"].accelerators == () and by["1009_1"].devices == 1
    assert by["1010"].tenant == "frank" and by["1010"].time_limit_s is None and by["1010"].pool == "debug"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30", 1800), ("30:15", 1815), ("02:00:00", 7200), ("1-12", 129600), ("1-12:30", 131400),
     ("2-00:00:30", 172830), ("UNLIMITED", None), ("Partition_Limit", None), ("0", None), ("", None)],
)
def test_sacct_timelimit(text: str, seconds: int | None) -> None:
    """Invariant: Slurm's six time-limit forms in seconds; no limit (and Slurm's 0) is None."""
    assert parse_timelimit(text) == seconds


def test_sacct_tres() -> None:
    """Invariant: memory suffixes are powers of 1024 in MiB; typed and untyped gres agree."""
    assert [parse_memory_mib(m) for m in ("512K", "4000M", "64G", "1.5T", "100")] == [0.5, 4000, 65536, 1572864, 100]
    t = parse_tres("billing=8,cpu=8,gres/gpu:a100=4,mem=64G,node=1,energy=5")
    assert (t.devices, t.types, t.cpus, t.nodes) == (4, ("a100",), 8, 1)
    assert parse_tres("gres/gpu=2,gres/gpumem=80G").devices == 2 and parse_tres("").devices == 0
    with pytest.raises(ValueError, match="several types"):
        parse_tres("gres/gpu:a100=2,gres/gpu:v100=2")


HEAD = "JobID|User|Account|Partition|Submit|Start|End|Timelimit|AllocTRES|State\n"
OK = "7|u|acct|p|2024-03-01T10:00:00|2024-03-01T10:00:00|2024-03-01T11:00:00|01:00:00|cpu=4,gres/gpu=4,node=1|COMPLETED"


@pytest.mark.parametrize(
    ("line", "field"),
    [
        (OK.replace("gres/gpu=4,node=1", "gres/gpu=3,node=2"), "AllocTRES"),
        (OK.replace("gres/gpu=4", "gres/gpu=four"), "AllocTRES"),
        (OK.replace("01:00:00|cpu", "1:2:3:4|cpu"), "Timelimit"),
        (OK.replace("2024-03-01T11:00:00", "2024-03-01T09:00:00"), "End"),
        (OK.replace("|2024-03-01T10:00:00|2024-03-01T10:00:00|", "|March 1st|2024-03-01T10:00:00|"), "Submit"),
        (OK.replace("|u|acct|", "|||"), "Account"),
        (OK + "|extra", "row"),
    ],
)
def test_sacct_malformed(tmp_path: Path, line: str, field: str) -> None:
    """Invariant: a malformed sacct record raises TraceError at its line naming its column."""
    raises_at(write(tmp_path, HEAD + OK + "\n" + line + "\n", "s.txt"), 3, field, reader=read_sacct)


def test_sacct_header_and_parsable(tmp_path: Path) -> None:
    """Invariant: a missing column is named at line 1; `--parsable` lines ending in '|' read
    the same as `--parsable2`; extra columns are ignored; column order is free."""
    raises_at(write(tmp_path, HEAD.replace("|AllocTRES", "") + "\n", "h.txt"), 1, "AllocTRES", reader=read_sacct)
    plain = read_sacct(write(tmp_path, HEAD + OK + "\n", "a.txt"))
    trailing = read_sacct(write(tmp_path, HEAD.rstrip("\n") + "|\n" + OK + "|\n", "b.txt"))
    cols = HEAD.strip().split("|")
    cells = OK.split("|")
    order = list(reversed(range(len(cols))))
    shuffled = "|".join(cols[i] for i in order) + "|JobName\n" + "|".join(cells[i] for i in order) + "|train\n"
    assert plain == trailing == read_sacct(write(tmp_path, shuffled, "c.txt"))
    assert plain[0].devices == 4 and plain[0].time_limit_s == 3600
