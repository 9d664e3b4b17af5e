"""The chart rendered by real Helm (the v4 Go SDK), linted, and validated against Kubernetes 1.33 schemas.

Every value set of the matrix is rendered offline, the way `helm template` / `helm install` would, with
values.schema.json enforced. Core objects are validated with kubernetes-validate in strict mode (unknown
fields are errors). ServiceMonitor and PrometheusRule are Prometheus Operator custom resources with no
schema in the Kubernetes set: they are checked structurally here.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest

from nemo_ops.launcher import ADMIN_KEY_ENV, ADMIN_KEY_HEADER, RESTRICTED_APIS, restricted_api_arguments
from tests.helm.chart_support import (
    ADMIN_KEY_PLACEHOLDER,
    CHART_DIR,
    CUSTOM_KINDS,
    GATEWAY_API_KINDS,
    GPU,
    KUBE_VERSION,
    MATRIX,
    NAMESPACE,
    PICKER,
    PICKER_IMAGE,
    REPO_ROOT,
    Case,
    Rendered,
    build_container,
    chart,
    container,
    containers,
    env,
    is_picker,
    matches,
    parse_gateway_args,
    pod_labels,
    pod_spec,
    render,
    restricted_profile_violations,
    triton_command,
    uses_gpu,
    values_from,
)


def _ids(case: Case) -> str:
    return case.name


@pytest.fixture(params=MATRIX, ids=_ids)
def case(request: pytest.FixtureRequest) -> Case:
    case: Case = request.param
    return case


@pytest.fixture
def rendered(case: Case) -> Rendered:
    return render(case.values)


# --- Helm lint and Kubernetes schemas -------------------------------------------------------------------


def test_lint_reports_no_errors_or_warnings(case: Case) -> None:
    report = helm.lint(CHART_DIR, case.values, strict=True, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == []
    # Severity 1 is INFO (e.g. "icon is recommended"); 2 is WARNING, 3 ERROR.
    serious = [m for m in report["messages"] if m["severity"] >= 2]
    assert serious == []


def test_core_objects_validate_strictly_against_kubernetes_1_33(rendered: Rendered) -> None:
    checked: set[str] = set()
    for obj in rendered.objects:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS:
            continue
        if (obj["apiVersion"], obj["kind"]) in GATEWAY_API_KINDS:
            # Not in the Kubernetes schemas: validated against the stored upstream CRD schemas instead
            # (test_chart_inference_pool.py).
            continue
        version = kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        assert version == "1.33", f"{obj['kind']} validated against {version}"
        checked.add(obj["kind"])
    assert {"Deployment", "Service", "ConfigMap"} <= checked


def test_the_strict_validator_rejects_an_unknown_field() -> None:
    """Guards the test above: a typo in a template must not pass as valid."""
    deployment = render().component("Deployment", "triton")
    pod_spec(deployment)["containers"][0]["startupprobe"] = {"httpGet": {"path": "/", "port": 8000}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)


_DURATION = re.compile(r"^([0-9]+(ms|s|m|h))+$")
_METRIC = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def _custom_resource_problems(obj: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    meta = obj.get("metadata", {})
    if not meta.get("name") or meta.get("namespace") != NAMESPACE:
        problems.append("metadata.name/namespace")
    spec = obj.get("spec", {})
    if obj["kind"] == "ServiceMonitor":
        if not spec.get("selector", {}).get("matchLabels"):
            problems.append("spec.selector.matchLabels is empty")
        if spec.get("namespaceSelector") != {"matchNames": [NAMESPACE]}:
            problems.append("spec.namespaceSelector")
        endpoints = spec.get("endpoints") or []
        if not endpoints:
            problems.append("spec.endpoints is empty")
        for endpoint in endpoints:
            if not isinstance(endpoint.get("port"), str) or not str(endpoint.get("path", "")).startswith("/"):
                problems.append(f"endpoint {endpoint}")
            for key in ("interval", "scrapeTimeout"):
                if not _DURATION.match(str(endpoint.get(key, ""))):
                    problems.append(f"endpoint {key}={endpoint.get(key)!r}")
    else:
        groups = spec.get("groups") or []
        if not groups:
            problems.append("spec.groups is empty")
        for group in groups:
            if not group.get("name") or not group.get("rules"):
                problems.append(f"group {group}")
            for rule in group.get("rules", []):
                if not _METRIC.match(str(rule.get("record", ""))):
                    problems.append(f"record {rule.get('record')!r}")
                expr = str(rule.get("expr", ""))
                if not expr or any(expr.count(a) != expr.count(b) for a, b in ("()", "{}", "[]")):
                    problems.append(f"expr {expr!r}")
    return problems


def test_custom_resources_are_well_formed(rendered: Rendered) -> None:
    for obj in rendered.objects:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS:
            assert _custom_resource_problems(obj) == [], obj["metadata"]["name"]


def test_every_object_is_namespaced_and_labelled(rendered: Rendered) -> None:
    for obj in rendered.objects:
        meta = obj["metadata"]
        assert meta["namespace"] == NAMESPACE, meta["name"]
        assert meta["labels"]["app.kubernetes.io/instance"] == "nemo"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        assert len(meta["name"]) <= 63


# --- GPUs and tensor parallelism -------------------------------------------------------------------------


def test_gpu_counts_equal_the_tensor_parallel_size(case: Case, rendered: Rendered) -> None:
    triton = pod_spec(rendered.component("Deployment", "triton"))
    assert container(triton, "triton")["resources"]["limits"][GPU] == case.tp
    assert build_container(rendered)["resources"]["limits"][GPU] == case.tp
    assert env(container(triton, "triton"))["WORLD_SIZE"] == str(case.tp)
    # Nothing else asks for a GPU: the waiting init container and the gateway run on CPU.
    for workload in rendered.workloads():
        for cont in containers(pod_spec(workload)):
            if cont["name"] not in ("triton", "build-engine"):
                assert GPU not in cont.get("resources", {}).get("limits", {}), cont["name"]


def _ranks(triton: dict[str, Any]) -> list[list[str]]:
    """The tritonserver command lines of a Triton container, rank 0 first (one without mpirun)."""
    args = triton_command(triton)
    if args[0] == "tritonserver":
        return [args]
    ranks: list[list[str]] = [[]]
    for arg in args[args.index("-n") :]:
        if arg == ":":
            ranks.append([])
        else:
            ranks[-1].append(arg)
    return ranks


def test_tensor_parallel_runs_one_tritonserver_per_rank_under_mpirun(case: Case, rendered: Rendered) -> None:
    triton = container(pod_spec(rendered.component("Deployment", "triton")), "triton")
    args, ranks = triton_command(triton), _ranks(triton)
    if case.tp == 1:
        assert args[0] == "tritonserver"
        assert "mpirun" not in args
    else:
        assert args[0] == "mpirun"
        assert len(ranks) == case.tp
        for rank in ranks:
            assert rank[:3] == ["-n", "1", "tritonserver"]
        prefixes = [
            next(a for a in rank if a.startswith("--backend-config=python,shm-region-prefix")) for rank in ranks
        ]
        assert len(set(prefixes)) == case.tp, "each rank needs its own python-backend shared-memory prefix"
    # Rank 0 alone serves the three ports; the others open none and load only the TensorRT-LLM model.
    assert {"--http-port=8000", "--grpc-port=8001", "--metrics-port=8002"} <= set(ranks[0])
    for rank in ranks[1:]:
        assert not any(a.startswith(("--http-port", "--grpc-port", "--metrics-port")) for a in rank)
        assert {"--allow-http=false", "--allow-grpc=false", "--allow-metrics=false"} <= set(rank)
        assert "--load-model=tensorrt_llm" in rank
    repositories = {a for rank in ranks for a in rank if a.startswith("--model-repository=")}
    assert len(repositories) == 1


def test_triton_shares_memory_through_a_memory_backed_dev_shm(rendered: Rendered) -> None:
    spec = pod_spec(rendered.component("Deployment", "triton"))
    mounts = {m["mountPath"]: m["name"] for m in container(spec, "triton")["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"


# --- Probes, ports, termination --------------------------------------------------------------------------


def _port_number(cont: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in cont["ports"] if p["name"] == port)


def test_triton_probes_hit_the_health_endpoints_on_the_http_port(rendered: Rendered) -> None:
    triton = container(pod_spec(rendered.component("Deployment", "triton")), "triton")
    expected = {
        "startupProbe": "/v2/health/live",
        "readinessProbe": "/v2/health/ready",
        "livenessProbe": "/v2/health/live",
    }
    for probe, path in expected.items():
        check = triton[probe]["httpGet"]
        assert check["path"] == path
        assert _port_number(triton, check["port"]) == 8000
    assert "--http-port=8000" in triton["args"]
    startup = triton["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 20 * 60, "engine loading takes minutes"
    assert {p["name"]: p["containerPort"] for p in triton["ports"]} == {"http": 8000, "grpc": 8001, "metrics": 8002}


def _setting(case: Case, path: str, default: Any) -> Any:
    """A value the case sets, else the chart default given."""
    node: Any = case.values
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _inference_pool(case: Case) -> bool:
    return bool(_setting(case, "routing.mode", "gateway") == "inferencePool")


def _gateway(case: Case, rendered: Rendered) -> dict[str, Any]:
    """The gateway container: of the gateway Deployment, or of the Triton pods with routing.mode=inferencePool."""
    component = "triton" if _inference_pool(case) else "gateway"
    return container(pod_spec(rendered.component("Deployment", component)), "gateway")


def test_gateway_probes_hit_its_health_endpoints(case: Case, rendered: Rendered) -> None:
    if not _setting(case, "gateway.enabled", True):
        assert [d["metadata"]["name"] for d in rendered.of_kind("Deployment")] == ["nemo-mistral-nemo-triton"]
        return
    if _inference_pool(case):
        # The gateway runs in every Triton pod (the pool's model server), not as a Deployment of its own.
        assert sorted(d["metadata"]["name"] for d in rendered.of_kind("Deployment")) == [
            "nemo-mistral-nemo-endpoint-picker",
            "nemo-mistral-nemo-triton",
        ]
    gateway = _gateway(case, rendered)
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/v1/health/ready"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/v1/health/live"
    port = _port_number(gateway, gateway["readinessProbe"]["httpGet"]["port"])
    assert gateway["args"][gateway["args"].index("--port") + 1] == str(port)


def test_gateway_chat_path_is_direct_unless_the_values_say_chat_model() -> None:
    rendered_args = []
    for values, expected in (({}, "direct"), ({"gateway.chatPath": "chat-model"}, "chat-model")):
        args = container(pod_spec(render(values_from(**values)).component("Deployment", "gateway")), "gateway")["args"]
        assert args[args.index("--chat-path") + 1] == expected
        rendered_args.append((args, expected))
    for args, expected in rendered_args:
        assert parse_gateway_args(args)["--chat-path"] == expected  # the gateway's own parser takes them


def test_gateway_off_renders_no_gateway_objects() -> None:
    rendered = render(values_from(**{"gateway.enabled": False}))
    components = {obj["metadata"]["labels"]["app.kubernetes.io/component"] for obj in rendered.objects}
    assert "gateway" not in components
    assert "gateway" not in rendered.notes


def test_termination_leaves_time_to_drain_streams(rendered: Rendered) -> None:
    spec = pod_spec(rendered.component("Deployment", "triton"))
    triton = container(spec, "triton")
    exit_timeout = int(next(a for a in triton["args"] if a.startswith("--exit-timeout-secs=")).split("=")[1])
    pre_stop = triton["lifecycle"]["preStop"]["exec"]["command"]
    sleep = int(pre_stop[-1])
    assert exit_timeout >= 60
    assert sleep + exit_timeout < spec["terminationGracePeriodSeconds"]


# --- Services, selectors and labels ----------------------------------------------------------------------


def test_services_select_exactly_their_component_and_target_its_ports(rendered: Rendered) -> None:
    workloads = list(rendered.workloads())
    for service in rendered.of_kind("Service"):
        component = service["metadata"]["labels"]["app.kubernetes.io/component"]
        selected = [w for w in workloads if matches(service["spec"]["selector"], pod_labels(w))]
        assert [w["metadata"]["labels"]["app.kubernetes.io/component"] for w in selected] == [component]
        ports = {p["name"] for c in pod_spec(selected[0])["containers"] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, (service["metadata"]["name"], port)


def test_triton_service_offers_http_grpc_and_metrics(rendered: Rendered) -> None:
    service = rendered.named("Service", "nemo-mistral-nemo-triton")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"http": 8000, "grpc": 8001, "metrics": 8002}


def test_workload_selectors_match_their_pod_labels(rendered: Rendered) -> None:
    for deployment in rendered.of_kind("Deployment"):
        assert matches(deployment["spec"]["selector"]["matchLabels"], pod_labels(deployment))
        for constraint in pod_spec(deployment).get("topologySpreadConstraints", []):
            assert matches(constraint["labelSelector"]["matchLabels"], pod_labels(deployment))
    for pdb in rendered.of_kind("PodDisruptionBudget"):
        component = pdb["metadata"]["labels"]["app.kubernetes.io/component"]
        target = rendered.component("Deployment", component)
        assert matches(pdb["spec"]["selector"]["matchLabels"], pod_labels(target))
    # The build Job's pods are not Triton pods: no Service or PDB may select them.
    for job in rendered.of_kind("Job"):
        for service in rendered.of_kind("Service"):
            assert not matches(service["spec"]["selector"], pod_labels(job))


def test_service_monitors_select_a_service_that_has_the_scraped_port(rendered: Rendered) -> None:
    for monitor in rendered.of_kind("ServiceMonitor"):
        selected = [
            s
            for s in rendered.of_kind("Service")
            if matches(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
        assert len(selected) == 1, "a ServiceMonitor must not scrape the headless Service as well"
        port_names = {p["name"] for p in selected[0]["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in port_names
    paths = {
        m["metadata"]["labels"]["app.kubernetes.io/component"]: m["spec"]["endpoints"][0]["path"]
        for m in rendered.of_kind("ServiceMonitor")
    }
    assert paths in ({}, {"triton": "/metrics", "gateway": "/v1/metrics"}, {"triton": "/metrics"})


def test_ingress_routes_to_the_gateway_service() -> None:
    rendered = render(MATRIX[[c.name for c in MATRIX].index("ingress")].values)
    ingress = rendered.of_kind("Ingress")[0]
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"secretName": "nemo-tls", "hosts": ["mistral-nemo.example.com"]}]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    service = rendered.named("Service", backend["name"])
    assert service["metadata"]["labels"]["app.kubernetes.io/component"] == "gateway"
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    assert "https://mistral-nemo.example.com/v1" in rendered.notes


# --- Security -----------------------------------------------------------------------------------------------


def test_pods_run_unprivileged_without_an_api_token(rendered: Rendered) -> None:
    for workload in rendered.workloads():
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        # Only the endpoint picker, which watches the InferencePool and its pods, gets a token: on an account of
        # its own that no other pod uses (its Role: test_chart_inference_pool.py).
        assert spec["automountServiceAccountToken"] is is_picker(workload)
        if is_picker(workload):
            others = {pod_spec(w)["serviceAccountName"] for w in rendered.workloads() if not is_picker(w)}
            assert spec["serviceAccountName"] not in others
        for cont in containers(spec):
            context = cont["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, cont["name"]
            assert context["privileged"] is False, cont["name"]
            assert context["capabilities"]["drop"] == ["ALL"], cont["name"]
    for account in rendered.of_kind("ServiceAccount"):
        assert account["automountServiceAccountToken"] is False


def test_the_pods_run_as_the_user_the_dockerfile_creates() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    uid = int(re.search(r"^ARG APP_UID=(\d+)$", dockerfile, re.M).group(1))  # type: ignore[union-attr]
    assert re.search(r"^USER \$\{APP_UID\}", dockerfile, re.M)
    assert re.search(r"^ARG BASE_IMAGE=nvcr\.io/nvidia/tritonserver:26\.07-trtllm-python-py3$", dockerfile, re.M)
    for workload in render().workloads():
        assert pod_spec(workload)["securityContext"]["runAsUser"] == uid


def _peer(namespaces: list[str], pod_labels: dict[str, str], any_namespace: bool) -> list[dict[str, Any]]:
    """The NetworkPolicyPeer the chart documents for a list of namespaces and pod labels ([] for none)."""
    peer: dict[str, Any] = {}
    if namespaces:
        expression = {"key": "kubernetes.io/metadata.name", "operator": "In", "values": namespaces}
        peer["namespaceSelector"] = {"matchExpressions": [expression]}
    elif any_namespace:
        peer["namespaceSelector"] = {}
    if pod_labels:
        peer["podSelector"] = {"matchLabels": pod_labels}
    return [peer] if peer else []


def _rule(policy: dict[str, Any], *ports: str | int) -> dict[str, Any]:
    """The one ingress rule of a policy whose ports are exactly `ports`."""
    (rule,) = [r for r in policy["spec"]["ingress"] if [p["port"] for p in r["ports"]] == list(ports)]
    return dict(rule)


def test_network_policy_admits_to_triton_only_the_gateway_and_listed_sources(case: Case, rendered: Rendered) -> None:
    policies = rendered.of_kind("NetworkPolicy")
    if not _setting(case, "networkPolicy.enabled", True):
        assert policies == []
        return
    policy = rendered.component("NetworkPolicy", "triton")
    assert matches(policy["spec"]["podSelector"]["matchLabels"], pod_labels(rendered.component("Deployment", "triton")))
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    expected: list[dict[str, Any]] = []
    gateway_deployment = _setting(case, "gateway.enabled", True) and not _inference_pool(case)
    if gateway_deployment:
        gateway_labels = pod_labels(rendered.component("Deployment", "gateway"))
        expected.append({"podSelector": {"matchLabels": gateway_labels}})
    expected += _peer(
        _setting(case, "networkPolicy.allowedNamespaces", []),
        _setting(case, "networkPolicy.allowedPodLabels", {}),
        any_namespace=False,
    )
    expected += _setting(case, "networkPolicy.extraFrom", [])
    inference = [r for r in policy["spec"]["ingress"] if {p["port"] for p in r["ports"]} & {"http", "grpc"}]
    if expected:
        assert inference == [_rule(policy, "http", "grpc")]
        assert inference[0]["from"] == expected
    else:
        assert inference == [], "no source named: nothing may reach the inference ports"
    assert all(p != {} and p.get("namespaceSelector") != {} for p in expected), "no peer may admit everything"
    # Metrics: a rule of its own, for the scrapers, the gateway (its engine figures) and the endpoint picker (it
    # scores the pods by them) only.
    metrics = _rule(policy, "metrics")
    scrapers = _peer(
        _setting(case, "networkPolicy.metricsNamespaces", []),
        _setting(case, "networkPolicy.metricsPodLabels", {}),
        any_namespace=True,
    )
    gateway_peer = expected[:1] if gateway_deployment else []
    picker_peer = []
    if _inference_pool(case):
        picker_peer = [{"podSelector": {"matchLabels": pod_labels(rendered.component("Deployment", PICKER))}}]
    assert metrics["from"] == scrapers + gateway_peer + picker_peer
    # inferencePool: the gateway container's port (the pool's model server), for the sources of networkPolicy.gateway
    # (the Gateway's proxies) or, none listed, for all. The only other rule.
    others = 1
    if _inference_pool(case):
        openai = _rule(policy, "openai")
        sources = _peer(
            _setting(case, "networkPolicy.gateway.allowedNamespaces", []),
            _setting(case, "networkPolicy.gateway.allowedPodLabels", {}),
            any_namespace=False,
        ) + _setting(case, "networkPolicy.gateway.extraFrom", [])
        assert openai.get("from") == (sources or None)
        triton = container(pod_spec(rendered.component("Deployment", "triton")), "gateway")
        assert "openai" in {p["name"] for p in triton["ports"]}
        others += 1
    assert len(policy["spec"]["ingress"]) == len(inference) + others


def test_network_policy_of_the_gateway_admits_listed_sources_and_lets_it_reach_only_triton_and_dns(
    case: Case, rendered: Rendered
) -> None:
    if not (
        _setting(case, "networkPolicy.enabled", True)
        and _setting(case, "gateway.enabled", True)
        and not _inference_pool(case)
    ):
        assert [p for p in rendered.of_kind("NetworkPolicy") if "gateway" in p["metadata"]["name"]] == []
        return
    policy = rendered.component("NetworkPolicy", "gateway")
    gateway = rendered.component("Deployment", "gateway")
    assert matches(policy["spec"]["podSelector"]["matchLabels"], pod_labels(gateway))
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert "http" in {p["name"] for p in container(pod_spec(gateway), "gateway")["ports"]}
    expected = _peer(
        _setting(case, "networkPolicy.gateway.allowedNamespaces", []),
        _setting(case, "networkPolicy.gateway.allowedPodLabels", {}),
        any_namespace=False,
    ) + _setting(case, "networkPolicy.gateway.extraFrom", [])
    # No source listed: the port is open to all (documented; the API key guards it).
    assert rule.get("from") == (expected or None)
    if not _setting(case, "networkPolicy.gateway.restrictEgress", True):
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        assert "egress" not in policy["spec"]
        return
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    dns, triton, *extra = policy["spec"]["egress"]
    assert dns == {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
    (to_triton,) = triton["to"]
    assert matches(to_triton["podSelector"]["matchLabels"], pod_labels(rendered.component("Deployment", "triton")))
    assert set(to_triton) == {"podSelector"}, "this release's Triton pods, in the release namespace"
    assert triton["ports"] == [{"port": 8001, "protocol": "TCP"}, {"port": 8002, "protocol": "TCP"}]  # gRPC, metrics
    # The gateway's default target: the headless Service of those pods, on the gRPC port the egress rule opens.
    headless = rendered.named("Service", "nemo-mistral-nemo-triton-headless")
    assert matches(headless["spec"]["selector"], to_triton["podSelector"]["matchLabels"])
    domain = _setting(case, "clusterDomain", "cluster.local")
    triton_url = f"dns:///{headless['metadata']['name']}.{NAMESPACE}.svc.{domain}:8001"
    args = container(pod_spec(gateway), "gateway")["args"]
    assert args[args.index("--triton-url") + 1] == triton_url, "the port the egress rule opens"
    assert extra == _setting(case, "networkPolicy.gateway.extraEgress", [])


def test_network_policy_peers_follow_the_documented_selectors() -> None:
    """Labels alone: pods of the release namespace (Triton, gateway) or of every namespace (metrics)."""
    rendered = render(
        values_from(
            **{
                "gateway.enabled": False,
                "networkPolicy.allowedPodLabels": {"role": "llm-client"},
                "networkPolicy.metricsPodLabels": {"app.kubernetes.io/name": "prometheus"},
            }
        )
    )
    policy = rendered.component("NetworkPolicy", "triton")
    assert _rule(policy, "http", "grpc")["from"] == [{"podSelector": {"matchLabels": {"role": "llm-client"}}}]
    assert _rule(policy, "metrics")["from"] == [
        {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}
    ]
    policy = render(values_from(**{"networkPolicy.allowedNamespaces": ["shop"]})).component("NetworkPolicy", "triton")
    assert _rule(policy, "http", "grpc")["from"][1] == {
        "namespaceSelector": {
            "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["shop"]}]
        }
    }


def test_gateway_api_key_comes_from_a_secret(case: Case, rendered: Rendered) -> None:
    gateway_secrets = [
        s for s in rendered.of_kind("Secret") if s["metadata"]["labels"]["app.kubernetes.io/component"] == "gateway"
    ]
    if not _setting(case, "gateway.enabled", True):
        assert gateway_secrets == []
        return
    gateway = _gateway(case, rendered)
    key = env(gateway).get("NEMO_GATEWAY_API_KEY")
    if not _setting(case, "gateway.apiKey.enabled", True):
        assert key is None
        return
    assert key is not None
    secrets = {s["metadata"]["name"]: s for s in gateway_secrets}
    existing = _setting(case, "gateway.apiKey.existingSecret", "")
    if existing:
        assert key["secretKeyRef"]["name"] == existing
        assert secrets == {}, "an existing Secret must not be shadowed by a generated one"
    else:
        data = secrets[key["secretKeyRef"]["name"]]["data"][key["secretKeyRef"]["key"]]
        assert len(data) >= 48


# --- Triton's admin APIs -----------------------------------------------------------------------------------

SAMPLE_KEY = "Sample-admin_key.0123456789~"


def test_triton_admin_apis_need_the_key_exactly_as_nemo_serve_restricts_them(case: Case, rendered: Rendered) -> None:
    """The chart's flags are nemo-serve's (same API groups, same header): compared through serve.py itself."""
    triton = container(pod_spec(rendered.component("Deployment", "triton")), "triton")
    rank0, *workers = _ranks(triton)
    flags = [a for a in rank0 if ADMIN_KEY_PLACEHOLDER in a]
    assert [f.replace(ADMIN_KEY_PLACEHOLDER, SAMPLE_KEY) for f in flags] == restricted_api_arguments(SAMPLE_KEY)
    for flag in flags:
        apis, header = flag.split("=", 1)[1].rsplit(":", 1)
        assert apis.split(",") == list(RESTRICTED_APIS)
        assert header == f"{ADMIN_KEY_HEADER}={ADMIN_KEY_PLACEHOLDER}"
    # Only rank 0 opens ports; the other ranks get no key.
    assert not any(ADMIN_KEY_PLACEHOLDER in a for rank in workers for a in rank)
    # The key reaches the launcher from the Secret, under the variable nemo-serve reads it from.
    assert ADMIN_KEY_PLACEHOLDER[2:-1] == ADMIN_KEY_ENV
    reference = env(triton)[ADMIN_KEY_ENV]["secretKeyRef"]
    existing = _setting(case, "triton.adminKey.existingSecret", "")
    assert reference == {
        "name": existing or "nemo-mistral-nemo-triton-admin-key",
        "key": _setting(case, "triton.adminKey.secretKey", "admin-key"),
    }
    secrets = {s["metadata"]["name"]: s for s in rendered.of_kind("Secret")}
    if existing:
        assert "nemo-mistral-nemo-triton-admin-key" not in secrets, "an existing Secret must not be shadowed"
    else:
        data = secrets[reference["name"]]["data"][reference["key"]]
        assert 16 <= len(base64.b64decode(data)) <= 256


def test_health_stays_open_so_probes_and_the_gateway_need_no_key(rendered: Rendered) -> None:
    assert not {"health", "metadata", "inference", "model-config"} & set(RESTRICTED_APIS)
    triton = container(pod_spec(rendered.component("Deployment", "triton")), "triton")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert triton[probe]["httpGet"]["path"].startswith("/v2/health/")
        assert "httpHeaders" not in triton[probe]["httpGet"]
    # Only the Triton container gets the admin key; the gateway, the build and the wait do not.
    admin_secrets = {s["metadata"]["name"] for s in rendered.of_kind("Secret") if "admin" in s["metadata"]["name"]}
    for workload in rendered.workloads():
        for cont in containers(pod_spec(workload)):
            if cont["name"] == "triton":
                continue
            assert ADMIN_KEY_ENV not in env(cont), cont["name"]
            references = [
                v["secretKeyRef"]["name"] for v in env(cont).values() if isinstance(v, dict) and "secretKeyRef" in v
            ]
            assert not admin_secrets & set(references), cont["name"]


def _manifests_without(rendered: Rendered, secret_name: str) -> str:
    texts = [json.dumps(obj) for obj in rendered.objects if obj["metadata"]["name"] != secret_name]
    return "\n".join([*texts, rendered.notes])


@pytest.mark.parametrize("given", [True, False], ids=["from-values", "generated"])
def test_admin_key_appears_only_in_its_secret(given: bool) -> None:
    key = "given-admin-key_0123456789"
    rendered = render(values_from(**{"triton.adminKey.value": key}) if given else {})
    secret = rendered.named("Secret", "nemo-mistral-nemo-triton-admin-key")
    data = secret["data"]["admin-key"]
    plain = base64.b64decode(data).decode()
    if given:
        assert plain == key
    else:
        assert len(plain) == 48
    assert re.fullmatch(r"[A-Za-z0-9._~-]{16,256}", plain), "what nemo-serve and triton-start.sh accept"
    elsewhere = _manifests_without(rendered, secret["metadata"]["name"])
    assert plain not in elsewhere
    assert data not in elsewhere
    # The Secret itself carries it only in data.
    assert plain not in json.dumps({k: v for k, v in secret.items() if k != "data"})


def test_an_existing_admin_secret_is_used_and_none_is_created() -> None:
    rendered = render(values_from(**{"triton.adminKey.existingSecret": "ops-triton-admin"}))
    triton = container(pod_spec(rendered.component("Deployment", "triton")), "triton")
    assert env(triton)[ADMIN_KEY_ENV] == {"secretKeyRef": {"name": "ops-triton-admin", "key": "admin-key"}}
    assert [s["metadata"]["name"] for s in rendered.of_kind("Secret")] == ["nemo-mistral-nemo-gateway-api-key"]
    assert "kubectl -n llm get secret ops-triton-admin" in rendered.notes


# --- Pod security -------------------------------------------------------------------------------------------


def test_pods_without_a_gpu_meet_the_restricted_pod_security_standard(rendered: Rendered) -> None:
    for workload in rendered.workloads():
        spec = pod_spec(workload)
        if uses_gpu(spec):
            continue
        name = workload["metadata"]["name"]
        assert restricted_profile_violations(spec) == [], name
        # Beyond the standard: no API token (but for the endpoint picker, see above), and a read-only root with a
        # writable /tmp.
        assert spec["automountServiceAccountToken"] is is_picker(workload), name
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for cont in containers(spec):
            assert cont["securityContext"]["readOnlyRootFilesystem"] is True, (name, cont["name"])
            tmp = next(m for m in cont["volumeMounts"] if m["mountPath"] == "/tmp")
            assert "emptyDir" in volumes[tmp["name"]], (name, cont["name"])


def test_gpu_pods_get_no_privilege_escalation_and_no_capabilities(rendered: Rendered) -> None:
    gpu_pods = [w for w in rendered.workloads() if uses_gpu(pod_spec(w))]
    assert gpu_pods, "Triton at least"
    for workload in gpu_pods:
        spec = pod_spec(workload)
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        for cont in containers(spec):
            context = cont["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, cont["name"]
            assert context["capabilities"]["drop"] == ["ALL"], cont["name"]
            assert "add" not in context["capabilities"], cont["name"]
        # With non-root GPU pods (every case here) the whole release meets "restricted".
        assert restricted_profile_violations(spec) == [], workload["metadata"]["name"]


def test_the_restricted_checker_finds_what_breaks_the_profile() -> None:
    """Guards the tests above: a pod that breaks the standard must not pass."""
    spec = pod_spec(render().component("Deployment", "gateway"))
    assert restricted_profile_violations(spec) == []
    broken = json.loads(json.dumps(spec))
    broken["securityContext"].update(runAsNonRoot=False, runAsUser=0)
    broken["hostNetwork"] = True
    broken["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    gateway = broken["containers"][0]
    gateway["securityContext"].update(allowPrivilegeEscalation=True, capabilities={"add": ["SYS_ADMIN"]})
    gateway["ports"][0]["hostPort"] = 80
    problems = "\n".join(restricted_profile_violations(broken))
    for expected in (
        "runAsUser 0",
        "runAsNonRoot false",
        "hostNetwork",
        "hostPath",
        "allowPrivilegeEscalation",
        "do not drop ALL",
        "add ['SYS_ADMIN']",
        "hostPort 80",
    ):
        assert expected in problems
    no_seccomp = json.loads(json.dumps(spec))
    del no_seccomp["securityContext"]["seccompProfile"]
    assert restricted_profile_violations(no_seccomp) == [
        "container gateway: seccomp is not RuntimeDefault or Localhost"
    ]


def test_gpu_pods_take_their_own_security_context_and_the_gateway_keeps_the_restricted_one() -> None:
    """E.g. root for an image that cannot do without it: only the GPU pods change (and false/0 do override)."""
    rendered = render(
        values_from(
            **{
                "triton.podSecurityContext": {"runAsNonRoot": False, "runAsUser": 0, "runAsGroup": 0},
                "gateway.containerSecurityContext": {"readOnlyRootFilesystem": False},
            }
        )
    )
    for workload in rendered.workloads():
        context = pod_spec(workload)["securityContext"]
        if uses_gpu(pod_spec(workload)):
            assert (context["runAsNonRoot"], context["runAsUser"], context["runAsGroup"]) == (False, 0, 0)
            assert context["fsGroup"] == 10001 and context["seccompProfile"] == {"type": "RuntimeDefault"}
        else:
            assert (context["runAsNonRoot"], context["runAsUser"]) == (True, 10001)
    gateway = container(pod_spec(rendered.component("Deployment", "gateway")), "gateway")
    assert gateway["securityContext"]["readOnlyRootFilesystem"] is False
    # Merged values keep their integer form (e.g. an OpenShift-range uid, not 1.00068e+09).
    big = render(values_from(**{"triton.podSecurityContext": {"runAsUser": 1000680000}}))
    deployment = big.component("Deployment", "triton")
    assert pod_spec(deployment)["securityContext"]["runAsUser"] == 1000680000
    kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)


# --- Engine cache, build modes, model source -------------------------------------------------------------


def _engine_dir(values: dict[str, Any]) -> str:
    return str(env(build_container(render(values)))["ENGINE_DIR"])


def test_engine_cache_key_changes_with_gpu_profile_model_and_trtllm_version() -> None:
    base = _engine_dir({})
    variants = {
        "gpu": _engine_dir(values_from(**{"gpu.product": "NVIDIA-L40S"})),
        "profile": _engine_dir(values_from(**{"engine.profile": "h100-fp8-tp2-128k"})),
        "model": _engine_dir(values_from(**{"model.revision": "0e5f2d4"})),
        "trtllm": _engine_dir(values_from(**{"engine.trtllmVersion": "1.2.2"})),
    }
    assert len({base, *variants.values()}) == 5
    assert base.startswith("/cache/engines/nvidia-h100-80gb-hbm3/h100-fp8-tp1/")
    assert variants["gpu"].startswith("/cache/engines/nvidia-l40s/h100-fp8-tp1/")
    # The key does not depend on how the release is named or on serving-only values.
    assert _engine_dir(values_from(**{"gateway.replicaCount": 5, "triton.logVerbose": 1})) == base
    assert str(env(build_container(render({}, release="other")))["ENGINE_DIR"]) == base


def test_the_runtime_value_picks_a_cache_key_and_build_spec_of_its_own() -> None:
    engine = env(build_container(render({})))
    pytorch = env(build_container(render(values_from(**{"engine.runtime": "pytorch"}))))
    assert engine["RUNTIME"] == "engine" and pytorch["RUNTIME"] == "pytorch"
    assert pytorch["ENGINE_DIR"] == engine["ENGINE_DIR"] + "-pytorch"
    assert json.loads(pytorch["BUILD_SPEC"])["runtime"] == "pytorch"
    assert "runtime" not in json.loads(engine["BUILD_SPEC"])  # engine builds keep the spec (and Job) of before
    assert str(engine["ENGINE_DIR"]).endswith("/trtllm-1.2.1")


def test_triton_serves_the_repository_of_its_own_engine_key(case: Case, rendered: Rendered) -> None:
    engine_dir = env(build_container(rendered))["ENGINE_DIR"]
    spec = pod_spec(rendered.component("Deployment", "triton"))
    triton = container(spec, "triton")
    assert f"--model-repository={engine_dir}/repository" in triton["args"]
    gpu = _setting(case, "gpu.product", "NVIDIA-H100-80GB-HBM3")
    assert spec["nodeSelector"]["nvidia.com/gpu.product"] == gpu
    cache_mount = next(m for m in triton["volumeMounts"] if m["name"] == "cache")
    assert cache_mount["readOnly"] is True


def test_build_as_job_makes_triton_wait_for_the_engine() -> None:
    rendered = render()
    (job,) = rendered.of_kind("Job")
    spec = pod_spec(rendered.component("Deployment", "triton"))
    assert [c["name"] for c in spec["initContainers"]] == ["wait-for-engine"]
    wait, build = env(spec["initContainers"][0]), env(container(pod_spec(job), "build-engine"))
    assert wait["ENGINE_DIR"] == build["ENGINE_DIR"]
    assert wait["BUILD_SPEC"] == build["BUILD_SPEC"]
    assert wait["BUILD_JOB"] == job["metadata"]["name"]
    assert pod_spec(job)["restartPolicy"] == "Never"
    # The Job runs on the GPU type it builds for, like the Triton pods.
    assert pod_spec(job)["nodeSelector"] == spec["nodeSelector"]
    assert pod_spec(job)["tolerations"] == spec["tolerations"]


def test_build_as_init_container_needs_no_job() -> None:
    rendered = render(values_from(**{"engineBuild.mode": "initContainer"}))
    assert rendered.of_kind("Job") == []
    spec = pod_spec(rendered.component("Deployment", "triton"))
    assert [c["name"] for c in spec["initContainers"]] == ["build-engine"]
    assert spec["initContainers"][0]["resources"]["limits"][GPU] == 1


def test_build_job_is_renamed_when_its_spec_changes() -> None:
    """A Job's pod template is immutable: a changed build must be a new Job, not a failed upgrade."""
    name = render().of_kind("Job")[0]["metadata"]["name"]
    assert (
        render(values_from(**{"engine.engineArgs": ["--set", "max_batch_size=128"]})).of_kind("Job")[0]["metadata"][
            "name"
        ]
        != name
    )
    assert render(values_from(**{"image.tag": "0.1.1"})).of_kind("Job")[0]["metadata"]["name"] != name
    assert render(values_from(**{"gateway.replicaCount": 3})).of_kind("Job")[0]["metadata"]["name"] == name


