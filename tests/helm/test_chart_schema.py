"""values.schema.json and the chart's own checks refuse bad values with a message that names the key."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest

from tests.helm.chart_support import CHART_DIR, KUBE_VERSION, chart, render, values_from

# (case, values, the key path Helm's message must name ('' is the root), a phrase of the reason)
REJECTED: list[tuple[str, dict[str, Any], str, str]] = [
    ("wrong type", values_from(**{"triton.replicaCount": "two"}), "/triton/replicaCount", "want integer"),
    ("string for boolean", values_from(**{"gateway.enabled": "yes"}), "/gateway/enabled", "want boolean"),
    ("unknown top-level key", {"replicas": 2}, "", "'replicas' not allowed"),
    ("misspelt nested key", values_from(**{"engine.profle": "h100-fp8-tp1"}), "/engine", "'profle' not allowed"),
    (
        "misspelt key inside a toleration",
        values_from(**{"triton.tolerations": [{"key": "nvidia.com/gpu", "operater": "Exists"}]}),
        "/triton/tolerations/0",
        "'operater' not allowed",
    ),
    (
        "unknown build mode",
        values_from(**{"engineBuild.mode": "cronjob"}),
        "/engineBuild/mode",
        "'job', 'initContainer'",
    ),
    (
        "TP that does not divide 8 KV heads",
        values_from(**{"engine.tensorParallelSize": 3}),
        "/engine/tensorParallelSize",
        "0, 1, 2, 4, 8",
    ),
    ("model claim missing", values_from(**{"model.source": "pvc"}), "/model/pvc/existingClaim", "minLength"),
    ("privileged port for a non-root gateway", values_from(**{"gateway.port": 80}), "/gateway/port", "minimum"),
    ("digest that is a tag", values_from(**{"image.digest": "latest"}), "/image/digest", "does not match"),
    ("size that is not a quantity", values_from(**{"triton.shmSize": "lots"}), "/triton/shmSize", "does not match"),
    (
        "memory limit that is not a quantity",
        values_from(**{"triton.resources.limits": {"memory": "sixty gigs"}}),
        "/triton/resources/limits/memory",
        "does not match",
    ),
    (
        "namespace that is not a DNS label",
        values_from(**{"networkPolicy.allowedNamespaces": ["Shop_NS"]}),
        "/networkPolicy/allowedNamespaces/0",
        "does not match",
    ),
    (
        "revision that escapes the cache",
        values_from(**{"model.revision": "main/../../x"}),
        "/model/revision",
        "does not match",
    ),
    (
        "absolute tokenizer path",
        values_from(**{"model.tokenizerFile": "/etc/passwd"}),
        "/model/tokenizerFile",
        "does not match",
    ),
    (
        "GPU product that is no label value",
        values_from(**{"gpu.product": "NVIDIA H100"}),
        "/gpu/product",
        "does not match",
    ),
    (
        "admin key too short for nemo-serve's rule",
        values_from(**{"triton.adminKey.value": "short-key"}),
        "/triton/adminKey/value",
        "minLength: got 9, want 16",
    ),
    (
        "admin key with a character Triton's flag splits at",
        values_from(**{"triton.adminKey.value": "admin:key=0123456789"}),
        "/triton/adminKey/value",
        "does not match pattern '^[A-Za-z0-9._~-]+$'",
    ),
    (
        "admin key too long",
        values_from(**{"triton.adminKey.value": "k" * 257}),
        "/triton/adminKey/value",
        "maxLength: got 257, want 256",
    ),
    (
        "unknown admin key field",
        values_from(**{"triton.adminKey.key": "0123456789abcdef"}),
        "/triton/adminKey",
        "'key' not allowed",
    ),
    (
        "misspelt gateway network policy key",
        values_from(**{"networkPolicy.gateway.allowedNamespace": ["ingress-nginx"]}),
        "/networkPolicy/gateway",
        "'allowedNamespace' not allowed",
    ),
    (
        "pod label value with a space",
        values_from(**{"networkPolicy.allowedPodLabels": {"role": "llm client"}}),
        "/networkPolicy/allowedPodLabels/role",
        "does not match",
    ),
    (
        "egress rule with an unknown field",
        values_from(**{"networkPolicy.gateway.extraEgress": [{"too": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]}),
        "/networkPolicy/gateway/extraEgress/0",
        "'too' not allowed",
    ),
    (
        "unknown field in the GPU pods' security context",
        values_from(**{"triton.podSecurityContext": {"runAsUSer": 1000}}),
        "/triton/podSecurityContext",
        "'runAsUSer' not allowed",
    ),
    (
        "unknown gateway chat path",
        values_from(**{"gateway.chatPath": "python"}),
        "/gateway/chatPath",
        "value must be one of",
    ),
    (
        "unknown gRPC balancing policy",
        values_from(**{"gateway.tritonLoadBalancing": "least_request"}),
        "/gateway/tritonLoadBalancing",
        "value must be one of",
    ),
    (
        "Triton URL with a scheme the gateway does not dial",
        values_from(**{"gateway.tritonUrl": "http://triton:8001"}),
        "/gateway/tritonUrl",
        "does not match",
    ),
    (
        "negative in-flight bound",
        values_from(**{"gateway.admission.maxInFlight": -1}),
        "/gateway/admission/maxInFlight",
        "minimum",
    ),
    (
        "fractional queue bound",
        values_from(**{"gateway.admission.maxQueued": 1.5}),
        "/gateway/admission/maxQueued",
        "want integer",
    ),
    (
        "negative queue wait",
        values_from(**{"gateway.admission.maxQueueWaitSeconds": -0.5}),
        "/gateway/admission/maxQueueWaitSeconds",
        "minimum",
    ),
    (
        "misspelt admission key",
        values_from(**{"gateway.admission.maxInflight": 8}),
        "/gateway/admission",
        "'maxInflight' not allowed",
    ),
    (
        "gateway CPU target of 0",
        values_from(**{"gateway.autoscaling.targetCPUUtilizationPercentage": 0}),
        "/gateway/autoscaling/targetCPUUtilizationPercentage",
        "minimum",
    ),
    ("unknown routing mode", values_from(**{"routing.mode": "istio"}), "/routing/mode", "value must be one of"),
    (
        "pool port that is Triton's metrics port",
        values_from(**{"routing.inferencePool.port": 8002}),
        "/routing/inferencePool/port",
        "'not' failed",
    ),
    (
        "failure mode as the llm-d-router README spells it",
        values_from(**{"routing.inferencePool.failureMode": "FailClosed"}),
        "/routing/inferencePool/failureMode",
        "value must be one of",
    ),
    (
        "request timeout that is no Gateway API duration",
        values_from(**{"routing.inferencePool.httpRoute.requestTimeout": "5 minutes"}),
        "/routing/inferencePool/httpRoute/requestTimeout",
        "does not match",
    ),
    (
        "picker flag written with its dashes",
        values_from(**{"routing.inferencePool.picker.flags": {"--v": 3}}),
        "/routing/inferencePool/picker/flags",
        "'--v' not allowed",
    ),
    (
        "picker image tag with a space",
        values_from(**{"routing.inferencePool.picker.image.tag": "v0.10 .0"}),
        "/routing/inferencePool/picker/image/tag",
        "does not match",
    ),
    (
        "no picker",
        values_from(**{"routing.inferencePool.picker.replicas": 0}),
        "/routing/inferencePool/picker/replicas",
        "minimum",
    ),
    ("adapter claim missing", values_from(**{"lora.source": "pvc"}), "/lora/pvc/existingClaim", "minLength"),
    ("misspelt adapter source", values_from(**{"lora.source": "configmap"}), "/lora/source", "'configMap'"),
    ("adapter download of nothing", values_from(**{"lora.source": "download"}), "/lora/download/adapters", "minItems"),
    (
        "adapter name that is a path",
        values_from(**{"lora.source": "configMap", "lora.configMaps": [{"name": "a/b", "configMap": "lora-ab"}]}),
        "/lora/configMaps/0/name",
        "does not match",
    ),
    (
        "negative scale-down window",
        values_from(**{"triton.autoscaling.scaleDown.stabilizationWindowSeconds": -1}),
        "/triton/autoscaling/scaleDown/stabilizationWindowSeconds",
        "minimum",
    ),
]


@pytest.mark.parametrize(("values", "path", "reason"), [r[1:] for r in REJECTED], ids=[r[0] for r in REJECTED])
def test_schema_rejects_bad_values_naming_the_key(values: dict[str, Any], path: str, reason: str) -> None:
    with pytest.raises(helm.HelmValuesError) as raised:
        render(values)
    message = str(raised.value)
    assert f"at '{path}'" in message
    assert reason in message
    # `helm lint` reports the same as an error.
    report = helm.lint(CHART_DIR, values, kube_version=f"v{KUBE_VERSION}")
    assert any(f"at '{path}'" in error for error in report["errors"])


# Checks across keys that JSON schema cannot express: the templates fail with the reason.
FAILED: list[tuple[str, dict[str, Any], str]] = [
    (
        "TP contradicts the profile",
        values_from(**{"engine.profile": "h100-fp8-tp2-128k", "engine.tensorParallelSize": 4}),
        "engine.tensorParallelSize=4 contradicts engine.profile=h100-fp8-tp2-128k",
    ),
    ("profile names no TP", values_from(**{"engine.profile": "h100-fp8-custom"}), "set engine.tensorParallelSize"),
    ("profile names no precision", values_from(**{"engine.profile": "h100-tp1"}), "set engine.quantization"),
    (
        "min above max replicas",
        values_from(
            **{
                "triton.autoscaling.enabled": True,
                "triton.autoscaling.minReplicas": 5,
                "triton.autoscaling.maxReplicas": 2,
            }
        ),
        "minReplicas (5) exceeds maxReplicas (2)",
    ),
    (
        "gateway min above max replicas",
        values_from(
            **{
                "gateway.autoscaling.enabled": True,
                "gateway.autoscaling.minReplicas": 6,
                "gateway.autoscaling.maxReplicas": 3,
            }
        ),
        "gateway.autoscaling.minReplicas (6) exceeds maxReplicas (3)",
    ),
    (
        "inference pool without the gateway that serves it",
        values_from(
            **{
                "routing.mode": "inferencePool",
                "routing.inferencePool.httpRoute.gateway.name": "inference-gateway",
                "gateway.enabled": False,
            }
        ),
        "routing.mode=inferencePool needs gateway.enabled",
    ),
    (
        "inference pool with the gateway's Ingress",
        values_from(
            **{
                "routing.mode": "inferencePool",
                "routing.inferencePool.httpRoute.gateway.name": "inference-gateway",
                "gateway.ingress.enabled": True,
            }
        ),
        "gateway.ingress.enabled needs routing.mode=gateway",
    ),
    (
        "route to no gateway",
        values_from(**{"routing.mode": "inferencePool"}),
        "routing.inferencePool.httpRoute.gateway.name is required",
    ),
    (
        "picker config file that is not in its ConfigMap",
        values_from(
            **{
                "routing.mode": "inferencePool",
                "routing.inferencePool.httpRoute.gateway.name": "inference-gateway",
                "routing.inferencePool.picker.configFile": "custom.yaml",
            }
        ),
        "routing.inferencePool.picker.configFile=custom.yaml is neither default-plugins.yaml nor a key",
    ),
    (
        "an adapter listed twice",
        values_from(
            **{
                "lora.source": "configMap",
                "lora.configMaps": [{"name": "tokyo", "configMap": "a"}, {"name": "tokyo", "configMap": "b"}],
            }
        ),
        "the adapter name tokyo is listed twice",
    ),
    (
        "an adapter named as the base model",
        values_from(
            **{
                "model.servedModelName": "nemo",
                "lora.source": "download",
                "lora.download.adapters": [{"name": "nemo", "repo": "acme/nemo-lora"}],
            }
        ),
        "the adapter name nemo is model.servedModelName; the base model keeps its name",
    ),
    (
        "ingress without gateway",
        values_from(**{"gateway.enabled": False, "gateway.ingress.enabled": True}),
        "gateway.ingress.enabled needs gateway.enabled",
    ),
    (
        "admin key given twice",
        values_from(**{"triton.adminKey.existingSecret": "ops", "triton.adminKey.value": "0123456789abcdefXYZ"}),
        "triton.adminKey.value and triton.adminKey.existingSecret exclude each other",
    ),
    (
        "grace period too short to drain",
        values_from(**{"triton.terminationGracePeriodSeconds": 20, "triton.preStopSleepSeconds": 15}),
        "must exceed triton.preStopSleepSeconds + 10",
    ),
]


@pytest.mark.parametrize(("values", "reason"), [f[1:] for f in FAILED], ids=[f[0] for f in FAILED])
def test_inconsistent_values_fail_the_render_with_the_reason(values: dict[str, Any], reason: str) -> None:
    with pytest.raises(helm.HelmRenderError) as raised:
        render(values)
    assert reason in str(raised.value)


def test_chart_defaults_satisfy_the_schema() -> None:
    chart().validate_schema(chart().values)


def test_schema_allows_overriding_what_platform_teams_override() -> None:
    render(
        values_from(
            **{
                "image.repository": "registry.example.com:5000/ml/mistral-nemo-trtllm",
                "image.tag": "0.1.0-rc.1",
                "triton.resources.limits": {"cpu": "16", "memory": "96Gi"},
                "triton.nodeSelector": {"node.kubernetes.io/instance-type": "p5.48xlarge"},
                "triton.updateStrategy.maxSurge": "25%",
                "gateway.tolerations": [
                    {"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"}
                ],
                "cache.accessModes": ["ReadWriteOnce"],
                "engineBuild.ttlSecondsAfterFinished": 3600,
            }
        )
    )
