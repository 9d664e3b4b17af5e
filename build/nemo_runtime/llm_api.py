"""The `tensorrt_llm` tensor contract served by TensorRT-LLM's LLM API on its PyTorch backend (`tensorrt_llm.LLM`).

What the `pytorch` variant of the `tensorrt_llm` Triton model runs (model_repository/tensorrt_llm/pytorch): the same
Engine as the CPU in-flight batcher (``submit`` / ``stop`` / ``stats`` / ``wait_for_change`` / ``close``), driving
``LLM.generate_async(token_ids, SamplingParams, streaming=True)`` on an asyncio loop of its own, as upstream's
`triton_backend/all_models/llmapi` model does. Token ids in and out: no tokenizer is used for ids (``end_id`` always
set; ``detokenize=False``); the tokenizer directory, when the repository names one, is there only because the
executor's xgrammar guided decoding needs a tokenizer.

How each contract input is honoured (names checked against tests/data/upstream/tensorrt_llm_llm_api.json):

* sampling: greedy requests (see nemo_chat_core.sampling) as ``top_k=1``; otherwise ``temperature``, ``top_k``
  (0 = off: left unset), ``top_p`` (0 = off: left unset), ``seed``; the penalties when not neutral; ``min_tokens``;
* ``end_id``: ``SamplingParams.end_id`` (a request without one gets -1, which no token matches); the end id is
  never returned, as the C++ backend and the CPU runtime leave it out;
* ``stop_words_list``: single-token words are ``stop_token_ids`` with ``include_stop_str_in_output=True`` (the
  C++ backend returns the stop word). The public ``SamplingParams`` takes multi-token stop words only as ``stop``
  strings, which need the tokenizer to encode text: ids cannot be given. So a multi-token stop word is matched
  here, on the streamed ids: the output is cut right after the word (the word included, as TensorRT-LLM does) and
  the engine request is aborted (its slot freed); ids the engine produced past the word are never sent;
* ``bad_words_list``: single-token words are ``bad_token_ids``; multi-token words are banned by a per-request
  ``logits_processor`` (:class:`BadSequences`: the last id of a word is masked to -inf whenever the ids before it
  end the sequence so far), the PyTorch backend's per-request logits hook;
* ``return_log_probs``: ``logprobs=1``; the log probability of each returned id is read from its entry
  (``{id: Logprob}`` on the PyTorch backend, a float on others); ``cum_log_probs`` is their sum over the ids sent;
* ``return_context_logits`` / ``return_generation_logits``: the same ``SamplingParams`` flags (generation logits
  need the LLM's ``gather_generation_logits``, set from the repository's ``generation_logits``);
* guided decoding: guide type and guide → ``GuidedDecodingParams`` (``json`` → ``json_object``, ``json_schema`` →
  ``json``, ``regex``, ``ebnf_grammar`` → ``grammar``), with ``guided_decoding_backend="xgrammar"`` on the LLM;
  refused by name when the repository names no tokenizer directory, and when xgrammar (TensorRT-LLM's own
  dependency) cannot parse the guide: the executor compiles guides only once the request is scheduled, and fails
  the request then without naming the input. A guided request also bans the tokenizer's special (control) ids but
  its end id (``bad_token_ids``), as the CPU model's grammar masks them: TensorRT-LLM builds xgrammar's vocabulary
  from the Hugging Face tokenizer, where a byte-level decoder reads a control token such as ``[INST]`` as plain
  text, and xgrammar treats only empty tokens as special;
* cancellation: every ``cancellation_check_s`` each request's sink is asked whether its client cancelled; a
  cancelled request, and every request of a ``stop`` input's request id, is aborted (``RequestOutput.abort()``:
  the executor frees its slot) and ends with its final response at once;
* ``exclude_input_in_output`` false: the prompt ids lead the (non-streamed) response, as on the CPU model.

Metrics: ``stats()`` is a :class:`~nemo_runtime.engine_state.BatcherStats` made of the requests in flight here and
the LLM's iteration stats (``get_stats_async``, which needs ``enable_iter_perf_stats``): ``running`` is
``inflightBatchingStats.numScheduledRequests`` (at most the requests in flight), ``waiting`` the rest in flight;
the KV-cache blocks (max, used, free, reused, tokens per block) are ``kvCacheStats``'. With no request in flight
the batch is reported empty (the executor sends no stats between iterations).

Nothing here imports torch or tensorrt_llm at module level: ``tensorrt_llm`` is imported when the engine starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nemo_chat_core.engine_tensors import GenerationRequest, LogOutputs
from nemo_chat_core.guided import Guide
from nemo_chat_core.lora import AdapterRegistry, BaseShapes, cache_miss_message
from nemo_protocol.errors import BadRequestError
from nemo_runtime.engine_state import (
    BatcherStats,
    BatchLoop,
    Sink,
    beyond_sequence_length,
    ids_outside_vocabulary,
    lora_stats,
)

NO_END_ID = -1
"""The ``end_id`` of a request that has none: no token id matches it."""
KV_CACHE_DTYPES = ("auto", "fp8")
"""``auto``: what the checkpoint says (ModelOpt's hf_quant_config.json kv_cache_quant_algo); ``fp8``: forced."""
GUIDES = {"json": ("json_object", True), "json_schema": ("json", None), "regex": ("regex", None)}
GUIDES["ebnf_grammar"] = ("grammar", None)
"""Contract guide type → (GuidedDecodingParams field, value; None: the guide text)."""
STATS_TIMEOUT_S = 2.0  # get_stats_async(timeout): how long one stats iterator waits for the next iteration's stats
STATS_PAUSE_S = 0.1  # between stats iterators (an ended one stays ended until new requests arrive)
START_TIMEOUT_S = 3600.0  # loading a 12B checkpoint and capturing CUDA graphs takes minutes


# --------------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class LlmSettings:
    """The `pytorch` repository's settings for ``tensorrt_llm.LLM`` (config.pbtxt parameters, see
    :meth:`from_parameters`)."""

    model_dir: Path  # a Hugging Face checkpoint (ModelOpt's unified FP8 export for FP8)
    tokenizer_dir: Path | None  # a Hugging Face tokenizer directory: guided decoding (xgrammar) needs it
    max_batch_size: int
    max_seq_len: int
    max_num_tokens: int = 8192
    kv_cache_free_gpu_mem_fraction: float = 0.9
    enable_chunked_prefill: bool = True
    enable_kv_cache_reuse: bool = True
    kv_cache_dtype: str = "auto"
    tokens_per_block: int = 32
    cuda_graph_batch_sizes: tuple[int, ...] = ()  # empty: CUDA graphs for the batch sizes up to max_batch_size
    tensor_parallel_size: int = 1
    generation_logits: bool = True  # gather_generation_logits: requests may return generation logits
    cancellation_check_period_ms: int = 100
    # LoRA: the PEFT adapters requests name by lora_task_id (None: none), and the LLM's LoraConfig
    lora_dir: Path | None = None
    lora_base: str = ""  # the base model's sizes (nemo_chat_core.lora.BaseShapes.to_text)
    max_lora_rank: int = 64
    lora_target_modules: tuple[str, ...] = ()
    max_loras: int = 8
    max_cpu_loras: int = 32

    def __post_init__(self) -> None:
        problems = []
        for name in ("max_batch_size", "max_seq_len", "max_num_tokens", "tokens_per_block", "tensor_parallel_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} {getattr(self, name)} (must be >= 1)")
        if not 0.0 < self.kv_cache_free_gpu_mem_fraction <= 1.0:
            problems.append(f"kv_cache_free_gpu_mem_fraction {self.kv_cache_free_gpu_mem_fraction} (in (0, 1])")
        if self.kv_cache_dtype not in KV_CACHE_DTYPES:
            problems.append(f"kv_cache_dtype {self.kv_cache_dtype!r} (accepted: {', '.join(KV_CACHE_DTYPES)})")
        if any(size < 1 for size in self.cuda_graph_batch_sizes):
            problems.append(f"cuda_graph_batch_sizes {list(self.cuda_graph_batch_sizes)} (positive sizes)")
        if self.cancellation_check_period_ms < 1:
            problems.append(f"cancellation_check_period_ms {self.cancellation_check_period_ms} (must be >= 1)")
        if problems:
            raise ValueError("invalid LLM settings: " + "; ".join(problems))

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, str], path: Callable[[str], Path]) -> LlmSettings:
        """From a model config's parameters (name → text); ``path(name)`` resolves a path parameter. A missing or
        malformed parameter is a ValueError naming it."""

        def text(name: str) -> str:
            if name not in parameters:
                raise ValueError(f"config.pbtxt lacks the parameter {name!r}")
            return parameters[name]

        def number(name: str, kind: type[int] | type[float]) -> Any:
            try:
                return kind(text(name))
            except ValueError:
                raise ValueError(f"parameter {name!r} must be a number, got {text(name)!r}") from None

        def flag(name: str) -> bool:
            value = text(name).lower()
            if value not in ("true", "false"):
                raise ValueError(f"parameter {name!r} must be true or false, got {text(name)!r}")
            return value == "true"

        sizes = text("cuda_graph_batch_sizes").replace(" ", "")
        try:
            graph_sizes = tuple(int(size) for size in sizes.split(",")) if sizes else ()
        except ValueError:
            raise ValueError(
                f"parameter 'cuda_graph_batch_sizes' must be integers separated by ',', got {sizes!r}"
            ) from None
        return cls(
            model_dir=path("checkpoint_dir"),
            tokenizer_dir=path("tokenizer_dir") if text("tokenizer_dir") else None,
            max_batch_size=number("max_batch_size", int),
            max_seq_len=number("max_seq_len", int),
            max_num_tokens=number("max_num_tokens", int),
            kv_cache_free_gpu_mem_fraction=number("kv_cache_free_gpu_mem_fraction", float),
            enable_chunked_prefill=flag("enable_chunked_context"),
            enable_kv_cache_reuse=flag("enable_kv_cache_reuse"),
            kv_cache_dtype=text("kv_cache_dtype"),
            tokens_per_block=number("tokens_per_block", int),
            cuda_graph_batch_sizes=graph_sizes,
            tensor_parallel_size=number("tensor_parallel_size", int),
            generation_logits=flag("generation_logits"),
            cancellation_check_period_ms=number("cancellation_check_period_ms", int),
            lora_dir=path("lora_dir") if text("lora_dir") else None,
            lora_base=text("lora_base"),
            max_lora_rank=number("max_lora_rank", int),
            lora_target_modules=tuple(m for m in text("lora_target_modules").split(",") if m),
            max_loras=number("max_loras", int),
            max_cpu_loras=number("max_cpu_loras", int),
        )

    def vocab_size(self) -> int | None:
        """``vocab_size`` of the checkpoint's config.json, when it says."""
        try:
            value = json.loads((self.model_dir / "config.json").read_text()).get("vocab_size")
        except (OSError, ValueError):
            return None
        return value if isinstance(value, int) and value > 0 else None


