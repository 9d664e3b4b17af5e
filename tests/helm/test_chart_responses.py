"""The gateway's response store in the chart (gateway.responseStore): none by default, the SQLite file on a volume
of the one gateway pod (an emptyDir or a claim), or a shared PostgreSQL server with its password from a Secret; the
rendered flags read by the gateway's own parser, the objects strictly valid for Kubernetes."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest

from nemo_gateway.cli import build_parser, settings_from
from tests.helm.chart_support import (
    CHART_DIR,
    KUBE_VERSION,
    Rendered,
    container,
    env,
    parse_gateway_args,
    pod_spec,
    render,
    values_from,
)

STORE_DIR = "/var/lib/nemo-gateway"
POSTGRES = "postgresql://nemo@responses-db.llm.svc:5432/responses"
ONE_POD_WITH_SQLITE = {"gateway.replicaCount": 1, "gateway.responseStore.type": "sqlite"}
ONE_POD_ON_A_CLAIM = {**ONE_POD_WITH_SQLITE, "gateway.responseStore.sqlite.persistence": True}


def gateway_pod(rendered: Rendered) -> dict[str, Any]:
    return pod_spec(rendered.component("Deployment", "gateway"))


def store_flags(rendered: Rendered) -> tuple[str, float]:
    args = container(gateway_pod(rendered), "gateway")["args"]
    parsed = parse_gateway_args(args)
    return parsed["--response-store"], parsed["--response-retention"]


def test_by_default_nothing_is_stored() -> None:
    rendered = render()
    args = container(gateway_pod(rendered), "gateway")["args"]
    parser = build_parser()
    assert settings_from(parser, parser.parse_args(args[1:])).response_store is None
    assert "responses" not in {volume["name"] for volume in gateway_pod(rendered)["volumes"]}
    assert rendered.of_kind("PersistentVolumeClaim") == [
        rendered.named("PersistentVolumeClaim", "nemo-mistral-nemo-cache")
    ]


def test_one_gateway_pod_keeps_a_sqlite_file_on_its_own_volume() -> None:
    rendered = render(values_from(**ONE_POD_WITH_SQLITE))
    assert store_flags(rendered) == (f"{STORE_DIR}/responses.sqlite3", 30 * 24 * 3600)
    pod = gateway_pod(rendered)
    mounts = {mount["mountPath"]: mount["name"] for mount in container(pod, "gateway")["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes[mounts[STORE_DIR]]["emptyDir"] == {"sizeLimit": "1Gi"}


def test_one_gateway_pod_can_keep_its_file_on_a_claim() -> None:
    rendered = render(values_from(**ONE_POD_ON_A_CLAIM, **{"gateway.responseStore.sqlite.storageClassName": "fast"}))
    claim = rendered.named("PersistentVolumeClaim", "nemo-mistral-nemo-gateway-responses")
    assert claim["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": "fast",
        "resources": {"requests": {"storage": "1Gi"}},
    }
    volumes = {volume["name"]: volume for volume in gateway_pod(rendered)["volumes"]}
    assert volumes["responses"] == {
        "name": "responses",
        "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]},
    }

    existing = render(values_from(**ONE_POD_ON_A_CLAIM, **{"gateway.responseStore.sqlite.existingClaim": "mine"}))
    volumes = {volume["name"]: volume for volume in gateway_pod(existing)["volumes"]}
    assert volumes["responses"]["persistentVolumeClaim"] == {"claimName": "mine"}
    assert [c["metadata"]["name"] for c in existing.of_kind("PersistentVolumeClaim")] == ["nemo-mistral-nemo-cache"]


@pytest.mark.parametrize(
    "pods",
    [
        {"gateway.replicaCount": 2},
        {"gateway.replicaCount": 1, "gateway.autoscaling.enabled": True},
        {"gateway.replicaCount": 2, "gateway.responseStore.sqlite.persistence": True},
        {
            "routing.mode": "inferencePool",
            "routing.inferencePool.httpRoute.gateway.name": "inference-gateway",
            "triton.replicaCount": 2,
        },
    ],
    ids=["replicas", "autoscaling", "claim", "inference-pool"],
)
def test_sqlite_for_several_gateway_pods_fails_the_render(pods: dict[str, Any]) -> None:
    # Each pod would keep a file of its own and find only what it stored: refused rather than half-working.
    with pytest.raises(helm.HelmRenderError, match="each would find only the responses it stored"):
        render(values_from(**{"gateway.responseStore.type": "sqlite", **pods}))


def test_replicas_share_a_postgres_server_with_the_password_from_a_secret() -> None:
    rendered = render(
        values_from(
            **{
                "gateway.responseStore.type": "postgres",
                "gateway.responseStore.postgres.url": POSTGRES,
                "gateway.responseStore.postgres.passwordSecret": "responses-db",
                "gateway.responseStore.retentionSeconds": 86400,
            }
        )
    )
    assert store_flags(rendered) == (POSTGRES, 86400)
    gateway = container(gateway_pod(rendered), "gateway")
    assert env(gateway)["PGPASSWORD"] == {"secretKeyRef": {"name": "responses-db", "key": "password"}}
    assert [mount["mountPath"] for mount in gateway["volumeMounts"]] == ["/tmp"]


def test_the_gateway_in_the_one_triton_pod_keeps_its_file_in_the_pod() -> None:
    rendered = render(
        values_from(
            **{
                "routing.mode": "inferencePool",
                "routing.inferencePool.httpRoute.gateway.name": "inference-gateway",
                "gateway.responseStore.type": "sqlite",
            }
        )
    )
    triton = pod_spec(rendered.component("Deployment", "triton"))
    args = parse_gateway_args(container(triton, "gateway")["args"])
    assert args["--response-store"] == "/tmp/nemo-gateway/responses.sqlite3"


@pytest.mark.parametrize(
    ("values", "path", "reason"),
    [
        ({"gateway.responseStore.type": "redis"}, "/gateway/responseStore/type", "value must be one of"),
        ({"gateway.responseStore.type": "postgres"}, "/gateway/responseStore/postgres/url", "minLength"),
        (
            {"gateway.responseStore.postgres.url": "postgresql://nemo:secret@db/responses"},
            "/gateway/responseStore/postgres/url",
            "does not match",
        ),
        ({"gateway.responseStore.retentionSeconds": -1}, "/gateway/responseStore/retentionSeconds", "minimum"),
        ({"gateway.responseStore.sqlite.size": "big"}, "/gateway/responseStore/sqlite/size", "does not match"),
    ],
)
def test_the_schema_refuses_bad_store_values_by_name(values: dict[str, Any], path: str, reason: str) -> None:
    with pytest.raises(helm.HelmValuesError) as raised:
        render(values_from(**values))
    assert path in str(raised.value) and reason in str(raised.value)


@pytest.mark.parametrize(
    "values",
    [
        values_from(**ONE_POD_ON_A_CLAIM),
        values_from(**{"gateway.responseStore.type": "postgres", "gateway.responseStore.postgres.url": POSTGRES}),
    ],
    ids=["claim", "postgres"],
)
def test_store_variants_lint_and_validate_strictly(values: dict[str, Any]) -> None:
    report = helm.lint(CHART_DIR, values, strict=True, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == [] and [m for m in report["messages"] if m["severity"] >= 2] == []
    rendered = render(values)
    for kind in ("Deployment", "PersistentVolumeClaim"):
        for obj in rendered.of_kind(kind):
            assert kubernetes_validate.validate(obj, KUBE_VERSION, strict=True) == "1.33"
