"""How requests reach the Triton pods: per-request balancing by default, load shedding, scaling the gateway.

The gateway Deployment's default Triton target is the headless Service (`dns:///<fqdn>:8001`, one address per
ready Triton pod) with a balancing policy, never the ClusterIP Service, which kube-proxy balances per connection:
a gateway pod's one HTTP/2 connection would carry all its requests to one Triton pod.
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from tests.helm.chart_support import (
    KUBE_VERSION,
    NAMESPACE,
    Rendered,
    container,
    matches,
    parse_gateway_args,
    pod_labels,
    pod_spec,
    render,
    values_from,
)

HEADLESS = "nemo-mistral-nemo-triton-headless"


def _gateway_args(rendered: Rendered) -> list[str]:
    args: list[str] = container(pod_spec(rendered.component("Deployment", "gateway")), "gateway")["args"]
    return args


def _flag(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


# --- Per-request balancing over every ready Triton pod ------------------------------------------------------


def test_gateway_targets_every_ready_triton_pod_through_the_headless_service_round_robin() -> None:
    rendered = render()
    args = _gateway_args(rendered)
    assert _flag(args, "--triton-url") == f"dns:///{HEADLESS}.{NAMESPACE}.svc.cluster.local:8001"
    assert _flag(args, "--triton-lb-policy") == "round_robin"
    headless = rendered.named("Service", HEADLESS)
    assert headless["spec"]["clusterIP"] == "None"
    # Only ready pods are published: a loading or draining Triton pod gets no requests.
    assert headless["spec"]["publishNotReadyAddresses"] is False
    triton = rendered.component("Deployment", "triton")
    assert matches(headless["spec"]["selector"], pod_labels(triton))
    (grpc,) = [p for p in headless["spec"]["ports"] if p["port"] == 8001]
    assert grpc["targetPort"] == "grpc"
    assert {"name": "grpc", "containerPort": 8001, "protocol": "TCP"} in container(pod_spec(triton), "triton")["ports"]
    # The ClusterIP Service stays for direct clients and metrics, but the gateway does not use it.
    assert not any("nemo-mistral-nemo-triton:" in a or "nemo-mistral-nemo-triton." in a for a in args)
    parsed = parse_gateway_args(args)
    assert parsed["--triton-url"] == f"dns:///{HEADLESS}.{NAMESPACE}.svc.cluster.local:8001"
    assert parsed["--triton-lb-policy"] == "round_robin"


@pytest.mark.parametrize("policy", ["pick_first", "least_requests"])
def test_balancing_policy_and_cluster_domain_come_from_the_values(policy: str) -> None:
    rendered = render(values_from(**{"gateway.tritonLoadBalancing": policy, "clusterDomain": "k8s.example"}))
    args = _gateway_args(rendered)
    assert _flag(args, "--triton-lb-policy") == policy
    assert _flag(args, "--triton-url") == f"dns:///{HEADLESS}.{NAMESPACE}.svc.k8s.example:8001"
    assert parse_gateway_args(args)["--triton-lb-policy"] == policy


def test_an_explicit_triton_url_is_used_as_given_with_the_policy() -> None:
    for url in ("triton.other.svc:8001", "dns:///triton-headless.other.svc:8001"):
        args = _gateway_args(render(values_from(**{"gateway.tritonUrl": url})))
        assert _flag(args, "--triton-url") == url
        assert _flag(args, "--triton-lb-policy") == "round_robin"


@pytest.mark.parametrize(
    ("values", "rendered_headless"),
    [
        ({}, True),
        # The gateway's default target needs it, whatever triton.service.headless says.
        ({"triton.service.headless": False}, True),
        # Nothing of this chart needs it: only when asked for.
        ({"triton.service.headless": False, "gateway.tritonUrl": "triton.other.svc:8001"}, False),
        ({"triton.service.headless": False, "gateway.enabled": False}, False),
        ({"gateway.enabled": False}, True),
    ],
    ids=["defaults", "gateway-needs-it", "explicit-url", "no-gateway", "asked-for"],
)
def test_the_headless_service_is_rendered_whenever_the_gateway_needs_it(
    values: dict[str, Any], rendered_headless: bool
) -> None:
    names = [s["metadata"]["name"] for s in render(values_from(**values)).of_kind("Service")]
    assert (HEADLESS in names) is rendered_headless


# --- Load shedding ------------------------------------------------------------------------------------------

ADMISSION_FLAGS = ("--max-in-flight", "--max-queued", "--max-queue-wait-s")


def test_no_admission_flag_is_passed_by_default_so_a_gateway_without_them_starts() -> None:
    args = _gateway_args(render())
    assert not set(ADMISSION_FLAGS) & set(args)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"maxInFlight": 64}, ["--max-in-flight", "64"]),
        ({"maxQueued": 128}, ["--max-queued", "128"]),
        ({"maxQueueWaitSeconds": 30}, ["--max-queue-wait-s", "30"]),
        ({"maxQueueWaitSeconds": 2.5}, ["--max-queue-wait-s", "2.5"]),
        (
            {"maxInFlight": 64, "maxQueued": 256, "maxQueueWaitSeconds": 5},
            ["--max-in-flight", "64", "--max-queued", "256", "--max-queue-wait-s", "5"],
        ),
        ({"maxInFlight": 0, "maxQueued": 0, "maxQueueWaitSeconds": 0}, []),
    ],
    ids=["in-flight", "queued", "wait", "wait-fraction", "all", "zeros"],
)
def test_admission_values_render_exactly_their_flags(values: dict[str, Any], expected: list[str]) -> None:
    args = _gateway_args(render(values_from(**{f"gateway.admission.{k}": v for k, v in values.items()})))
    rendered = [a for i, a in enumerate(args) if a in ADMISSION_FLAGS or (i and args[i - 1] in ADMISSION_FLAGS)]
    assert rendered == expected


def test_admission_flags_are_taken_by_the_gateway_parser() -> None:
    values = values_from(
        **{
            "gateway.admission.maxInFlight": 64,
            "gateway.admission.maxQueued": 256,
            "gateway.admission.maxQueueWaitSeconds": 2.5,
        }
    )
    parsed = parse_gateway_args(_gateway_args(render(values)))
    assert [parsed[flag] for flag in ADMISSION_FLAGS] == [64, 256, 2.5]


# --- Scaling the gateway ------------------------------------------------------------------------------------


def test_gateway_autoscaling_is_off_by_default_and_the_deployment_sets_replicas() -> None:
    rendered = render()
    assert rendered.of_kind("HorizontalPodAutoscaler") == []
    assert rendered.component("Deployment", "gateway")["spec"]["replicas"] == 2


def test_gateway_autoscaling_scales_the_gateway_on_cpu_next_to_tritons_hpa() -> None:
    rendered = render(
        values_from(
            **{
                "gateway.autoscaling.enabled": True,
                "gateway.autoscaling.minReplicas": 3,
                "gateway.autoscaling.maxReplicas": 10,
                "gateway.autoscaling.targetCPUUtilizationPercentage": 60,
                "triton.autoscaling.enabled": True,
            }
        )
    )
    hpas = {
        h["metadata"]["labels"]["app.kubernetes.io/component"]: h for h in rendered.of_kind("HorizontalPodAutoscaler")
    }
    assert set(hpas) == {"gateway", "triton"}, "the Triton HPA stays"
    gateway = rendered.component("Deployment", "gateway")
    assert "replicas" not in gateway["spec"], "the HPA owns the replica count"
    hpa = hpas["gateway"]
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": gateway["metadata"]["name"],
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 10)
    assert hpa["spec"]["metrics"] == [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}
    ]
    # Utilisation is a share of the CPU request: the gateway container must have one.
    assert container(pod_spec(gateway), "gateway")["resources"]["requests"]["cpu"]
    assert (
        hpas["triton"]["spec"]["scaleTargetRef"]["name"]
        == rendered.component("Deployment", "triton")["metadata"]["name"]
    )
    kubernetes_validate.validate(hpa, KUBE_VERSION, strict=True)
