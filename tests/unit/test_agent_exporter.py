"""The agent's /metrics: dcgm-exporter and npu-exporter compatible names, unified
suanli_device_* families, and scrapes that never sample devices."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agents.devices.base import DeviceSample
from agents.devices.simulated import SimulatedCollector
from agents.exporter import DeviceExporter, MetricsServer
from agents.state import AgentState
from scheduler.types import Vendor

FIXTURES = Path("/work/shared/fixtures")
FLOAT = re.compile(r"^[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|NaN|[+-]?Inf)$")
UNIFIED = {"suanli_device_utilization_ratio", "suanli_device_memory_used_bytes", "suanli_device_memory_total_bytes",
           "suanli_device_power_watts", "suanli_device_temperature_celsius", "suanli_device_healthy", "suanli_device_allocated",
           "suanli_device_idle_allocation"}


def families(text: str) -> dict[str, tuple[str, set[str], str]]:
    """name -> (type, label names, HELP) of a scrape."""
    out: dict[str, tuple[str, set[str], str]] = {}
    for fam in text_string_to_metric_families(text):
        labels = {k for s in fam.samples for k in s.labels}
        out[fam.name] = (fam.type, labels, fam.documentation)
    return out


def fixture_families(path: Path) -> dict[str, tuple[str, set[str], str]]:
    """The recorded scrape, minus sample lines whose value is not a number (dcgm-exporter
    prints `ERROR - FAILED TO CONVERT TO STRING` for vGPU per-process utilization)."""
    if not path.exists():
        pytest.skip(f"fixture {path} not present")
    kept = []
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            kept.append(line)
            continue
        value = line.rsplit("}", 1)[-1].split() if "}" in line else line.split()[1:]
        if value and FLOAT.match(value[0]):
            kept.append(line)
    return families("\n".join(kept) + "\n")


class CountingCollector(SimulatedCollector):
    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.sample_calls = 0

    def sample(self) -> list[DeviceSample]:
        self.sample_calls += 1
        return super().sample()


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def make(vendor: Vendor, jobs: dict[int, int] | None = None, clock: Clock | None = None) -> tuple[DeviceExporter, CountingCollector]:
    kind = "nvidia-a100-80g" if vendor is Vendor.NVIDIA else "ascend-910b"
    c = CountingCollector(kind, vendor, 4, seed=3, node="node-a", clock=clock or Clock())
    state = AgentState()
    if jobs:
        c.set_busy(dict(jobs))
        state.set_jobs(dict(jobs))
    e = DeviceExporter(c, "node-a", state, wall_clock=lambda: 1_700_000_000.0)
    e.refresh()
    return e, c


def scrape(e: DeviceExporter) -> str:
    return e.render().decode()


def values(text: str, name: str, key: str | None = "device") -> dict[str, float]:
    """label `key` -> value of family `name` (key None: "" -> the one unlabelled value)."""
    return {s.labels[key] if key else "": s.value for f in text_string_to_metric_families(text) for s in f.samples
            if f.name == name}


@pytest.mark.parametrize(
    "vendor, fixture, prefix, required",
    [
        (Vendor.NVIDIA, FIXTURES / "nvidia/dcgm-exporter-metrics.txt", "DCGM_",
         {"DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_POWER_USAGE",
          "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_XID_ERRORS"}),
        (Vendor.ASCEND, FIXTURES / "ascend/npu-exporter-metrics.txt", "npu_",
         {"npu_chip_info_utilization", "npu_chip_info_hbm_used_memory", "npu_chip_info_hbm_total_memory",
          "npu_chip_info_power", "npu_chip_info_temperature", "npu_chip_info_health_status"}),
    ],
)
def test_vendor_families_match_the_real_exporter(vendor: Vendor, fixture: Path, prefix: str, required: set[str]) -> None:
    """Every vendor family we export exists in the real exporter's recorded scrape with the same
    type and HELP text, and its label names are a subset of the real family's; the main
    families are all there; the other vendor's names never appear."""
    real = fixture_families(fixture)
    ours = families(scrape(make(vendor, {1: 9})[0]))
    vendor_names = {n for n in ours if n.startswith(prefix) or n == "machine_npu_nums"}
    assert required <= vendor_names
    for name in vendor_names:
        assert name in real, f"{name} is not an {prefix} family of the real exporter"
        rtype, rlabels, rhelp = real[name]
        otype, olabels, ohelp = ours[name]
        assert otype == rtype, name
        assert ohelp == rhelp, name
        assert olabels <= rlabels, f"{name}: extra labels {olabels - rlabels}"
    other = "npu_" if prefix == "DCGM_" else "DCGM_"
    assert not [n for n in ours if n.startswith(other)]


def test_dcgm_counter_keeps_its_exact_sample_name() -> None:
    """The energy counter is exposed as `DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{...}` like
    dcgm-exporter does, not with an added `_total`, so dcgm dashboards find it."""
    text = scrape(make(Vendor.NVIDIA)[0])
    assert "# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter\n" in text
    assert re.search(r"^DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION\{", text, re.M)
    assert "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION_total" not in text


