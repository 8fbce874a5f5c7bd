"""The Helm chart deploy/helm/suanli, rendered offline and checked object by object.

The chart is rendered like `helm template` by helm-python (Helm's Go SDK behind a C ABI; no
helm binary, no cluster: `lookup` returns nothing) with the default values and with several
value sets, then every document is checked:

- Built-in Kubernetes kinds validate against the JSON schemas shipped by kubernetes-validate,
  in strict mode (unknown fields are errors), for the newest Kubernetes it ships and 1.29.
- CRD kinds (KubeRay RayCluster, Prometheus-operator ServiceMonitor) have no schema here, so
  they are checked structurally and for the fields the chart promises.
- Behaviour: where the database URL comes from, what the agent, scheduler and Ray workers are
  told, labels and names; each test's docstring states its invariant.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions

CHART_DIR = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "suanli"
RELEASE = "prod"
NAMESPACE = "suanli"

# Newest Kubernetes the installed kubernetes-validate has schemas for, and 1.29 when present.
_SHIPPED = sorted({v for v in all_versions() if v.startswith("1.")}, key=lambda v: tuple(map(int, v.split("."))))
K8S_VERSIONS = [_SHIPPED[-1]] + (["1.29.0"] if "1.29.0" in _SHIPPED and _SHIPPED[-1] != "1.29.0" else [])

# Kinds served by CRDs: kubernetes-validate has no schema for them.
CRD_KINDS = {("ray.io/v1", "RayCluster"), ("monitoring.coreos.com/v1", "ServiceMonitor")}
WORKLOAD_KINDS = {"Deployment", "DaemonSet", "StatefulSet"}
STANDARD_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)

EXTERNAL_URL = "postgresql+psycopg://suanli:ext-S3cret@db.example.org:5432/suanli"
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "external-db": {"postgresql": {"enabled": False}, "database": {"url": EXTERNAL_URL}},
    "existing-db-secret": {
        "postgresql": {"enabled": False},
        "database": {"existingSecret": "db-creds", "existingSecretKey": "dsn"},
    },
    "external-ray": {"ray": {"enabled": False, "address": "ray://ray-head.ray.svc:10001"}},
    "service-monitor": {"monitoring": {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}}},
    "ascend-agent": {
        "agent": {
            "backend": "ascend",
            "acceleratorType": "ascend-910b",
            "token": "agent-token-123",
            "runtimeClassName": "ascend",
            "nodeSelector": {"accelerator": "huawei-Ascend910"},
            "ascend": {"mountDriver": True},
        }
    },
    "existing-claim": {"persistence": {"existingClaim": "shared-nfs"}},
    "minimal": {
        "image": {"tag": "0.2.0-rc1"},
        "imagePullSecrets": [{"name": "regcred"}],
        "commonLabels": {"team": "platform"},
        "persistence": {"enabled": False},
        "agent": {"enabled": False},
        "api": {"serviceAccount": {"create": False}},
        "monitoring": {"dashboards": {"enabled": False}, "podAnnotations": False},
    },
}

_chart: helm_python.Chart | None = None
_cache: dict[str, dict[str, str]] = {}


def render_raw(values: dict[str, Any]) -> dict[str, str]:
    """Template path -> rendered text (NOTES.txt included), memoized per value set."""
    global _chart
    key = json.dumps(values, sort_keys=True)
    if key not in _cache:
        if _chart is None:
            _chart = helm_python.Chart.load(CHART_DIR)
        _cache[key] = _chart.render(values, name=RELEASE, namespace=NAMESPACE)
    return _cache[key]


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    """The rendered Kubernetes objects, in template order."""
    docs: list[dict[str, Any]] = []
    for path, text in sorted(render_raw(values).items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name}, got {[d['metadata']['name'] for d in find(docs, kind)]}"
    return found[0]


def container(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in doc["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def env(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c.get("env", [])}


def secret_value(secret: dict[str, Any], key: str) -> str:
    return base64.b64decode(secret["data"][key]).decode()


def ray_resources(params: dict[str, str]) -> dict[str, float]:
    """rayStartParams.resources is a JSON string quoted once more for the shell ('"{\\"a\\": 1}"')."""
    quoted = params["resources"]
    assert quoted.startswith('"') and quoted.endswith('"'), quoted
    return json.loads(json.loads(quoted))


# --- the chart itself ---------------------------------------------------------------------


def test_chart_metadata_and_defaults() -> None:
    """Chart.yaml is Helm v3 (apiVersion v2) with appVersion 0.1.0; the defaults are the documented
    ones; `helm lint --strict` finds no warnings or errors."""
    with helm_python.Chart.load(CHART_DIR) as chart:
        meta, values = chart.metadata, chart.values
    assert meta["apiVersion"] == "v2" and meta["name"] == "suanli" and meta["appVersion"] == "0.1.0"
    assert values["image"]["repository"] == "ghcr.io/suanli/suanli" and values["image"]["tag"] == ""
    assert values["api"]["replicaCount"] == 2 and values["scheduler"]["replicaCount"] == 1
    assert values["postgresql"]["enabled"] is True and values["ray"]["enabled"] is True
    assert values["monitoring"]["serviceMonitor"]["enabled"] is False
    assert values["monitoring"]["dashboards"]["enabled"] is True
    assert values["agent"]["backend"] == "auto" and values["agent"]["nodeSelector"] == {}
    assert [g["name"] for g in values["ray"]["workerGroups"]] == ["nvidia-a100-80g", "ascend-910b"]
    report = helm_python.lint(CHART_DIR, strict=True, kube_version=f"v{K8S_VERSIONS[0]}")
    assert report["errors"] == [] and all(m["severity"] < 2 for m in report["messages"]), report


def test_every_value_is_commented() -> None:
    """Every key of values.yaml has a comment line directly above it or a parent that has one
    (leaf values inside a commented block, e.g. resources.requests, count as documented)."""
    lines = (CHART_DIR / "values.yaml").read_text().splitlines()
    key_re = re.compile(r"^(\s*)([A-Za-z][\w.-]*):")
    documented_at: list[int] = []  # indents of the enclosing keys that carry a comment
    for i, line in enumerate(lines):
        m = key_re.match(line)
        if not m:
            continue
        indent = len(m.group(1))
        documented_at = [d for d in documented_at if d < indent]
        commented = i > 0 and lines[i - 1].strip().startswith("#")
        if commented:
            documented_at.append(indent)
        # A section header (a key whose children are all documented) need not be commented.
        has_children = i + 1 < len(lines) and len(lines[i + 1]) - len(lines[i + 1].lstrip()) > indent
        assert commented or documented_at or has_children, f"values.yaml:{i + 1} {line.strip()!r} has no comment"


# --- schemas ------------------------------------------------------------------------------


def test_strict_validation_is_effective() -> None:
    """The validator really checks: an unknown field in a Deployment fails strict validation
    (so the schema tests below cannot pass vacuously)."""
    deployment = one(render({}), "Deployment", f"{RELEASE}-api")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["replicaz"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("case", sorted(VALUE_SETS))
def test_builtin_kinds_validate_against_kubernetes_schemas(case: str, version: str) -> None:
    """Every rendered object of a built-in kind is valid for Kubernetes `version` in strict mode;
    every other object is one of the known CRD kinds (checked structurally elsewhere)."""
    docs = render(VALUE_SETS[case])
    assert find(docs, "Deployment"), "nothing rendered"
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            continue
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("case", sorted(VALUE_SETS))
def test_crd_objects_are_well_formed(case: str) -> None:
    """RayCluster and ServiceMonitor objects (no schema for CRDs here) have apiVersion, kind,
    metadata.name and the spec keys their operators require."""
    required = {"RayCluster": {"headGroupSpec", "workerGroupSpecs"}, "ServiceMonitor": {"selector", "endpoints"}}
    for doc in render(VALUE_SETS[case]):
        if (doc["apiVersion"], doc["kind"]) not in CRD_KINDS:
            continue
        assert doc["metadata"]["name"] and isinstance(doc["spec"], dict)
        assert required[doc["kind"]] <= doc["spec"].keys()


# --- workloads ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(VALUE_SETS))
def test_every_workload_container_has_resources_and_runs_as_non_root(case: str) -> None:
    """Every container of every Deployment, DaemonSet and StatefulSet has resource requests and
    limits and runs with runAsNonRoot (set on the container or its pod), without privilege
    escalation."""
    for doc in render(VALUE_SETS[case]):
        if doc["kind"] not in WORKLOAD_KINDS:
            continue
        pod = doc["spec"]["template"]["spec"]
        for c in pod["containers"]:
            where = f"{doc['kind']} {doc['metadata']['name']} container {c['name']}"
            assert c["resources"].get("requests") and c["resources"].get("limits"), where
            sc = c.get("securityContext", {})
            assert sc.get("runAsNonRoot", pod.get("securityContext", {}).get("runAsNonRoot")) is True, where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where


def test_api_deployment_and_service() -> None:
    """The api runs `uvicorn --factory api.app:app_from_env` on 8000 with 2 replicas, is probed on
    GET /healthz:8000, is scraped on /metrics:8000, runs read-only as non-root without
    capabilities, mounts /data, and is reachable through a ClusterIP Service on 8000."""
    docs = render({})
    api = one(docs, "Deployment", f"{RELEASE}-api")
    assert api["spec"]["replicas"] == 2
    c = container(api, "api")
    assert c["command"] == ["uvicorn", "--factory", "api.app:app_from_env", "--host", "0.0.0.0", "--port", "8000"]
    assert c["image"] == "ghcr.io/suanli/suanli:0.1.0"
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": 8000}
    annotations = api["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "8000" and annotations["prometheus.io/path"] == "/metrics"
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["runAsNonRoot"] is True
    assert env(c)["SUANLI_DATA_DIR"]["value"] == "/data"
    assert {"name": "data", "mountPath": "/data"} in c["volumeMounts"]
    service = one(docs, "Service", f"{RELEASE}-api")
    assert service["spec"]["type"] == "ClusterIP" and service["spec"]["ports"][0]["port"] == 8000
    assert service["spec"]["selector"].items() <= api["spec"]["template"]["metadata"]["labels"].items()
    assert api["spec"]["template"]["spec"]["serviceAccountName"] == f"{RELEASE}-api"
    assert one(docs, "ServiceAccount", f"{RELEASE}-api")


def test_scheduler_is_a_single_recreated_process() -> None:
    """The scheduler runs `suanli scheduler` as exactly one replica with strategy Recreate (no two
    schedulers during an upgrade) and talks to the bundled RayCluster's client port."""
    sched = one(render({}), "Deployment", f"{RELEASE}-scheduler")
    assert sched["spec"]["replicas"] == 1 and sched["spec"]["strategy"] == {"type": "Recreate"}
    c = container(sched, "scheduler")
    assert c["command"] == ["suanli", "scheduler"]
    e = env(c)
    assert e["SUANLI_RAY_ADDRESS"]["value"] == f"ray://{RELEASE}-ray-head-svc:10001"
    assert e["SUANLI_DATA_DIR"]["value"] == "/data"


