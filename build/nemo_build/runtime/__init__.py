"""Reference runtime: executes TensorRT-LLM checkpoints (Mistral / Llama layout) on CPU with torch.

``weights`` loads and merges a checkpoint, ``model`` runs the forward pass with a paged-by-slot KV
cache, ``sampling`` turns logits into tokens per request, and ``scheduler`` batches many concurrent
requests (prefill of new ones, one decode step for all active ones) the way in-flight batching does.
"""
