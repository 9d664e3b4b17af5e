"""``nemo-gateway``: an OpenAI / NIM-compatible HTTP API in front of Triton's gRPC endpoint."""
