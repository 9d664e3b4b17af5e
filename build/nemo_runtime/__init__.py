"""The CPU backend: a reference runtime that executes TensorRT-LLM checkpoints (Mistral / Llama layout) with torch.

``weights`` loads and merges a checkpoint, ``model`` runs the forward pass with a paged-by-slot KV cache,
``sampling`` turns logits into tokens per request, ``scheduler`` batches many concurrent requests (prefill of
new ones, one decode step for all active ones) the way in-flight batching does, and ``inflight`` drives it
behind the `tensorrt_llm` tensor contract for the CPU variant of that Triton model.
"""