def test_build_steps_get_precision_and_tp_from_the_profile() -> None:
    build = env(
        build_container(
            render(values_from(**{"gpu.product": "NVIDIA-A100-SXM4-80GB", "engine.profile": "a100-bf16-tp2"}))
        )
    )
    assert (build["TP"], build["QUANTIZATION"], build["KV_CACHE_DTYPE"], build["PROFILE"]) == (
        "2",
        "bf16",
        "bf16",
        "a100-bf16-tp2",
    )
    build = env(build_container(render(values_from(**{"engine.kvCacheDtype": "bf16"}))))
    assert (build["QUANTIZATION"], build["KV_CACHE_DTYPE"]) == ("fp8", "bf16")


def test_model_download_uses_the_token_secret_and_the_cache() -> None:
    rendered = render(values_from(**{"model.download.tokenSecret.name": "hf-token"}))
    build = build_container(rendered)
    variables = env(build)
    assert variables["HF_TOKEN"] == {"secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN"}}
    assert variables["MODEL_SOURCE"] == "download"
    assert variables["MODEL_DIR"].startswith("/cache/hf/mistralai/Mistral-Nemo-Instruct-2407/")
    assert "model" not in {m["name"] for m in build["volumeMounts"]}
    (claim,) = rendered.of_kind("PersistentVolumeClaim")
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_existing_pvcs_are_mounted_and_none_is_created() -> None:
    rendered = render(MATRIX[[c.name for c in MATRIX].index("existing-pvcs")].values)
    assert rendered.of_kind("PersistentVolumeClaim") == []
    build = build_container(rendered)
    model_mount = next(m for m in build["volumeMounts"] if m["name"] == "model")
    assert model_mount == {
        "name": "model",
        "mountPath": "/model",
        "readOnly": True,
        "subPath": "Mistral-Nemo-Instruct-2407",
    }
    assert env(build)["MODEL_DIR"] == "/model"
    assert "HF_MODEL_NAME" not in env(build)
    for workload in rendered.workloads():
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in pod_spec(workload).get("volumes", [])
            if "persistentVolumeClaim" in v
        }
        assert claims.get("cache", "engine-cache") == "engine-cache"
        assert claims.get("model", "models") == "models"


