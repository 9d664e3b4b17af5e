"""``make gpu-check``: on a GPU host, prove the whole stack in one command and keep the results.

Steps, in order; the run stops at the first one that fails, names it and says what to do:

  1 preflight  an NVIDIA GPU (name, compute capability), MODEL_DIR with config.json and tekken.json, the
               profile loads and fits this GPU (FP8 needs 8.9+), what its runtime needs on PATH or docker:
               trtllm-build at the pinned TensorRT-LLM (engine), python3's tensorrt_llm LLM API (pytorch)
  2 build      scripts/make_engine.sh MODEL_DIR PROFILE OUT: FP8 checkpoint → engines → OUT/repository
               (pytorch: the Hugging Face FP8 checkpoint → OUT/repository, no engines)
  3 serve      Triton on the repository (local tritonserver, else the NGC image), until ready
  4 gateway    nemo-gateway (OpenAI-compatible HTTP) in front of Triton's gRPC endpoint
  5 smoke      through the gateway with the official openai SDK: a chat, a streamed chat, a tool call
               and the tool result → final answer
  6 bench      a short nemo-bench concurrency sweep through the gateway
     long-context  (--long-context) a needle at three depths of 16k, 64k and 128k-token haystacks, answers checked,
               TTFT recorded (gpu_check.needle)
     accuracy   (--accuracy) nemo-accuracy: lm-eval through the gateway on the seed's Table 1 (gpu_check.accuracy)
  7 report     results.json and README.md (plus the bench files) in the results folder

With several profiles (``--profile A,B``, or ``--runtimes engine,pytorch``: the profile and its twin), steps 2-6 run
for each in turn (``build A`` … ``bench A``, then ``build B`` …), each in OUT/<profile>/ with its servers stopped
before the next starts, and a ``compare`` step puts their tokens/s, TTFT and ITL side by side before the report.

Servers are always stopped at the end, also when a step fails or on Ctrl-C.
"""