@pytest.mark.parametrize("vendor", list(Vendor))
def test_unified_families_carry_node_device_vendor_model_job(vendor: Vendor) -> None:
    """Each suanli_device_* family has exactly the labels node/device/vendor/model/job/org/
    project for every device; job, org and project are the scheduler's (from the heartbeat's
    answer) on an allocated device and "" on a free one; the idle-allocation gauge is 1 only
    on the device the API called idle."""
    e, _ = make(vendor, {2: 41})
    e.state.set_owners({2: ("tsinghua", "llm")}, {2})
    text = scrape(e)
    fams = families(text)
    assert UNIFIED <= set(fams)
    for fam in text_string_to_metric_families(text):
        if fam.name in UNIFIED:
            assert len(fam.samples) == 4
            for s in fam.samples:
                assert set(s.labels) == {"node", "device", "vendor", "model", "job", "org", "project"}
                assert (s.labels["org"], s.labels["project"]) == (("tsinghua", "llm") if s.labels["device"] == "2" else ("", ""))
                assert (s.labels["node"], s.labels["vendor"]) == ("node-a", vendor.value)
                assert s.labels["model"] == e.inventory[int(s.labels["device"])].model
                assert s.labels["job"] == ("41" if s.labels["device"] == "2" else "")
    assert values(text, "suanli_device_allocated") == {"0": 0, "1": 0, "2": 1, "3": 0}
    assert values(text, "suanli_device_idle_allocation") == {"0": 0, "1": 0, "2": 1, "3": 0}
    assert values(text, "suanli_device_memory_total_bytes")["0"] == e.inventory[0].memory_total_mib * 1024 * 1024


@pytest.mark.parametrize("vendor, util", [(Vendor.NVIDIA, "DCGM_FI_DEV_GPU_UTIL"), (Vendor.ASCEND, "npu_chip_info_utilization")])
def test_busy_device_reports_more_utilization_than_idle(vendor: Vendor, util: str) -> None:
    """A device running a job shows higher utilization (vendor and unified families) than an idle one."""
    text = scrape(make(vendor, {0: 5})[0])
    key = "gpu" if vendor is Vendor.NVIDIA else "id"
    vendor_util = values(text, util, key)
    ratio = values(text, "suanli_device_utilization_ratio")
    for idle in ("1", "2", "3"):
        assert vendor_util["0"] > vendor_util[idle]
        assert ratio["0"] > ratio[idle]
    assert 0 <= min(ratio.values()) and max(ratio.values()) <= 1


def test_energy_is_monotone_across_scrapes() -> None:
    """DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION never decreases from one sample to the next, and
    grows while time passes."""
    clock = Clock()
    e, _ = make(Vendor.NVIDIA, {0: 1}, clock)
    last = values(scrape(e), "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "gpu")
    for _ in range(5):
        clock.t += 3.0
        e.refresh()
        now = values(scrape(e), "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "gpu")
        assert all(now[g] > last[g] for g in now)
        last = now


def test_scrape_does_not_sample() -> None:
    """Scrapes serve the last sample: rendering any number of times calls sample() zero times,
    and the served numbers change only after refresh()."""
    e, c = make(Vendor.NVIDIA)
    assert c.sample_calls == 1
    first = scrape(e)
    for _ in range(3):
        assert scrape(e) == first
    assert c.sample_calls == 1
    e.refresh()
    assert c.sample_calls == 2


def test_unhealthy_device_is_exported_as_unhealthy() -> None:
    """An Alarm/Critical device shows suanli_device_healthy 0 and npu health_status 0; others 1."""
    e, c = make(Vendor.ASCEND)
    c.set_health(3, "Alarm", code=80)
    e.refresh()
    text = scrape(e)
    assert values(text, "suanli_device_healthy") == {"0": 1, "1": 1, "2": 1, "3": 0}
    assert values(text, "npu_chip_info_health_status", "id")["3"] == 0
    assert values(text, "npu_chip_info_error_code", "id")["3"] == 80


def test_broken_backend_is_exported_as_unknown_health() -> None:
    """Invariant: while the backend fails, the last good sample is served, suanli_agent_backend_up
    is 0 and npu-exporter's health_status is -1 for every chip; a working sample restores 1."""
    e, c = make(Vendor.ASCEND)
    assert values(scrape(e), "suanli_agent_backend_up", None) == {"": 1}
    e.state.set_backend_error("BackendError: npu-smi not found")
    text = scrape(e)
    assert values(text, "suanli_agent_backend_up", None) == {"": 0}
    assert set(values(text, "npu_chip_info_health_status", "id").values()) == {-1}
    e.state.set_backend_error("")
    assert set(values(scrape(e), "npu_chip_info_health_status", "id").values()) == {1}


def test_agent_heartbeat_metrics() -> None:
    """The failure counter and last-heartbeat gauge follow AgentState."""
    e, _ = make(Vendor.NVIDIA)
    fams = families(scrape(e))
    assert fams["suanli_agent_heartbeat_failures"][0] == "counter"
    assert fams["suanli_agent_last_heartbeat_timestamp_seconds"][0] == "gauge"
    e.state.heartbeat_failed()
    e.state.heartbeat_failed()
    e.state.heartbeat_ok(1_700_000_123.0)
    text = scrape(e)
    samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if f.name.startswith("suanli_agent")}
    assert samples["suanli_agent_heartbeat_failures_total"] == 2
    assert samples["suanli_agent_last_heartbeat_timestamp_seconds"] == 1_700_000_123.0
    assert samples["suanli_agent_last_sample_timestamp_seconds"] == 1_700_000_000.0


def test_exporter_uses_its_own_registry() -> None:
    """Nothing is registered in prometheus_client's global registry."""
    from prometheus_client import REGISTRY

    make(Vendor.NVIDIA)
    assert not [m for m in REGISTRY.collect() if m.name.startswith(("DCGM_", "suanli_"))]


def test_metrics_server_serves_metrics_over_http() -> None:
    """GET /metrics answers the rendered text; any other path is 404."""
    e, _ = make(Vendor.NVIDIA)
    server = MetricsServer(e, "127.0.0.1", 0).start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert r.read() == e.render()
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/other", timeout=5)
        assert err.value.code == 404
    finally:
        server.stop()
