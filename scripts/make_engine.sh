#!/usr/bin/env bash
# `make engine MODEL_DIR=... [PROFILE=...] [OUT=...]`: Hugging Face Mistral NeMo directory → FP8 (or bf16)
# TensorRT-LLM checkpoint → engines → filled Triton model repository, on an NVIDIA GPU host.
# Runs directly when trtllm-build is on PATH, else inside the pinned NGC image with docker.
set -euo pipefail

MODEL_DIR=${1:?usage: scripts/make_engine.sh MODEL_DIR [PROFILE] [OUT]}
PROFILE=${2:-h100-fp8-tp1}
OUT=${3:-artifacts/engine-build}
IMAGE=nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3
ROOT=$(cd "$(dirname "$0")/.." && pwd)

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "make engine: no NVIDIA GPU on this machine (nvidia-smi missing or lists none)." >&2
  echo "  Engines are compiled on the GPU model that serves them: run this on the GPU host." >&2
  echo "  Without a GPU, the CPU path still works: make demo." >&2
  exit 2
fi
if [ ! -f "$MODEL_DIR/config.json" ]; then
  echo "make engine: MODEL_DIR=$MODEL_DIR is not a Hugging Face model directory (no config.json)" >&2
  exit 2
fi

if ! command -v trtllm-build >/dev/null 2>&1; then
  if ! command -v docker >/dev/null 2>&1; then
    echo "make engine: trtllm-build is not on PATH and docker is not installed;" >&2
    echo "  run inside $IMAGE or install docker with the NVIDIA container toolkit." >&2
    exit 2
  fi
  MODEL_ABS=$(cd "$MODEL_DIR" && pwd)
  exec docker run --rm --gpus all --ipc=host --ulimit memlock=-1 \
    -v "$ROOT":/workspace -v "$MODEL_ABS":/model:ro -w /workspace \
    "$IMAGE" bash scripts/make_engine.sh /model "$PROFILE" "$OUT"
fi

export PYTHONPATH="$ROOT/build:$ROOT/client${PYTHONPATH:+:$PYTHONPATH}"
python3 -c "import tiktoken" 2>/dev/null || python3 -m pip install --quiet "tiktoken>=0.7"
nemo_build() { python3 -m nemo_build.cli "$@"; }

read -r PRECISION KV_CACHE TP < <(python3 -c "
from nemo_build.profiles import load_profile
p = load_profile('$PROFILE')
print(p.precision, p.kv_cache, p.tp)")

nemo_build checkpoint --model-dir "$MODEL_DIR" --out "$OUT/checkpoint" \
  --quant "$PRECISION" --kv-cache "$KV_CACHE" --tp "$TP" --device cuda
nemo_build engine --checkpoint "$OUT/checkpoint" --out "$OUT/engine" --profile "$PROFILE"
nemo_build repository --target gpu --engine "$OUT/engine" --tokenizer "$MODEL_DIR/tekken.json" \
  --out "$OUT/model_repository"
echo "engines and model repository: $OUT"
