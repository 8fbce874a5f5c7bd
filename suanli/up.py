"""`suanli up`: the whole center on one machine, in the foreground.

Starts, in order: the database (SQLite file in WAL mode, migrated by Alembic), demo data,
a real local Ray cluster with one Ray node per simulated server, the API (uvicorn), the
scheduler, one agent per server (simulated devices), and Prometheus when `prometheus` is on
PATH (a generated config scraping the API, the scheduler and the agents, with the alert
rules of deploy/prometheus/). Prints where everything is and writes the CLI config.
Ctrl-C (or SIGTERM) stops everything it started, in reverse order.

Invariants:
- Nothing is left behind: children run in their own sessions with PDEATHSIG where
  available, are terminated (then killed) on exit, and running jobs are stopped through
  their runners before Ray shuts down.
- A second `suanli up` on the same data dir reuses the database and the demo tokens.
- If any child dies, `up` reports its log file and stops the rest (exit code 1).
- Ports: the API, the agents (`agent_port`, +1, …) and the scheduler's metrics (the port
  after the last agent's) are checked free before anything starts; Prometheus takes 9090,
  or a free port when 9090 is taken.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import yaml

from suanli.client import write_config
from suanli.cluster import ClusterSpec, demo_cluster
from suanli.db.engine import Database, migrate
from suanli.demo import seed
from suanli.settings import Settings


# The alert rules, when running from a source checkout (a wheel does not ship deploy/).
RULES = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "rules.yaml"
PROMETHEUS_PORT = 9090


class UpError(Exception):
    pass


def prometheus_config(api: str, scheduler: str, agents: list[str], rules: Path | None) -> dict[str, object]:
    """A Prometheus config scraping one `suanli up` center (host:port targets) every 5 s.
    The agents are scraped with honor_labels: their `job` label is the suanli job holding a
    device (as with the Helm chart's ServiceMonitor), not the scrape job."""
    return {
        "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
        "rule_files": [str(rules)] if rules is not None else [],
        "scrape_configs": [
            {"job_name": "suanli-api", "static_configs": [{"targets": [api]}]},
            {"job_name": "suanli-scheduler", "static_configs": [{"targets": [scheduler]}]},
            {"job_name": "suanli-agent", "honor_labels": True, "static_configs": [{"targets": agents}]},
        ],
    }


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class Children:
    """Child processes, each logging to its own file, stopped in reverse start order."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log_path = self.log_dir / f"{name}.log"
        setpriv = shutil.which("setpriv")
        if setpriv:  # die with us even if we are SIGKILLed
            argv = [setpriv, "--pdeathsig", "TERM", "--", *argv]
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        self.procs.append((name, proc, log_path))
        return proc

    def dead(self) -> tuple[str, int, Path] | None:
        for name, proc, log_path in self.procs:
            if proc.poll() is not None:
                return name, proc.returncode, log_path
        return None

    def stop_all(self, timeout: float = 10.0) -> None:
        for _, proc, _ in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for _, proc, _ in reversed(self.procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_until(what: str, check, timeout: float, children: Children) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = children.dead()
        if dead:
            raise UpError(f"{dead[0]} exited with code {dead[1]} while waiting for {what}; see {dead[2]}")
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise UpError(f"timed out after {timeout:.0f}s waiting for {what}")


def run_up(data_dir: Path, port: int, cluster_file: Path | None, agent_port: int) -> int:
    data_dir = data_dir.resolve()
    settings = Settings(data_dir=data_dir, api_port=port)
    cluster: ClusterSpec = ClusterSpec.load(cluster_file) if cluster_file else demo_cluster()
    scheduler_metrics_port = agent_port + len(cluster.servers)
    ports = [port] + [agent_port + i for i in range(len(cluster.servers))] + [scheduler_metrics_port]
    taken = [p for p in ports if not _port_free(settings.api_host, p)]
    if taken:
        raise UpError(f"port(s) {', '.join(map(str, taken))} on {settings.api_host} are in use "
                      "(is another `suanli up` running? use --port / --agent-port; the scheduler's metrics "
                      "take the port after the last agent's)")
    log_dir = data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)

    url = settings.effective_database_url
    print(f"database   {url} (migrating)", flush=True)
    migrate(url)
    db = Database(url)
    tokens = seed(db, data_dir, cluster)
    db.dispose()

    print(f"ray        starting a local cluster: {len(cluster.servers)} server(s)", flush=True)
    from suanli.localray import start_local_ray

    ray_cluster = start_local_ray(cluster)
    children = Children(log_dir)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    code = 0
    try:
        env = dict(os.environ, SUANLI_DATA_DIR=str(data_dir), SUANLI_DATABASE_URL=url, SUANLI_RAY_ADDRESS=ray_cluster.address,
                   SUANLI_API_HOST=settings.api_host, SUANLI_API_PORT=str(port), PYTHONUNBUFFERED="1")
        py = sys.executable
        children.spawn("api", [py, "-m", "uvicorn", "--factory", "api.app:app_from_env", "--host", settings.api_host,
                               "--port", str(port), "--log-level", "warning"], env)
        _wait_until("the API", lambda: httpx.get(f"{settings.api_url}/healthz", timeout=2).status_code == 200, 60, children)
        children.spawn("scheduler", [py, "-m", "suanli", "scheduler"],
                       dict(env, SUANLI_SCHEDULER_METRICS_PORT=str(scheduler_metrics_port)))
        agent_env = dict(env, SUANLI_AGENT_TOKEN=tokens.agent)
        for i, server in enumerate(cluster.servers):
            argv = [py, "-m", "agents.main", "run", "--backend", "simulated", "--api-url", settings.api_url,
                    "--node", server.name, "--accelerator-type", server.accelerator_type, "--vendor", str(server.vendor),
                    "--devices", str(server.devices), "--cpus", str(server.cpus), "--memory-mb", str(server.memory_mb),
                    "--model", server.model or server.accelerator_type, "--device-memory-mb", str(server.device_memory_mb),
                    "--host", settings.api_host, "--port", str(agent_port + i), "--interval", "5"]
            if server.rack:
                argv += ["--label", f"rack={server.rack}"]
            children.spawn(f"agent-{server.name}", argv, agent_env)
        names = {s.name for s in cluster.servers}
        headers = {"Authorization": f"Bearer {tokens.admin}"}
        _wait_until(
            "every agent to register its server",
            lambda: names <= {n["name"] for n in httpx.get(f"{settings.api_url}/v1/nodes", headers=headers, timeout=2).json()},
            60, children,
        )
        prometheus_url = _start_prometheus(children, data_dir, settings.api_host, port, scheduler_metrics_port,
                                           [agent_port + i for i in range(len(cluster.servers))])
        cfg = write_config(settings.api_url, tokens.member)
        _banner(settings, cluster, agent_port, tokens.member, tokens.admin, cfg, log_dir, ray_cluster.address,
                scheduler_metrics_port, prometheus_url)
        while not stop.wait(1.0):
            dead = children.dead()
            if dead:
                print(f"\n{dead[0]} exited with code {dead[1]}; see {dead[2]}. Stopping.", file=sys.stderr, flush=True)
                code = 1
                break
    finally:
        print("\nstopping: scheduler, agents, api, running jobs, ray …", flush=True)
        children.stop_all()
        _stop_jobs(ray_cluster.address, settings)
        ray_cluster.shutdown()
        print("stopped.", flush=True)
    return code


def _start_prometheus(children: Children, data_dir: Path, host: str, api_port: int, scheduler_port: int,
                      agent_ports: list[int]) -> str | None:
    """Prometheus scraping this center, if `prometheus` is installed; its URL, or None."""
    binary = shutil.which("prometheus")
    if binary is None:
        return None
    port = PROMETHEUS_PORT if _port_free(host, PROMETHEUS_PORT) else _any_free_port(host)
    root = data_dir / "prometheus"
    root.mkdir(parents=True, exist_ok=True)
    config = prometheus_config(f"{host}:{api_port}", f"{host}:{scheduler_port}", [f"{host}:{p}" for p in agent_ports],
                               RULES if RULES.exists() else None)
    (root / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    children.spawn("prometheus", [binary, f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'data'}",
                                  f"--web.listen-address={host}:{port}", "--log.level=warn"], dict(os.environ))
    url = f"http://{host}:{port}"
    _wait_until("Prometheus", lambda: httpx.get(f"{url}/-/ready", timeout=2).status_code == 200, 60, children)
    return url


def _any_free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _stop_jobs(address: str, settings: Settings) -> None:
    """Stop job processes through their runners so none outlives the cluster."""
    try:
        import ray

        from scheduler.supervisor import make_launcher

        n = make_launcher(settings.ray_launcher, address, settings.ray_namespace).stop_all(grace_s=min(5.0, settings.default_grace_s))
        if n:
            print(f"stopped {n} running job process(es)", flush=True)
        ray.shutdown()
    except Exception as e:  # noqa: BLE001 - shutting down regardless
        print(f"could not stop jobs cleanly: {e}", file=sys.stderr)


def _banner(settings: Settings, cluster: ClusterSpec, agent_port: int, member: str, admin: str,
            cfg: Path, log_dir: Path, ray_address: str, scheduler_metrics_port: int, prometheus_url: str | None) -> None:
    lines = [
        "",
        "suanli is up.",
        f"  API        {settings.api_url}   (docs {settings.api_url}/docs, metrics {settings.api_url}/metrics)",
        f"  Ray        {ray_address}",
    ]
    for i, s in enumerate(cluster.servers):
        lines.append(f"  agent      {s.name:<8} {s.accelerator_type} x{s.devices}  metrics http://{settings.api_host}:{agent_port + i}/metrics")
    lines.append(f"  scheduler  metrics http://{settings.api_host}:{scheduler_metrics_port}/metrics")
    if prometheus_url:
        lines.append(f"  Prometheus {prometheus_url}   (alerts {prometheus_url}/alerts; Grafana dashboards: deploy/grafana/, "
                     "see docs/observability.md)")
    else:
        lines.append("  Prometheus not started (`prometheus` is not on PATH; scripts/ensure-prometheus.sh installs it)")
    lines += [
        f"  token      {member}   (alice @ city-university; written to {cfg})",
        f"  admin      {admin}",
        f"  logs       {log_dir}/",
        "",
        "Try:  .venv/bin/suanli submit examples/train-numpy.yaml --wait",
        "Stop: Ctrl-C",
    ]
    print("\n".join(lines), flush=True)
