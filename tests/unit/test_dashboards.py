"""The Grafana dashboards (deploy/grafana/*.json) and the alert rules (deploy/prometheus/rules.yaml),
checked offline: structure, units and descriptions, and that every PromQL expression only names
metrics that exist — those of docs/metrics.md and the agent families of docs/agents.md — so a
typo in a metric name fails here instead of showing an empty panel in production.

Whether the expressions are valid PromQL and return data is checked against a real Prometheus in
tests/integration/test_observability.py; this file needs no Prometheus.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "deploy" / "grafana"
RULES = REPO / "deploy" / "prometheus" / "rules.yaml"
RULES_TEST = REPO / "deploy" / "prometheus" / "tests" / "rules_test.yaml"
DASHBOARDS = sorted(GRAFANA.glob("*.json"))
VARIABLES = {"pool", "org", "accelerator_type", "node"}

# PromQL words that look like identifiers but are not metric names.
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
            "inf", "nan", "atan2"}
# Histogram series a catalogued histogram `x` exposes.
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def catalogue() -> dict[str, str]:
    """Metric name -> type for what the project documents: the tables of docs/metrics.md (name, type),
    plus the agent families listed in docs/agents.md (dcgm-exporter, npu-exporter, suanli_device_*,
    suanli_agent_*; none is a histogram)."""
    names: dict[str, str] = {}
    for line in (REPO / "docs" / "metrics.md").read_text().splitlines():
        m = re.match(r"\|\s*`([a-zA-Z_:][a-zA-Z0-9_:]*)`\s*\|\s*(\w+)\s*\|", line)
        if m:
            names[m.group(1)] = m.group(2)
    agents = (REPO / "docs" / "agents.md").read_text()
    section = agents.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    for name in re.findall(r"`((?:DCGM_FI_DEV|npu_chip_info|suanli_device|suanli_agent)_[A-Za-z0-9_]+|machine_npu_nums)`", section):
        names.setdefault(name, "agent")
        if name == "suanli_agent_heartbeat_failures":
            # A prometheus-client counter: served as `..._total` (docs/agents.md names the family).
            names[name + "_total"] = "agent"
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers that are not functions, keywords, label
    names (inside {...} or by/on/... lists), durations, numbers or Grafana variables."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals (matcher values)
    text = re.sub(r"\{[^{}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\[\]]*\]", "", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", text)
    text = re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", " ", text)  # Grafana variables
    names = set()
    for m in re.finditer(r"(?<![A-Za-z0-9_:.])([A-Za-z_:][A-Za-z0-9_:]*)", text):
        word = m.group(1)
        rest = text[m.end():].lstrip()
        if rest.startswith("(") or word.lower() in KEYWORDS:
            continue  # a function call or an operator keyword
        names.add(word)
    return names


def label_values(definition: str) -> tuple[str, str]:
    """(series selector, label) of a Grafana `label_values(selector, label)` variable query."""
    m = re.fullmatch(r"label_values\((.+),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)", definition.strip())
    assert m, f"not a label_values(selector, label) query: {definition}"
    return m.group(1).strip(), m.group(2)


def known(name: str, names: dict[str, str]) -> bool:
    """A catalogued name, or a catalogued histogram's _bucket/_sum/_count series."""
    return name in names or any(name.endswith(s) and names.get(name[: -len(s)]) == "histogram" for s in HISTOGRAM_SUFFIXES)


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # panels of collapsed rows
    return out


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def test_the_three_dashboards_exist() -> None:
    """deploy/grafana holds the center overview, tenants-and-subsidy and nodes-and-devices dashboards,
    with distinct uids and titles, and the chart ships the same files (files/dashboards links there)."""
    uids = {load(p)["uid"] for p in DASHBOARDS}
    assert uids == {"suanli-overview", "suanli-tenants", "suanli-nodes"}
    assert len({load(p)["title"] for p in DASHBOARDS}) == 3
    chart = REPO / "deploy" / "helm" / "suanli" / "files" / "dashboards"
    assert {p.name: p.read_bytes() for p in chart.glob("*.json")} == {p.name: p.read_bytes() for p in DASHBOARDS}


