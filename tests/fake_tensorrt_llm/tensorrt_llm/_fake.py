"""A fake `tensorrt_llm` LLM API, generated from tests/data/upstream/tensorrt_llm_llm_api.json, over the CPU runtime.

Every class the `pytorch` model uses is made here from one line of that file (``NEMO_FAKE_TRTLLM_LINE``: "1.2", the
default, or "newest"): a constructor takes the listed names only (keywords; anything else is refused, naming it and
the line), an object holds the listed fields only (``__slots__``: reading or setting any other public name fails),
``LLM(...)`` refuses a keyword that is not a ``TorchLlmArgs`` field as upstream does (``ValueError: LLM got invalid
argument: <key>``), and ``generate_async`` binds its arguments against the recorded parameter list.

Underneath, ``LLM`` runs the reference runtime (nemo_runtime.scheduler.ReferenceRuntime) on the checkpoint named by
``model`` (nemo_runtime.weights.load_weights: a TensorRT-LLM or a Hugging Face checkpoint) with in-flight batching
on a thread of its own, and behaves as the upstream sources read (see the JSON's provenance) where the model relies
on it: streamed ``token_ids`` accumulate; ``stop_token_ids`` end a request and are cut from ``token_ids`` unless
``include_stop_str_in_output``; ``bad_token_ids`` are never drawn; ``min_tokens`` holds back ``end_id``; the end id
is not returned; ``logprobs`` gives one ``{id: Logprob}`` per id (the sampled id only: no top-k alternatives);
``logits_processor`` callables are called as ``(req_id, logits, [ids so far], None, None)``; guided decoding compiles
the guide with xgrammar over the tokenizer directory's vocabulary (``guided_decoding_backend="xgrammar"`` and a
tokenizer are required, as upstream asserts); ``abort()`` cancels and frees the slot; ``get_stats_async`` yields
iteration stats (``enable_iter_perf_stats``) with the C++ executor's key names.

What the CPU runtime cannot do is refused by name (NotImplementedError): penalties, beam search, n > 1, ...
"""

from __future__ import annotations

import asyncio
import collections
import copy
import itertools
import json
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

DATA = Path(__file__).resolve().parents[2] / "data" / "upstream" / "tensorrt_llm_llm_api.json"
LINE_ENV = "NEMO_FAKE_TRTLLM_LINE"
DEFAULT_LINE = "1.2"
DEFAULT_MAX_BATCH_SIZE = 8
IDLE_WAIT_S = 0.02


def upstream() -> dict[str, Any]:
    return json.loads(DATA.read_text())


def line_name() -> str:
    return os.environ.get(LINE_ENV, DEFAULT_LINE)


# ------------------------------------------------------------------------------------------- generated records


def _names(spec: dict[str, Any], unverified: Sequence[str]) -> dict[str, Any]:
    fields = dict(spec.get("fields") or {})
    for name in unverified:
        fields.setdefault(name, None)
    return fields


def record_class(
    class_name: str,
    line: str,
    fields: dict[str, Any],
    *,
    extra_slots: Sequence[str] = (),
    validate: Callable[[Any], None] | None = None,
    properties: dict[str, Any] | None = None,
) -> type:
    """A class whose constructor takes exactly ``fields`` (keywords, defaults as recorded) and whose instances hold
    nothing else."""

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if args:
            raise TypeError(f"{class_name}() takes keyword arguments only (fake of tensorrt_llm {line})")
        unknown = sorted(set(kwargs) - set(fields))
        if unknown:
            raise TypeError(
                f"{class_name}.__init__() got an unexpected keyword argument {unknown[0]!r}: tensorrt_llm {line} "
                f"(tests/data/upstream/tensorrt_llm_llm_api.json) has no such field"
            )
        for name, default in fields.items():
            setattr(self, name, kwargs[name] if name in kwargs else copy.deepcopy(default))
        for name in extra_slots:
            setattr(self, name, None)
        if validate is not None:
            validate(self)

    def __repr__(self: Any) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in fields if getattr(self, name) is not None)
        return f"{class_name}({shown})"

    namespace: dict[str, Any] = {
        "__slots__": (*fields, *extra_slots),
        "__init__": __init__,
        "__repr__": __repr__,
        "UPSTREAM_LINE": line,
        "FIELDS": tuple(fields),
    }
    namespace.update(properties or {})
    return type(class_name, (), namespace)


