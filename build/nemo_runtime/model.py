"""The Mistral / Llama forward pass over merged checkpoint weights, with a slot-based KV cache.

Computation is float32 on CPU. For FP8 checkpoints the model does what a TensorRT-LLM FP8 engine does
numerically: every quantized linear layer sees its input quantized to FP8 E4M3 with the calibrated
``activation_scaling_factor`` (weights were dequantized at load), and K/V are stored in the cache as
FP8 with the ``kv_cache_scaling_factor``.

KV cache layout: per layer one tensor ``[slots, kv_heads, capacity, head_size]`` for K and one for V.
A sequence owns one slot for its lifetime; a decode step gathers the active slots and masks the
positions past each sequence's length, so sequences of different lengths decode in one batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nemo_runtime.lora import BatchLora, RuntimeAdapter
from nemo_runtime.weights import Layer, Linear, Weights

FP8_E4M3_MAX = 448.0
_INITIAL_CAPACITY = 128
_INITIAL_SLOTS = 8


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
    """Per-layer K and V tensors indexed by slot; grows (slots and capacity) by doubling."""

    def __init__(self, num_layers: int, num_kv_heads: int, head_size: int, max_positions: int) -> None:
        self.num_layers = num_layers
        self.shape_tail = (num_kv_heads, head_size)
        self.max_positions = max_positions
        self.capacity = min(_INITIAL_CAPACITY, max_positions)
        self.k = [self._alloc(_INITIAL_SLOTS, self.capacity) for _ in range(num_layers)]
        self.v = [self._alloc(_INITIAL_SLOTS, self.capacity) for _ in range(num_layers)]
        self.free_slots = list(range(_INITIAL_SLOTS - 1, -1, -1))

    def _alloc(self, slots: int, capacity: int) -> torch.Tensor:
        heads, size = self.shape_tail
        return torch.zeros(slots, heads, capacity, size)

    @property
    def num_slots(self) -> int:
        return self.k[0].shape[0]

    def acquire(self) -> int:
        if not self.free_slots:
            old = self.num_slots
            self._resize(old * 2, self.capacity)
            self.free_slots = list(range(2 * old - 1, old - 1, -1))
        return self.free_slots.pop()

    def release(self, slot: int) -> None:
        self.free_slots.append(slot)

    def reserve(self, length: int) -> None:
        """Make room for positions ``[0, length)`` in every slot."""
        if length > self.max_positions:
            raise ValueError(f"sequence length {length} exceeds max_position_embeddings {self.max_positions}")
        if length > self.capacity:
            capacity = self.capacity
            while capacity < length:
                capacity *= 2
            self._resize(self.num_slots, min(capacity, self.max_positions))

    def _resize(self, slots: int, capacity: int) -> None:
        for store in (self.k, self.v):
            for i, old in enumerate(store):
                new = self._alloc(slots, capacity)
                new[: old.shape[0], :, : old.shape[2]] = old
                store[i] = new
        self.capacity = capacity


class ReferenceModel:
    """Forward pass of a TensorRT-LLM Llama-family checkpoint: prefill one sequence, decode a batch."""

    def __init__(self, weights: Weights) -> None:
        self.weights = weights
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
        """Run the prompt of the sequence in ``slot`` (with ``adapter``'s LoRA, if any) and fill its cache.

        Returns the logits of the last position [vocab], or of every position [tokens, vocab].
        """
        lora = None if adapter is None else BatchLora([adapter], rows_are_tokens=True)
        length = len(token_ids)
        self.cache.reserve(length)
        positions = torch.arange(length)
        h = self.weights.embedding[torch.tensor(token_ids)]
        for i, layer in enumerate(self.weights.layers):
            q, k, v = self._project_qkv(i, layer, h, positions, lora)
            self.cache.k[i][slot, :, :length] = k
            self.cache.v[i][slot, :, :length] = v
            attn = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
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

        Returns the next-token logits [batch, vocab].
        """
        lora = None if adapters is None else BatchLora.of(adapters)
        batch = len(slots)
        self.cache.reserve(max(positions) + 1)
        slot_t, pos_t = torch.tensor(slots), torch.tensor(positions)
        span = int(pos_t.max()) + 1
        visible = (torch.arange(span)[None, :] <= pos_t[:, None]).view(batch, 1, 1, span)
        h = self.weights.embedding[torch.tensor(token_ids)]
        for i, layer in enumerate(self.weights.layers):
            q, k, v = self._project_qkv(i, layer, h, pos_t, lora)  # q [heads, batch, d], k/v [kv_heads, batch, d]
            self.cache.k[i][slot_t, :, pos_t] = k.transpose(0, 1)
            self.cache.v[i][slot_t, :, pos_t] = v.transpose(0, 1)
            keys = self.cache.k[i][:, :, :span][slot_t]
            values = self.cache.v[i][:, :, :span][slot_t]
            attn = F.scaled_dot_product_attention(
                q.transpose(0, 1).unsqueeze(2), keys, values, attn_mask=visible, enable_gqa=True
            )  # [batch, heads, 1, d]
            h = h + self._adapted(attn.reshape(batch, -1), layer.dense, lora, i, self._dense_modules)
            h = self._mlp_block(i, layer, h, lora)
        return self.logits(h)