# --- Autoscaling ----------------------------------------------------------------------------------------------


def test_autoscaling_scales_triton_on_the_recorded_queue_to_compute_ratio() -> None:
    rendered = render(
        values_from(
            **{
                "triton.autoscaling.enabled": True,
                "triton.autoscaling.minReplicas": 2,
                "triton.autoscaling.maxReplicas": 6,
                "triton.autoscaling.scaleDown.stabilizationWindowSeconds": 900,
            }
        )
    )
    (hpa,) = rendered.of_kind("HorizontalPodAutoscaler")
    deployment = rendered.component("Deployment", "triton")
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 900
    (metric,) = hpa["spec"]["metrics"]
    (rule,) = rendered.of_kind("PrometheusRule")[0]["spec"]["groups"][0]["rules"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == rule["record"]
    assert "rate(nv_inference_queue_duration_us{" in rule["expr"]
    assert "rate(nv_inference_compute_infer_duration_us{" in rule["expr"]
    assert 'model="tensorrt_llm"' in rule["expr"]
    assert f'service="{deployment["metadata"]["name"]}"' in rule["expr"], "the series the ServiceMonitor scrapes"
    assert "by (namespace, pod)" in rule["expr"], "the adapter maps these labels to pods"


def test_without_autoscaling_the_deployment_sets_replicas() -> None:
    rendered = render(values_from(**{"triton.replicaCount": 3}))
    assert rendered.component("Deployment", "triton")["spec"]["replicas"] == 3
    assert rendered.of_kind("HorizontalPodAutoscaler") == []
    assert rendered.of_kind("PrometheusRule") == []


# --- Image ------------------------------------------------------------------------------------------------------


def test_image_defaults_to_app_version_and_a_digest_wins_over_the_tag(case: Case, rendered: Rendered) -> None:
    images = {c["image"] for w in rendered.workloads() if not is_picker(w) for c in containers(pod_spec(w))}
    # llm-d-router's endpoint picker runs its own image, pinned to the release the chart is checked against.
    pickers = {c["image"] for w in rendered.workloads() if is_picker(w) for c in containers(pod_spec(w))}
    assert pickers == ({f"{PICKER_IMAGE}:v0.10.0"} if _inference_pool(case) else set())
    repository = _setting(case, "image.repository", "mistral-nemo-trtllm")
    digest = _setting(case, "image.digest", "")
    if digest:
        assert images == {f"{repository}@{digest}"}
    else:
        assert images == {f"{repository}:{chart().metadata['appVersion']}"}
    secrets = [{"name": name} for name in _setting(case, "image.pullSecrets", [])]
    for workload in rendered.workloads():
        assert pod_spec(workload).get("imagePullSecrets", []) == secrets


def test_notes_tell_how_to_reach_the_service() -> None:
    notes = render().notes
    assert "kubectl -n llm port-forward svc/nemo-mistral-nemo-gateway 8000:8000" in notes
    assert "nemo-mistral-nemo-triton.llm.svc:8001" in notes
    assert "kubectl -n llm get secret nemo-mistral-nemo-gateway-api-key" in notes
    assert "kubectl -n llm logs -f job/" in notes
