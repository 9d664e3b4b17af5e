"""The Mistral / Llama forward pass over merged checkpoint weights, with a slot-based KV cache.

Computation is float32 on CPU. For FP8 checkpoints the model does what a TensorRT-LLM FP8 engine does
numerically: every quantized linear layer sees its input quantized to FP8 E4M3 with the calibrated
``activation_scaling_factor`` (weights were dequantized at load), and K/V are stored in the cache as
FP8 with the ``kv_cache_scaling_factor``.

KV cache layout: per slot and layer one tensor ``[kv_heads, capacity, head_size]`` for K and one for V, each
slot's capacity its own sequence's. A sequence owns one slot for its lifetime. A prompt is prefilled in chunks of
``prefill_chunk_tokens`` (TensorRT-LLM's chunked context, at the profiles' ``max_num_tokens``), and attention never
builds a matrix of queries x positions: memory grows linearly with the prompt, so a 128k-token prompt runs on a
CPU (its time still grows with the square: every position attends to every earlier one).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nemo_runtime.lora import BatchLora, RuntimeAdapter
from nemo_runtime.weights import Layer, Linear, Weights

FP8_E4M3_MAX = 448.0
_INITIAL_CAPACITY = 128
_INITIAL_SLOTS = 8
DEFAULT_PREFILL_CHUNK_TOKENS = 8192  # the shipped profiles' max_num_tokens


def fp8_round_trip(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Quantize ``x`` to FP8 E4M3 with ``scale`` (saturating, as TensorRT-LLM does) and back to float32."""
    return (x / scale).clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(torch.float8_e4m3fn).to(torch.float32) * scale


def _linear(x: torch.Tensor, layer: Linear) -> torch.Tensor:
    if layer.input_scale is not None:
        x = fp8_round_trip(x, layer.input_scale)
    return x @ layer.weight.T


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


