"""The fake `tensorrt_llm` (tests/fake_tensorrt_llm) for in-process tests, without leaving it importable afterwards."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

from nemo_runtime.llm_api import Api
from tests.source_tree import PROJECT

FAKE_PATH = str(PROJECT / "tests" / "fake_tensorrt_llm")
LINES = ("1.2", "newest")


@contextmanager
def fake_trtllm_path() -> Iterator[None]:
    """``tensorrt_llm`` importable as the fake while inside; forgotten (modules and path) after."""
    sys.path.insert(0, FAKE_PATH)
    try:
        yield
    finally:
        sys.path.remove(FAKE_PATH)
        for name in [name for name in sys.modules if name == "tensorrt_llm" or name.startswith("tensorrt_llm.")]:
            del sys.modules[name]


def fake_line(line: str) -> SimpleNamespace:
    """Every fake name of one upstream line (see tests/fake_tensorrt_llm/tensorrt_llm/_fake.py)."""
    with fake_trtllm_path():
        return importlib.import_module("tensorrt_llm._fake").build(line)  # type: ignore[no-any-return]


def as_api(fake: SimpleNamespace) -> Api:
    return Api(
        fake.LLM,
        fake.SamplingParams,
        fake.GuidedDecodingParams,
        fake.KvCacheConfig,
        fake.CudaGraphConfig,
        fake.LoraConfig,
        fake.LoRARequest,
    )