@dataclass(frozen=True)
class Api:
    """The names of ``tensorrt_llm`` the engine uses (:func:`import_api`; tests pass a fake's)."""

    LLM: Callable[..., Any]
    SamplingParams: Callable[..., Any]
    GuidedDecodingParams: Callable[..., Any]
    KvCacheConfig: Callable[..., Any]
    CudaGraphConfig: Callable[..., Any]
    LoraConfig: Callable[..., Any]
    LoRARequest: Callable[..., Any]


def import_api() -> Api:
    """Import TensorRT-LLM (minutes on a GPU host: CUDA, torch, the bindings)."""
    from tensorrt_llm import LLM
    from tensorrt_llm.executor import LoRARequest
    from tensorrt_llm.llmapi import CudaGraphConfig, GuidedDecodingParams, KvCacheConfig, SamplingParams
    from tensorrt_llm.lora_helper import LoraConfig

    return Api(LLM, SamplingParams, GuidedDecodingParams, KvCacheConfig, CudaGraphConfig, LoraConfig, LoRARequest)


def llm_kwargs(settings: LlmSettings, api: Api) -> dict[str, Any]:
    """The ``LLM(...)`` arguments of the settings (TorchLlmArgs names)."""
    graphs = (
        api.CudaGraphConfig(batch_sizes=list(settings.cuda_graph_batch_sizes), enable_padding=True)
        if settings.cuda_graph_batch_sizes
        else api.CudaGraphConfig(max_batch_size=settings.max_batch_size, enable_padding=True)
    )
    guided = settings.tokenizer_dir is not None
    return {
        "model": str(settings.model_dir),
        "tokenizer": str(settings.tokenizer_dir) if guided else None,
        "skip_tokenizer_init": not guided,
        "tensor_parallel_size": settings.tensor_parallel_size,
        "backend": "pytorch",
        "max_batch_size": settings.max_batch_size,
        "max_seq_len": settings.max_seq_len,
        "max_num_tokens": settings.max_num_tokens,
        "enable_chunked_prefill": settings.enable_chunked_prefill,
        "kv_cache_config": api.KvCacheConfig(
            free_gpu_memory_fraction=settings.kv_cache_free_gpu_mem_fraction,
            enable_block_reuse=settings.enable_kv_cache_reuse,
            dtype=settings.kv_cache_dtype,
            tokens_per_block=settings.tokens_per_block,
        ),
        "cuda_graph_config": graphs,
        "guided_decoding_backend": "xgrammar" if guided else None,
        "gather_generation_logits": settings.generation_logits,
        "enable_iter_perf_stats": True,
        **({"lora_config": lora_config(settings, api)} if settings.lora_dir is not None else {}),
    }


