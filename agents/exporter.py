"""Prometheus telemetry of one server's devices, in the names operators' dashboards know.

- NVIDIA devices: dcgm-exporter's family names, types, HELP texts and labels (`gpu`, `UUID`,
  `device`, `modelName`, `Hostname`), so dashboards made for dcgm-exporter work unchanged.
- Ascend devices: npu-exporter's (`npu_chip_info_*`, labels `id`, `model_name`,
  `pcie_bus_info`, `vdie_id` and its pod labels, empty when no pod is known).
- Both: suanli's unified `suanli_device_*` families with labels node/device/vendor/model/job/
  org/project (from the heartbeat's answer: who holds each device), `suanli_device_idle_
  allocation`, and the agent's own `suanli_agent_*` health (`suanli_agent_backend_up`).
- While the backend is broken the last good sample is served, `suanli_agent_backend_up` is
  0 and npu-exporter's `npu_chip_info_health_status` is -1 (unknown), as npu-exporter does
  when it cannot read a chip.

Invariants:
- A scrape never samples devices: `collect()` only reads `AgentState`, which the sampler
  thread (`Sampler`) refreshes every `interval` seconds via `refresh()`. A slow or hung driver
  therefore never makes a scrape slow; the `suanli_agent_last_sample_timestamp_seconds`
  gauge says how old the served sample is.
- Only what a backend measured is exported: a family whose sample field is None for every
  device is left out instead of being filled with zeros.
- Families live in their own `CollectorRegistry`, never the process-global one.
- `render()` writes the text format with each family's HELP/TYPE under the exact name its
  samples carry. prometheus_client's `generate_latest` would announce dcgm's counter
  `DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION` as `..._total` (the OpenMetrics rule), which
  dcgm-exporter does not do; `/metrics` is therefore served with `render()`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from agents.devices.base import Collector, DeviceInfo, DeviceSample
from agents.state import AgentState
from scheduler.types import Vendor

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MIB = 1024 * 1024

Getter = Callable[[DeviceSample], float | int | None]


@dataclass(frozen=True)
class Family:
    name: str
    type: str  # "gauge" or "counter"
    help: str
    value: Getter


# HELP texts and types copied from a dcgm-exporter scrape (tests compare with the recorded one).
DCGM_FAMILIES = (
    Family("DCGM_FI_DEV_SM_CLOCK", "gauge", "SM clock frequency (in MHz).", lambda s: s.core_clock_mhz),
    Family("DCGM_FI_DEV_MEM_CLOCK", "gauge", "Memory clock frequency (in MHz).", lambda s: s.memory_clock_mhz),
    Family("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C).", lambda s: s.temperature_c),
    Family("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W).", lambda s: s.power_w),
    Family("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "counter", "Total energy consumption since boot (in mJ).", lambda s: s.energy_mj),
    Family("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %).", lambda s: s.utilization_pct),
    Family("DCGM_FI_DEV_MEM_COPY_UTIL", "gauge", "Memory utilization (in %).", lambda s: s.memory_utilization_pct),
    Family("DCGM_FI_DEV_XID_ERRORS", "gauge", "Value of the last XID error encountered.", lambda s: s.xid_last),
    Family("DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer memory free (in MiB).", lambda s: s.memory_free_mib),
    Family("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB).", lambda s: s.memory_used_mib),
    Family("DCGM_FI_DEV_ROW_REMAP_FAILURE", "gauge", "Whether remapping of rows has failed", lambda s: s.remapped_rows_failed),
    Family("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "counter", "Total number of single-bit volatile ECC errors.",
           lambda s: s.ecc_corrected_total),
    Family("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "counter", "Total number of double-bit volatile ECC errors.",
           lambda s: s.ecc_uncorrected_total),
)

# npu-exporter's names and HELP texts; memory in MB, power in W, temperature in C as it reports.
NPU_FAMILIES = (
    Family("npu_chip_info_utilization", "gauge", "the ai core utilization", lambda s: s.utilization_pct),
    Family("npu_chip_info_hbm_used_memory", "gauge", "the npu hbm used memory", lambda s: s.memory_used_mib),
    Family("npu_chip_info_hbm_total_memory", "gauge", "the npu hbm total memory", lambda s: s.memory_total_mib),
    Family("npu_chip_info_power", "gauge", "the npu power", lambda s: s.power_w),
    Family("npu_chip_info_temperature", "gauge", "the npu temperature", lambda s: s.temperature_c),
    # 1 healthy, 0 not; -1 (unknown) is written by `_vendor_families` while the backend is broken.
    Family("npu_chip_info_health_status", "gauge", "the npu health status", lambda s: 1 if s.healthy else 0),
    Family("npu_chip_info_aicore_current_freq", "gauge", "the npu ai core current frequency, unit is 'MHz'", lambda s: s.core_clock_mhz),
    Family("npu_chip_info_error_code", "gauge", "the npu error code", lambda s: s.error_code),
)

UNIFIED_LABELS = ("node", "device", "vendor", "model", "job", "org", "project")


class DeviceExporter:
    """The custom collector: vendor families + unified families + agent health."""

    def __init__(self, collector: Collector, node: str, state: AgentState | None = None,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.collector = collector
        self.node = node
        self.state = state or AgentState()
        self.wall_clock = wall_clock
        self.vendor = Vendor(collector.vendor)
        # The inventory is fixed for the agent's life (hardware changes need a restart).
        self.inventory: dict[int, DeviceInfo] = {d.index: d for d in collector.inventory()}
        self.registry = CollectorRegistry()
        self.registry.register(self)  # type: ignore[arg-type]

    def refresh(self) -> None:
        """Take one sample now (the sampler thread's job; tests call it directly)."""
        self.state.set_samples(self.collector.sample(), self.wall_clock())

    # ---------------------------------------------------------------- collection

    def collect(self) -> Iterator[Metric]:
        samples = self.state.samples()
        jobs = self.state.jobs()
        broken = self.state.backend_error
        if samples:
            yield from self._vendor_families(samples, unknown=bool(broken))
            yield from self._unified_families(samples, jobs)
        yield GaugeMetricFamily("suanli_agent_backend_up",
                                "1 while the device backend (NVML, npu-smi, simulated) answers; 0 after a failure "
                                "(the served sample is then the last good one).", value=0 if broken else 1)
        failures = CounterMetricFamily("suanli_agent_heartbeat_failures", "Heartbeats the API did not accept (network error or HTTP error).")
        failures.add_metric([], self.state.heartbeat_failures)
        yield failures
        yield GaugeMetricFamily("suanli_agent_last_heartbeat_timestamp_seconds",
                                "Unix time of the last heartbeat the API accepted; 0 before the first.",
                                value=self.state.last_heartbeat_at or 0.0)
        yield GaugeMetricFamily("suanli_agent_last_sample_timestamp_seconds",
                                "Unix time of the device sample being served; 0 before the first.",
                                value=self.state.sampled_at or 0.0)

    def _info(self, s: DeviceSample) -> DeviceInfo:
        return self.inventory.get(s.index) or DeviceInfo(s.index, "", "", int(s.memory_total_mib))

    def _vendor_labels(self, s: DeviceSample) -> dict[str, str]:
        d = self._info(s)
        if self.vendor is Vendor.NVIDIA:
            return {"gpu": str(s.index), "UUID": d.uuid, "device": f"nvidia{s.index}", "modelName": d.model, "Hostname": self.node}
        # npu-exporter prints its pod labels empty when no pod uses the chip; kept for parity.
        return {"container_name": "", "id": str(s.index), "model_name": d.model, "namespace": "",
                "pcie_bus_info": d.pci_bus_id, "pod_name": "", "vdie_id": d.vdie_id}

    def _vendor_families(self, samples: tuple[DeviceSample, ...], unknown: bool = False) -> Iterator[Metric]:
        families = DCGM_FAMILIES if self.vendor is Vendor.NVIDIA else NPU_FAMILIES
        for fam in families:
            values = [(s, -1 if unknown and fam.name == "npu_chip_info_health_status" else fam.value(s)) for s in samples]
            if all(v is None for _, v in values):
                continue  # the backend does not measure it
            m = Metric(fam.name, fam.help, fam.type)
            for s, v in values:
                if v is not None:
                    # Exact sample name, also for counters: dcgm-exporter adds no `_total`.
                    m.add_sample(fam.name, self._vendor_labels(s), float(v))
            yield m
        if self.vendor is Vendor.ASCEND:
            names = GaugeMetricFamily("npu_chip_info_name", "the Ascend npu name with value '1'",
                                      labels=["container_name", "id", "name", "namespace", "pcie_bus_info", "pod_name", "vdie_id"])
            for s in samples:
                lab = self._vendor_labels(s)
                names.add_metric([lab["container_name"], lab["id"], lab["model_name"], lab["namespace"],
                                  lab["pcie_bus_info"], lab["pod_name"], lab["vdie_id"]], 1)
            yield names
            yield GaugeMetricFamily("machine_npu_nums", "Amount of npu installed on the machine.", value=len(self.inventory))

    def _unified_families(self, samples: tuple[DeviceSample, ...], jobs: dict[int, int]) -> Iterator[Metric]:
        specs: tuple[tuple[str, str, Getter], ...] = (
            ("suanli_device_utilization_ratio", "Busy fraction of the device's compute (GPU SM or NPU AI core), 0..1.",
             lambda s: round(s.utilization_pct / 100.0, 6)),
            ("suanli_device_memory_used_bytes", "Device memory in use, bytes.", lambda s: s.memory_used_mib * MIB),
            ("suanli_device_memory_total_bytes", "Device memory size, bytes.", lambda s: s.memory_total_mib * MIB),
            ("suanli_device_power_watts", "Power draw, watts.", lambda s: s.power_w),
            ("suanli_device_temperature_celsius", "Device temperature, degrees Celsius.", lambda s: s.temperature_c),
            ("suanli_device_healthy", "1 if the device is healthy (OK or Warning), 0 if not (Alarm, Critical).",
             lambda s: 1 if s.healthy else 0),
            ("suanli_device_allocated", "1 if the scheduler has given the device to a job (labels job, org, project), else 0.",
             lambda s: 1 if s.index in jobs else 0),
            ("suanli_device_idle_allocation", "1 if the device is an idle allocation: given to a job but below the "
             "center's utilization threshold for its idle window (as the API judges it), else 0.",
             lambda s: 1 if s.index in idle and s.index in jobs else 0),
        )
        owners, idle = self.state.owners()
        for name, doc, get in specs:
            g = GaugeMetricFamily(name, doc, labels=list(UNIFIED_LABELS))
            for s in samples:
                job = jobs.get(s.index)
                org, project = owners.get(s.index, ("", "")) if job is not None else ("", "")
                g.add_metric([self.node, str(s.index), self.vendor.value, self._info(s).model,
                              "" if job is None else str(job), org, project], float(get(s)))  # type: ignore[arg-type]
            yield g

    # ---------------------------------------------------------------- exposition

    def render(self) -> bytes:
        return render(self.registry)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(registry: CollectorRegistry) -> bytes:
    """Prometheus text format 0.0.4, HELP/TYPE named as the samples are (see module doc)."""
    out: list[str] = []
    for fam in registry.collect():
        names = {s.name for s in fam.samples}
        header = names.pop() if len(names) == 1 else fam.name
        doc = fam.documentation.replace("\\", "\\\\").replace("\n", "\\n")
        out.append(f"# HELP {header} {doc}\n# TYPE {header} {fam.type}\n")
        for s in fam.samples:
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in s.labels.items())
            out.append(f"{s.name}{{{labels}}} {floatToGoString(s.value)}\n" if labels else f"{s.name} {floatToGoString(s.value)}\n")
    return "".join(out).encode()