def _validate_sampling(params: Any) -> None:
    """SamplingParams.__post_init__ / _validate (1.2.0rc2)."""
    if params.pad_id is None:
        params.pad_id = params.end_id
    params.best_of = params.best_of or params.n
    if params.top_p is not None and not 0 <= params.top_p <= 1:
        raise ValueError(f"require 0 <= top_p <= 1, got top_p={params.top_p}")
    if params.top_k is not None and params.top_k < 0:
        raise ValueError(f"require top_k >= 0, got top_k={params.top_k}")
    if params.temperature is not None and params.temperature < 0:
        raise ValueError(f"require temperature >= 0, got temperature={params.temperature}")
    if params.best_of < params.n:
        raise ValueError(f"best_of ({params.best_of}) cannot be less than n ({params.n})")
    if params.guided_decoding is not None:
        set_guides = [name for name in params.guided_decoding.FIELDS if getattr(params.guided_decoding, name)]
        if len(set_guides) > 1:
            raise ValueError(f"Only one guide can be used for a request, but got {len(set_guides)}.")
    params.logprobs = params.logprobs and int(params.logprobs)


def _validate_cuda_graphs(config: Any) -> None:
    if config.batch_sizes:
        config.batch_sizes = sorted(config.batch_sizes)
        if config.max_batch_size and config.max_batch_size != max(config.batch_sizes):
            raise ValueError("CudaGraphConfig.max_batch_size must equal max(batch_sizes) when both are given")
        config.max_batch_size = max(config.batch_sizes)
    elif config.max_batch_size < 0:
        raise ValueError("cuda_graph_config.max_batch_size must be non-negative")


def _completion_properties() -> dict[str, Any]:
    return {
        "length": property(lambda self: len(self.token_ids)),
        "token_ids_diff": property(lambda self: self.token_ids[self._last_token_ids_len :]),
        "logprobs_diff": property(lambda self: self.logprobs[self._last_logprobs_len :]),
        "text_diff": property(lambda self: self.text[self._last_text_len :]),
    }


def build(line: str | None = None) -> SimpleNamespace:
    """Every fake name of one line: LLM, SamplingParams, GuidedDecodingParams, KvCacheConfig, CudaGraphConfig,
    CompletionOutput, Logprob, and the data they were made from."""
    line = line or line_name()
    data = upstream()["lines"][line]
    classes, unverified = data["classes"], data.get("unverified", {})
    api = SimpleNamespace(line=line, data=data)
    guided = _names(classes["GuidedDecodingParams"], unverified.get("GuidedDecodingParams", []))
    api.GuidedDecodingParams = record_class("GuidedDecodingParams", line, guided)
    api.SamplingParams = record_class(
        "SamplingParams",
        line,
        _names(classes["SamplingParams"], unverified.get("SamplingParams", [])),
        validate=_validate_sampling,
    )
    api.KvCacheConfig = record_class("KvCacheConfig", line, _names(classes["KvCacheConfig"], []))
    api.CudaGraphConfig = record_class(
        "CudaGraphConfig", line, _names(classes["CudaGraphConfig"], []), validate=_validate_cuda_graphs
    )
    api.Logprob = record_class("Logprob", line, _names(classes["Logprob"], []))
    api.LoraConfig = record_class("LoraConfig", line, _names(classes["LoraConfig"], []))
    api.LoRARequest = record_class(
        "LoRARequest", line, _names(classes["LoRARequest"], []), validate=_validate_lora_request
    )
    api.CompletionOutput = record_class(
        "CompletionOutput",
        line,
        _names(classes["CompletionOutput"], []),
        extra_slots=("_last_token_ids_len", "_last_logprobs_len", "_last_text_len"),
        properties=_completion_properties(),
    )
    api.TORCH_LLM_ARGS = frozenset(classes["TorchLlmArgs"]["fields"]) | {"backend", "_mpi_session"}
    api.REQUEST_OUTPUT_ATTRIBUTES = tuple(classes["RequestOutput"]["attributes"])
    api.INIT_PARAMS = tuple(data["functions"]["LLM.__init__"]["params"])
    api.GENERATE_ASYNC_PARAMS = tuple(data["functions"]["LLM.generate_async"]["params"])
    api.STATS_PARAMS = tuple(data["functions"]["LLM.get_stats_async"]["params"])
    api.LLM = type("LLM", (FakeLLM,), {"api": api})
    return api