def test_metric_name_parser() -> None:
    """The parser finds metric names and nothing else: not functions, keywords, label names, durations,
    strings or Grafana variables — and so a misspelt metric is reported."""
    expr = ('histogram_quantile(0.99, sum by (route, le) (rate(suanli_http_request_duration_seconds_bucket{route=~"$r"}'
            '[$__rate_interval]))) / on (instance) group_left (node) max by (instance, node) (up) or vector(0) '
            '+ sum(rate(x_total[5m] offset 1h)) and ignoring (a) b > bool 1e3')
    assert metric_names(expr) == {"suanli_http_request_duration_seconds_bucket", "up", "x_total", "b"}
    assert metric_names('time() - suanli_agent_last_sample_timestamp_seconds') == {"suanli_agent_last_sample_timestamp_seconds"}
    names = catalogue()
    assert known("suanli_scheduler_queue_wait_seconds_bucket", names) and known("DCGM_FI_DEV_GPU_UTIL", names)
    assert names["suanli_scheduler_queue_wait_seconds"] == "histogram" and names["suanli_jobs"] == "gauge"
    assert not known("suanli_sheduler_queue_wait_seconds_bucket", names) and not known("suanli_jobs_bucket", names)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_model(path: Path) -> None:
    """Each dashboard is Grafana's JSON model (schemaVersion >= 38) with a Prometheus datasource
    variable that every panel and query uses, query variables pool/org/accelerator_type/node built
    from label_values on the same datasource, and unique panel ids on a 24-column grid."""
    d = load(path)
    assert d["schemaVersion"] >= 38
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name, v in variables.items():
        if name == "datasource":
            continue
        assert name in VARIABLES, name
        assert v["type"] == "query" and v["datasource"]["uid"] == "${datasource}", name
        assert v["definition"].startswith("label_values(") and v["query"]["query"] == v["definition"], name
        assert v["includeAll"] and v["allValue"] == ".*", name
    ids = [p["id"] for p in panels(d)]
    assert len(ids) == len(set(ids))
    for p in panels(d):
        assert 0 <= p["gridPos"]["x"] and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}" and t["expr"].strip(), p["title"]
        for var in re.findall(r"\$([a-z_]+)", " ".join(t["expr"] for t in p["targets"])):
            assert var in variables or var.startswith("__"), f"{p['title']}: ${var} is not a variable of {path.name}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_panel_has_unit_description_and_thresholds(path: Path) -> None:
    """Every panel says what it shows (a description), in which unit, and has thresholds."""
    for p in panels(load(path)):
        if p["type"] == "row":
            continue
        defaults = p["fieldConfig"]["defaults"]
        assert len(p.get("description", "")) > 20, f"{p['title']}: no description"
        assert defaults.get("unit"), f"{p['title']}: no unit"
        assert defaults["thresholds"]["steps"], f"{p['title']}: no thresholds"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_expressions_use_only_catalogued_metrics(path: Path) -> None:
    """Every metric name in every panel's expressions and every variable query is in the catalogue."""
    names = catalogue()
    d = load(path)
    exprs = [(p["title"], t["expr"]) for p in panels(d) for t in p.get("targets", [])]
    exprs += [(v["name"], label_values(v["definition"])[0]) for v in d["templating"]["list"] if v["type"] == "query"]
    for where, expr in exprs:
        unknown = {n for n in metric_names(expr) if not known(n, names)}
        assert not unknown, f"{path.name} / {where}: unknown metric(s) {sorted(unknown)} in {expr}"


# --------------------------------------------------------------------------- alert rules


def alerts() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", markdown, re.M)}


def test_alerts_are_documented_and_labelled() -> None:
    """Every alert has a severity (critical, warning or info), a summary, a description and a
    runbook_url whose anchor is a section of docs/runbooks.md; every runbook section is an alert."""
    runbook = (REPO / "docs" / "runbooks.md").read_text()
    sections = anchors(runbook)
    names = [a["alert"] for a in alerts()]
    assert len(names) == len(set(names))
    for a in alerts():
        assert a["labels"]["severity"] in {"critical", "warning", "info"}, a["alert"]
        ann = a["annotations"]
        assert ann["summary"] and ann["description"], a["alert"]
        page, anchor = ann["runbook_url"].split("#")
        assert page == "docs/runbooks.md" and anchor == a["alert"].lower() and anchor in sections, a["alert"]
    assert {h for h in re.findall(r"^## (.+)$", runbook, re.M)} == set(names)


def test_alert_expressions_use_only_catalogued_metrics() -> None:
    names = catalogue()
    for a in alerts():
        unknown = {n for n in metric_names(a["expr"]) if not known(n, names)}
        assert not unknown, f"{a['alert']}: unknown metric(s) {sorted(unknown)}"


def test_every_alert_has_firing_and_silent_promtool_cases() -> None:
    """rules_test.yaml has, for every alert, a promtool case where it fires and one where it must not."""
    cases: dict[str, set[bool]] = {}
    for t in yaml.safe_load(RULES_TEST.read_text())["tests"]:
        for c in t["alert_rule_test"]:
            cases.setdefault(c["alertname"], set()).add(bool(c["exp_alerts"]))
    for a in alerts():
        assert cases.get(a["alert"]) == {True, False}, f"{a['alert']}: promtool cases {cases.get(a['alert'])}"