def test_scheduler_metrics_are_exposed_and_scraped() -> None:
    """The scheduler serves /metrics on scheduler.metricsPort (env, named container port,
    scrape annotations), a headless Service selects it, and with ServiceMonitors on the
    scheduler gets one next to the api's and the agents'."""
    docs = render({"monitoring": {"serviceMonitor": {"enabled": True}}})
    sched = one(docs, "Deployment", f"{RELEASE}-scheduler")
    c = container(sched, "scheduler")
    assert env(c)["SUANLI_SCHEDULER_METRICS_PORT"]["value"] == "9402"
    assert c["ports"] == [{"name": "metrics", "containerPort": 9402, "protocol": "TCP"}]
    assert sched["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "9402"
    svc = one(docs, "Service", f"{RELEASE}-scheduler")
    assert svc["spec"]["selector"].items() <= sched["spec"]["template"]["metadata"]["labels"].items()
    assert svc["spec"]["ports"][0]["targetPort"] == "metrics"
    mon = one(docs, "ServiceMonitor", f"{RELEASE}-scheduler")
    assert mon["spec"]["endpoints"][0]["port"] == "metrics"


def test_external_ray_replaces_the_raycluster() -> None:
    """With ray.enabled false no RayCluster is rendered and the scheduler uses ray.address;
    without an address rendering fails with a message naming ray.address."""
    docs = render(VALUE_SETS["external-ray"])
    assert not find(docs, "RayCluster")
    sched = one(docs, "Deployment", f"{RELEASE}-scheduler")
    assert env(container(sched, "scheduler"))["SUANLI_RAY_ADDRESS"]["value"] == "ray://ray-head.ray.svc:10001"
    with pytest.raises(helm_python.HelmRenderError, match="set ray.address"):
        render({"ray": {"enabled": False}})


# --- database -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(VALUE_SETS))
def test_database_url_comes_from_a_secret(case: str) -> None:
    """The api and the scheduler read SUANLI_DATABASE_URL from a Secret: no literal value, and
    neither the password nor the URL appears anywhere in their Deployments."""
    docs = render(VALUE_SETS[case])
    secrets = {s["metadata"]["name"]: s for s in find(docs, "Secret")}
    db_secret = secrets.get(f"{RELEASE}-database")
    leaks = [EXTERNAL_URL, "ext-S3cret"]
    if db_secret is not None:
        leaks.append(secret_value(db_secret, "url"))
        if "password" in db_secret["data"]:
            leaks.append(secret_value(db_secret, "password"))
    for name in (f"{RELEASE}-api", f"{RELEASE}-scheduler"):
        deployment = one(docs, "Deployment", name)
        ref = env(deployment["spec"]["template"]["spec"]["containers"][0])["SUANLI_DATABASE_URL"]
        assert "value" not in ref and "secretKeyRef" in ref["valueFrom"]
        text = json.dumps(deployment)
        assert not [leak for leak in leaks if leak in text], f"{name} contains a database secret"
        if case == "existing-db-secret":
            assert ref["valueFrom"]["secretKeyRef"] == {"name": "db-creds", "key": "dsn"}
        else:
            assert ref["valueFrom"]["secretKeyRef"] == {"name": f"{RELEASE}-database", "key": "url"}


def test_bundled_postgresql_url_matches_its_password() -> None:
    """By default the database Secret holds a generated 24-character password and the URL
    postgresql+psycopg://suanli:<password>@<release>-postgresql:5432/suanli; PostgreSQL takes its
    password from the same Secret, and the Secret is kept on uninstall (its volume is)."""
    docs = render({})
    secret = one(docs, "Secret", f"{RELEASE}-database")
    password = secret_value(secret, "password")
    assert re.fullmatch(r"[A-Za-z0-9]{24}", password)
    assert secret_value(secret, "url") == f"postgresql+psycopg://suanli:{password}@{RELEASE}-postgresql:5432/suanli"
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    pg = one(docs, "StatefulSet", f"{RELEASE}-postgresql")
    c = container(pg, "postgresql")
    assert c["image"] == "postgres:16"
    assert env(c)["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": f"{RELEASE}-database", "key": "password"}
    assert pg["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert pg["spec"]["serviceName"] == f"{RELEASE}-postgresql-headless"
    assert one(docs, "Service", f"{RELEASE}-postgresql")["spec"]["ports"][0]["port"] == 5432
    assert one(docs, "Service", f"{RELEASE}-postgresql-headless")["spec"]["clusterIP"] == "None"


def test_explicit_postgresql_password_is_used() -> None:
    """postgresql.auth.password, when given, is the password (renders are then reproducible)."""
    secret = one(render({"postgresql": {"auth": {"password": "fixed-pw-1"}}}), "Secret", f"{RELEASE}-database")
    assert secret_value(secret, "password") == "fixed-pw-1"
    assert secret_value(secret, "url").startswith("postgresql+psycopg://suanli:fixed-pw-1@")


def test_external_database() -> None:
    """With postgresql disabled, database.url is stored in the database Secret and no PostgreSQL
    objects are rendered; with database.existingSecret the chart creates no database Secret."""
    docs = render(VALUE_SETS["external-db"])
    assert secret_value(one(docs, "Secret", f"{RELEASE}-database"), "url") == EXTERNAL_URL
    assert not find(docs, "StatefulSet") and not find(docs, "Service", f"{RELEASE}-postgresql")
    docs = render(VALUE_SETS["existing-db-secret"])
    assert not find(docs, "Secret", f"{RELEASE}-database") and not find(docs, "StatefulSet")


def test_disabling_postgresql_without_a_url_fails_clearly() -> None:
    """postgresql.enabled=false with neither database.url nor database.existingSecret fails to
    render, and the message says what to set."""
    with pytest.raises(helm_python.HelmRenderError, match=r"postgresql.enabled is false: set database.url"):
        render({"postgresql": {"enabled": False}})


# --- agent --------------------------------------------------------------------------------


def test_agent_daemonset_defaults() -> None:
    """The agent DaemonSet runs `suanli-agent run --api-url http://<release>-api:8000 --port 9400`,
    knows its server from spec.nodeName, reads its token from a Secret, exposes port 9400 named
    metrics (scrape annotations), does not share the host PID namespace, sees all NVIDIA GPUs,
    and mounts nothing from the host."""
    docs = render({})
    ds = one(docs, "DaemonSet", f"{RELEASE}-agent")
    pod = ds["spec"]["template"]["spec"]
    c = container(ds, "agent")
    assert c["command"] == ["suanli-agent", "run", "--api-url", f"http://{RELEASE}-api:8000", "--port", "9400"]
    e = env(c)
    assert e["SUANLI_AGENT_NODE"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert e["SUANLI_AGENT_BACKEND"]["value"] == "auto"
    assert e["SUANLI_AGENT_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": f"{RELEASE}-agent-token", "key": "token"}
    assert e["NVIDIA_VISIBLE_DEVICES"]["value"] == "all"
    assert "SUANLI_AGENT_ACCELERATOR_TYPE" not in e  # not given: the agent says it needs one
    assert c["ports"] == [{"name": "metrics", "containerPort": 9400, "protocol": "TCP"}]
    assert pod["hostPID"] is False and "runtimeClassName" not in pod and "nodeSelector" not in pod
    assert not [v for v in pod["volumes"] if "hostPath" in v]
    annotations = ds["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "9400" and annotations["prometheus.io/scrape"] == "true"
    assert not find(docs, "Secret", f"{RELEASE}-agent-token"), "no token given: the Secret is made after install"


def test_agent_on_ascend_servers() -> None:
    """With the Ascend toggle the agent mounts the host's /usr/local/Ascend/driver and
    /usr/local/sbin/npu-smi read-only, uses the given runtimeClass and nodeSelector, gets no NVIDIA
    variables, and the chart creates the token Secret from agent.token."""
    docs = render(VALUE_SETS["ascend-agent"])
    ds = one(docs, "DaemonSet", f"{RELEASE}-agent")
    pod = ds["spec"]["template"]["spec"]
    c = container(ds, "agent")
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    for path in ("/usr/local/Ascend/driver", "/usr/local/sbin/npu-smi"):
        assert mounts[path]["readOnly"] is True
        assert host_paths[mounts[path]["name"]] == path
    assert pod["runtimeClassName"] == "ascend" and pod["nodeSelector"] == {"accelerator": "huawei-Ascend910"}
    e = env(c)
    assert e["SUANLI_AGENT_BACKEND"]["value"] == "ascend" and "NVIDIA_VISIBLE_DEVICES" not in e
    assert e["SUANLI_AGENT_ACCELERATOR_TYPE"]["value"] == "ascend-910b"
    assert secret_value(one(docs, "Secret", f"{RELEASE}-agent-token"), "token") == "agent-token-123"


def test_agent_backend_is_checked() -> None:
    """An agent.backend outside auto|nvidia|ascend|simulated fails rendering."""
    with pytest.raises(helm_python.HelmRenderError, match="agent.backend must be one of"):
        render({"agent": {"backend": "cuda"}})


# --- shared data volume -------------------------------------------------------------------


def test_shared_data_volume() -> None:
    """A ReadWriteMany claim <release>-data is mounted at /data in the api, the scheduler and the
    Ray workers (runners write logs there, the api serves them); with persistence.existingClaim
    that claim is mounted instead and none is created."""
    for case, claim in (("defaults", f"{RELEASE}-data"), ("existing-claim", "shared-nfs")):
        docs = render(VALUE_SETS[case])
        pvcs = find(docs, "PersistentVolumeClaim")
        if case == "defaults":
            assert [p["metadata"]["name"] for p in pvcs] == [claim]
            assert pvcs[0]["spec"]["accessModes"] == ["ReadWriteMany"]
            assert pvcs[0]["spec"]["resources"]["requests"]["storage"] == "100Gi"
        else:
            assert pvcs == []
        pods = [d["spec"]["template"]["spec"] for d in find(docs, "Deployment")]
        pods += [g["template"]["spec"] for g in one(docs, "RayCluster", f"{RELEASE}-ray")["spec"]["workerGroupSpecs"]]
        for pod in pods:
            volumes = {v["name"]: v for v in pod["volumes"]}
            assert volumes["data"]["persistentVolumeClaim"]["claimName"] == claim
            assert {"name": "data", "mountPath": "/data"} in pod["containers"][0]["volumeMounts"]


# --- Ray ----------------------------------------------------------------------------------


def test_raycluster_head_and_worker_groups() -> None:
    """The RayCluster (ray.io/v1, no schema here) is <release>-ray; its head takes no work
    (num-cpus "0") and serves the dashboard; each worker group advertises dev-0..dev-7 = 1 and
    accelerator_type:<type> = 1 (plus NPU: 8 on Ascend), carries the accelerator-type label,
    requests its 8 devices from Kubernetes and learns its server name from spec.nodeName."""
    rc = one(render({}), "RayCluster", f"{RELEASE}-ray")
    assert rc["apiVersion"] == "ray.io/v1"
    head = rc["spec"]["headGroupSpec"]["rayStartParams"]
    assert head["num-cpus"] == "0" and head["dashboard-host"] == "0.0.0.0" and head["include-dashboard"] == "true"
    groups = {g["groupName"]: g for g in rc["spec"]["workerGroupSpecs"]}
    expected = {
        "nvidia-a100-80g": ("nvidia.com/gpu", {}, {"num-gpus": "8"}),
        "ascend-910b": ("huawei.com/Ascend910", {"NPU": 8}, {}),
    }
    assert groups.keys() == expected.keys()
    for name, (device, extra, params) in expected.items():
        group = groups[name]
        start = group["rayStartParams"]
        assert all(isinstance(v, str) for v in start.values()), "KubeRay wants string rayStartParams"
        devices = {f"dev-{i}": 1 for i in range(8)}
        assert ray_resources(start) == {**devices, f"accelerator_type:{name}": 1, **extra}
        assert start["labels"] == f"suanli.io/accelerator-type={name}"
        assert params.items() <= start.items() and ("num-gpus" in start) == bool(params)
        c = group["template"]["spec"]["containers"][0]
        assert c["resources"]["limits"][device] == 8
        assert env(c)["SUANLI_NODE"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
        assert env(c)["SUANLI_DATA_DIR"]["value"] == "/data"


def test_ray_device_resources_follow_devices_per_node() -> None:
    """dev-<i> resources are computed from devicesPerNode: 4 devices give dev-0..dev-3 only."""
    group = {
        "name": "nvidia-l40s",
        "acceleratorType": "nvidia-l40s",
        "devicesPerNode": 4,
        "deviceResource": "nvidia.com/gpu",
        "numGpus": 4,
    }
    rc = one(render({"ray": {"workerGroups": [group]}}), "RayCluster", f"{RELEASE}-ray")
    (worker,) = rc["spec"]["workerGroupSpecs"]
    devices = {"dev-0": 1, "dev-1": 1, "dev-2": 1, "dev-3": 1}
    assert ray_resources(worker["rayStartParams"]) == {**devices, "accelerator_type:nvidia-l40s": 1}
    assert worker["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 4


# --- monitoring ---------------------------------------------------------------------------


def test_service_monitors() -> None:
    """No ServiceMonitor by default; when enabled, one for the api (port http), one for the
    scheduler and one for the agents (port metrics), each selecting exactly its component's
    Service, with the extra labels."""
    assert not find(render({}), "ServiceMonitor")
    docs = render(VALUE_SETS["service-monitor"])
    monitors = {m["metadata"]["name"]: m for m in find(docs, "ServiceMonitor")}
    assert monitors.keys() == {f"{RELEASE}-api", f"{RELEASE}-scheduler", f"{RELEASE}-agent"}
    for name, port in ((f"{RELEASE}-api", "http"), (f"{RELEASE}-scheduler", "metrics"), (f"{RELEASE}-agent", "metrics")):
        monitor = monitors[name]
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["labels"]["release"] == "kps"
        assert monitor["spec"]["endpoints"][0]["port"] == port and monitor["spec"]["endpoints"][0]["path"] == "/metrics"
        service = one(docs, "Service", name)
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        assert port in [p["name"] for p in service["spec"]["ports"]]


def test_dashboards_configmap() -> None:
    """The dashboards ConfigMap carries grafana_dashboard: "1", and each entry is a Grafana
    dashboard JSON with panels for jobs by status, the API request rate and GPU utilization."""
    cm = one(render({}), "ConfigMap", f"{RELEASE}-dashboards")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert set(cm["data"]) == {p.name for p in (CHART_DIR / "files" / "dashboards").glob("*.json")}
    dashboard = json.loads(cm["data"]["suanli-overview.json"])
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for metric in ("suanli_jobs", "rate(suanli_http_requests_total[5m])", "DCGM_FI_DEV_GPU_UTIL"):
        assert metric in exprs
    assert not find(render({"monitoring": {"dashboards": {"enabled": False}}}), "ConfigMap")


# --- labels and names ---------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(VALUE_SETS))
def test_standard_labels_and_release_prefix(case: str) -> None:
    """Every object (and every pod template) carries the standard labels with this release's
    values, every object name starts with "<release>-", and workload selectors match their pods."""
    expected = {
        "app.kubernetes.io/name": "suanli",
        "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/version": "0.1.0",
        "app.kubernetes.io/managed-by": "Helm",
        "helm.sh/chart": "suanli-0.1.0",
    }
    for doc in render(VALUE_SETS[case]):
        meta = doc["metadata"]
        where = f"{doc['kind']} {meta['name']}"
        assert meta["name"].startswith(f"{RELEASE}-"), where
        templates = [meta]
        if doc["kind"] in WORKLOAD_KINDS:
            templates.append(doc["spec"]["template"]["metadata"])
            selector = doc["spec"]["selector"]["matchLabels"]
            assert selector.items() <= doc["spec"]["template"]["metadata"]["labels"].items(), where
        if doc["kind"] == "RayCluster":
            templates.append(doc["spec"]["headGroupSpec"]["template"]["metadata"])
            templates += [g["template"]["metadata"] for g in doc["spec"]["workerGroupSpecs"]]
        for m in templates:
            labels = m["labels"]
            assert all(k in labels for k in STANDARD_LABELS), f"{where}: {labels}"
            assert expected.items() <= labels.items(), where
            assert labels["app.kubernetes.io/component"], where


def test_minimal_options() -> None:
    """Options that switch things off or decorate them are honoured: image tag, pull secrets and
    common labels on every pod; no agent, no dashboards, no api ServiceAccount, and /data an
    emptyDir when persistence is off."""
    docs = render(VALUE_SETS["minimal"])
    assert not find(docs, "DaemonSet") and not find(docs, "ConfigMap") and not find(docs, "PersistentVolumeClaim")
    assert not find(docs, "ServiceAccount", f"{RELEASE}-api")
    for doc in find(docs, "Deployment"):
        pod = doc["spec"]["template"]["spec"]
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]
        assert pod["containers"][0]["image"] == "ghcr.io/suanli/suanli:0.2.0-rc1"
        assert {v["name"]: v for v in pod["volumes"]}["data"] == {"name": "data", "emptyDir": {}}
        assert doc["spec"]["template"]["metadata"]["labels"]["team"] == "platform"
        assert "prometheus.io/scrape" not in doc["spec"]["template"]["metadata"]["annotations"]
    assert one(docs, "Deployment", f"{RELEASE}-api")["spec"]["template"]["spec"]["serviceAccountName"] == "default"


def test_notes_render() -> None:
    """NOTES.txt renders and tells how to reach the api and how to give the agents their token."""
    notes = next(t for p, t in render_raw({}).items() if p.endswith("NOTES.txt"))
    assert f"svc/{RELEASE}-api" in notes and f"{RELEASE}-agent-token" in notes


# --- alert rules and the three dashboards (deploy/grafana, deploy/prometheus) --------------


def test_prometheus_rules_are_off_by_default_and_carry_every_alert() -> None:
    """No PrometheusRule or rules ConfigMap by default. Enabled, the PrometheusRule (a CRD: checked
    structurally) and the ConfigMap hold exactly the groups of deploy/prometheus/rules.yaml, with
    the extra labels, the alerts' {{ $labels }} templates untouched, and every runbook_url prefixed
    with runbookBaseUrl."""
    rules_file = yaml.safe_load((CHART_DIR.parents[1] / "prometheus" / "rules.yaml").read_text())
    assert not find(render({}), "PrometheusRule") and not find(render({}), "ConfigMap", f"{RELEASE}-prometheus-rules")
    base = "https://git.example.org/suanli/blob/v1/"
    docs = render({"monitoring": {"rules": {"prometheusRule": True, "configMap": True, "labels": {"release": "kps"},
                                            "runbookBaseUrl": base}}})
    rule = one(docs, "PrometheusRule", f"{RELEASE}-alerts")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["metadata"]["labels"]["release"] == "kps"
    cm = one(docs, "ConfigMap", f"{RELEASE}-prometheus-rules")
    for groups in (rule["spec"]["groups"], yaml.safe_load(cm["data"]["rules.yaml"])["groups"]):
        assert [g["name"] for g in groups] == [g["name"] for g in rules_file["groups"]]
        alerts = [r for g in groups for r in g["rules"]]
        expected = [r for g in rules_file["groups"] for r in g["rules"]]
        assert [r["alert"] for r in alerts] == [r["alert"] for r in expected]
        for got, want in zip(alerts, expected, strict=True):
            assert got["expr"] == want["expr"] and got["labels"] == want["labels"]
            assert got["annotations"]["runbook_url"] == base + want["annotations"]["runbook_url"]
            assert got["annotations"]["summary"] == want["annotations"]["summary"]
    assert "{{ $labels.node }}" in cm["data"]["rules.yaml"]


def test_dashboards_configmap_ships_the_three_dashboards() -> None:
    """The sidecar ConfigMap carries the center overview, tenants-and-subsidy and nodes-and-devices
    dashboards of deploy/grafana byte for byte, each with the datasource variable."""
    cm = one(render({}), "ConfigMap", f"{RELEASE}-dashboards")
    grafana = CHART_DIR.parents[1] / "grafana"
    assert set(cm["data"]) == {"suanli-overview.json", "suanli-tenants.json", "suanli-nodes.json"}
    for name, text in cm["data"].items():
        assert json.loads(text) == json.loads((grafana / name).read_text())
        assert any(v["name"] == "datasource" for v in json.loads(text)["templating"]["list"])