def _validate_lora_request(request: Any) -> None:
    if request.lora_path is not None and not os.path.exists(request.lora_path):  # LoRARequest.__post_init__
        raise ValueError(f"lora_path ({request.lora_path}) does not exist.")


def bind(function: str, params: Sequence[str], args: Sequence[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """``args`` and ``kwargs`` bound to the recorded parameter names; a name upstream lacks is a TypeError."""
    if len(args) > len(params):
        raise TypeError(f"{function}() takes {len(params)} positional arguments, {len(args)} given")
    bound = dict(zip(params, args, strict=False))
    for name, value in kwargs.items():
        if name not in params:
            raise TypeError(f"{function}() got an unexpected keyword argument {name!r} (not a parameter upstream)")
        if name in bound:
            raise TypeError(f"{function}() got multiple values for argument {name!r}")
        bound[name] = value
    return bound


# ------------------------------------------------------------------------------------------------ tokenizer


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, inverted: printable character → byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(char): byte for byte, char in zip(printable, chars, strict=True)}


class HfVocabulary:
    """What nemo_runtime.guided.GrammarEngine reads of a tokenizer, from a Hugging Face tokenizer directory (a
    byte-level BPE, as `nemo-build hf-tokenizer` writes): ids of special added tokens are control ids."""

    def __init__(self, directory: str | Path) -> None:
        from transformers import PreTrainedTokenizerFast

        self.tokenizer = PreTrainedTokenizerFast.from_pretrained(str(directory))
        self.vocab_size = len(self.tokenizer)
        self.eos_id = self.tokenizer.eos_token_id
        self._controls = {i for i, token in self.tokenizer.added_tokens_decoder.items() if token.special}
        self._decoder = _byte_decoder()

    def is_control(self, token_id: int) -> bool:
        return token_id in self._controls

    def token_bytes(self, token_id: int) -> bytes:
        piece = self.tokenizer.convert_ids_to_tokens(token_id)
        return bytes(self._decoder[char] for char in piece)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))


# ----------------------------------------------------------------------------------------------- the engine


class _Live:
    """One request inside the fake engine."""

    def __init__(self, output: FakeRequestOutput, params: Any, prompt: list[int]) -> None:
        self.output = output
        self.params = params
        self.prompt = prompt
        self.steps = 0
        self.stop_words: list[list[int]] = []