class _Rotary:
    """GPT-NeoX style rotary embedding (rotate halves) with a cos/sin table grown on demand."""

    def __init__(self, head_size: int, base: float) -> None:
        self.inv_freq = 1.0 / (base ** (torch.arange(0, head_size, 2, dtype=torch.float64) / head_size))
        self.cos = torch.empty(0, head_size)
        self.sin = torch.empty(0, head_size)

    def _ensure(self, length: int) -> None:
        if length <= self.cos.shape[0]:
            return
        size = max(length, 2 * self.cos.shape[0], _INITIAL_CAPACITY)
        freqs = torch.outer(torch.arange(size, dtype=torch.float64), self.inv_freq)
        emb = torch.cat([freqs, freqs], dim=-1)
        self.cos, self.sin = emb.cos().float(), emb.sin().float()

    def apply(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """``x`` [..., tokens, head_size] rotated by ``positions`` [tokens] (or broadcastable)."""
        self._ensure(int(positions.max()) + 1)
        cos, sin = self.cos[positions], self.sin[positions]
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin


class KVCache:
    """Per slot and layer one K and one V tensor ``[kv_heads, capacity, head_size]``.

    A slot's capacity grows by doubling (up to ``max_positions``) as its sequence does, and is given back when the
    slot is released, so the cache holds what the running sequences fill, not ``slots x longest``: one 128k-token
    sequence beside short ones costs its own positions only.
    """

    def __init__(self, num_layers: int, num_kv_heads: int, head_size: int, max_positions: int) -> None:
        self.num_layers = num_layers
        self.shape_tail = (num_kv_heads, head_size)
        self.max_positions = max_positions
        self.k: list[list[torch.Tensor]] = []  # [slot][layer]
        self.v: list[list[torch.Tensor]] = []
        self.free_slots: list[int] = []
        self._grow_slots(_INITIAL_SLOTS)

    def _alloc(self, capacity: int) -> list[torch.Tensor]:
        heads, size = self.shape_tail
        return [torch.zeros(heads, capacity, size) for _ in range(self.num_layers)]

    def _grow_slots(self, slots: int) -> None:
        old = self.num_slots
        for _ in range(old, slots):
            self.k.append(self._alloc(0))
            self.v.append(self._alloc(0))
        self.free_slots = list(range(slots - 1, old - 1, -1)) + self.free_slots

    @property
    def num_slots(self) -> int:
        return len(self.k)

    def capacity(self, slot: int) -> int:
        return self.k[slot][0].shape[1]

    def acquire(self) -> int:
        if not self.free_slots:
            self._grow_slots(self.num_slots * 2)
        return self.free_slots.pop()

    def release(self, slot: int) -> None:
        self.k[slot], self.v[slot] = self._alloc(0), self._alloc(0)
        self.free_slots.append(slot)

    def reserve(self, slot: int, length: int) -> None:
        """Make room for positions ``[0, length)`` of ``slot``."""
        if length > self.max_positions:
            raise ValueError(f"sequence length {length} exceeds max_position_embeddings {self.max_positions}")
        capacity = self.capacity(slot)
        if length <= capacity:
            return
        capacity = max(capacity, _INITIAL_CAPACITY)
        while capacity < length:
            capacity *= 2
        capacity = min(capacity, self.max_positions)
        for store in (self.k, self.v):
            grown = self._alloc(capacity)
            for new, old in zip(grown, store[slot], strict=True):
                new[:, : old.shape[1]] = old
            store[slot] = grown

    @property
    def bytes_per_position(self) -> int:
        """Memory one position of one sequence takes: K and V of every layer, float32."""
        heads, size = self.shape_tail
        return 2 * self.num_layers * heads * size * 4

    @property
    def positions_held(self) -> int:
        """Positions allocated over every slot (what the cache's memory is proportional to)."""
        return sum(self.capacity(slot) for slot in range(self.num_slots))


class ReferenceModel:
    """Forward pass of a TensorRT-LLM Llama-family checkpoint: prefill one sequence, decode a batch."""

    def __init__(self, weights: Weights, prefill_chunk_tokens: int = DEFAULT_PREFILL_CHUNK_TOKENS) -> None:
        if prefill_chunk_tokens < 1:
            raise ValueError(f"prefill_chunk_tokens must be >= 1, got {prefill_chunk_tokens}")
        self.weights = weights
        self.prefill_chunk_tokens = prefill_chunk_tokens
        c = weights.config
        self.config = c
        self.rotary = _Rotary(c.head_size, c.rotary_base)
        self.cache = KVCache(c.num_layers, c.num_kv_heads, c.head_size, c.max_position_embeddings)
        self._q_size = c.num_heads * c.head_size
        self._kv_size = c.num_kv_heads * c.head_size
        q, kv = self._q_size, self._kv_size
        # LoRA modules by the columns of the fused projection they adapt (TensorRT-LLM's names)
        self._qkv_modules = (("attn_q", 0, q), ("attn_k", q, q + kv), ("attn_v", q + kv, q + 2 * kv))
        self._dense_modules = (("attn_dense", 0, c.hidden_size),)
        self._fc_modules = (("mlp_h_to_4h", 0, c.intermediate_size),)  # HF gate_proj
        self._gate_modules = (("mlp_gate", 0, c.intermediate_size),)  # HF up_proj
        self._proj_modules = (("mlp_4h_to_h", 0, c.hidden_size),)  # HF down_proj
        self._fp8_kv = c.kv_cache_quant_algo == "FP8"
        # Rows of the output layer that are all zero give a logit of exactly 0 whatever the input, so the
        # projection only needs the others. Real checkpoints have none; the trained tiny model zeroes the
        # rows of every id it never emits (all but ~100 of 131072), and without this the CPU step time
        # would be a 131072-wide matmul that batching cannot amortise.
        live = weights.lm_head.abs().sum(dim=1).nonzero().flatten()
        self._live_rows = live if len(live) < len(weights.lm_head) // 2 else None
        self._live_head = weights.lm_head[live] if self._live_rows is not None else None

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @staticmethod
    def _adapted(
        x: torch.Tensor,
        linear: Linear,
        lora: BatchLora | None,
        index: int,
        modules: tuple[tuple[str, int, int], ...],
    ) -> torch.Tensor:
        out = _linear(x, linear)
        if lora is not None:
            lora.add(out, x, index, modules)
        return out

    def _project_qkv(
        self, index: int, layer: Layer, x: torch.Tensor, positions: torch.Tensor, lora: BatchLora | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x`` [tokens, hidden] → q [heads, tokens, d], k/v [kv_heads, tokens, d] (rotary applied)."""
        c = self.config
        qkv = self._adapted(_rms_norm(x, layer.input_norm, c.norm_epsilon), layer.qkv, lora, index, self._qkv_modules)
        q, k, v = qkv.split([self._q_size, self._kv_size, self._kv_size], dim=-1)
        q = q.view(-1, c.num_heads, c.head_size).transpose(0, 1)
        k = k.view(-1, c.num_kv_heads, c.head_size).transpose(0, 1)
        v = v.view(-1, c.num_kv_heads, c.head_size).transpose(0, 1)
        q, k = self.rotary.apply(q, positions), self.rotary.apply(k, positions)
        if self._fp8_kv:
            k = fp8_round_trip(k, layer.k_cache_scale)  # type: ignore[arg-type]
            v = fp8_round_trip(v, layer.v_cache_scale)  # type: ignore[arg-type]
        return q, k, v

    def _mlp_block(self, index: int, layer: Layer, h: torch.Tensor, lora: BatchLora | None) -> torch.Tensor:
        x = _rms_norm(h, layer.post_norm, self.config.norm_epsilon)
        up = F.silu(self._adapted(x, layer.fc, lora, index, self._fc_modules)) * self._adapted(
            x, layer.gate, lora, index, self._gate_modules
        )
        return h + self._adapted(up, layer.proj, lora, index, self._proj_modules)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        normed = _rms_norm(hidden, self.weights.final_norm, self.config.norm_epsilon)
        if self._live_rows is None or self._live_head is None:
            return normed @ self.weights.lm_head.T
        logits = normed.new_zeros(*normed.shape[:-1], self.weights.lm_head.shape[0])
        logits[..., self._live_rows] = normed @ self._live_head.T
        return logits

    @torch.inference_mode()
    def prefill(
        self, slot: int, token_ids: list[int], all_logits: bool = False, adapter: RuntimeAdapter | None = None
    ) -> torch.Tensor:
        """Run the whole prompt of the sequence in ``slot`` (in chunks of ``prefill_chunk_tokens``, with
        ``adapter``'s LoRA, if any), fill its cache.

        Returns the logits of the last position [vocab], or of every position [tokens, vocab].
        """
        step = self.prefill_chunk_tokens
        pieces = [
            self.extend(slot, token_ids[start : start + step], start, all_logits, adapter)
            for start in range(0, len(token_ids), step)
        ]
        return torch.cat(pieces) if all_logits else pieces[-1]

    @torch.inference_mode()
    def extend(
        self,
        slot: int,
        token_ids: list[int],
        start: int,
        all_logits: bool = False,
        adapter: RuntimeAdapter | None = None,
    ) -> torch.Tensor:
        """Run ``token_ids`` at positions ``[start, start + len)`` of the sequence in ``slot`` (with ``adapter``'s
        LoRA, if any), whose cache holds its positions ``[0, start)``: one chunk of a chunked prefill (chunked
        context). Memory grows with the chunk and the cache, never with their product (:func:`chunk_attention`).

        Returns the logits of the chunk's last position [vocab], or of each of its positions [tokens, vocab].
        """
        lora = None if adapter is None else BatchLora([adapter], rows_are_tokens=True)
        length = len(token_ids)
        end = start + length
        self.cache.reserve(slot, end)
        positions = torch.arange(start, end)
        h = self.weights.embedding[torch.tensor(token_ids)]
        for i, layer in enumerate(self.weights.layers):
            q, k, v = self._project_qkv(i, layer, h, positions, lora)
            keys, values = self.cache.k[slot][i], self.cache.v[slot][i]
            keys[:, start:end] = k
            values[:, start:end] = v
            attn = chunk_attention(q, keys[:, :start], values[:, :start], k, v)
            h = h + self._adapted(attn.transpose(0, 1).reshape(length, -1), layer.dense, lora, i, self._dense_modules)
            h = self._mlp_block(i, layer, h, lora)
        return self.logits(h if all_logits else h[-1])

    @torch.inference_mode()
    def decode(
        self,
        slots: list[int],
        token_ids: list[int],
        positions: list[int],
        adapters: list[RuntimeAdapter | None] | None = None,
    ) -> torch.Tensor:
        """One token for each sequence: ``token_ids[b]`` sits at ``positions[b]`` of ``slots[b]``, adapted by
        ``adapters[b]`` (None: the base model).

        Returns the next-token logits [batch, vocab]. The projections run batched; each sequence attends to its own
        cache (no copy into a batch padded to the longest, whose memory would be batch x longest sequence).
        """
        lora = None if adapters is None else BatchLora.of(adapters)
        batch = len(slots)
        for slot, position in zip(slots, positions, strict=True):
            self.cache.reserve(slot, position + 1)
        pos_t = torch.tensor(positions)
        h = self.weights.embedding[torch.tensor(token_ids)]
        for i, layer in enumerate(self.weights.layers):
            q, k, v = self._project_qkv(i, layer, h, pos_t, lora)  # q [heads, batch, d], k/v [kv_heads, batch, d]
            rows = []
            for b, (slot, position) in enumerate(zip(slots, positions, strict=True)):
                keys, values = self.cache.k[slot][i], self.cache.v[slot][i]
                keys[:, position] = k[:, b]
                values[:, position] = v[:, b]
                rows.append(
                    F.scaled_dot_product_attention(
                        q[None, :, b : b + 1], keys[None, :, : position + 1], values[None, :, : position + 1],
                        enable_gqa=True,
                    )[0, :, 0]
                )  # fmt: skip
            attn = torch.stack(rows)  # [batch, heads, d]
            h = h + self._adapted(attn.reshape(batch, -1), layer.dense, lora, i, self._dense_modules)
            h = self._mlp_block(i, layer, h, lora)
        return self.logits(h)


_flash_attention = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
"""PyTorch's CPU flash-attention kernel, which also returns the log-sum-exp of each query's scores. It works in
key/value blocks (memory independent of the sequence length) and is what ``scaled_dot_product_attention`` runs on 4-D
CPU inputs without a mask; called directly because the merge below needs the log-sum-exp the public function drops.
torch is pinned (2.13.0); the equality tests against the one-pass attention catch a change of its contract."""


def chunk_attention(
    q: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """Causal attention of a chunk's queries ``q`` [heads, chunk, d] over the cache before it (``past_*``
    [kv_heads, start, d], all visible) and the chunk's own keys (``k``, ``v`` [kv_heads, chunk, d], causal).

    Two flash-attention passes (neither builds a chunk x context score matrix nor a mask of that size: one would be
    gigabytes at 128k positions) merged by their log-sum-exps, which is exactly softmax over the union of the keys.
    """
    heads, kv_heads = q.shape[0], k.shape[0]
    group = heads // kv_heads
    own, own_lse = _flash_attention(
        q[None], k.repeat_interleave(group, 0)[None], v.repeat_interleave(group, 0)[None], 0.0, True
    )
    if past_k.shape[1] == 0:
        return own[0]
    # every query sees the whole past: a query group shares its KV head, so fold it into the query length
    chunk, size = q.shape[1], q.shape[2]
    past, past_lse = _flash_attention(
        q.reshape(kv_heads, group * chunk, size)[None], past_k[None], past_v[None], 0.0, False
    )
    past, past_lse = past.reshape(1, heads, chunk, size), past_lse.reshape(1, heads, chunk)
    top = torch.maximum(own_lse, past_lse)
    own_weight, past_weight = (own_lse - top).exp()[..., None], (past_lse - top).exp()[..., None]
    return ((own * own_weight + past * past_weight) / (own_weight + past_weight))[0]
