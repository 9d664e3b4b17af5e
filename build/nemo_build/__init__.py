"""Build Mistral NeMo into TensorRT-LLM checkpoints and engines, and render the Triton model repository."""
