"""A fake `tensorrt_llm` for tests: the LLM API names recorded in tests/data/upstream/tensorrt_llm_llm_api.json
(the line named by $NEMO_FAKE_TRTLLM_LINE, default 1.2), executed by the CPU reference runtime. See ``_fake``.

Put ``tests/fake_tensorrt_llm`` first on ``sys.path`` (or PYTHONPATH, for a Triton server's python stubs) to import
it as ``tensorrt_llm``. It is never installed: the real package is not installable on a machine without a GPU.
"""

from tensorrt_llm._fake import build

FAKE = True
_API = build()
__version__ = f"fake-{_API.line}"
LLM = _API.LLM
SamplingParams = _API.SamplingParams

__all__ = ["FAKE", "LLM", "SamplingParams"]
