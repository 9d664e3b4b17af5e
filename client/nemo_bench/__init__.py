"""``nemo-bench``: load generation and NIM-style serving metrics against a Mistral NeMo deployment."""
