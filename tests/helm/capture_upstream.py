"""Capture the upstream facts the chart's routing mode is checked against, into tests/data/upstream/.

Run by hand when an upstream pin moves (the tests read only the JSON files this writes):

    python tests/helm/capture_upstream.py \\
        --gie <git dir of kubernetes-sigs/gateway-api-inference-extension> \\
        --router <git dir of llm-d/llm-d-router> \\
        --gateway-api <git dir of kubernetes-sigs/gateway-api>

Every file is read with `git show <commit>:<path>` at the pinned commit, so the result does not depend on what
the checkouts have checked out. The endpoint picker's deployment is not transcribed from templates: llm-d-router's
own `llm-d-router-gateway` chart is rendered by real Helm (helm-python-sdk) with the values named in the output,
and the rendered objects are stored.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

OUT = Path(__file__).resolve().parents[1] / "data" / "upstream"
READ_ON = "2026-12-06"

GIE = ("kubernetes-sigs/gateway-api-inference-extension", "v1.6.0", "992e5c292afb248801ce8d9234eb5b9d28eea231")
ROUTER = ("llm-d/llm-d-router", "v0.10.0", "71f4f0999f95b96c49a9d0c4afbd18dfdb943c26")
GATEWAY_API = ("kubernetes-sigs/gateway-api", "v1.5.1", "e7677b70ae75d14a4448fba94870e7deea6cf0ad")

# Values the upstream gateway chart is rendered with: this chart's situation (Triton with TensorRT-LLM behind an
# OpenAI port), release POOL in namespace NAMESPACE,
# with stand-in names the tests substitute (names no field of the rendered objects has otherwise).
POOL, NAMESPACE, GATEWAY, TARGET_PORT = "upstream-pool", "upstream-namespace", "upstream-gateway", 8080
ROUTER_VALUES: dict[str, Any] = {
    "router": {
        "modelServers": {
            "matchLabels": {"app": "upstream-model-server"},
            "type": "triton-tensorrt-llm",
            "targetPorts": [{"number": TARGET_PORT}],
        }
    },
    "httpRoute": {"create": True, "inferenceGatewayName": GATEWAY},
}


def show(git_dir: Path, commit: str, path: str) -> str:
    return subprocess.run(
        ["git", "-C", str(git_dir), "show", f"{commit}:{path}"], capture_output=True, text=True, check=True
    ).stdout


def source(repo: tuple[str, str, str], paths: list[str], notes: str) -> dict[str, Any]:
    name, tag, commit = repo
    return {"repo": name, "tag": tag, "commit": commit, "paths": paths, "read_on": READ_ON, "notes": notes}


def write(name: str, data: dict[str, Any]) -> None:
    (OUT / name).write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def _strip_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [_strip_descriptions(v) for v in node]
    return node


def crd_schema(text: str, version: str) -> tuple[dict[str, Any], dict[str, Any]]:
    crd = yaml.safe_load(text)
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return crd, served["schema"]["openAPIV3Schema"]


def capture_inferencepool_crd(gie: Path) -> None:
    path = "config/crd/bases/inference.networking.k8s.io_inferencepools.yaml"
    crd, schema = crd_schema(show(gie, GIE[2], path), "v1")
    write(
        "gie_inferencepool_crd.json",
        {
            "provenance": source(
                GIE, [path], "The v1 version's openAPIV3Schema, whole and unchanged (descriptions included)."
            ),
            "group": crd["spec"]["group"],
            "kind": crd["spec"]["names"]["kind"],
            "version": "v1",
            "bundle_version": crd["metadata"]["annotations"]["inference.networking.k8s.io/bundle-version"],
            "openAPIV3Schema": schema,
        },
    )


def capture_httproute_crd(gateway_api: Path) -> None:
    path = "config/crd/standard/gateway.networking.k8s.io_httproutes.yaml"
    crd, schema = crd_schema(show(gateway_api, GATEWAY_API[2], path), "v1")
    write(
        "gateway_api_httproute_crd.json",
        {
            "provenance": source(
                GATEWAY_API,
                [path],
                "The v1 version's openAPIV3Schema trimmed to `spec` with every `description` removed (the rest "
                "unchanged: types, enums, patterns, bounds, defaults, x-kubernetes-validations). v1.5.1 is the "
                "Gateway API version that gateway-api-inference-extension v1.6.0 and llm-d-router v0.10.0 build "
                "against (sigs.k8s.io/gateway-api v1.5.1 in both go.mod files).",
            ),
            "group": crd["spec"]["group"],
            "kind": crd["spec"]["names"]["kind"],
            "version": "v1",
            "bundle_version": crd["metadata"]["annotations"]["gateway.networking.k8s.io/bundle-version"],
            "channel": crd["metadata"]["annotations"]["gateway.networking.k8s.io/channel"],
            "specSchema": _strip_descriptions(schema["properties"]["spec"]),
        },
    )


def _render_router_chart(router: Path, values: dict[str, Any]) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "-C", str(router), "archive", ROUTER[2], "config/charts"], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        charts = Path(tmp) / "config" / "charts"
        # The gateway chart's only dependency is `router` from file://../routerlib: unpack it where Helm looks.
        shutil.copytree(charts / "routerlib", charts / "llm-d-router-gateway" / "charts" / "router")
        manifests = helm.Chart.load(charts / "llm-d-router-gateway").render(values, name=POOL, namespace=NAMESPACE)
    return [
        doc
        for path, text in sorted(manifests.items())
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def _picker_facts(objects: list[dict[str, Any]]) -> dict[str, Any]:
    def one(kind: str) -> dict[str, Any]:
        (found,) = [o for o in objects if o["kind"] == kind]
        return found

    deployment = one("Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    config = one("ConfigMap")
    config_file = next(a for a in container["args"] if a.startswith("/config/")).removeprefix("/config/")
    return {
        "deployment": {
            "strategy": deployment["spec"]["strategy"],
            "replicas": deployment["spec"]["replicas"],
            "terminationGracePeriodSeconds": deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
            "container": {
                k: container[k]
                for k in (
                    "name",
                    "image",
                    "args",
                    "ports",
                    "livenessProbe",
                    "readinessProbe",
                    "env",
                    "resources",
                    "volumeMounts",
                )
            },
        },
        "service": {"ports": one("Service")["spec"]["ports"], "type": one("Service")["spec"]["type"]},
        "roles": {r["metadata"]["name"]: r["rules"] for r in objects if r["kind"] == "Role"},
        "config_file": config_file,
        "plugins_config": yaml.safe_load(config["data"][config_file]),
    }


def capture_endpoint_picker(router: Path) -> None:
    one_replica = _render_router_chart(router, ROUTER_VALUES)
    two_replicas = _render_router_chart(
        router, {**ROUTER_VALUES, "router": {**ROUTER_VALUES["router"], "epp": {"replicas": 2}}}
    )
    pool = next(o for o in one_replica if o["kind"] == "InferencePool")
    route = next(o for o in one_replica if o["kind"] == "HTTPRoute")
    chart_values = yaml.safe_load(show(router, ROUTER[2], "config/charts/routerlib/values.yaml"))
    write(
        "llm_d_router_endpoint_picker.json",
        {
            "provenance": source(
                ROUTER,
                [
                    "config/charts/llm-d-router-gateway (Chart.yaml, values.yaml, templates/epp.yaml, "
                    "templates/rbac.yaml, templates/httproute.yaml)",
                    "config/charts/routerlib (values.yaml, templates/_deployment.yaml, _config.yaml, _rbac.yaml, "
                    "_service.yaml, _inferencepool.yaml, _leader-election-rbac.yaml, _helpers.tpl)",
                    "Dockerfile.epp",
                ],
                "How upstream deploys the endpoint picker (EPP) for an InferencePool: llm-d-router's own gateway chart "
                "rendered by real Helm (helm-python-sdk, Helm v4) with `values` below, release and namespace named in "
                "`placeholders`; `one_replica` is the default (replicas 1), `two_replicas` adds "
                "router.epp.replicas=2 (HA: "
                "leader election, its Role and other probe services). The chart's image tag default is `main`; "
                "v0.10.0 is the release tag of this commit. The picker moved here from "
                "gateway-api-inference-extension: "
                "at GIE v1.6.0 (992e5c2) config/charts no longer exists (removed by GIE a70292c1 'Cleanup EPP and "
                "Latency Predictor' and 24daf87c 'Cleanup BBR from main'). Dockerfile.epp: distroless/static:nonroot "
                "base, USER 65532:65532, ENTRYPOINT /app/epp, EXPOSE 9002 9003 9090 5557.",
            ),
            "values": ROUTER_VALUES,
            "image": {
                "registry": chart_values["epp"]["image"]["registry"],
                "repository": chart_values["epp"]["image"]["repository"],
                "chart_default_tag": chart_values["epp"]["image"]["tag"],
                "release_tag": ROUTER[1],
            },
            "placeholders": {
                "pool": POOL,
                "picker": f"{POOL}-epp",
                "namespace": NAMESPACE,
                "gateway": GATEWAY,
                "target_port": TARGET_PORT,
            },
            "one_replica": _picker_facts(one_replica),
            "two_replicas": _picker_facts(two_replicas),
            "inference_pool_spec": pool["spec"],
            "http_route_spec": route["spec"],
        },
    )


_ENGINE = re.compile(r"\{\s*\n(?P<body>(?:\s*\w+:\s*\"[^\"]*\",\s*\n)+)\s*\}", re.M)
_FIELD = re.compile(r"(\w+):\s*\"([^\"]*)\"")
_JSON_NAMES = re.compile(r"^\s*(\w+)\s+(?:string|\[\])[^`]*`json:\"(\w+)", re.M)


def capture_engine_metrics(router: Path) -> None:
    base = "pkg/epp/framework/plugins/datalayer/extractor/metrics"
    factories = show(router, ROUTER[2], f"{base}/factories.go")
    registry = show(router, ROUTER[2], f"{base}/mapping_registry.go")
    datasource = show(router, ROUTER[2], "pkg/epp/framework/plugins/datalayer/source/metrics/datasource.go")
    json_names = dict(_JSON_NAMES.findall(factories))
    block = factories.split("var defaultEngineConfigs = []engineConfigParams{", 1)[1].split("\n}\n", 1)[0]
    engines: dict[str, dict[str, str]] = {}
    for match in _ENGINE.finditer(block):
        fields = {json_names[k]: v for k, v in _FIELD.findall(match["body"])}
        engines[fields.pop("name")] = fields
    label_key = re.search(r'DefaultEngineTypeLabelKey\s*=\s*"([^"]+)"', registry)
    default_engine = re.search(r'const defaultEngineName = "([^"]+)"', factories)
    assert label_key and default_engine
    defaults = {
        name[0].lower() + name[1:]: json.loads(value)
        for name, value in re.findall(r"defaultMetrics(\w+)\s*=\s*(\S+)", datasource)
    }
    write(
        "llm_d_router_engine_metrics.json",
        {
            "provenance": source(
                ROUTER,
                [
                    f"{base}/factories.go",
                    f"{base}/mapping_registry.go",
                    "pkg/epp/framework/plugins/datalayer/source/metrics/datasource.go",
                ],
                "defaultEngineConfigs of the core-metrics-extractor plugin (json field names), the pod label that "
                "picks an engine (DefaultEngineTypeLabelKey), the engine used for unlabelled pods (defaultEngineName), "
                "and the metrics-data-source plugin's parameters: it scrapes "
                "scheme://<pod IP>:<pool target port><path> "
                "unless `port` is set ('Port, when set, overrides the endpoint's inference port for metrics retrieval. "
                "Use when the model server exposes metrics on a port other than the InferencePool target port.').",
            ),
            "engine_label_key": label_key.group(1),
            "default_engine": default_engine.group(1),
            "engines": engines,
            "metrics_data_source": {
                "type": "metrics-data-source",
                "defaults": defaults,
                "parameters": re.findall(
                    r'`json:"(\w+)', datasource.split("type metricsDatasourceParams struct {", 1)[1].split("\n}", 1)[0]
                ),
            },
        },
    )


# The requirements of the model server protocol, verbatim; capture checks each still stands in the document.
PROTOCOL_REQUIREMENTS: list[dict[str, str]] = [
    {
        "id": "openai-apis",
        "section": "Inference API Protocol",
        "level": "MUST",
        "text": "The model server MUST implement OpenAI’s "
        "[Completions](https://platform.openai.com/docs/api-reference/completions) "
        "and [Chat](https://platform.openai.com/docs/api-reference/chat) APIs.",
    },
    {
        "id": "metrics-endpoint",
        "section": "Metrics Reporting",
        "level": "MUST",
        "text": "The model servers MUST provide the following metrics via a Prometheus endpoint.",
    },
    {
        "id": "metric-semantics",
        "section": "Metrics Reporting",
        "level": "MUST",
        "text": "The exact metric names don't necessarily need to be the same as the recommended names here, "
        "however the metric types and semantics MUST follow this doc.",
    },
    {
        "id": "lora-serving",
        "section": "LoRA Adapter Serving",
        "level": "MUST",
        "condition": "Model servers that support dynamic LoRA serving can benefit from the LoRA affinity algorithm.",
        "text": "The model servers MUST support serving a LoRA adapter specified in the `model` argument of the "
        "request, provided the requested adapter is valid.",
    },
    {
        "id": "lora-metrics",
        "section": "LoRA Adapter Serving",
        "level": "MUST",
        "condition": "Model servers that support dynamic LoRA serving can benefit from the LoRA affinity algorithm.",
        "text": "The model server MUST expose the following LoRA adapter metrics via the same Prometheus endpoint:",
    },
    {
        "id": "prefix-cache-reuse",
        "section": "Prefix Cache Reuse",
        "level": "SHOULD",
        "text": "To benefit from the optimal prefix aware request scheduling, model servers SHOULD support "
        "prefix cache reuse, such as the [vllm automatic prefix caching]"
        "(https://docs.vllm.ai/en/latest/features/automatic_prefix_caching.html) feature.",
    },
]


def capture_model_server_protocol(gie: Path) -> None:
    path = "docs/proposals/003-model-server-protocol/README.md"
    text = show(gie, GIE[2], path)
    flat = " ".join(text.split())
    for requirement in PROTOCOL_REQUIREMENTS:
        for key in ("text", "condition"):
            if key in requirement:
                assert requirement[key] in flat, f"no longer in {path}: {requirement[key]}"
    assert len(re.findall(r"\b(?:MUST|SHOULD)\b", flat)) == len(PROTOCOL_REQUIREMENTS), (
        "a requirement was added or removed"
    )
    metrics = {}
    for row in (r for r in text.splitlines() if r.startswith("| ") and "`" in r):
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        engines = dict(zip(("vllm", "triton-tensorrt-llm", "trtllm-serve", "sglang"), cells[3:7], strict=True))
        metrics[cells[0]] = {"type": cells[1], "description": cells[2], **engines}
    lora_labels = re.findall(r"^\s*\* `(\w+)`:", text, re.M)
    write(
        "gie_model_server_protocol.json",
        {
            "provenance": source(
                GIE,
                [path],
                "The protocol between the endpoint picker and model servers (proposal status 'Partially implemented'): "
                "every MUST and SHOULD sentence verbatim (whitespace collapsed), the metrics table as written (cells "
                "unchanged) and the labels of the LoRA info gauge.",
            ),
            "requirements": PROTOCOL_REQUIREMENTS,
            "metrics": metrics,
            "lora_info_labels": lora_labels,
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gie", type=Path, required=True)
    parser.add_argument("--router", type=Path, required=True)
    parser.add_argument("--gateway-api", type=Path, required=True)
    args = parser.parse_args()
    capture_inferencepool_crd(args.gie)
    capture_httproute_crd(args.gateway_api)
    capture_endpoint_picker(args.router)
    capture_engine_metrics(args.router)
    capture_model_server_protocol(args.gie)


if __name__ == "__main__":
    main()
