"""Rendering the chart with the Helm v4 Go SDK (helm-python-sdk) and looking things up in the result."""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "helm" / "mistral-nemo"
KUBE_VERSION = "1.33.0"
RELEASE = "nemo"
NAMESPACE = "llm"

# Custom resources of the Prometheus Operator: no schema in the Kubernetes core set, checked structurally.
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
# Gateway API and Inference Extension custom resources (routing.mode=inferencePool): no schema in the Kubernetes
# set either; validated against the CRD schemas stored from upstream (test_chart_inference_pool.py).
GATEWAY_API_KINDS = {
    ("inference.networking.k8s.io/v1", "InferencePool"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
}
WORKLOAD_KINDS = ("Deployment", "Job")
# The one component that talks to the Kubernetes API: llm-d-router's endpoint picker watches the InferencePool and
# its pods (routing.mode=inferencePool), with an account and a read-only Role of its own. Every other pod runs
# without an API token.
PICKER = "endpoint-picker"
PICKER_IMAGE = "ghcr.io/llm-d/llm-d-router-endpoint-picker"
GPU = "nvidia.com/gpu"
# The Triton container's args start with the launcher that puts the admin key into the restriction flags.
TRITON_LAUNCHER = ["bash", "/opt/nemo/scripts/triton-start.sh"]
ADMIN_KEY_PLACEHOLDER = "${NEMO_TRITON_ADMIN_KEY}"
# Where Triton and the gateway mount the adapters (lora.source): the lora_dir the build names to the repository.
LORA_MOUNT = "/opt/nemo/lora"


def with_values(base: dict[str, Any], **dotted: Any) -> dict[str, Any]:
    """A deep copy of `base` with dotted keys set: with_values({}, **{"engine.profile": "x"})."""
    merged = copy.deepcopy(base)
    for path, value in dotted.items():
        node = merged
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return merged


def values_from(**dotted: Any) -> dict[str, Any]:
    """Nested values from dotted keys: values_from(**{"engine.profile": "x"}) == {"engine": {"profile": "x"}}."""
    return with_values({}, **dotted)


@dataclass(frozen=True)
class Case:
    """A value set of the render matrix and what it implies."""

    name: str
    values: dict[str, Any] = field(default_factory=dict)
    tp: int = 1

    def __str__(self) -> str:
        return self.name


MATRIX: list[Case] = [
    Case("defaults"),
    Case("tp2", values_from(**{"engine.profile": "h100-fp8-tp2-128k"}), tp=2),
    Case(
        "a100-bf16-tp2",
        values_from(**{"gpu.product": "NVIDIA-A100-SXM4-80GB", "engine.profile": "a100-bf16-tp2"}),
        tp=2,
    ),
    Case("tp4-explicit", values_from(**{"engine.profile": "h100-fp8-custom", "engine.tensorParallelSize": 4}), tp=4),
    Case("gateway-off", values_from(**{"gateway.enabled": False})),
    Case("pytorch", values_from(**{"engine.runtime": "pytorch", "engine.profile": "h100-fp8-tp1-pytorch"})),
    Case("build-init-container", values_from(**{"engineBuild.mode": "initContainer"})),
    Case(
        "autoscaling",
        values_from(
            **{
                "triton.autoscaling.enabled": True,
                "triton.autoscaling.prometheusRule.labels": {"release": "kube-prometheus-stack"},
                "metrics.serviceMonitor.enabled": True,
                "metrics.serviceMonitor.labels": {"release": "kube-prometheus-stack"},
            }
        ),
    ),
    Case(
        "ingress",
        values_from(
            **{
                "gateway.ingress.enabled": True,
                "gateway.ingress.className": "nginx",
                "gateway.ingress.annotations": {"nginx.ingress.kubernetes.io/proxy-buffering": "off"},
                "gateway.ingress.tls": [{"secretName": "nemo-tls", "hosts": ["mistral-nemo.example.com"]}],
            }
        ),
    ),
    Case(
        "existing-pvcs",
        values_from(
            **{
                "model.source": "pvc",
                "model.pvc.existingClaim": "models",
                "model.pvc.subPath": "Mistral-Nemo-Instruct-2407",
                "cache.existingClaim": "engine-cache",
                "gateway.apiKey.existingSecret": "gateway-key",
                "triton.adminKey.existingSecret": "triton-admin",
                "triton.adminKey.secretKey": "key",
            }
        ),
    ),
    Case(
        "clients-by-label",
        values_from(
            **{
                "networkPolicy.allowedPodLabels": {"role": "llm-client"},
                "networkPolicy.metricsNamespaces": ["monitoring"],
                "networkPolicy.gateway.allowedPodLabels": {"role": "web"},
                "networkPolicy.gateway.restrictEgress": False,
                "triton.podSecurityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000},
            }
        ),
    ),
    Case(
        "everything",
        values_from(
            **{
                "image.repository": "registry.example.com/ml/mistral-nemo-trtllm",
                "image.digest": "sha256:" + "ab" * 32,
                "image.pullSecrets": ["ngc", "registry"],
                "engine.profile": "h100-fp8-tp2-128k",
                "engine.checkpointArgs": ["--calib-data", "/cache/calib"],
                "engineBuild.mode": "initContainer",
                "model.download.tokenSecret.name": "hf-token",
                "model.download.endpoint": "https://hf-mirror.example.com",
                "triton.autoscaling.enabled": True,
                "triton.extraArgs": ["--log-format=ISO8601"],
                "triton.extraEnv": [{"name": "NCCL_DEBUG", "value": "WARN"}],
                "triton.podAnnotations": {"example.com/team": "ml"},
                "triton.affinity": {
                    "podAntiAffinity": {
                        "preferredDuringSchedulingIgnoredDuringExecution": [
                            {
                                "weight": 100,
                                "podAffinityTerm": {
                                    "topologyKey": "kubernetes.io/hostname",
                                    "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "triton"}},
                                },
                            }
                        ]
                    }
                },
                "metrics.serviceMonitor.enabled": True,
                "gateway.ingress.enabled": True,
                "networkPolicy.allowedNamespaces": ["shop", "search"],
                "networkPolicy.metricsNamespaces": ["monitoring"],
                "networkPolicy.extraFrom": [{"ipBlock": {"cidr": "10.0.0.0/8"}}],
                "networkPolicy.allowedPodLabels": {"app.kubernetes.io/part-of": "shop"},
                "networkPolicy.metricsPodLabels": {"app.kubernetes.io/name": "prometheus"},
                "networkPolicy.gateway.allowedNamespaces": ["ingress-nginx", "monitoring"],
                "networkPolicy.gateway.extraFrom": [{"ipBlock": {"cidr": "192.168.0.0/16"}}],
                "networkPolicy.gateway.extraEgress": [
                    {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"port": 4317, "protocol": "TCP"}]}
                ],
                "triton.adminKey.value": "everything-admin-key-0123456789",
                "commonLabels": {"cost-center": "ml"},
            }
        ),
        tp=2,
    ),
    Case(
        "gateway-scaling",
        values_from(
            **{
                "gateway.autoscaling.enabled": True,
                "gateway.autoscaling.maxReplicas": 12,
                "gateway.tritonLoadBalancing": "pick_first",
                "gateway.admission.maxInFlight": 64,
                "gateway.admission.maxQueued": 256,
                "gateway.admission.maxQueueWaitSeconds": 2.5,
                "clusterDomain": "cluster.example",
            }
        ),
    ),
    Case(
        "inference-pool",
        values_from(
            **{"routing.mode": "inferencePool", "routing.inferencePool.httpRoute.gateway.name": "inference-gateway"}
        ),
    ),
    Case(
        "inference-pool-ha",
        values_from(
            **{
                "routing.mode": "inferencePool",
                "routing.inferencePool.port": 9000,
                "routing.inferencePool.failureMode": "FailClose",
                "routing.inferencePool.picker.replicas": 2,
                "routing.inferencePool.picker.flags": {"v": 3, "metrics-endpoint-auth": False},
                "routing.inferencePool.httpRoute.gateway": {
                    "name": "inference-gateway",
                    "namespace": "gateway-system",
                    "sectionName": "https",
                },
                "routing.inferencePool.httpRoute.hostnames": ["llm.example.com"],
                "routing.inferencePool.httpRoute.requestTimeout": "1h",
                "networkPolicy.gateway.allowedNamespaces": ["gateway-system"],
                "networkPolicy.metricsNamespaces": ["monitoring"],
                "gateway.admission.maxInFlight": 32,
                "engine.profile": "h100-fp8-tp2-128k",
                "triton.autoscaling.enabled": True,
            }
        ),
        tp=2,
    ),
    # LoRA adapters from each source (tests/helm/test_chart_lora.py checks what they mount where).
    Case("lora-pvc", values_from(**{"lora.source": "pvc", "lora.pvc.existingClaim": "adapters", "lora.maxRank": 16})),
    Case(
        "lora-configmap",
        values_from(
            **{
                "lora.source": "configMap",
                "lora.configMaps": [
                    {"name": "tokyo", "configMap": "lora-tokyo"},
                    {"name": "paris", "configMap": "lora-paris"},
                ],
            }
        ),
    ),
    Case(
        "lora-download",
        values_from(
            **{
                "lora.source": "download",
                "lora.download.adapters": [{"name": "tokyo", "repo": "acme/nemo-tokyo-lora", "revision": "v1"}],
                "model.download.tokenSecret.name": "hf-token",
                "routing.mode": "inferencePool",
                "routing.inferencePool.httpRoute.gateway.name": "inference-gateway",
            }
        ),
    ),
    Case(
        "minimal",
        values_from(
            **{
                "networkPolicy.enabled": False,
                "triton.pdb.enabled": False,
                "gateway.pdb.enabled": False,
                "triton.service.headless": False,
                "serviceAccount.create": False,
                "gateway.apiKey.enabled": False,
                "cache.keepOnUninstall": False,
            }
        ),
    ),
]


