"""The chart rendered by real Helm (the v4 Go SDK), linted, and validated against Kubernetes 1.33 schemas.

Every value set of the matrix is rendered offline, the way `helm template` / `helm install` would, with
values.schema.json enforced. Core objects are validated with kubernetes-validate in strict mode (unknown
fields are errors). ServiceMonitor and PrometheusRule are Prometheus Operator custom resources with no
schema in the Kubernetes set: they are checked structurally here.
"""

from __future__ import annotations

import re
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest

from tests.helm.chart_support import (
    CHART_DIR,
    CUSTOM_KINDS,
    KUBE_VERSION,
    MATRIX,
    NAMESPACE,
    REPO_ROOT,
    Case,
    Rendered,
    build_container,
    chart,
    container,
    containers,
    env,
    matches,
    pod_labels,
    pod_spec,
    render,
    values_from,
)

GPU = "nvidia.com/gpu"


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


def test_tensor_parallel_runs_one_tritonserver_per_rank_under_mpirun(case: Case, rendered: Rendered) -> None:
    args = container(pod_spec(rendered.component("Deployment", "triton")), "triton")["args"]
    if case.tp == 1:
        assert args[0] == "tritonserver"
        assert "mpirun" not in args
        ranks = [args]
    else:
        assert args[0] == "mpirun"
        first_rank = args.index("-n")
        ranks, current = [], []
        for arg in args[first_rank:]:
            if arg == ":":
                ranks.append(current)
                current = []
            else:
                current.append(arg)
        ranks.append(current)
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


def test_gateway_probes_hit_its_health_endpoints(case: Case, rendered: Rendered) -> None:
    if not _setting(case, "gateway.enabled", True):
        assert [d["metadata"]["name"] for d in rendered.of_kind("Deployment")] == ["nemo-mistral-nemo-triton"]
        return
    gateway = container(pod_spec(rendered.component("Deployment", "gateway")), "gateway")
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/v1/health/ready"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/v1/health/live"
    port = _port_number(gateway, gateway["readinessProbe"]["httpGet"]["port"])
    assert gateway["args"][gateway["args"].index("--port") + 1] == str(port)


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
        assert spec["automountServiceAccountToken"] is False
        for cont in containers(spec):
            context = cont["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, cont["name"]
            assert context["privileged"] is False, cont["name"]
            assert context["capabilities"]["drop"] == ["ALL"], cont["name"]
    for account in rendered.of_kind("ServiceAccount"):
        assert account["automountServiceAccountToken"] is False


def test_gateway_root_filesystem_is_read_only_with_a_writable_tmp() -> None:
    spec = pod_spec(render().component("Deployment", "gateway"))
    gateway = container(spec, "gateway")
    assert gateway["securityContext"]["readOnlyRootFilesystem"] is True
    assert "/tmp" in {m["mountPath"] for m in gateway["volumeMounts"]}


def test_the_pods_run_as_the_user_the_dockerfile_creates() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    uid = int(re.search(r"^ARG APP_UID=(\d+)$", dockerfile, re.M).group(1))  # type: ignore[union-attr]
    assert re.search(r"^USER \$\{APP_UID\}", dockerfile, re.M)
    assert re.search(r"^ARG BASE_IMAGE=nvcr\.io/nvidia/tritonserver:26\.07-trtllm-python-py3$", dockerfile, re.M)
    for workload in render().workloads():
        assert pod_spec(workload)["securityContext"]["runAsUser"] == uid


def test_network_policy_admits_only_the_gateway_and_listed_namespaces(case: Case, rendered: Rendered) -> None:
    policies = rendered.of_kind("NetworkPolicy")
    if not _setting(case, "networkPolicy.enabled", True):
        assert policies == []
        return
    (policy,) = policies
    assert matches(policy["spec"]["podSelector"]["matchLabels"], pod_labels(rendered.component("Deployment", "triton")))
    inference = [r for r in policy["spec"]["ingress"] if {p["port"] for p in r["ports"]} == {"http", "grpc"}]
    peers = inference[0]["from"] if inference else []
    pod_peers = [p["podSelector"]["matchLabels"] for p in peers if "podSelector" in p]
    if _setting(case, "gateway.enabled", True):
        assert pod_peers == [pod_labels(rendered.component("Deployment", "gateway"))]
    else:
        assert pod_peers == []
    namespaces = [
        expr["values"] for p in peers if "namespaceSelector" in p for expr in p["namespaceSelector"]["matchExpressions"]
    ]
    allowed = _setting(case, "networkPolicy.allowedNamespaces", [])
    assert namespaces == ([allowed] if allowed else [])
    assert all(p != {} and p.get("namespaceSelector") != {} for p in peers), "no peer may admit everything"


def test_gateway_api_key_comes_from_a_secret(case: Case, rendered: Rendered) -> None:
    if not _setting(case, "gateway.enabled", True):
        assert rendered.of_kind("Secret") == []
        return
    gateway = container(pod_spec(rendered.component("Deployment", "gateway")), "gateway")
    key = env(gateway).get("NEMO_GATEWAY_API_KEY")
    if not _setting(case, "gateway.apiKey.enabled", True):
        assert key is None
        return
    secrets = {s["metadata"]["name"]: s for s in rendered.of_kind("Secret")}
    existing = _setting(case, "gateway.apiKey.existingSecret", "")
    if existing:
        assert key["secretKeyRef"]["name"] == existing
        assert secrets == {}, "an existing Secret must not be shadowed by a generated one"
    else:
        data = secrets[key["secretKeyRef"]["name"]]["data"][key["secretKeyRef"]["key"]]
        assert len(data) >= 48


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
    images = {c["image"] for w in rendered.workloads() for c in containers(pod_spec(w))}
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
