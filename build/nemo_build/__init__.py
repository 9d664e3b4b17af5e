"""Build Mistral NeMo into TensorRT-LLM checkpoints and engines, and render the Triton model repository."""

# The one place the version is written: pyproject reads it (dynamic version) and the build manifests record
# it, also where the distribution is not installed (`make engine` in the NGC image runs from the source tree).
__version__ = "0.1.0"