@functools.cache
def chart() -> helm.Chart:
    return helm.Chart.load(CHART_DIR)


class Rendered:
    """The objects one `helm template` produces, and NOTES.txt."""

    def __init__(self, manifests: dict[str, str]) -> None:
        self.notes = ""
        self.objects: list[dict[str, Any]] = []
        for path, text in sorted(manifests.items()):
            if path.endswith("NOTES.txt"):
                self.notes = text
                continue
            self.objects += [doc for doc in yaml.safe_load_all(text) if doc]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def component(self, kind: str, component: str) -> dict[str, Any]:
        """The single object of a kind whose component label is `component`."""
        found = [
            obj
            for obj in self.of_kind(kind)
            if obj["metadata"]["labels"].get("app.kubernetes.io/component") == component
        ]
        assert len(found) == 1, f"expected one {kind} for {component}, found {len(found)}"
        return found[0]

    def named(self, kind: str, name: str) -> dict[str, Any]:
        found = [obj for obj in self.of_kind(kind) if obj["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} named {name}, found {len(found)}"
        return found[0]

    def workloads(self) -> Iterator[dict[str, Any]]:
        for obj in self.objects:
            if obj["kind"] in WORKLOAD_KINDS:
                yield obj


@functools.cache
def _render_json(values_json: str, release: str, namespace: str) -> Rendered:
    return Rendered(chart().render(json.loads(values_json), name=release, namespace=namespace))


def render(values: dict[str, Any] | None = None, release: str = RELEASE, namespace: str = NAMESPACE) -> Rendered:
    """Render offline (no cluster) with the chart's schema enforced, as `helm install` would."""
    return _render_json(json.dumps(values or {}, sort_keys=True), release, namespace)


def component_of(obj: dict[str, Any]) -> str:
    return str(obj["metadata"]["labels"]["app.kubernetes.io/component"])


def is_picker(workload: dict[str, Any]) -> bool:
    return component_of(workload) == PICKER


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Init containers and containers of a pod spec."""
    return [*spec.get("initContainers", []), *spec["containers"]]


def container(spec: dict[str, Any], name: str) -> dict[str, Any]:
    found = [c for c in containers(spec) if c["name"] == name]
    assert len(found) == 1, f"expected one container {name}, found {[c['name'] for c in containers(spec)]}"
    return found[0]


def env(cont: dict[str, Any]) -> dict[str, Any]:
    """A container's environment: name -> value (or the valueFrom mapping)."""
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in cont.get("env", [])}


def matches(match_labels: dict[str, str], labels: dict[str, str]) -> bool:
    """Whether a matchLabels selector selects objects with these labels."""
    return bool(match_labels) and all(labels.get(key) == value for key, value in match_labels.items())


def uses_gpu(spec: dict[str, Any]) -> bool:
    """Whether any container of a pod spec asks for a GPU."""
    return any(GPU in c.get("resources", {}).get("limits", {}) for c in containers(spec))


def triton_command(cont: dict[str, Any]) -> list[str]:
    """The Triton container's command as the launcher execs it (`tritonserver ...` or `mpirun ...`)."""
    args: list[str] = cont["args"]
    assert args[: len(TRITON_LAUNCHER)] == TRITON_LAUNCHER, args[:3]
    return args[len(TRITON_LAUNCHER) :]


# Pod Security Standards (Kubernetes 1.33), https://kubernetes.io/docs/concepts/security/pod-security-standards/
_RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
_SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
_SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def restricted_profile_violations(spec: dict[str, Any]) -> list[str]:
    """What in a pod spec breaks the Pod Security Standard "restricted" (baseline included): [] when it meets it.

    Checks the pod and every (init) container: no host namespaces, ports or paths; only the restricted volume
    types; not privileged; no privilege escalation; non-root (runAsNonRoot true on the pod or on every
    container, no uid 0 anywhere); seccomp RuntimeDefault or Localhost (on the pod or on every container, never
    Unconfined); all capabilities dropped and none added but NET_BIND_SERVICE; default /proc mount; safe
    sysctls; no unconfined AppArmor; no custom SELinux user, role or type.
    """
    problems: list[str] = []
    pod = spec.get("securityContext", {})
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(host):
            problems.append(f"pod: {host}")
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= _RESTRICTED_VOLUMES:
            problems.append(f"volume {volume['name']}: {sorted(kinds - _RESTRICTED_VOLUMES)}")
    for sysctl in pod.get("sysctls", []):
        if sysctl["name"] not in _SAFE_SYSCTLS:
            problems.append(f"pod: sysctl {sysctl['name']}")

    def common(where: str, context: dict[str, Any]) -> None:
        if context.get("runAsUser") == 0:
            problems.append(f"{where}: runAsUser 0")
        if context.get("runAsNonRoot") is False:
            problems.append(f"{where}: runAsNonRoot false")
        if context.get("seccompProfile", {}).get("type") == "Unconfined":
            problems.append(f"{where}: seccomp Unconfined")
        if context.get("appArmorProfile", {}).get("type") == "Unconfined":
            problems.append(f"{where}: AppArmor Unconfined")
        selinux = context.get("seLinuxOptions", {})
        if selinux.get("type", "") not in _SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
            problems.append(f"{where}: seLinuxOptions {selinux}")
        if context.get("windowsOptions", {}).get("hostProcess"):
            problems.append(f"{where}: hostProcess")

    common("pod", pod)
    for cont in containers(spec):
        where = f"container {cont['name']}"
        context = cont.get("securityContext", {})
        common(where, context)
        if context.get("privileged"):
            problems.append(f"{where}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation is not false")
        if context.get("runAsNonRoot", pod.get("runAsNonRoot")) is not True:
            problems.append(f"{where}: runAsNonRoot is not true")
        if context.get("seccompProfile", pod.get("seccompProfile", {})).get("type") not in (
            "RuntimeDefault",
            "Localhost",
        ):
            problems.append(f"{where}: seccomp is not RuntimeDefault or Localhost")
        capabilities = context.get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []):
            problems.append(f"{where}: capabilities do not drop ALL")
        if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{where}: capabilities add {capabilities['add']}")
        if context.get("procMount", "Default") != "Default":
            problems.append(f"{where}: procMount {context['procMount']}")
        for port in cont.get("ports", []):
            if port.get("hostPort"):
                problems.append(f"{where}: hostPort {port['hostPort']}")
    return problems


def build_container(rendered: Rendered) -> dict[str, Any]:
    """The engine-build container, wherever the build mode put it."""
    jobs = rendered.of_kind("Job")
    if jobs:
        return container(pod_spec(jobs[0]), "build-engine")
    return container(pod_spec(rendered.component("Deployment", "triton")), "build-engine")


def parse_gateway_args(args: list[str]) -> dict[str, Any]:
    """A rendered gateway container's args (`nemo-gateway ...`) through the gateway's own parser: flag -> value."""
    from nemo_gateway.cli import build_parser

    assert args[0] == "nemo-gateway", args[:1]
    parser = build_parser()
    flags = parser._option_string_actions
    parsed = vars(parser.parse_args(args[1:]))
    return {
        flag: parsed[action.dest] for flag, action in flags.items() if flag.startswith("--") and action.dest in parsed
    }