def lora_config(settings: LlmSettings, api: Api) -> Any:
    """The LLM's ``LoraConfig``: adapters come per request (LoRARequest), so no ``lora_dir`` is preloaded."""
    return api.LoraConfig(
        lora_target_modules=list(settings.lora_target_modules),
        max_lora_rank=settings.max_lora_rank,
        max_loras=settings.max_loras,
        max_cpu_loras=settings.max_cpu_loras,
    )


# ---------------------------------------------------------------------------------------- request mapping


class BadSequences:
    """A per-request ``logits_processor`` banning multi-token bad words: the last id of a word gets -inf whenever
    the ids before it end the sequence so far. The LLM API calls it as ``(req_id, logits, token_ids, stream_ptr,
    client_id)``, ``token_ids`` one list per beam, and expects ``logits`` changed in place."""

    def __init__(self, words: Sequence[Sequence[int]]) -> None:
        self.words = [list(word) for word in words if len(word) > 1]

    def banned(self, sequence: Sequence[int]) -> list[int]:
        tail = list(sequence)
        return [
            word[-1]
            for word in self.words
            if len(tail) >= len(word) - 1 and tail[len(tail) - len(word) + 1 :] == word[:-1]
        ]

    def __call__(
        self, req_id: int, logits: Any, token_ids: Sequence[Sequence[int]], stream_ptr: Any, client_id: Any
    ) -> None:
        banned = self.banned(token_ids[0] if token_ids else [])
        if banned:
            logits[..., banned] = float("-inf")


