"""routing.mode=inferencePool checked against upstream: the Gateway API Inference Extension and llm-d-router.

Nothing here runs on a cluster. The rendered InferencePool and HTTPRoute are validated with `jsonschema` against the
CRD schemas stored from upstream (tests/data/upstream/gie_inferencepool_crd.json, GIE v1.6.0, and
gateway_api_httproute_crd.json, Gateway API v1.5.1), strictly (unknown fields are errors) and with the
InferencePool's CEL rules re-implemented here. The endpoint picker's deployment is compared with what llm-d-router
v0.10.0's own chart renders (llm_d_router_endpoint_picker.json), the engine label and the metrics with its
core-metrics-extractor's engine table (llm_d_router_engine_metrics.json) and with the metric families Triton's
TensorRT-LLM backend publishes (tensorrtllm_backend_metrics.json), and the model server with the protocol's
MUST list (gie_model_server_protocol.json). tests/helm/capture_upstream.py wrote those files.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from functools import cache
from typing import Any

import jsonschema
import pytest
import yaml

from tests.helm.chart_support import (
    GPU,
    NAMESPACE,
    PICKER,
    REPO_ROOT,
    Rendered,
    component_of,
    container,
    env,
    matches,
    parse_gateway_args,
    pod_labels,
    pod_spec,
    render,
    triton_command,
    values_from,
    with_values,
)

UPSTREAM = REPO_ROOT / "tests" / "data" / "upstream"
POOL_VALUES = values_from(
    **{"routing.mode": "inferencePool", "routing.inferencePool.httpRoute.gateway.name": "inference-gateway"}
)
POOL = "nemo-mistral-nemo-pool"
PICKER_NAME = "nemo-mistral-nemo-endpoint-picker"


@cache
def upstream(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((UPSTREAM / name).read_text())
    return data


def _pool(values: dict[str, Any] | None = None) -> Rendered:
    return render(with_values(POOL_VALUES, **(values or {})))


def _one(rendered: Rendered, kind: str) -> dict[str, Any]:
    (obj,) = rendered.of_kind(kind)
    return obj


def _picker(rendered: Rendered) -> dict[str, Any]:
    return container(pod_spec(rendered.component("Deployment", PICKER)), "epp")


def _substitute(node: Any, names: dict[str, str]) -> Any:
    """Upstream's stand-in names (POOL, NAMESPACE, ...) replaced by this release's."""
    text = json.dumps(node)
    for placeholder, name in names.items():
        text = text.replace(f'"{placeholder}"', json.dumps(name))
    return json.loads(text)


def _release_names(gateway: str = "inference-gateway") -> dict[str, str]:
    names = upstream("llm_d_router_endpoint_picker.json")["placeholders"]
    return {names["pool"]: POOL, names["picker"]: PICKER_NAME, names["namespace"]: NAMESPACE, names["gateway"]: gateway}


# --- CRD schemas: strict jsonschema plus the CEL rules ------------------------------------------------------


def _strict(schema: Any) -> Any:
    """A CRD's structural schema as the API server applies it with strict field validation: an object schema that
    lists its properties admits no others (x-kubernetes-preserve-unknown-fields and additionalProperties aside)."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {k: _strict(v) for k, v in schema.items()}
    if (
        "properties" in strict
        and "additionalProperties" not in strict
        and not strict.get("x-kubernetes-preserve-unknown-fields")
    ):
        strict["additionalProperties"] = False
    return strict


def _cel_rules(schema: Any, path: str = "") -> list[tuple[str, str]]:
    """(schema path, rule) of every x-kubernetes-validations rule in a schema."""
    found: list[tuple[str, str]] = []
    if isinstance(schema, dict):
        for rule in schema.get("x-kubernetes-validations", []):
            found.append((path, rule["rule"]))
        for key, sub in schema.get("properties", {}).items():
            found += _cel_rules(sub, f"{path}.{key}")
        if isinstance(schema.get("items"), dict):
            found += _cel_rules(schema["items"], f"{path}[]")
    return found


def _port_when_service(ref: dict[str, Any]) -> bool:
    return ref.get("kind", "Service") != "Service" or "port" in ref


def _unique_numbers(ports: list[dict[str, Any]]) -> bool:
    numbers = [p["number"] for p in ports]
    return len(numbers) == len(set(numbers))