# -------------------------------------------------------------------- threads


class Sampler:
    """Refreshes the exporter every `interval` seconds in a daemon thread until stopped.
    A failing backend is logged (once per change of error) and retried next interval."""

    def __init__(self, exporter: DeviceExporter, interval: float) -> None:
        self.exporter = exporter
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="suanli-agent-sampler", daemon=True)
        self._last_error = ""

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            try:
                self.exporter.refresh()
                if self._last_error:
                    log.info("device sampling works again")
                self._last_error = ""
                self.exporter.state.set_backend_error("")
            except Exception as e:  # noqa: BLE001 - a driver error must not end telemetry for good
                msg = f"{type(e).__name__}: {e}"
                if msg != self._last_error:
                    log.error("device sampling failed: %s (serving the previous sample)", msg)
                self._last_error = msg
                # Heartbeats now report the devices' health as Unknown: nothing new is placed on them.
                self.exporter.state.set_backend_error(msg)
            if self._stop.wait(self.interval):
                return

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        self._thread.join(timeout)


class MetricsServer:
    """A small threaded HTTP server: GET /metrics answers `render()`; nothing else is served."""

    def __init__(self, exporter: DeviceExporter, host: str = "0.0.0.0", port: int = 9400) -> None:
        render_fn = exporter.render

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404, "only /metrics is served here")
                    return
                body = render_fn()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                log.debug("metrics %s - %s", self.address_string(), format % args)

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="suanli-agent-metrics", daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
