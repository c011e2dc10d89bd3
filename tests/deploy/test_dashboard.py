"""deploy/grafana: the dashboard loads and queries only metrics and labels the worker really exports.

The known metrics are read from stream/metrics.py itself (a registry filled with one sample of
everything), so a renamed metric or label fails here instead of leaving an empty panel.
"""

from __future__ import annotations

import json
import re

import pytest

from stream.metrics import WorkerMetrics, WorkerState
from tests.deploy.tools import REPO

DASHBOARD = REPO / "deploy" / "grafana" / "streamrec-dashboard.json"
# Consumer-group lag from the Strimzi Kafka Exporter (kafkaExporter in deploy/k8s/base/kafka/kafka.yaml).
EXTERNAL = {"kafka_consumergroup_lag": {"consumergroup", "topic", "partition"}}
# Labels Prometheus adds to every series scraped through a PodMonitor, and the histogram bucket label.
TARGET_LABELS = {"namespace", "pod", "container", "endpoint", "job", "instance", "service", "le"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                "offset", "inf", "nan"}


def exported() -> dict[str, set[str]]:
    """Sample name -> label names, from the worker's own registry with one sample of everything."""
    state = WorkerState()
    state.processed.update({"event.view": 1, "item": 1})
    state.dead_lettered.update({"invalid": 1})
    state.published = 1
    state.consumer_lag[("streamrec.events", 0)] = 1
    state.slots.update({"control": 10})
    state.explored.update({"control": 1})
    state.segment_changes.update({"champions": 1})
    state.segments = {"champions": 1}
    metrics = WorkerMetrics(state, lambda: "v1")
    metrics.freshness.observe(0.1)
    metrics.batch.labels("streamrec.events").observe(0.01)
    metrics.observe_stage("retrieve", 0.001)
    found: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    return found


def queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel.get("targets", [])]


def parse(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) an expression uses."""
    labels: set[str] = set()
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings ($namespace etc.) out first
    for matchers in re.findall(r"\{([^}]*)\}", text):
        labels.update(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery selectors, $__rate_interval
    for grouping in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", text):
        labels.update(name.strip() for name in grouping.split(",") if name.strip())
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])[a-zA-Z_:][\w:]*", text):
        is_call = text[match.end():].lstrip().startswith("(")  # a function or an aggregation
        if not is_call and match.group().lower() not in PROMQL_WORDS:
            names.add(match.group())
    return names, labels


def test_parse_finds_metrics_and_labels():
    names, labels = parse(
        'histogram_quantile(0.99, sum by (le, topic) (rate(streamrec_batch_seconds_bucket{namespace=~"$ns"}[5m])))'
        ' / on(pod) group_left count(up) or vector(0)'
    )
    assert names == {"streamrec_batch_seconds_bucket", "up"}
    assert labels == {"le", "topic", "namespace", "pod"}


def test_dashboard_is_valid_grafana_json():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        area = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not area & cells, f"panel {panel['title']!r} overlaps another"
        cells |= area
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"] and all(t["expr"] and t["refId"] for t in panel["targets"]), panel["title"]
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for _, expr in queries():
        for used in re.findall(r"\$(\w+)", expr):
            assert used.startswith("__") or used in variables, f"undefined variable ${used}"


@pytest.mark.parametrize("title, expr", queries())
def test_every_query_uses_known_metrics_and_labels(title, expr):
    known = exported()
    known.update({name: labels for name, labels in EXTERNAL.items()})
    names, labels = parse(expr)
    assert names, f"{title}: no metric in {expr}"
    unknown = names - set(known)
    assert not unknown, f"{title}: {unknown} is not exported by stream/metrics.py"
    allowed = set().union(*(known[name] for name in names)) | TARGET_LABELS
    assert labels <= allowed, f"{title}: labels {labels - allowed} do not exist on {names}"


def test_every_worker_metric_is_on_the_dashboard():
    used = set().union(*(parse(expr)[0] for _, expr in queries()))
    families = {re.sub(r"_(bucket|sum|count|created|total)$", "", name) for name in exported()}
    shown = {re.sub(r"_(bucket|sum|count|created|total)$", "", name) for name in used}
    assert families <= shown, f"not on the dashboard: {families - shown}"
