"""Triton's administrative APIs on the real server: refused on the inference ports without the admin key.

A client that can reach Triton's gRPC or HTTP port can infer and read health and metadata, but cannot
unload or load a model (with or without a config or file override: the python backend would execute the
file), register shared memory, change trace or log settings, or read statistics, unless its request carries
the ``nemo-admin-key`` header that ``nemo-serve`` started Triton with.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from nemo_ops.launcher import ADMIN_KEY_HEADER, GRPC_ADMIN_KEY_HEADER, RESTRICTED_APIS, TritonServer

# A model whose load would run attacker-chosen code inside the server, were it admitted.
BREACH_FILE = "/tmp/nemo-admin-api-breach"
HOSTILE_MODEL_PY = f"import os\nos.system('touch {BREACH_FILE}')\nclass TritonPythonModel: pass\n".encode()
HOSTILE_CONFIG = json.dumps({"backend": "python", "max_batch_size": 0})


@pytest.fixture(scope="module")
def grpc_admin(triton: TritonServer) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(triton.grpc_url) as client:
        yield client


@pytest.fixture(scope="module")
def http_admin(triton: TritonServer) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(triton.http_url.removeprefix("http://"))
    yield client
    client.close()


def admin_calls(client: Any) -> dict[str, Callable[[dict[str, str] | None], object]]:
    """One call per restricted operation, each taking the headers to send."""
    # A CUDA IPC handle: raw bytes on gRPC, base64 text on HTTP (any value: it must be refused before use).
    handle = base64.b64encode(b"\0" * 64) if isinstance(client, httpclient.InferenceServerClient) else b"\0" * 64
    return {
        "unload": lambda headers: client.unload_model("postprocessing", headers=headers),
        "load": lambda headers: client.load_model("hostile", headers=headers),
        "load with a config override": lambda headers: client.load_model(
            "hostile", headers=headers, config=HOSTILE_CONFIG
        ),
        "load with a file override": lambda headers: client.load_model(
            "hostile", headers=headers, config=HOSTILE_CONFIG, files={"file:1/model.py": HOSTILE_MODEL_PY}
        ),
        "repository index": lambda headers: client.get_model_repository_index(headers=headers),
        "register system shared memory": lambda headers: client.register_system_shared_memory(
            "region", "/nemo-admin-api", 64, headers=headers
        ),
        "register CUDA shared memory": lambda headers: client.register_cuda_shared_memory(
            "region", handle, 0, 64, headers=headers
        ),
        "shared memory status": lambda headers: client.get_system_shared_memory_status(headers=headers),
        "trace settings": lambda headers: client.update_trace_settings(
            settings={"trace_file": "/tmp/nemo-trace.json"}, headers=headers
        ),
        "log settings": lambda headers: client.update_log_settings(settings={"log_verbose_level": 1}, headers=headers),
        "statistics": lambda headers: client.get_inference_statistics(headers=headers),
    }  # fmt: skip


@pytest.mark.parametrize("transport", ["grpc", "http"])
@pytest.mark.parametrize(
    "operation",
    [
        "unload",
        "load",
        "load with a config override",
        "load with a file override",
        "repository index",
        "register system shared memory",
        "register CUDA shared memory",
        "shared memory status",
        "trace settings",
        "log settings",
        "statistics",
    ],
)
def test_admin_operations_are_refused_without_the_key(
    transport: str,
    operation: str,
    grpc_admin: grpcclient.InferenceServerClient,
    http_admin: httpclient.InferenceServerClient,
    triton: TritonServer,
) -> None:
    client = grpc_admin if transport == "grpc" else http_admin
    call = admin_calls(client)[operation]
    for headers in (None, {ADMIN_KEY_HEADER: "not-the-key-0123456789"}):
        with pytest.raises(InferenceServerException) as refused:
            call(headers)
        assert "restricted" in str(refused.value).lower() and ADMIN_KEY_HEADER in str(refused.value)
    with pytest.raises(InferenceServerException):  # the key in the other transport's header admits nothing
        call({GRPC_ADMIN_KEY_HEADER: triton.admin_key} if transport == "http" else {ADMIN_KEY_HEADER: triton.admin_key})
    assert client.is_model_ready("postprocessing") and client.is_model_ready("chat")
    assert not client.is_model_ready("hostile") and not Path(BREACH_FILE).exists()


def test_the_key_admits_the_operator(
    grpc_admin: grpcclient.InferenceServerClient, http_admin: httpclient.InferenceServerClient, triton: TritonServer
) -> None:
    index = grpc_admin.get_model_repository_index(headers=triton.grpc_admin_headers, as_json=True)
    assert {model["name"] for model in index["models"]} >= {"chat", "ensemble", "tensorrt_llm"}
    assert grpc_admin.get_inference_statistics(headers=triton.grpc_admin_headers) is not None
    served = {model["name"] for model in http_admin.get_model_repository_index(headers=triton.http_admin_headers)}
    assert served >= {"chat", "ensemble", "tensorrt_llm"}
    assert GRPC_ADMIN_KEY_HEADER == "triton-grpc-protocol-" + ADMIN_KEY_HEADER


def test_inference_health_metadata_and_model_config_stay_open(
    grpc_admin: grpcclient.InferenceServerClient, http_admin: httpclient.InferenceServerClient
) -> None:
    for client in (grpc_admin, http_admin):
        assert client.is_server_live() and client.is_server_ready()
        assert client.get_model_metadata("chat") and client.get_model_config("chat")
    assert set(RESTRICTED_APIS).isdisjoint({"health", "metadata", "inference", "model-config"})
