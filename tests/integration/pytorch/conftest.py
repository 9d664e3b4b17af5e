"""The serving integration tests again, through the `pytorch` variant of `tensorrt_llm` (nemo_runtime.llm_api).

Every test below this directory talks to a second real Triton (CPU) serving the repository rendered by
`nemo-build repository --target pytorch` over ModelOpt's unified Hugging Face FP8 export of the trained tiny model
(FP8 weights and KV cache: what the PyTorch backend loads on a GPU). Its `tensorrt_llm`
python model imports `tensorrt_llm` from the fake generated from the upstream names
(tests/fake_tensorrt_llm, line 1.2), which runs the CPU reference runtime underneath: the model, the engine and the
names they use are the GPU path's; only what executes the checkpoint is not.

The fake reaches the model's python stub as a link in the model's version directory (`tensorrt_llm/1/tensorrt_llm`),
which Triton's python backend puts on the stub's `sys.path` (as upstream's own models import `helpers` from there):
the stub runs Python in isolated mode, which ignores PYTHONPATH. The test repository is a temporary directory, so
nothing else ever sees the fake.

These fixtures override the session's `triton`, `url` and `gateway` for the tests here; the test modules import the
tests they rerun (and the module fixtures those use) from the CPU modules.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nemo_gateway.settings import GatewaySettings
from nemo_ops.launcher import TritonServer
from tests.integration.conftest import serving_repository
from tests.integration.gateways import SERVED, running_gateway
from tests.source_tree import PROJECT

FAKE_PACKAGE = PROJECT / "tests" / "fake_tensorrt_llm" / "tensorrt_llm"


@pytest.fixture(scope="session")
def pytorch_repository(
    tmp_path_factory: pytest.TempPathFactory, hf_fp8_checkpoint_dir: Path, tekken_path: Path
) -> Path:
    out = tmp_path_factory.mktemp("serving-pytorch") / "repository"
    serving_repository(out, "pytorch", hf_fp8_checkpoint_dir, tekken_path, tokens_per_block=32)
    (out / "tensorrt_llm" / "1" / "tensorrt_llm").symlink_to(FAKE_PACKAGE, target_is_directory=True)
    return out


@pytest.fixture(scope="session")
def triton(pytorch_repository: Path) -> Iterator[TritonServer]:
    with TritonServer(pytorch_repository, launcher="pytriton") as server:  # the CPU Triton, on a GPU host too
        yield server


@pytest.fixture(scope="session")
def url(triton: TritonServer) -> str:
    return triton.grpc_url


@pytest.fixture(scope="module")
def gateway(url: str) -> Iterator[str]:
    with running_gateway(GatewaySettings(triton_url=url, served_model_name=SERVED)) as base:
        yield base