def guided_decoding_kwargs(guide: Guide) -> dict[str, Any]:
    """The ``GuidedDecodingParams`` arguments of a contract guide."""
    name, value = GUIDES[guide.type]
    return {name: guide.text if value is None else value}


@functools.lru_cache(maxsize=256)
def guide_problem(guide_type: str, text: str) -> str | None:
    """Why xgrammar cannot parse a guide (None: it can, or xgrammar is not installed), without a tokenizer."""
    try:
        import xgrammar
    except ImportError:
        return None
    grammar: Any = xgrammar.Grammar
    parsers = {"json_schema": grammar.from_json_schema, "regex": grammar.from_regex, "ebnf_grammar": grammar.from_ebnf}
    try:
        if guide_type in parsers:
            parsers[guide_type](text)
    except (RuntimeError, ValueError) as error:  # xgrammar's parse errors
        return str(error).splitlines()[0]
    return None


def special_ids(tokenizer_dir: Path | None) -> tuple[int, ...]:
    """The ids of the special added tokens of a Hugging Face ``tokenizer.json`` (Tekken's control tokens, as
    `nemo-build hf-tokenizer` writes them); none without one."""
    if tokenizer_dir is None:
        return ()
    try:
        added = json.loads((tokenizer_dir / "tokenizer.json").read_text()).get("added_tokens") or []
    except (OSError, ValueError):
        return ()
    return tuple(sorted(int(token["id"]) for token in added if token.get("special")))


def guided_bad_token_ids(kwargs: Mapping[str, Any], special: Sequence[int], end_id: int | None) -> list[int]:
    """A guided request's ``bad_token_ids``: its own and every special id but its end id."""
    return sorted(set(kwargs.get("bad_token_ids") or ()) | {token for token in special if token != end_id})