class FakeLLM:
    """``tensorrt_llm.LLM`` over the reference runtime (see the module docstring)."""

    api: SimpleNamespace  # set on the generated subclass

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        api = self.api
        explicit = {name: kwargs.pop(name) for name in list(kwargs) if name in api.INIT_PARAMS}
        bound = bind("LLM.__init__", api.INIT_PARAMS, args, explicit)
        for key in kwargs:  # BaseLLM.__init__'s check
            if key not in api.TORCH_LLM_ARGS:
                raise ValueError(f"LLM got invalid argument: {key}")
        backend = kwargs.get("backend") or "pytorch"
        if backend != "pytorch":
            raise ValueError(f"the fake serves the PyTorch backend only, got backend={backend!r}")
        for name, cls in (
            ("kv_cache_config", api.KvCacheConfig),
            ("cuda_graph_config", api.CudaGraphConfig),
            ("lora_config", api.LoraConfig),
        ):
            if kwargs.get(name) is not None and not isinstance(kwargs[name], cls):
                raise TypeError(f"{name} must be a {cls.__name__}, got {type(kwargs[name]).__name__}")
        self.args = {**bound, **kwargs}
        self.kv_cache_config = kwargs.get("kv_cache_config") or api.KvCacheConfig()
        model = bound.get("model")
        if model is None:
            raise TypeError("LLM() missing the argument 'model'")
        from nemo_runtime.scheduler import ReferenceRuntime

        self._runtime = ReferenceRuntime.from_checkpoint(
            model, max_batch_size=kwargs.get("max_batch_size") or DEFAULT_MAX_BATCH_SIZE
        )
        self.max_seq_len = min(kwargs.get("max_seq_len") or self._runtime.max_seq_len, self._runtime.max_seq_len)
        self.lora_config = kwargs.get("lora_config")
        self.tokenizer: HfVocabulary | None = None
        if not bound.get("skip_tokenizer_init", False):
            tokenizer = bound.get("tokenizer")
            if tokenizer is not None:
                self.tokenizer = HfVocabulary(tokenizer)
            elif (Path(model) / "tokenizer.json").is_file():
                self.tokenizer = HfVocabulary(model)
        self._grammar = None
        backend_name = kwargs.get("guided_decoding_backend")
        if backend_name is not None:
            if backend_name != "xgrammar":
                raise NotImplementedError(f"fake: guided_decoding_backend {backend_name!r} (only xgrammar)")
            if self.tokenizer is None:
                raise ValueError("guided decoding needs a tokenizer: pass tokenizer= and not skip_tokenizer_init")
            from nemo_runtime.guided import GrammarEngine

            self._grammar = GrammarEngine(self.tokenizer, self._runtime.model.vocab_size)  # type: ignore[arg-type]
        self._stats_on = bool(kwargs.get("enable_iter_perf_stats", False))
        self._iterations = itertools.count()
        self._stats: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=kwargs.get("iter_stats_max_iterations") or 1000
        )
        self._lock = threading.Lock()
        self._live: dict[str, _Live] = {}
        self._serial = 0
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="fake-tensorrt-llm", daemon=True)
        self._thread.start()

    # ----- the API ------------------------------------------------------------------------------------------
    def generate_async(self, *args: Any, **kwargs: Any) -> FakeRequestOutput:
        bound = bind("LLM.generate_async", self.api.GENERATE_ASYNC_PARAMS, args, kwargs)
        if self._closed:
            raise RuntimeError("LLM is shutting down")
        served = ("inputs", "sampling_params", "streaming", "lora_request")
        unused = {k: v for k, v in bound.items() if k not in served and v}
        if unused:
            raise NotImplementedError(f"fake: generate_async({', '.join(unused)}) is not served")
        prompt = self._prompt(bound["inputs"])
        params = bound.get("sampling_params") or self.api.SamplingParams()
        if not isinstance(params, self.api.SamplingParams):
            raise TypeError(f"The sampling_params must be type SamplingParams or None, but got {type(params)}")
        params = copy.copy(params)
        if params.end_id is None:  # _prepare_sampling_params
            if self.tokenizer is None:
                raise ValueError(
                    "tokenizer is required to reset end_id if it is None, or you can explicitly specify the end_id "
                    "for sampling_params"
                )
            params.end_id = self.tokenizer.eos_id
            params.pad_id = params.pad_id if params.pad_id is not None else params.end_id
        self._refuse_unserved(params)
        with self._lock:
            self._serial += 1
            request_id = self._serial
        output = FakeRequestOutput(self, request_id, prompt, params, bool(bound.get("streaming", False)))
        live = _Live(output, params, prompt)
        live.stop_words = [[token] for token in params.stop_token_ids or []] + self._encoded(params.stop, "stop")
        output._stop_words = live.stop_words
        bad_words = [[token] for token in params.bad_token_ids or []] + self._encoded(params.bad, "bad")
        if len(prompt) + params.max_tokens > self.max_seq_len:
            raise ValueError(
                f"The sum of prompt length ({len(prompt)}) and max_tokens ({params.max_tokens}) should not exceed "
                f"max_seq_len ({self.max_seq_len})"
            )
        from nemo_runtime.scheduler import Returns

        adapter = self._adapter(bound.get("lora_request"))
        with self._lock:
            self._live[output.runtime_id] = live
        self._runtime.add_request(
            output.runtime_id,
            prompt,
            max_new_tokens=params.max_tokens,
            sampling=self._sampling(params),
            end_id=params.end_id if params.end_id >= 0 else None,
            stop_words=live.stop_words,
            token_mask=self._token_mask(params, bad_words),
            logits_mask=self._logits_mask(request_id, live, params),
            returns=Returns(bool(params.logprobs), params.return_context_logits, params.return_generation_logits),
            adapter=adapter,
        )
        self._wake.set()
        return output

    def _adapter(self, lora_request: Any) -> Any:
        """The runtime adapter of a LoRARequest: the PEFT adapter at its path, loaded into the runtime's cache under
        ``lora_int_id`` (as the LLM's LoRA manager loads a Hugging Face adapter by path)."""
        if lora_request is None:
            return None
        if not isinstance(lora_request, self.api.LoRARequest):
            raise TypeError(f"lora_request must be a LoRARequest, got {type(lora_request).__name__}")
        if self.lora_config is None:
            raise ValueError("a LoRA request needs the LLM created with lora_config")
        from nemo_chat_core.engine_tensors import LoraInputs
        from nemo_chat_core.lora import read_adapter
        from nemo_runtime.scheduler import base_shapes

        model = self._runtime.model
        rank = self.lora_config.max_lora_rank
        peft = read_adapter(Path(lora_request.lora_path), base_shapes(model), rank, lora_request.lora_name)
        return self._runtime.lora.resolve(LoraInputs(lora_request.lora_int_id, peft.weights, peft.config))

    def get_stats_async(self, *args: Any, **kwargs: Any) -> FakeIterationResult:
        bound = bind("LLM.get_stats_async", self.api.STATS_PARAMS, args, kwargs)
        return FakeIterationResult(self._stats, float(bound.get("timeout", 2)))

    def shutdown(self) -> None:
        self._closed = True
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)

    # ----- request set-up -----------------------------------------------------------------------------------
    def _prompt(self, inputs: Any) -> list[int]:
        if isinstance(inputs, dict):
            inputs = inputs.get("prompt_token_ids", inputs.get("prompt"))
        if isinstance(inputs, str):
            if self.tokenizer is None:
                raise ValueError("a text prompt needs a tokenizer")
            return self.tokenizer.encode(inputs)
        return [int(token) for token in inputs]

    def _encoded(self, texts: Any, name: str) -> list[list[int]]:
        if texts is None:
            return []
        if self.tokenizer is None:
            raise RuntimeError(
                f"SamplingParams.{name} ({texts}) is not processed by tokenizer, please call the setup method."
            )
        return [self.tokenizer.encode(text) for text in ([texts] if isinstance(texts, str) else texts)]

    @staticmethod
    def _refuse_unserved(params: Any) -> None:
        neutral: dict[str, tuple[Any, ...]] = {
            "n": (1,), "best_of": (None, 1), "use_beam_search": (False,), "repetition_penalty": (None, 1.0),
            "presence_penalty": (None, 0.0), "frequency_penalty": (None, 0.0), "embedding_bias": (None,),
            "prompt_logprobs": (None, 0), "min_p": (None, 0.0), "lookahead_config": (None,),
            "apply_batched_logits_processor": (False,), "length_penalty": (None,), "no_repeat_ngram_size": (None,),
            "additional_model_outputs": (None,), "return_encoder_output": (False,),
        }  # fmt: skip
        served = [name for name, values in neutral.items() if not _neutral(getattr(params, name, values[0]), values)]
        if served:
            raise NotImplementedError(f"fake: the CPU reference runtime does not serve SamplingParams.{served[0]}")
        if getattr(params, "exclude_input_from_output", True) is False:
            raise NotImplementedError("fake: exclude_input_from_output=False is not served")

    @staticmethod
    def _sampling(params: Any) -> Any:
        from nemo_runtime.sampling import GREEDY, SamplingParams

        greedy = (
            (params.temperature is None and params.top_p is None and params.top_k is None)
            or params.top_k == 1
            or params.top_p == 0.0
            or params.temperature == 0
        )
        if greedy:
            return GREEDY
        return SamplingParams(
            temperature=1.0 if params.temperature is None else params.temperature,
            top_k=params.top_k or 0,
            top_p=1.0 if params.top_p is None else params.top_p,
            seed=params.seed,
        )

    def _token_mask(self, params: Any, bad_words: list[list[int]]) -> Any:
        import torch

        vocab = self._runtime.model.vocab_size
        singles = [word[0] for word in bad_words if len(word) == 1]
        longer = [word for word in bad_words if len(word) > 1]
        end_id, min_tokens = params.end_id, params.min_tokens or 0

        def mask(generated: Sequence[int]) -> Any:
            banned = list(singles)
            banned += [w[-1] for w in longer if list(generated[len(generated) - len(w) + 1 :]) == w[:-1]]
            if end_id is not None and end_id >= 0 and len(generated) < min_tokens:
                banned.append(end_id)
            if not banned:
                return None
            allowed = torch.ones(vocab, dtype=torch.bool)
            allowed[banned] = False
            return allowed

        return mask

    def _logits_mask(self, request_id: int, live: _Live, params: Any) -> Any:
        steps: list[Callable[[Any, Sequence[int]], None]] = []
        if params.guided_decoding is not None:
            if self._grammar is None:
                raise ValueError("guided decoding needs guided_decoding_backend='xgrammar' on the LLM")
            steps.append(self._grammar.mask(_guide(params.guided_decoding)))
        processors = params.logits_processor
        for processor in processors if isinstance(processors, list) else [processors] if processors else []:

            def call(logits: Any, generated: Sequence[int], processor: Any = processor) -> None:
                processor(request_id, logits, [live.prompt + list(generated)], None, None)

            steps.append(call)
        if not steps:
            return None

        def apply(logits: Any, generated: Sequence[int]) -> None:
            for step in steps:
                step(logits, generated)

        return apply

    # ----- the loop -----------------------------------------------------------------------------------------
    def cancel(self, runtime_id: str) -> None:
        self._runtime.cancel(runtime_id)
        self._wake.set()

    def _loop(self) -> None:
        idle_reported = True
        while not self._closed:
            if not self._runtime.has_work():
                if not idle_reported:
                    self._record_stats(0)
                    idle_reported = True
                self._wake.wait(IDLE_WAIT_S)
                self._wake.clear()
                continue
            idle_reported = False
            try:
                outputs = self._runtime.step()
            except Exception as exc:  # fail every request in flight, keep serving
                with self._lock:
                    lives, self._live = list(self._live.values()), {}
                for live in lives:
                    live.output.deliver(f"fake engine step failed: {exc}")
                continue
            context = 0
            for step in outputs:
                with self._lock:
                    live = self._live.get(step.request_id)
                    if live is not None and step.finished:
                        del self._live[step.request_id]
                if live is not None:
                    context += live.steps == 0
                    live.steps += 1
                    live.output.deliver(step)
            self._record_stats(context)

    def _record_stats(self, context: int) -> None:
        if not self._stats_on:
            return
        runtime = self._runtime
        per_block = self.kv_cache_config.tokens_per_block or 32
        with runtime._lock:
            pending = len(runtime._pending)
        active = list(runtime._active.values())
        used = sum(-(-(len(r.prompt_ids) + len(r.generated)) // per_block) for r in active)
        most = runtime.max_batch_size * -(-self.max_seq_len // per_block)
        self._stats.append(
            {
                "iter": next(self._iterations),
                "numActiveRequests": len(active),
                "numQueuedRequests": pending,
                "maxNumActiveRequests": runtime.max_batch_size,
                "kvCacheStats": {
                    "maxNumBlocks": most,
                    "freeNumBlocks": most - used,
                    "usedNumBlocks": used,
                    "tokensPerBlock": per_block,
                    "reusedBlocks": 0,
                },
                "inflightBatchingStats": {
                    "numScheduledRequests": len(active),
                    "numContextRequests": context,
                    "numPausedRequests": 0,
                },
            }
        )


def _neutral(value: Any, neutral: Sequence[Any]) -> bool:
    """``value`` is one of ``neutral`` (booleans compared by identity: True is not 1 here)."""
    return any(
        value is choice or (not isinstance(value, bool) and not isinstance(choice, bool) and value == choice)
        for choice in neutral
    )


def _guide(params: Any) -> Any:
    from nemo_chat_core.guided import Guide

    if params.json_object:
        return Guide("json", "", "guided_decoding")
    if params.json is not None:
        text = params.json if isinstance(params.json, str) else json.dumps(params.json)
        return Guide("json_schema", text, "guided_decoding")
    if params.regex is not None:
        return Guide("regex", params.regex, "guided_decoding")
    if params.grammar is not None:
        return Guide("ebnf_grammar", params.grammar, "guided_decoding")
    raise NotImplementedError("fake: structural_tag guides are not served")


class FakeRequestOutput:
    """``RequestOutput``: the attributes recorded upstream, ``abort()``, and (async) iteration over its responses.

    As upstream's, it changes only in the thread that consumes it: the engine thread queues each step's output and
    ``__anext__`` / ``result()`` apply them (GenerationResultBase._handle_response runs in the consumer too), so a
    reader never sees ``token_ids`` and ``generation_logits`` half updated.
    """

    def __init__(self, llm: FakeLLM, request_id: int, prompt: list[int], params: Any, streaming: bool) -> None:
        api = llm.api
        self._llm = llm
        self._params = params
        self._streaming = streaming
        self._aborted = False
        self._attributes: dict[str, Any] = dict.fromkeys(api.REQUEST_OUTPUT_ATTRIBUTES)
        self._attributes.update(request_id=request_id, prompt_token_ids=prompt, finished=False)
        completion = api.CompletionOutput(index=0)
        completion._last_token_ids_len = completion._last_logprobs_len = completion._last_text_len = 0
        self._attributes["outputs"] = [completion]
        self.runtime_id = f"fake-{request_id}"
        self._stop_words: list[list[int]] = []
        self._generation_rows: list[Any] = []
        self._error: str | None = None
        self._final_yielded = False
        self._loop: asyncio.AbstractEventLoop | None
        try:
            self._loop = asyncio.get_running_loop()
            self._aqueue: asyncio.Queue[Any] = asyncio.Queue()
        except RuntimeError:
            self._loop = None
        self._queue: queue.Queue[Any] = queue.Queue()

    def __getattr__(self, name: str) -> Any:
        attributes = self.__dict__.get("_attributes", {})
        if name in attributes:
            return attributes[name]
        raise AttributeError(f"RequestOutput has no attribute {name!r} upstream (fake of {self._llm.api.line})")

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_") and name != "runtime_id":
            raise AttributeError(f"RequestOutput.{name} cannot be set")
        object.__setattr__(self, name, value)

    # ----- from the engine thread: queued ----------------------------------------------------------------------
    def deliver(self, item: Any) -> None:
        """A StepOutput, or an error message (str), for the consumer to apply."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._aqueue.put_nowait, item)
        else:
            self._queue.put(item)

    # ----- in the consumer ----------------------------------------------------------------------------------
    def _apply(self, item: Any) -> None:
        if isinstance(item, str):
            self._error = item
            self._attributes["finished"] = True
            return
        completion = self.outputs[0]
        completion.token_ids = completion.token_ids + list(item.new_token_ids)
        if self._params.logprobs:
            completion.logprobs = completion.logprobs + [
                {token: self._llm.api.Logprob(logprob=value, rank=None)}
                for token, value in zip(item.new_token_ids, item.log_probs, strict=True)
            ]
            completion.cumulative_logprob = sum(next(iter(entry.values())).logprob for entry in completion.logprobs)
        if item.generation_logits is not None:
            import torch

            self._generation_rows.append(item.generation_logits)
            completion.generation_logits = torch.cat(self._generation_rows)
        if item.context_logits is not None:
            self._attributes["context_logits"] = item.context_logits
        if item.finished:
            self._finish(item.finish_reason)

    def _finish(self, reason: str | None) -> None:
        completion = self.outputs[0]
        if reason == "error":
            self._error = "the token constraints allowed no token"
        elif reason == "stop":
            completion.finish_reason = "stop"
            for word in self._stop_words:  # _handle_sequence's STOP_WORDS branch
                if completion.token_ids[-len(word) :] == word:
                    completion.stop_reason = word[0] if len(word) == 1 else word
                    if not self._params.include_stop_str_in_output:
                        cut = len(completion.token_ids) - len(word)
                        completion.token_ids = completion.token_ids[:cut]
                        completion.logprobs = completion.logprobs[:cut]
                    break
        else:
            completion.finish_reason = reason
        self._attributes["finished"] = True

    def _updated(self) -> FakeRequestOutput:
        if self._error is not None:
            raise RuntimeError(self._error)
        completion = self.outputs[0]
        completion._last_token_ids_len = getattr(self, "_read_ids", 0)
        completion._last_logprobs_len = getattr(self, "_read_logprobs", 0)
        self._read_ids, self._read_logprobs = len(completion.token_ids), len(completion.logprobs)
        self._final_yielded = self.finished
        return self

    # ----- the API ------------------------------------------------------------------------------------------
    def abort(self) -> None:
        self._aborted = True
        self._llm.cancel(self.runtime_id)

    def aborted(self) -> bool:
        return self._aborted

    def result(self, timeout: float | None = None) -> FakeRequestOutput:
        while not self.finished:
            self._apply(self._queue.get(timeout=timeout))
        return self._updated()

    async def aresult(self) -> FakeRequestOutput:
        async for _ in self:
            pass
        return self

    def __aiter__(self) -> FakeRequestOutput:
        return self

    async def __anext__(self) -> FakeRequestOutput:
        if self._final_yielded:
            raise StopAsyncIteration
        while True:  # streaming: every step is a response; otherwise only the last
            self._apply(await self._aqueue.get())
            if self._streaming or self.finished:
                return self._updated()


class FakeIterationResult:
    """``IterationResult``: yields the iteration stats queued so far, then ends after ``timeout`` seconds without
    new ones."""

    def __init__(self, stats: collections.deque[dict[str, Any]], timeout: float) -> None:
        self._stats = stats
        self._timeout = timeout

    def __aiter__(self) -> FakeIterationResult:
        return self

    async def __anext__(self) -> dict[str, Any]:
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                return self._stats.popleft()
            except IndexError:
                if time.monotonic() >= deadline:
                    raise StopAsyncIteration from None
                await asyncio.sleep(0.01)
