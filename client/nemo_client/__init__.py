"""Client-side protocol and gRPC client for Mistral NeMo served by Triton + TensorRT-LLM."""
