"""LoRA adapters in the chart: from a claim, from ConfigMaps or downloaded by a Job, mounted read-only by Triton and
the gateway at the directory the build script names to `nemo-build repository --lora-dir`.

The download script runs for real with bash (a stand-in Python writes what `snapshot_download` would).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helm.chart_support import (
    CHART_DIR,
    LORA_MOUNT,
    MATRIX,
    Rendered,
    build_container,
    container,
    containers,
    env,
    pod_spec,
    render,
    with_values,
)

LORA_CASES = {case.name: case.values for case in MATRIX if case.name.startswith("lora-")}


def _lora_mounts(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Container name -> its mount of the adapter volume, for the containers of a pod spec that mount it."""
    return {
        cont["name"]: mount
        for cont in containers(spec)
        for mount in cont.get("volumeMounts", [])
        if mount["name"] == "lora-adapters"
    }


def _lora_volume(spec: dict[str, Any]) -> dict[str, Any]:
    found = [volume for volume in spec["volumes"] if volume["name"] == "lora-adapters"]
    assert len(found) == 1, [volume["name"] for volume in spec["volumes"]]
    return found[0]


def _serving_pods(rendered: Rendered) -> list[dict[str, Any]]:
    """The pod specs that serve: Triton's, and the gateway Deployment's where there is one."""
    pods = [pod_spec(rendered.component("Deployment", "triton"))]
    gateways = [
        d for d in rendered.of_kind("Deployment") if d["metadata"]["labels"]["app.kubernetes.io/component"] == "gateway"
    ]
    return pods + [pod_spec(d) for d in gateways]


@pytest.mark.parametrize("case", sorted(LORA_CASES))
def test_triton_and_the_gateway_mount_the_adapters_where_the_repository_names_them(case: str) -> None:
    rendered = render(LORA_CASES[case])
    lora_dir = env(build_container(rendered))["LORA_DIR"]
    assert lora_dir == LORA_MOUNT
    for spec in _serving_pods(rendered):
        mounts = _lora_mounts(spec)
        # Triton serves the adapters; every gateway (the Deployment's, or the pool's beside Triton) lists them.
        expected = {c["name"] for c in containers(spec) if c["name"] in ("triton", "gateway")}
        assert set(mounts) == expected, (case, sorted(mounts))
        for mount in mounts.values():
            assert mount["mountPath"] == lora_dir
            assert mount["readOnly"] is True


def test_adapters_from_a_claim_mount_its_directory_and_the_maximum_rank_reaches_the_build() -> None:
    values = with_values(LORA_CASES["lora-pvc"], **{"lora.pvc.subPath": "nemo/adapters"})
    rendered = render(values)
    for spec in _serving_pods(rendered):
        assert _lora_volume(spec)["persistentVolumeClaim"] == {"claimName": "adapters", "readOnly": True}
        assert {mount["subPath"] for mount in _lora_mounts(spec).values()} == {"nemo/adapters"}
    assert env(build_container(rendered))["MAX_LORA_RANK"] == "16"


def test_adapters_from_config_maps_are_one_directory_each_named_by_the_adapter() -> None:
    rendered = render(LORA_CASES["lora-configmap"])
    spec = pod_spec(rendered.component("Deployment", "triton"))
    sources = _lora_volume(spec)["projected"]["sources"]
    assert [source["configMap"]["name"] for source in sources] == ["lora-tokyo", "lora-paris"]
    assert sources[0]["configMap"]["items"] == [
        {"key": "adapter_config.json", "path": "tokyo/adapter_config.json"},
        {"key": "adapter_model.safetensors", "path": "tokyo/adapter_model.safetensors"},
    ]
    # No subPath: Kubernetes updates a projected ConfigMap in place only when it is mounted whole.
    assert all("subPath" not in mount for mount in _lora_mounts(spec).values())
    assert "MAX_LORA_RANK" not in env(build_container(rendered)), "0 leaves the profile's max rank"


def test_downloaded_adapters_come_from_a_job_into_the_cache_directory_the_pods_mount() -> None:
    rendered = render(LORA_CASES["lora-download"])
    job = rendered.component("Job", "lora-download")
    download = container(pod_spec(job), "download-adapters")
    download_env = env(download)
    assert download_env["ADAPTERS"].splitlines() == ["tokyo acme/nemo-tokyo-lora v1"]
    assert download_env["HF_TOKEN"] == {"secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN"}}
    assert "nvidia.com/gpu" not in download.get("resources", {}).get("limits", {}), "a download needs no GPU"
    cache_claim = _lora_volume(pod_spec(rendered.component("Deployment", "triton")))["persistentVolumeClaim"]
    assert pod_spec(job)["volumes"][0]["persistentVolumeClaim"]["claimName"] == cache_claim["claimName"]
    # The Job writes <cache>/<subPath>; the serving pods mount that directory of the same claim.
    (mount,) = {m["subPath"] for m in _lora_mounts(pod_spec(rendered.component("Deployment", "triton"))).values()}
    assert download_env["LORA_DIR"] == f"/cache/{mount}"
    # Another list is another Job, and the serving pods do not change (no restart: the runtime rescans).
    more = with_values(
        LORA_CASES["lora-download"],
        **{"lora.download.adapters": [{"name": "tokyo", "repo": "acme/nemo-tokyo-lora", "revision": "v2"}]},
    )
    again = render(more)
    assert again.component("Job", "lora-download")["metadata"]["name"] != job["metadata"]["name"]
    assert again.component("Deployment", "triton") == rendered.component("Deployment", "triton")


