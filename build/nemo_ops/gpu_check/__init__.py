"""``make gpu-check``: on a GPU host, prove the whole stack in one command and keep the results.

Steps, in order; the run stops at the first one that fails, names it and says what to do:

  1 preflight  an NVIDIA GPU (name, compute capability), MODEL_DIR with config.json and tekken.json, the
               profile loads and fits this GPU (FP8 needs 8.9+), trtllm-build on PATH or docker
  2 build      scripts/make_engine.sh MODEL_DIR PROFILE OUT: FP8 checkpoint → engines → OUT/repository
  3 serve      Triton on the repository (local tritonserver, else the NGC image), until ready
  4 gateway    nemo-gateway (OpenAI-compatible HTTP) in front of Triton's gRPC endpoint
  5 smoke      through the gateway with the official openai SDK: a chat, a streamed chat, a tool call
               and the tool result → final answer
  6 bench      a short nemo-bench concurrency sweep through the gateway
  7 report     results.json and README.md (plus the bench files) in the results folder

Servers are always stopped at the end, also when a step fails or on Ctrl-C.
"""