# The InferencePool CRD's CEL rules, by schema path: (rule as upstream writes it, the same check in Python).
INFERENCE_POOL_CEL: dict[str, tuple[str, Callable[[Any], bool]]] = {
    ".spec.endpointPickerRef": ("self.kind != 'Service' || has(self.port)", _port_when_service),
    ".spec.targetPorts": ("self.all(p1, self.exists_one(p2, p1.number==p2.number))", _unique_numbers),
}


def _at(obj: dict[str, Any], path: str) -> Any:
    node: Any = obj
    for part in path.strip(".").split("."):
        node = node[part]
    return node


def _metadata_problems(obj: dict[str, Any]) -> list[str]:
    meta = obj["metadata"]
    problems = [f"metadata.{k}" for k in meta if k not in {"name", "namespace", "labels", "annotations"}]
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", meta["name"]):
        problems.append(f"metadata.name {meta['name']!r}")
    return problems


def inference_pool_problems(pool: dict[str, Any]) -> list[str]:
    """What the API server would refuse in an InferencePool (v1, CRD of GIE v1.6.0): [] when it takes it."""
    crd = upstream("gie_inferencepool_crd.json")
    problems = _metadata_problems(pool)
    if (pool["apiVersion"], pool["kind"]) != (f"{crd['group']}/{crd['version']}", crd["kind"]):
        problems.append(f"{pool['apiVersion']} {pool['kind']}")
    schema = _strict(crd["openAPIV3Schema"])
    problems += [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in _validator(schema).iter_errors(pool)]
    for path, rule in _cel_rules(crd["openAPIV3Schema"]):
        expected, check = INFERENCE_POOL_CEL[path]
        assert rule == expected, f"upstream changed the rule at {path}: {rule}"
        try:
            value = _at(pool, path)
        except KeyError:
            continue
        if not check(value):
            problems.append(f"{path}: {rule}")
    return problems


def http_route_problems(route: dict[str, Any]) -> list[str]:
    """What the HTTPRoute (v1) spec schema of Gateway API v1.5.1 refuses, strictly; its CEL rules are not evaluated."""
    crd = upstream("gateway_api_httproute_crd.json")
    problems = _metadata_problems(route)
    if (route["apiVersion"], route["kind"]) != (f"{crd['group']}/{crd['version']}", crd["kind"]):
        problems.append(f"{route['apiVersion']} {route['kind']}")
    schema = _strict(crd["specSchema"])
    problems += [
        f"spec.{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in _validator(schema).iter_errors(route["spec"])
    ]
    return problems


def _validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    return validator_class(schema)


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"routing.inferencePool.port": 9000, "routing.inferencePool.failureMode": "FailClose"},
        {"routing.inferencePool.picker.replicas": 3},
    ],
    ids=["defaults", "port-and-failure-mode", "ha"],
)
def test_the_inference_pool_validates_against_the_upstream_crd(values: dict[str, Any]) -> None:
    assert inference_pool_problems(_one(_pool(values), "InferencePool")) == []


@pytest.mark.parametrize(
    "values",
    [
        {},
        {
            "routing.inferencePool.httpRoute.gateway": {
                "name": "inference-gateway",
                "namespace": "gateway-system",
                "sectionName": "https",
            },
            "routing.inferencePool.httpRoute.hostnames": ["llm.example.com", "*.llm.example.com"],
            "routing.inferencePool.httpRoute.requestTimeout": "1h30m",
        },
    ],
    ids=["defaults", "everything"],
)
def test_the_http_route_validates_against_the_upstream_crd(values: dict[str, Any]) -> None:
    assert http_route_problems(_one(_pool(values), "HTTPRoute")) == []


