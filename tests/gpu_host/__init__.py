"""Stand-ins for the parts of a GPU host that this machine lacks (`nvidia-smi`, `trtllm-build`, TensorRT-LLM's
package metadata), held to upstream's interfaces by the data in `tests/data/upstream/`."""