def sampling_kwargs(request: GenerationRequest) -> dict[str, Any]:
    """The ``SamplingParams`` arguments of a request, without the guide (see :func:`guided_decoding_kwargs`)."""
    sampling = request.sampling
    kwargs: dict[str, Any] = {
        "end_id": NO_END_ID if request.end_id is None else request.end_id,
        "pad_id": request.pad_id,
        "max_tokens": request.max_new_tokens,
        "detokenize": False,
    }
    if sampling.greedy:
        kwargs["top_k"] = 1
    else:
        kwargs["temperature"] = sampling.temperature
        if sampling.top_k > 0:
            kwargs["top_k"] = sampling.top_k
        if sampling.top_p > 0:
            kwargs["top_p"] = sampling.top_p
        if sampling.seed is not None:
            kwargs["seed"] = sampling.seed
    for name, neutral in (("repetition_penalty", 1.0), ("presence_penalty", 0.0), ("frequency_penalty", 0.0)):
        if getattr(sampling, name) != neutral:
            kwargs[name] = getattr(sampling, name)
    if request.min_tokens > 0:
        kwargs["min_tokens"] = request.min_tokens
    single_stops = [word[0] for word in request.stop_words if len(word) == 1]
    if single_stops:
        kwargs["stop_token_ids"] = single_stops
        kwargs["include_stop_str_in_output"] = True
    single_bad = [word[0] for word in request.bad_words if len(word) == 1]
    if single_bad:
        kwargs["bad_token_ids"] = single_bad
    if any(len(word) > 1 for word in request.bad_words):
        kwargs["logits_processor"] = BadSequences(request.bad_words)
    if request.return_log_probs:
        kwargs["logprobs"] = 1
    if request.return_context_logits:
        kwargs["return_context_logits"] = True
    if request.return_generation_logits:
        kwargs["return_generation_logits"] = True
    return kwargs


def token_log_prob(entry: Any, token: int) -> float:
    """The log probability of ``token`` in one ``CompletionOutput.logprobs`` entry: ``{id: Logprob}`` (PyTorch
    backend; the sampled id is always among them) or a float."""
    if isinstance(entry, Mapping):
        if token not in entry:
            raise ValueError(f"the engine's log probs at this position leave out the sampled id {token}")
        value: Any = entry[token]
        return float(getattr(value, "logprob", value))
    return float(entry)


def as_float32(value: Any) -> np.ndarray:
    """A torch tensor (on any device) or array as a float32 numpy array, without importing torch."""
    if hasattr(value, "detach"):
        value = value.detach().float().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


def first_match_end(generated: Sequence[int], start: int, words: Sequence[Sequence[int]]) -> int | None:
    """The end (exclusive) of the first stop word that ends at a position >= ``start`` of ``generated``."""
    for end in range(start + 1, len(generated) + 1):
        for word in words:
            if end >= len(word) and list(generated[end - len(word) : end]) == list(word):
                return end
    return None


# ------------------------------------------------------------------------------------------------- engine


@dataclass
class _Request:
    key: int
    request: GenerationRequest
    sink: Sink
    tag: str
    sampling: Any  # the SamplingParams
    stop_words: list[list[int]]  # multi-token ones, matched here
    lora: Any = None  # the LoRARequest (None: the base model)
    generated: list[int] = field(default_factory=list)
    log_probs: list[float] = field(default_factory=list)
    generation_logits: list[np.ndarray] = field(default_factory=list)
    context_logits: np.ndarray | None = None
    received: int = 0  # engine ids consumed so far (CompletionOutput.token_ids accumulates)
    context_sent: bool = False
    final_sent: bool = False
    done: bool = False
    result: Any = None  # the RequestOutput
    task: asyncio.Task[None] | None = None

    @property
    def adapter(self) -> str | None:
        """Its LoRA adapter's name (the LoRA metrics)."""
        return None if self.lora is None else str(self.lora.lora_name)

    @property
    def running(self) -> bool:
        """Whether the engine produced for it yet: the LLM API tells no scheduled / queued state per request."""
        return self.received > 0