def test_the_crd_checks_reject_what_the_api_server_would() -> None:
    """Guards the two tests above: schema, strictness and CEL rules each catch their kind of mistake."""
    pool = _one(_pool(), "InferencePool")
    broken = copy.deepcopy(pool)
    broken["spec"]["endpointPickerRef"]["failureMode"] = "FailClosed"  # the llm-d-router README's spelling
    broken["spec"]["targetPorts"] = [{"number": 8080}, {"number": 8080}]
    broken["spec"]["selector"]["matchLabels"]["app"] = "not a label value"
    broken["spec"]["extra"] = True
    del broken["spec"]["endpointPickerRef"]["port"]
    problems = "\n".join(inference_pool_problems(broken))
    for expected in (
        "'FailClosed' is not one of ['FailOpen', 'FailClose']",
        "self.all(p1, self.exists_one(p2, p1.number==p2.number))",
        "does not match",
        "'extra' was unexpected",
        "self.kind != 'Service' || has(self.port)",
    ):
        assert expected in problems
    route = _one(_pool(), "HTTPRoute")
    broken = copy.deepcopy(route)
    broken["spec"]["rules"][0]["timeouts"]["request"] = "5 minutes"
    broken["spec"]["rules"][0]["backendRefs"][0]["weigth"] = 1
    problems = "\n".join(http_route_problems(broken))
    assert "'5 minutes' does not match" in problems
    assert "'weigth' was unexpected" in problems


def test_the_stored_crd_schemas_are_the_upstream_releases() -> None:
    pool = upstream("gie_inferencepool_crd.json")
    assert (pool["provenance"]["tag"], pool["bundle_version"]) == ("v1.6.0", "v1.6.0")
    assert pool["provenance"]["commit"].startswith("992e5c2")
    spec = pool["openAPIV3Schema"]["properties"]["spec"]
    assert spec["required"] == ["selector", "targetPorts"]
    route = upstream("gateway_api_httproute_crd.json")
    assert (route["bundle_version"], route["channel"]) == ("v1.5.1", "standard")


# --- The pool, the route and what they point at --------------------------------------------------------------


def test_the_pool_holds_exactly_the_triton_pods_and_targets_their_gateway_container() -> None:
    rendered = _pool()
    pool = _one(rendered, "InferencePool")
    triton = rendered.component("Deployment", "triton")
    selected = [w for w in rendered.workloads() if matches(pool["spec"]["selector"]["matchLabels"], pod_labels(w))]
    assert selected == [triton], "not the build Job's pods, not the picker"
    gateway = container(pod_spec(triton), "gateway")
    (port,) = gateway["ports"]
    assert pool["spec"]["targetPorts"] == [{"number": port["containerPort"]}]
    assert gateway["args"][gateway["args"].index("--port") + 1] == str(port["containerPort"])
    # Triton's own ports are not the pool's: it serves KServe v2, not the OpenAI API.
    assert port["containerPort"] not in {p["containerPort"] for p in container(pod_spec(triton), "triton")["ports"]}
    # The picker the pool names is a Service of this release on the picker's ext-proc port.
    ref = pool["spec"]["endpointPickerRef"]
    service = rendered.named("Service", ref["name"])
    assert component_of(service) == PICKER
    (ext_proc,) = [p for p in service["spec"]["ports"] if p["port"] == ref["port"]["number"]]
    assert ext_proc["targetPort"] == "grpc"
    assert ref["failureMode"] == "FailOpen"


def test_the_pool_and_the_route_are_shaped_as_upstreams_chart_renders_them() -> None:
    data = upstream("llm_d_router_endpoint_picker.json")
    rendered = _pool({"routing.inferencePool.port": data["placeholders"]["target_port"]})
    pool = _one(rendered, "InferencePool")
    expected = _substitute(data["inference_pool_spec"], _release_names())
    # Upstream selects model servers by the labels its values name; here, this release's Triton pods.
    expected["selector"]["matchLabels"] = pool["spec"]["selector"]["matchLabels"]
    assert pool["spec"] == expected
    route = _one(rendered, "HTTPRoute")
    assert route["spec"] == _substitute(data["http_route_spec"], _release_names())


def test_the_route_attaches_to_the_named_gateway_and_sends_everything_to_the_pool() -> None:
    route = _one(
        _pool(
            {
                "routing.inferencePool.httpRoute.gateway": {
                    "name": "edge",
                    "namespace": "gateway-system",
                    "sectionName": "https",
                },
                "routing.inferencePool.httpRoute.hostnames": ["llm.example.com"],
                "routing.inferencePool.httpRoute.requestTimeout": "0s",
            }
        ),
        "HTTPRoute",
    )
    assert route["spec"]["parentRefs"] == [
        {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "name": "edge",
            "namespace": "gateway-system",
            "sectionName": "https",
        }
    ]
    assert route["spec"]["hostnames"] == ["llm.example.com"]
    (rule,) = route["spec"]["rules"]
    assert rule["backendRefs"] == [{"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": POOL}]
    assert rule["timeouts"] == {"request": "0s"}


