"""`suanli-agent`: the per-server agent, and the `ray start` flags for its server.

    suanli-agent run --backend simulated --accelerator-type nvidia-a100-80g --devices 8
    eval ray start --address=HEAD:6379 $(suanli-agent ray-args --accelerator-type nvidia-a100-80g)

Invariants:
- Settings come from flags, then `SUANLI_AGENT_*` environment variables, then defaults, read
  when `main()` runs (never at import). The token is never a flag (it would show in `ps`):
  `SUANLI_AGENT_TOKEN` or `--token-file`.
- Exit codes: 0 after SIGTERM/SIGINT (stopped within about a second), 2 for a usage or
  configuration problem, printed as one line on stderr.
- `ray-args` and `suanli.localray` share `ray_node_args`, so a server's Ray node advertises
  the same resources and labels in production as in the local demo cluster.
- Backends: `nvidia` (NVML, `agents.devices.nvml`), `ascend` (`npu-smi`), `simulated`.
  `auto` picks nvidia when NVML initialises, else ascend when `npu-smi` is on PATH and
  answers, else it exits 2 with NO_ACCELERATOR; it never silently simulates. A chosen backend
  that cannot start (no driver, tool failing) is one line naming it and the reason, exit 2.
- `inspect` builds its collector exactly as `run` does (or from a saved `npu-smi info`
  output), takes one sample and shows the metrics text `run` would serve for it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from scheduler.types import Vendor

log = logging.getLogger("suanli.agent")

NO_ACCELERATOR = "no accelerator found (NVML and npu-smi unavailable); use --backend simulated for development"


class UsageError(Exception):
    """A configuration problem: printed as one line, exit code 2."""


def _host_memory_mb() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024))
    except (ValueError, OSError, AttributeError):
        return 1024


def _add_server_args(p: argparse.ArgumentParser) -> None:
    env = os.environ.get
    p.add_argument("--node", default=env("SUANLI_AGENT_NODE") or socket.gethostname(),
                   help="node name, also its Ray label suanli.io/node (env SUANLI_AGENT_NODE; default: host name)")
    p.add_argument("--backend", choices=["auto", "nvidia", "ascend", "simulated"], default=env("SUANLI_AGENT_BACKEND") or "auto",
                   help="where device data comes from (env SUANLI_AGENT_BACKEND; default auto)")
    p.add_argument("--accelerator-type", default=env("SUANLI_AGENT_ACCELERATOR_TYPE") or None,
                   help="the center's name for this server's devices, e.g. nvidia-a100-80g (env SUANLI_AGENT_ACCELERATOR_TYPE)")
    p.add_argument("--vendor", choices=[v.value for v in Vendor],
                   help="device vendor (default: from the accelerator type's prefix nvidia-/ascend-)")
    p.add_argument("--devices", type=int, default=8, help="number of devices (simulated backend, ray-args); default 8")
    p.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="CPUs offered to jobs (default: this host's)")
    p.add_argument("--memory-mb", type=int, default=_host_memory_mb(), help="memory offered to jobs, MiB (default: this host's)")
    p.add_argument("--model", default="", help="device model name shown in telemetry (simulated; default per vendor)")
    p.add_argument("--device-memory-mb", type=int, default=None, help="memory per device, MiB (simulated; default per vendor)")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="node label (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="suanli-agent", description="suanli node agent: heartbeats and device telemetry")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="register this server, send heartbeats, serve /metrics")
    _add_server_args(run)
    run.add_argument("--api-url", default=os.environ.get("SUANLI_AGENT_API_URL") or "http://127.0.0.1:8000",
                     help="suanli API (env SUANLI_AGENT_API_URL; default http://127.0.0.1:8000)")
    run.add_argument("--token-file", type=Path, help="file holding the agent token (default: env SUANLI_AGENT_TOKEN)")
    run.add_argument("--host", default="0.0.0.0", help="address /metrics listens on (default 0.0.0.0)")
    run.add_argument("--port", type=int, default=9400, help="port of /metrics (default 9400, dcgm-exporter's)")
    run.add_argument("--interval", type=float, default=5.0, help="seconds between heartbeats and between device samples (default 5)")
    run.add_argument("--seed", type=int, default=None, help="random seed of the simulated devices")
    run.add_argument("--ray-node-id", default=os.environ.get("SUANLI_AGENT_RAY_NODE_ID", ""),
                     help="the Ray node id of this server (env SUANLI_AGENT_RAY_NODE_ID), shown with the node; "
                          "jobs are pinned by the node label suanli.io/node either way")
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    inspect = sub.add_parser("inspect", help="print what the agent sees: devices, health, topology and the metrics it would export")
    _add_server_args(inspect)
    inspect.add_argument("--from-npu-smi", type=Path, metavar="FILE",
                         help="read a saved `npu-smi info` output instead of the devices (for debugging a server offline)")
    inspect.add_argument("--seed", type=int, default=None, help="random seed of the simulated devices")
    inspect.add_argument("--json", action="store_true", help="print JSON")

    ray = sub.add_parser("ray-args", help="print the `ray start` flags for this server")
    _add_server_args(ray)
    ray.add_argument("--format", choices=["shell", "json"], default="shell", help="shell words (default) or a JSON object")
    return parser


# ------------------------------------------------------------------ configuration


def _labels(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--label {item!r}: write KEY=VALUE")
        out[key] = value
    return out


def _vendor(args: argparse.Namespace) -> Vendor:
    if args.vendor:
        return Vendor(args.vendor)
    for v in Vendor:
        if (args.accelerator_type or "").lower().startswith(v.value):
            return v
    raise UsageError(f"cannot tell the vendor of accelerator type {args.accelerator_type!r}: pass --vendor nvidia|ascend")


def _require_type(args: argparse.Namespace) -> str:
    if not args.accelerator_type:
        raise UsageError("--accelerator-type is required (the center's name for these devices, e.g. nvidia-a100-80g)")
    return str(args.accelerator_type)


def server_spec(args: argparse.Namespace) -> Any:
    """The `suanli.cluster.ServerSpec` these arguments describe."""
    from pydantic import ValidationError

    from suanli.cluster import ServerSpec

    fields: dict[str, Any] = dict(name=args.node, accelerator_type=_require_type(args), vendor=_vendor(args),
                                  devices=args.devices, cpus=args.cpus, memory_mb=args.memory_mb, model=args.model)
    if args.device_memory_mb is not None:
        fields["device_memory_mb"] = args.device_memory_mb
    try:
        return ServerSpec(**fields)
    except ValidationError as e:
        first = e.errors()[0]
        field = {"name": "node"}.get(str(first["loc"][0]), str(first["loc"][0]))
        raise UsageError(f"--{field.replace('_', '-')}: {first['msg']}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _nvml_probe() -> tuple[bool, str]:
    """(usable, why not) for NVML; a build without the nvidia backend module is 'not usable'."""
    try:
        from agents.devices.nvml import nvml_available
    except ImportError as e:
        return False, f"the nvidia backend is not available ({_first_line(e)})"
    try:
        return nvml_available()
    except Exception as e:  # noqa: BLE001 - a probe answers, it does not crash the agent
        return False, _first_line(e)


def _start(backend: str, factory: Any) -> Any:
    """Build a hardware collector and take its inventory once, so a broken driver or tool is
    one line at startup (naming the backend), not a traceback later."""
    try:
        collector = factory()
        if not collector.inventory():
            raise UsageError(f"{backend} backend: no devices found")
    except UsageError:
        raise
    except Exception as e:  # noqa: BLE001 - BackendError or a driver's own exception type
        raise UsageError(f"{backend} backend: {_first_line(e)}") from None
    return collector


def _nvidia() -> Any:
    from agents.devices.nvml import NvmlCollector

    return _start("nvidia", NvmlCollector)


def _ascend() -> Any:
    from agents.devices.ascend import AscendCollector

    return _start("ascend", AscendCollector)


def make_collector(args: argparse.Namespace) -> Any:
    """The collector `--backend` names; `auto`: NVML, then npu-smi, else NO_ACCELERATOR."""
    backend = args.backend
    if backend == "auto":
        usable, _ = _nvml_probe()
        if usable:
            return _nvidia()
        if shutil.which("npu-smi"):
            try:
                return _ascend()
            except UsageError as e:  # npu-smi present but not answering: say why, not just "none"
                raise UsageError(f"{NO_ACCELERATOR} ({e})") from None
        raise UsageError(NO_ACCELERATOR)
    if backend == "nvidia":
        usable, why = _nvml_probe()
        if not usable:
            raise UsageError(f"nvidia backend: {why}")
        return _nvidia()
    if backend == "ascend":
        return _ascend()
    from agents.devices.simulated import SimulatedCollector

    spec = server_spec(args)
    return SimulatedCollector(spec.accelerator_type, spec.vendor, spec.devices, spec.model,
                              args.device_memory_mb, args.seed, node=spec.name)


def _token(args: argparse.Namespace) -> str:
    if args.token_file:
        try:
            token = args.token_file.read_text().strip()
        except OSError as e:
            raise UsageError(f"--token-file {args.token_file}: {e.strerror}") from None
    else:
        token = os.environ.get("SUANLI_AGENT_TOKEN", "").strip()
    if not token:
        raise UsageError("no agent token: set SUANLI_AGENT_TOKEN or pass --token-file")
    return token


# ------------------------------------------------------------------ commands


def cmd_run(args: argparse.Namespace) -> int:
    from agents.exporter import DeviceExporter, MetricsServer, Sampler
    from agents.heartbeat import HeartbeatClient
    from agents.state import AgentState

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.log_level != "DEBUG":
        # httpx logs every request at INFO: one line per heartbeat is noise; our own line says what matters.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.interval <= 0:
        raise UsageError("--interval must be positive")
    collector = make_collector(args)  # no usable devices is the more basic problem: say it first
    _require_type(args)  # the center's name for these devices goes into every heartbeat
    token = _token(args)
    labels = _labels(args.label)

    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    state = AgentState()
    exporter = DeviceExporter(collector, args.node, state)
    exporter.refresh()  # the first scrape and the first heartbeat already see real numbers
    try:
        server = MetricsServer(exporter, args.host, args.port).start()
    except OSError as e:
        raise UsageError(f"cannot serve /metrics on {args.host}:{args.port}: {e.strerror}") from None
    sampler = Sampler(exporter, args.interval).start()
    hb = HeartbeatClient(args.api_url, token, args.node, collector, args.cpus, args.memory_mb, labels,
                         accelerator_type=getattr(collector, "accelerator_type", None) or args.accelerator_type, state=state,
                         ray_node_id=args.ray_node_id)
    # Heartbeats run in a daemon thread so a request stuck in its timeout cannot delay exit.
    beater = threading.Thread(target=hb.run, args=(stop, args.interval), name="suanli-agent-heartbeat", daemon=True)
    beater.start()
    log.info("agent for node %s: %d %s devices, /metrics on %s:%d, API %s",
             args.node, len(exporter.inventory), collector.vendor.value, args.host, server.port, args.api_url)
    while not stop.wait(0.5):
        pass
    sampler.stop(timeout=0.5)
    beater.join(timeout=0.5)
    server.stop()
    close = getattr(collector, "close", None)
    if callable(close):  # NVML: shut the library down, free the Xid event set
        close()
    log.info("agent stopped")
    return 0


def cmd_ray_args(args: argparse.Namespace) -> int:
    from suanli.localray import ray_node_args

    ray = ray_node_args(server_spec(args))
    if args.format == "json":
        print(json.dumps(ray, sort_keys=True))
        return 0
    print(shlex.join(ray_start_flags(ray)))
    return 0


def _num(x: float) -> int | float:
    return int(x) if float(x).is_integer() else x


def ray_start_flags(ray: dict[str, Any]) -> list[str]:
    """`ray_node_args`'s keyword arguments as `ray start` command-line flags."""
    resources = {k: _num(v) for k, v in ray["resources"].items()}
    flags = ["--num-cpus", str(ray["num_cpus"]), "--num-gpus", str(ray["num_gpus"]),
             "--memory", str(ray["memory"]), "--object-store-memory", str(ray["object_store_memory"]),
             # Compact JSON: no spaces, so the flag survives unquoted word splitting too.
             "--resources", json.dumps(resources, separators=(",", ":"))]
    flags += ["--labels", ",".join(f"{k}={v}" for k, v in ray["labels"].items())]
    return flags