def test_the_gateway_can_leave_the_adapters_unmounted() -> None:
    rendered = render(with_values(LORA_CASES["lora-pvc"], **{"lora.mountInGateway": False}))
    gateway = pod_spec(rendered.component("Deployment", "gateway"))
    assert _lora_mounts(gateway) == {}
    assert all(volume["name"] != "lora-adapters" for volume in gateway["volumes"])
    assert set(_lora_mounts(pod_spec(rendered.component("Deployment", "triton")))) == {"triton"}


def test_without_lora_nothing_mounts_adapters_and_the_build_spec_is_unchanged() -> None:
    rendered = render()
    for workload in rendered.workloads():
        assert _lora_mounts(pod_spec(workload)) == {}
    assert "LORA_DIR" not in env(build_container(rendered))
    assert "lora" not in env(build_container(rendered))["BUILD_SPEC"]
    # Turning LoRA on renders another repository: the build spec (and so the build Job) changes.
    assert (
        env(build_container(render(LORA_CASES["lora-pvc"])))["BUILD_SPEC"]
        != env(build_container(rendered))["BUILD_SPEC"]
    )


FAKE_PYTHON = r"""#!/usr/bin/env bash
# Stands in for `python3 - <<snapshot_download>>`: writes the adapter files into $DEST, as the Hub download
# would; a repository named */not-an-adapter has none.
cat > /dev/null
echo "$REPO@$REVISION" >> "$CALLS"
mkdir -p "$DEST"
if [[ $REPO != */not-an-adapter ]]; then
  echo '{"peft_type": "LORA"}' > "$DEST/adapter_config.json"
  echo "$REPO@$REVISION" > "$DEST/adapter_model.safetensors"
fi
"""


class Downloads:
    """download-adapters.sh with the rendered Job's environment, the cache moved under a temporary directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.calls = root / "calls.log"
        self.python = root / "fake-python"
        self.python.write_text(FAKE_PYTHON)
        self.python.chmod(0o755)
        job = render(LORA_CASES["lora-download"]).component("Job", "lora-download")
        self.lora_dir = root / env(container(pod_spec(job), "download-adapters"))["LORA_DIR"].lstrip("/")

    def run(self, *adapters: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(CHART_DIR / "files" / "download-adapters.sh")],
            env={
                "PATH": "/usr/bin:/bin",
                "LORA_DIR": str(self.lora_dir),
                "ADAPTERS": "".join(f"{line}\n" for line in adapters),
                "PYTHON": str(self.python),
                "CALLS": str(self.calls),
            },
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def served(self) -> dict[str, str]:
        return {
            path.name: (path / "adapter_model.safetensors").read_text().strip()
            for path in sorted(self.lora_dir.iterdir())
        }

    def downloaded(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []


def test_the_download_job_adds_updates_and_removes_adapters_and_keeps_what_it_has(tmp_path: Path) -> None:
    downloads = Downloads(tmp_path)
    result = downloads.run("tokyo acme/tokyo v1", "paris acme/paris main")
    assert result.returncode == 0, result.stderr
    assert downloads.served() == {"paris": "acme/paris@main", "tokyo": "acme/tokyo@v1"}

    # tokyo moves to v2, paris is kept without a download, rome comes, nothing half-written is left beside.
    result = downloads.run("tokyo acme/tokyo v2", "paris acme/paris main", "rome acme/rome main")
    assert result.returncode == 0, result.stderr
    assert downloads.served() == {"paris": "acme/paris@main", "rome": "acme/rome@main", "tokyo": "acme/tokyo@v2"}
    assert downloads.downloaded() == ["acme/tokyo@v1", "acme/paris@main", "acme/tokyo@v2", "acme/rome@main"]
    assert sorted(p.name for p in downloads.lora_dir.parent.iterdir()) == [
        downloads.lora_dir.name,
        f"{downloads.lora_dir.name}.lock",
    ]

    # Adapters dropped from the list go.
    result = downloads.run("rome acme/rome main")
    assert result.returncode == 0, result.stderr
    assert downloads.served() == {"rome": "acme/rome@main"}
    assert "paris: no longer listed; removing it" in result.stderr


def test_the_download_job_refuses_a_repository_that_is_no_adapter_and_serves_nothing_of_it(tmp_path: Path) -> None:
    downloads = Downloads(tmp_path)
    assert downloads.run("tokyo acme/tokyo v1").returncode == 0
    result = downloads.run("tokyo acme/tokyo v1", "broken acme/not-an-adapter main")
    assert result.returncode != 0
    assert "broken: acme/not-an-adapter@main has no adapter_config.json: it is not a PEFT adapter" in result.stderr
    assert downloads.served() == {"tokyo": "acme/tokyo@v1"}