def test_no_route_when_not_asked_for() -> None:
    rendered = _pool(
        {"routing.inferencePool.httpRoute.create": False, "routing.inferencePool.httpRoute.gateway.name": ""}
    )
    assert rendered.of_kind("HTTPRoute") == []
    assert len(rendered.of_kind("InferencePool")) == 1


# --- The model server: the gateway container in each Triton pod ---------------------------------------------


def test_each_triton_pod_runs_the_gateway_on_localhost_triton_and_no_gateway_deployment_exists() -> None:
    rendered = _pool({"gateway.autoscaling.enabled": True, "gateway.pdb.enabled": True})
    assert {component_of(d) for d in rendered.of_kind("Deployment")} == {"triton", PICKER}
    components = {component_of(o) for o in rendered.objects if o["kind"] != "Secret"}
    assert "gateway" not in components, "no gateway Deployment, Service, PDB, HPA, NetworkPolicy or ServiceMonitor"
    spec = pod_spec(rendered.component("Deployment", "triton"))
    assert [c["name"] for c in spec["containers"]] == ["triton", "gateway"]
    triton, gateway = spec["containers"]
    assert gateway["image"] == triton["image"], "the project image"
    args = gateway["args"]
    assert args[:3] == ["nemo-gateway", "--triton-url", "localhost:8001"]
    assert "--triton-lb-policy" not in args, "one address: nothing to balance"
    assert args[args.index("--chat-path") + 1] == "direct"
    assert "--grpc-port=8001" in triton_command(triton)
    assert GPU not in gateway["resources"].get("limits", {}), "the GPUs are Triton's"
    parsed = parse_gateway_args(args)
    assert (parsed["--triton-url"], parsed["--port"], parsed["--chat-path"]) == ("localhost:8001", 8080, "direct")
    # Its own /tmp: the root filesystem is read-only.
    assert gateway["securityContext"]["readOnlyRootFilesystem"] is True
    tmp = next(m for m in gateway["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in next(v for v in spec["volumes"] if v["name"] == tmp["name"])
    assert tmp["name"] != next(m["name"] for m in triton["volumeMounts"] if m["mountPath"] == "/tmp")


def test_the_pod_gateway_takes_the_gateway_values() -> None:
    rendered = _pool(
        {
            "gateway.chatPath": "chat-model",
            "gateway.admission.maxInFlight": 48,
            "gateway.extraArgs": ["--log-level", "debug"],
            "gateway.apiKey.existingSecret": "api-keys",
        }
    )
    gateway = container(pod_spec(rendered.component("Deployment", "triton")), "gateway")
    args = gateway["args"]
    assert args[args.index("--chat-path") + 1] == "chat-model"
    assert args[args.index("--max-in-flight") + 1] == "48"
    assert args[-2:] == ["--log-level", "debug"]
    assert env(gateway)["NEMO_GATEWAY_API_KEY"] == {"secretKeyRef": {"name": "api-keys", "key": "api-key"}}


def test_triton_pods_carry_the_engine_type_label_without_changing_the_selector() -> None:
    engines = upstream("llm_d_router_engine_metrics.json")
    for rendered in (render(), _pool()):
        triton = rendered.component("Deployment", "triton")
        assert pod_labels(triton)[engines["engine_label_key"]] == "triton-tensorrt-llm"
        # A Deployment's selector is immutable: the label must not be in it, or upgrades would fail.
        assert engines["engine_label_key"] not in triton["spec"]["selector"]["matchLabels"]


# --- The endpoint picker, compared with llm-d-router's own chart ---------------------------------------------


@pytest.mark.parametrize(("replicas", "upstream_case"), [(1, "one_replica"), (2, "two_replicas")])
def test_the_picker_runs_as_upstreams_chart_runs_it(replicas: int, upstream_case: str) -> None:
    data = upstream("llm_d_router_endpoint_picker.json")
    expected = _substitute(data[upstream_case], _release_names())
    rendered = _pool({"routing.inferencePool.picker.replicas": replicas})
    deployment = rendered.component("Deployment", PICKER)
    picker = _picker(rendered)
    ours = expected["deployment"]["container"]
    assert (
        picker["image"] == f"{data['image']['registry']}/{data['image']['repository']}:{data['image']['release_tag']}"
    )
    assert picker["args"] == ours["args"]
    assert [(p["name"], p["containerPort"]) for p in picker["ports"]] == [
        (p["name"], p["containerPort"]) for p in ours["ports"]
    ]
    for key in ("livenessProbe", "readinessProbe", "env", "resources"):
        assert picker[key] == ours[key], key
    config_mount = next(m for m in ours["volumeMounts"])
    assert {"name": config_mount["name"], "mountPath": config_mount["mountPath"], "readOnly": True} in picker[
        "volumeMounts"
    ]
    assert deployment["spec"]["strategy"] == expected["deployment"]["strategy"]
    assert deployment["spec"]["replicas"] == replicas
    spec = pod_spec(deployment)
    assert spec["terminationGracePeriodSeconds"] == expected["deployment"]["terminationGracePeriodSeconds"]
    # Its Service: upstream's ports, by name, number and protocol, onto the container ports of the same numbers.
    service = rendered.named("Service", PICKER_NAME)
    assert matches(service["spec"]["selector"], pod_labels(deployment))
    by_name = {p["name"]: p["containerPort"] for p in picker["ports"]}
    assert [(p["name"], p["port"], p.get("appProtocol")) for p in service["spec"]["ports"]] == [
        (p["name"], p["port"], p.get("appProtocol")) for p in expected["service"]["ports"]
    ]
    for port in service["spec"]["ports"]:
        assert by_name[port["targetPort"]] == port["port"]
    # Its permissions: exactly what upstream's Roles grant, in one namespaced Role bound to its own account.
    (role,) = [r for r in rendered.of_kind("Role") if component_of(r) == PICKER]

    def grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
        return {
            (g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
        }

    assert grants(role["rules"]) == set().union(*(grants(rules) for rules in expected["roles"].values()))
    (binding,) = [b for b in rendered.of_kind("RoleBinding") if component_of(b) == PICKER]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": spec["serviceAccountName"], "namespace": NAMESPACE}
    ]
    assert rendered.named("ServiceAccount", spec["serviceAccountName"])
    assert not [o for o in rendered.objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]


def test_picker_flags_are_rendered_as_upstream_renders_them() -> None:
    picker = _picker(_pool({"routing.inferencePool.picker.flags": {"v": 3, "metrics-endpoint-auth": False}}))
    args = picker["args"]
    # `--<key>=<value>` between --grpc-health-port and --tracing=false, keys in order, as llm-d-router's chart does.
    assert args[args.index("--grpc-health-port") + 2 : args.index("--tracing=false")] == [
        "--metrics-endpoint-auth=false",
        "--v=3",
    ]


def test_the_plugin_config_is_upstreams_for_triton_tensorrt_llm_with_the_metrics_port() -> None:
    data = upstream("llm_d_router_endpoint_picker.json")["one_replica"]
    rendered = _pool()
    picker = _picker(rendered)
    config_file = picker["args"][picker["args"].index("--config-file") + 1]
    assert config_file == f"/config/{data['config_file']}"
    configmap = rendered.named("ConfigMap", PICKER_NAME)
    volume = next(v for v in pod_spec(rendered.component("Deployment", PICKER))["volumes"] if "configMap" in v)
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    ours = yaml.safe_load(configmap["data"][data["config_file"]])
    # The one difference from upstream: Triton serves its metrics on its own port, not the pool's target port.
    expected = copy.deepcopy(data["plugins_config"])
    source = next(p for p in expected["plugins"] if p["type"] == "metrics-data-source")
    source["parameters"]["port"] = 8002
    assert ours == expected
    plugins = {p["type"]: p.get("parameters", {}) for p in ours["plugins"]}
    assert {"queue-scorer", "kv-cache-utilization-scorer", "prefix-cache-scorer"} <= set(plugins)
    (profile,) = ours["schedulingProfiles"]
    assert {p["pluginRef"] for p in profile["plugins"]} == {
        "queue-scorer",
        "kv-cache-utilization-scorer",
        "prefix-cache-scorer",
    }


def test_the_picker_reads_tritons_metrics_where_triton_serves_them() -> None:
    engines = upstream("llm_d_router_engine_metrics.json")
    rendered = _pool()
    configmap = rendered.named("ConfigMap", PICKER_NAME)
    plugins = {
        p["type"]: p.get("parameters", {}) for p in yaml.safe_load(configmap["data"]["default-plugins.yaml"])["plugins"]
    }
    source = plugins["metrics-data-source"]
    assert set(source) <= set(engines["metrics_data_source"]["parameters"]), "parameters the plugin has"
    triton = container(pod_spec(rendered.component("Deployment", "triton")), "triton")
    assert f"--metrics-port={source['port']}" in triton_command(triton)
    assert {"name": "metrics", "containerPort": source["port"], "protocol": "TCP"} in triton["ports"]
    assert (source["scheme"], source["path"]) == ("http", "/metrics")  # Triton's metrics endpoint
    # The engine the extractor assumes is the one the pods are labelled with, and upstream knows it.
    engine = plugins["core-metrics-extractor"]["defaultEngine"]
    assert engine == pod_labels(rendered.component("Deployment", "triton"))[engines["engine_label_key"]]
    assert engine in engines["engines"]


def test_the_engine_metric_specs_name_what_tritons_tensorrt_llm_backend_publishes() -> None:
    spec = upstream("llm_d_router_engine_metrics.json")["engines"]["triton-tensorrt-llm"]
    families = upstream("tensorrtllm_backend_metrics.json")["families"]
    keys = ("queuedRequestsSpec", "runningRequestsSpec", "kvUsageSpec", "cacheBlockSizeSpec", "cacheNumBlocksSpec")
    for key in keys:
        match = re.fullmatch(r"(\w+)\{(\w+)=(\w+)\}", spec[key])
        assert match, spec[key]
        family, label, value = match.groups()
        assert families[family]["kind"] == "gauge", key
        assert families[family]["label"] == label, key
        assert value in families[family]["values"], key
    # Two upstream documents agree: the protocol's table and the extractor's engine table.
    table = upstream("gie_model_server_protocol.json")["metrics"]
    for row, key in (
        ("TotalQueuedRequests", "queuedRequestsSpec"),
        ("TotalRunningRequests", "runningRequestsSpec"),
        ("KVCacheUtilization", "kvUsageSpec"),
        ("[Optional] BlockSize", "cacheBlockSizeSpec"),
        ("[Optional] NumGPUBlocks", "cacheNumBlocksSpec"),
    ):
        assert table[row]["triton-tensorrt-llm"] == f"`{spec[key]}`"
    vllm = upstream("llm_d_router_engine_metrics.json")["engines"]["vllm"]
    assert table["TotalQueuedRequests"]["vllm"] == f"`{vllm['queuedRequestsSpec']}`"


# --- The model server protocol's MUST list --------------------------------------------------------------------


def _gateway_routes() -> set[tuple[str, str]]:
    from nemo_gateway.app import create_app
    from nemo_gateway.settings import GatewaySettings

    app = create_app(GatewaySettings(served_model_name="mistralai/mistral-nemo-12b-instruct"))
    return {(method.upper(), path) for path, operations in app.openapi()["paths"].items() for method in operations}


def _serves_openai_completions_and_chat() -> None:
    routes = _gateway_routes()
    assert {("POST", "/v1/completions"), ("POST", "/v1/chat/completions")} <= routes
    rendered = _pool()
    gateway = container(pod_spec(rendered.component("Deployment", "triton")), "gateway")
    assert _one(rendered, "InferencePool")["spec"]["targetPorts"] == [{"number": gateway["ports"][0]["containerPort"]}]


def _exposes_queue_running_and_kv_gauges() -> None:
    spec = upstream("llm_d_router_engine_metrics.json")["engines"]["triton-tensorrt-llm"]
    assert all(spec[k] for k in ("queuedRequestsSpec", "runningRequestsSpec", "kvUsageSpec"))
    test_the_engine_metric_specs_name_what_tritons_tensorrt_llm_backend_publishes()
    test_the_picker_reads_tritons_metrics_where_triton_serves_them()


def _no_dynamic_lora_claimed() -> None:
    # The requirement holds for model servers with dynamic LoRA. This deployment serves none yet (LoRA is in
    # "Coming next"), and upstream's triton-tensorrt-llm engine reads no LoRA gauge: no LoRA affinity.
    assert upstream("llm_d_router_engine_metrics.json")["engines"]["triton-tensorrt-llm"]["loraSpec"] == ""


# Each requirement of the protocol: a check of the chart, or why there is none.
REQUIREMENTS: dict[str, Callable[[], None] | str] = {
    "openai-apis": _serves_openai_completions_and_chat,
    "metrics-endpoint": _exposes_queue_running_and_kv_gauges,
    "metric-semantics": _exposes_queue_running_and_kv_gauges,
    "lora-serving": _no_dynamic_lora_claimed,
    "lora-metrics": _no_dynamic_lora_claimed,
    "prefix-cache-reuse": "a SHOULD; KV-cache block reuse is the engine build's setting, not the chart's",
}


def test_every_requirement_of_the_model_server_protocol_is_accounted_for() -> None:
    requirements = upstream("gie_model_server_protocol.json")["requirements"]
    assert [r["id"] for r in requirements] == list(REQUIREMENTS)
    for requirement in requirements:
        check = REQUIREMENTS[requirement["id"]]
        if callable(check):
            check()
        else:
            assert requirement["level"] == "SHOULD", "only a SHOULD may go unchecked"


# --- Network policy -------------------------------------------------------------------------------------------


def test_the_picker_reaches_tritons_metrics_and_the_gateways_proxies_reach_the_picker() -> None:
    rendered = _pool({"networkPolicy.gateway.allowedNamespaces": ["gateway-system"]})
    picker_labels = pod_labels(rendered.component("Deployment", PICKER))
    triton_policy = rendered.component("NetworkPolicy", "triton")
    (metrics,) = [r for r in triton_policy["spec"]["ingress"] if [p["port"] for p in r["ports"]] == ["metrics"]]
    assert any(matches(peer.get("podSelector", {}).get("matchLabels", {}), picker_labels) for peer in metrics["from"])
    proxies = [
        {
            "namespaceSelector": {
                "matchExpressions": [
                    {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["gateway-system"]}
                ]
            }
        }
    ]
    (openai,) = [r for r in triton_policy["spec"]["ingress"] if [p["port"] for p in r["ports"]] == ["openai"]]
    assert openai["from"] == proxies
    policy = rendered.component("NetworkPolicy", PICKER)
    assert matches(policy["spec"]["podSelector"]["matchLabels"], picker_labels)
    ext_proc, own_metrics = policy["spec"]["ingress"]
    assert ext_proc == {"ports": [{"port": "grpc", "protocol": "TCP"}], "from": proxies}
    assert own_metrics == {"ports": [{"port": "metrics", "protocol": "TCP"}], "from": [{"namespaceSelector": {}}]}
    # Named ports of the policies exist on the pods they select.
    assert {"grpc", "metrics"} <= {p["name"] for p in _picker(rendered)["ports"]}
    assert "openai" in {
        p["name"] for p in container(pod_spec(rendered.component("Deployment", "triton")), "gateway")["ports"]
    }


def test_gateway_mode_renders_none_of_the_pool_objects() -> None:
    rendered = render()
    kinds = {o["kind"] for o in rendered.objects}
    assert not kinds & {"InferencePool", "HTTPRoute", "Role", "RoleBinding"}
    assert PICKER not in {component_of(o) for o in rendered.objects}
    assert [c["name"] for c in pod_spec(rendered.component("Deployment", "triton"))["containers"]] == ["triton"]


def test_an_extra_plugin_config_can_be_chosen() -> None:
    custom = "apiVersion: llm-d.ai/v1alpha1\nkind: EndpointPickerConfig\nplugins:\n- type: queue-scorer\n"
    rendered = _pool(
        {
            "routing.inferencePool.picker.extraConfigFiles": {"queue-only.yaml": custom},
            "routing.inferencePool.picker.configFile": "queue-only.yaml",
        }
    )
    args = _picker(rendered)["args"]
    assert args[args.index("--config-file") + 1] == "/config/queue-only.yaml"
    data = rendered.named("ConfigMap", PICKER_NAME)["data"]
    assert data["queue-only.yaml"] == custom
    assert "default-plugins.yaml" in data