def cmd_inspect(args: argparse.Namespace) -> int:
    """What the agent sees: from the devices (the collector `run` would build), or from a
    captured `npu-smi info` output with `--from-npu-smi FILE`."""
    if args.from_npu_smi is not None:
        return _inspect_file(args)
    return _inspect_live(args)


def _exporter(collector: Any, node: str, backend: str) -> Any:
    """An exporter over `collector` with one sample taken (what `run` serves first)."""
    from agents.exporter import DeviceExporter

    try:
        exporter = DeviceExporter(collector, node)
        exporter.refresh()
    except Exception as e:  # noqa: BLE001 - BackendError or a driver's own error: one line
        raise UsageError(f"{backend} backend: sampling failed: {_first_line(e)}") from None
    return exporter


def _backend_name(collector: Any) -> str:
    """The backend a collector came from: `simulated`, else its vendor (nvidia = NVML, ascend = npu-smi)."""
    from agents.devices.simulated import SimulatedCollector

    return "simulated" if isinstance(collector, SimulatedCollector) else Vendor(collector.vendor).value


def _inspect_live(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from agents.devices.base import SupportsTopology

    collector = make_collector(args)
    backend = _backend_name(collector)
    exporter = _exporter(collector, args.node, backend)
    samples = {s.index: s for s in exporter.state.samples()}
    devices = [asdict(d) | {"sample": asdict(samples[d.index]) if d.index in samples else None}
               for d in exporter.inventory.values()]
    health = [{"index": s.index, "health": str(s.health), "healthy": s.healthy, "reason": s.health_reason}
              for s in samples.values()]
    topology = collector.topology() if isinstance(collector, SupportsTopology) else None
    metrics = exporter.render().decode()
    if args.json:
        print(json.dumps({"node": args.node, "backend": backend, "vendor": exporter.vendor.value, "devices": devices,
                          "topology": topology, "health": health, "metrics": metrics}, indent=2))
        return 0
    print(f"node {args.node}: {len(devices)} {exporter.vendor.value} device(s) via the {backend} backend")
    for d in exporter.inventory.values():
        s = samples.get(d.index)
        line = f"  {d.index} {d.model} {d.uuid} bus {d.pci_bus_id or '?'}"
        if s is not None:
            line += (f"  {s.health}{' (' + s.health_reason + ')' if s.health_reason else ''}  util {s.utilization_pct:g}%  "
                     f"mem {s.memory_used_mib:g}/{s.memory_total_mib:g} MiB  {s.power_w:g} W  {s.temperature_c:g} C  "
                     f"{s.core_clock_mhz:g} MHz")
        print(line)
    if topology is not None:
        print("topology:")
        for i, row in enumerate(topology):
            print(f"  {i:>3} " + " ".join(f"{w:>5}" for w in row))
    print("metrics (what /metrics would serve now):")
    print(metrics, end="")
    return 0


def _file_runner(text: str) -> Any:
    """An npu-smi runner answering `npu-smi info` with the saved text and failing for any other
    query (the file holds the main table only), so the collector's optional fields stay empty."""

    def run(cmd: list[str]) -> str:
        if cmd[1:] == ["info"]:
            return text
        raise RuntimeError("not in the saved file")

    return run


def _inspect_file(args: argparse.Namespace) -> int:
    """What a captured `npu-smi info` output says: chips (health, power, temperature, AI Core,
    memory), processes, version, and the metrics the agent would export for it. Unknown lines
    are skipped by the parser, so a file that is not an npu-smi output gives an empty result and
    exit 1, never a traceback."""
    from dataclasses import asdict

    from agents.devices.ascend import AscendCollector, parse_info

    try:
        text = args.from_npu_smi.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise UsageError(f"--from-npu-smi {args.from_npu_smi}: {e.strerror or e}") from None
    info = parse_info(text)
    metrics = _exporter(AscendCollector(_file_runner(text)), args.node, "ascend").render().decode() if info.chips else None
    doc = {"source": str(args.from_npu_smi), "version": info.version, "npus": info.npu_ids,
           "chips": [asdict(c) | {"health_state": c.health_state.value if c.health_state else None} for c in info.chips],
           "processes": [asdict(x) for x in info.processes], "idle_npus": list(info.idle_npus), "metrics": metrics}
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"npu-smi {info.version or '(version not shown)'}: {len(info.npu_ids)} NPU(s), {len(info.chips)} chip(s)")
        for c in info.chips:
            mem = (f"HBM {c.hbm_used_mb}/{c.hbm_total_mb} MB" if c.hbm_total_mb is not None
                   else f"memory {c.memory_used_mb}/{c.memory_total_mb} MB")
            print(f"  NPU {c.npu_id} chip {c.chip_id} {c.name:<8} {c.health or '?':<8} AI Core {c.aicore_pct}%  "
                  f"{c.power_w} W  {c.temperature_c} C  {mem}")
        for x in info.processes:
            print(f"  process {x.pid} {x.name} on NPU {x.npu_id} chip {x.chip_id}: {x.memory_mb} MB")
        if metrics:
            print("metrics (what /metrics would serve for this output):")
            print(metrics, end="")
    return 0 if info.chips else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "inspect":
            return cmd_inspect(args)
        return cmd_ray_args(args)
    except UsageError as e:
        print(f"suanli-agent: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