class LlmApiEngine(BatchLoop):
    """`tensorrt_llm.LLM` behind the contract. Starting it loads the model (raises when that fails); ``close()``
    shuts the LLM down."""

    def __init__(
        self,
        settings: LlmSettings,
        api: Api | None = None,
        *,
        stats_timeout_s: float = STATS_TIMEOUT_S,
        stats_pause_s: float = STATS_PAUSE_S,
    ) -> None:
        self.settings = settings
        self._api = api
        self._vocab_size = settings.vocab_size()
        self._special_ids = special_ids(settings.tokenizer_dir)
        self._adapters = (
            None
            if settings.lora_dir is None
            else AdapterRegistry(settings.lora_dir, BaseShapes.from_text(settings.lora_base), settings.max_lora_rank)
        )
        self._stats_timeout_s = stats_timeout_s
        self._stats_pause_s = stats_pause_s
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._closed = False
        self._wake = threading.Event()  # BatchLoop's; the loop thread waits on the asyncio loop instead
        self._requests: dict[int, _Request] = {}
        self._serial = 0
        self._cancelled = 0
        self._lora_requests: Counter[str] = Counter()  # requests per LoRA adapter since start
        self._engine_stats: dict[str, Any] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="llm-api", daemon=True)
        self._thread.start()
        self._llm: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        try:
            self._call(self._start()).result(START_TIMEOUT_S)
        except BaseException:
            self._stop_loop()
            raise

    # ----- lifecycle ------------------------------------------------------------------------------------
    def _call(self, coroutine: Any) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    async def _start(self) -> None:
        """Create the LLM from a worker thread (it blocks for minutes), as upstream's Triton model does, so that it
        sees this loop as the running one; then start the cancellation and stats pollers."""
        loop = asyncio.get_running_loop()
        api: Api = self._api if self._api is not None else await loop.run_in_executor(None, import_api)
        self._api = api
        kwargs = llm_kwargs(self.settings, api)
        self._llm = await loop.run_in_executor(None, lambda: api.LLM(**kwargs))
        self._tasks = [loop.create_task(self._poll_cancellation()), loop.create_task(self._poll_stats())]

    def close(self) -> None:
        with self._changed:
            if self._closed:
                return
            self._closed = True
            self._changed.notify_all()
        try:
            self._call(self._shutdown()).result(120)
        finally:
            self._stop_loop()

    async def _shutdown(self) -> None:
        for state in list(self._requests.values()):
            self._end(state, cancelled=True)
        for task in self._tasks:
            task.cancel()
        if self._llm is not None:
            llm, self._llm = self._llm, None
            await asyncio.get_running_loop().run_in_executor(None, llm.shutdown)

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    # ----- requests -------------------------------------------------------------------------------------
    def submit(self, request: GenerationRequest, sink: Sink, tag: str = "") -> None:
        """Start a request; raises BadRequestError (nothing started) when it cannot be served."""
        problem = self._out_of_range(request)
        if problem is not None:
            raise problem
        api = self._api
        assert api is not None
        kwargs = sampling_kwargs(request)
        if request.guide is not None:
            if self.settings.tokenizer_dir is None:
                raise BadRequestError(
                    "this model serves no guided decoding: its repository names no tokenizer_dir",
                    param="guided_decoding_guide_type",
                )
            unparsable = guide_problem(request.guide.type, request.guide.text)
            if unparsable is not None:
                raise BadRequestError(
                    f"the {request.guide.type} guide does not compile: {unparsable}", param="guided_decoding_guide"
                )
            kwargs["guided_decoding"] = api.GuidedDecodingParams(**guided_decoding_kwargs(request.guide))
            if self._special_ids:
                kwargs["bad_token_ids"] = guided_bad_token_ids(kwargs, self._special_ids, request.end_id)
        try:
            sampling = api.SamplingParams(**kwargs)
        except ValueError as exc:  # SamplingParams._validate's checks
            raise BadRequestError(f"the engine refuses the sampling parameters: {exc}") from None
        lora_request = None if request.lora is None else self._lora_request(request.lora.task_id)
        words = [list(word) for word in request.stop_words if len(word) > 1]
        with self._changed:
            if self._closed:
                raise BadRequestError("the model is shutting down")
            self._serial += 1
            state = _Request(self._serial, request, sink, tag, sampling, words, lora_request)
            if state.adapter is not None:
                self._lora_requests[state.adapter] += 1
            self._requests[state.key] = state
            self._changed.notify_all()
        self._loop.call_soon_threadsafe(self._launch, state)

    def _lora_request(self, task_id: int) -> Any:
        """The LLM API's LoRARequest for a task id: the PEFT adapter of the adapter source with that id (the LLM
        loads and caches it from its path); the backend's "not found" when no served adapter has it."""
        adapter = None if self._adapters is None else self._adapters.find(task_id)
        if adapter is None or self._adapters is None or self._api is None:
            raise BadRequestError(cache_miss_message(task_id), param="lora_task_id")
        path = self._adapters.source / adapter.name
        return self._api.LoRARequest(lora_name=adapter.name, lora_int_id=task_id, lora_path=str(path))

    def _out_of_range(self, request: GenerationRequest) -> BadRequestError | None:
        """What the executor would fail on, named by its tensor, refused up front."""
        vocab = self._vocab_size
        if vocab is not None:
            problem = ids_outside_vocabulary(request, vocab)
            if problem is not None:
                return problem
            outside = [token for token in request.input_ids if not 0 <= token < vocab]
            if outside:
                return BadRequestError(f"holds {outside[0]}, not a token id in [0, {vocab})", param="input_ids")
        settings = self.settings
        if not settings.enable_chunked_prefill and len(request.input_ids) > settings.max_num_tokens:
            return BadRequestError(  # LLM._check_arguments refuses it, unnamed, without chunked prefill
                f"{len(request.input_ids)} prompt tokens exceed max_num_tokens {settings.max_num_tokens} (the model "
                "runs without chunked prefill)",
                param="input_ids",
            )
        return beyond_sequence_length(request, settings.max_seq_len)

    def stop(self, tag: str) -> int:
        """End the in-flight requests submitted with ``tag`` (the `stop` input); returns how many."""
        with self._lock:
            states = [state for state in self._requests.values() if tag and state.tag == tag and not state.done]
        for state in states:
            self._loop.call_soon_threadsafe(self._end, state, True)
        return len(states)

    # ----- the loop (every method below runs on the loop thread) ------------------------------------------
    def _launch(self, state: _Request) -> None:
        if not state.done:
            state.task = self._loop.create_task(self._serve(state))

    async def _serve(self, state: _Request) -> None:
        try:
            result = self._llm.generate_async(
                state.request.input_ids, sampling_params=state.sampling, streaming=True, lora_request=state.lora
            )
            state.result = result
            async for output in result:
                if state.done:
                    break
                self._take(state, output)
                if state.done:
                    break
            if not state.done:  # the engine ended without a final response
                self._end(state)
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # the engine refused or failed this request: it alone ends
            if not state.done:
                self._end(state, error=f"generation failed: {exc}")

    def _take(self, state: _Request, output: Any) -> None:
        """One streamed ``RequestOutput``: pass on its new ids (cut at a stop word, without the end id)."""
        completion = output.outputs[0]
        ids = list(completion.token_ids)
        start, state.received = state.received, len(ids)
        new = ids[start:]
        finished = bool(output.finished)
        request = state.request
        end_id = request.end_id
        if finished and new and end_id is not None and new[-1] == end_id and [end_id] not in request.stop_words:
            new = new[:-1]
        log_probs: list[float] = []
        if request.return_log_probs:
            entries = list(completion.logprobs or [])[start : start + len(new)]
            if len(entries) < len(new):
                raise ValueError(f"the engine returned {len(entries)} log probs for {len(new)} ids")
            log_probs = [token_log_prob(entry, token) for entry, token in zip(entries, new, strict=True)]
        rows = self._generation_rows(completion, start, len(new), len(ids)) if new else None
        if request.return_context_logits and state.context_logits is None and output.context_logits is not None:
            state.context_logits = as_float32(output.context_logits)
        before = len(state.generated)
        state.generated += new
        cut = first_match_end(state.generated, before, state.stop_words) if state.stop_words else None
        if cut is not None:  # a multi-token stop word: the output ends right after it
            keep = cut - before
            new, log_probs = new[:keep], log_probs[:keep]
            rows = None if rows is None else rows[:keep]
            state.generated = state.generated[:cut]
            finished = True  # _end aborts the engine request, which may have gone on past the word
        state.log_probs += log_probs
        if rows is not None:
            state.generation_logits.append(rows)
        if request.streaming and (new or finished):
            self._send(state, new, finished, self._logs(state, log_probs, rows))
        if finished:
            self._end(state)

    def _generation_rows(self, completion: Any, start: int, count: int, total: int) -> np.ndarray | None:
        """The generation logits of the ``count`` ids from ``start`` (the engine may hold them for every id so far,
        or for this response's ids only)."""
        logits = getattr(completion, "generation_logits", None)
        if logits is None:
            return None
        rows = as_float32(logits)
        rows = rows.reshape(-1, rows.shape[-1])
        if rows.shape[0] >= total:
            return rows[start : start + count]
        return rows[-(total - start) :][:count]

    def _logs(self, state: _Request, log_probs: list[float], rows: np.ndarray | None) -> LogOutputs | None:
        request = state.request
        if not (request.return_log_probs or request.return_context_logits or request.return_generation_logits):
            return None
        context = None
        if request.return_context_logits and not state.context_sent and state.context_logits is not None:
            context, state.context_sent = state.context_logits, True
        return LogOutputs(
            log_probs=log_probs if request.return_log_probs else None,
            cum_log_prob=math.fsum(state.log_probs) if request.return_log_probs else None,
            context_logits=context,
            generation_logits=rows if request.return_generation_logits else None,
        )

    def _send(self, state: _Request, ids: list[int], final: bool, logs: LogOutputs | None) -> None:
        state.final_sent |= final
        try:
            state.sink.send(ids, final, logs)
        except Exception:  # the client is gone: stop generating for it
            if not final:
                self._end(state, cancelled=True)

    def _end(self, state: _Request, cancelled: bool = False, error: str | None = None) -> None:
        """Finish a request: its last response (or error), the engine request aborted when it still runs."""
        if state.done:
            return
        state.done = True
        result = state.result
        if result is not None and not result.finished:
            with contextlib.suppress(Exception):  # it may have ended meanwhile
                result.abort()
        request = state.request
        if error is not None:
            with contextlib.suppress(Exception):  # the client is gone
                state.sink.fail(error)
        elif request.streaming:
            if not state.final_sent:
                self._send(state, [], True, None)
        else:
            prefix = [] if request.exclude_input_in_output else list(request.input_ids)
            rows = np.concatenate(state.generation_logits) if state.generation_logits else None
            self._send(state, prefix + state.generated, True, self._logs(state, list(state.log_probs), rows))
        with self._changed:
            self._requests.pop(state.key, None)
            self._cancelled += cancelled
            self._changed.notify_all()
        if state.task is not None and state.task is not asyncio.current_task():
            state.task.cancel()

    async def _poll_cancellation(self) -> None:
        period = self.settings.cancellation_check_period_ms / 1000
        while True:
            await asyncio.sleep(period)
            with self._lock:
                states = [state for state in self._requests.values() if not state.done]
            for state in states:
                try:
                    cancelled = state.sink.is_cancelled()
                except Exception:
                    cancelled = True
                if cancelled:
                    self._end(state, cancelled=True)

    async def _poll_stats(self) -> None:
        while True:
            try:
                async for stats in self._llm.get_stats_async(timeout=self._stats_timeout_s):
                    self._take_stats(stats)
            except asyncio.CancelledError:
                raise
            except Exception:  # stats must never take serving down
                pass
            await asyncio.sleep(self._stats_pause_s)

    def _take_stats(self, stats: Any) -> None:
        if isinstance(stats, str):
            stats = json.loads(stats)
        if not isinstance(stats, dict):
            return
        with self._changed:
            self._engine_stats = stats
            self._changed.notify_all()

    # ----- metrics --------------------------------------------------------------------------------------
    def _snapshot(self) -> BatcherStats:  # under self._lock
        in_flight = len(self._requests)
        stats = self._engine_stats
        batching = stats.get("inflightBatchingStats") or {}
        kv = stats.get("kvCacheStats") or {}
        running = min(int(batching.get("numScheduledRequests", 0)), in_flight)
        kv_max = int(kv.get("maxNumBlocks", 0))
        used = int(kv.get("usedNumBlocks", 0)) if in_flight else 0
        free = int(kv.get("freeNumBlocks", kv_max - used)) if in_flight else kv_max
        return BatcherStats(
            running=running,
            waiting=in_flight - running,
            max_batch_size=int(stats.get("maxNumActiveRequests") or self.settings.max_batch_size),
            cancelled=self._cancelled,
            kv_blocks_used=used,
            kv_blocks_max=kv_max,
            kv_tokens_per_block=int(kv.get("tokensPerBlock", self.settings.tokens_per_block)),
            kv_blocks_free=free,
            kv_blocks_reused=int(kv.get("reusedBlocks", 0)),
            **lora_stats(
                self._requests.values(), self._lora_requests, self.settings.max_loras if self._adapters else 0
            ),
        )

    @property
    def active_requests(self) -> int:
        with self._lock:
            return len(self._requests)
