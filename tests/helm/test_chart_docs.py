"""Every value is documented, the README's value table is current, and the documented adapter rule fits."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from tests.helm import values_doc
from tests.helm.chart_support import CHART_DIR, render, values_from

VALUES_TEXT = (CHART_DIR / "values.yaml").read_text()
VALUES = yaml.safe_load(VALUES_TEXT)
README = (CHART_DIR / "README.md").read_text()


def test_every_value_has_a_param_line_and_no_param_line_is_stale() -> None:
    documented = {param.path for param in values_doc.params(VALUES_TEXT)}
    assert values_doc.undocumented(VALUES, documented) == []
    stale = []
    for path in documented:
        try:
            values_doc.lookup(VALUES, path)
        except KeyError:
            stale.append(path)
    assert stale == []


def test_every_key_has_a_comment_line_above_it() -> None:
    lines = VALUES_TEXT.splitlines()
    documented = {param.path for param in values_doc.params(VALUES_TEXT)}
    missing: list[str] = []

    def walk(node: yaml.MappingNode, prefix: str) -> None:
        for key, value in node.value:
            path = prefix + key.value
            if not lines[key.start_mark.line - 1].lstrip().startswith("#"):
                missing.append(path)
            if isinstance(value, yaml.MappingNode) and path not in documented:
                walk(value, path + ".")

    walk(yaml.compose(VALUES_TEXT), "")
    assert missing == []


def test_readme_value_table_is_generated_from_values_yaml() -> None:
    assert values_doc.splice(README, values_doc.table(VALUES_TEXT)) == README, (
        "run: python tests/helm/values_doc.py --write"
    )


def _kubernetes_type(schema: dict[str, Any]) -> bool:
    """Kubernetes objects passed through (resources, probes, security contexts): the schema lists more fields
    than the defaults set."""
    return str(schema.get("description", "")).startswith("Kubernetes")


def _schema_paths(schema: dict[str, Any], prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for key, sub in schema.get("properties", {}).items():
        path = prefix + key
        paths.add(path)
        if sub.get("additionalProperties") is False and not _kubernetes_type(sub):
            paths |= _schema_paths(sub, path + ".")
    return paths


def _value_paths(values: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for key, value in values.items():
        path = prefix + key
        paths.add(path)
        sub = schema.get("properties", {}).get(key, {})
        if isinstance(value, dict) and sub.get("additionalProperties") is False and not _kubernetes_type(sub):
            paths |= _value_paths(value, sub, path + ".")
    return paths


def test_schema_and_values_name_the_same_keys() -> None:
    """Chart-owned objects are closed in the schema, and each of their keys has a documented default."""
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    assert _schema_paths(schema) - {"global"} == _value_paths(VALUES, schema)


def _adapter_rule() -> dict[str, Any]:
    block = re.search(
        r"<!-- prometheus-adapter-rule:begin -->\s*```yaml\n(.*?)```\s*<!-- prometheus-adapter-rule:end -->",
        README,
        re.S,
    )
    assert block, "the README documents the prometheus-adapter rule between markers"
    (rule,) = yaml.safe_load(block.group(1))
    return dict(rule)


def test_documented_adapter_rule_serves_the_metric_the_chart_records_and_scales_on() -> None:
    rendered = render(values_from(**{"triton.autoscaling.enabled": True}))
    (recording,) = rendered.of_kind("PrometheusRule")[0]["spec"]["groups"][0]["rules"]
    hpa_metric = rendered.of_kind("HorizontalPodAutoscaler")[0]["spec"]["metrics"][0]["pods"]["metric"]["name"]
    rule = _adapter_rule()
    assert rule["seriesQuery"].split("{")[0] == recording["record"]
    assert rule["name"]["as"] == hpa_metric
    # The adapter attaches the series to pods through the labels the recording rule keeps.
    overrides = rule["resources"]["overrides"]
    assert overrides == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    assert "by (namespace, pod)" in recording["expr"]
