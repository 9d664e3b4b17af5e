#!/usr/bin/env bash
# `make engine MODEL_DIR=... [PROFILE=...] [OUT=...]`: Hugging Face Mistral NeMo directory → FP8 (or bf16)
# TensorRT-LLM checkpoint → engines → filled Triton model repository, on an NVIDIA GPU host.
# Runs directly when trtllm-build is on PATH, else inside the pinned NGC image with docker. Runs from the
# source tree (PYTHONPATH), so the image needs no install of this project. `make gpu-check` runs a copy in
# OUT/make-engine/, a tree of the same layout (scripts/, requirements/, build/, client/) that it writes from
# the installed packages (nemo_ops ships this file and the constraints). Writes OUT/checkpoint, OUT/engine
# and OUT/repository (serve it with `make serve REPO=OUT/repository`).
# A pytorch profile (`runtime: pytorch`) builds no engines: OUT/checkpoint is the Hugging Face FP8 checkpoint
# (`nemo-build checkpoint --format hf`) and OUT/repository serves it with TensorRT-LLM's LLM API
# (`nemo-build repository --target pytorch --profile PROFILE`); it needs tensorrt_llm, not trtllm-build.
# DEVICE=cpu calibrates on the CPU (dry runs with the tiny model; a 12B model wants the GPU, the default).
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

# The runtime the profile names (read from its file here: the image's python may not run this tree yet;
# load_profile checks it below).
case "$PROFILE" in
  *.yaml|*.yml) PROFILE_FILE=$PROFILE ;;
  *) PROFILE_FILE=$ROOT/build/nemo_build/profiles/$PROFILE.yaml ;;
esac
RUNTIME=engine
if [ -f "$PROFILE_FILE" ]; then
  RUNTIME=$(sed -n 's/^runtime:[[:space:]]*\([A-Za-z_-]*\).*/\1/p' "$PROFILE_FILE" | head -n 1)
  RUNTIME=${RUNTIME:-engine}
fi
if [ "$RUNTIME" = pytorch ]; then
  # the LLM API: the tensorrt_llm package (its metadata, as nemo-serve's compatibility check reads it)
  have_runtime() { python3 -c 'import importlib.metadata as m; m.version("tensorrt_llm")' >/dev/null 2>&1; }
  RUNTIME_TOOL="tensorrt_llm (python)"
else
  have_runtime() { command -v trtllm-build >/dev/null 2>&1; }
  RUNTIME_TOOL=trtllm-build
fi

if ! have_runtime; then
  if ! command -v docker >/dev/null 2>&1; then
    echo "make engine: $RUNTIME_TOOL is not on this machine and docker is not installed;" >&2
    echo "  run inside $IMAGE or install docker with the NVIDIA container toolkit." >&2
    exit 2
  fi
  # Every directory is mounted at its host path: the paths rendered into the repository (the engine
  # directory) must hold where it is served, and an OUT outside the project must land on the host.
  MODEL_ABS=$(cd "$MODEL_DIR" && pwd)
  mkdir -p "$OUT"
  OUT_ABS=$(cd "$OUT" && pwd)
  exec docker run --rm --gpus all --ipc=host --ulimit memlock=-1 --user "$(id -u):$(id -g)" \
    -e HOME=/tmp -e HF_HOME="${HF_HOME:-/tmp/hf}" \
    -v "$ROOT":"$ROOT" -v "$MODEL_ABS":"$MODEL_ABS":ro -v "$OUT_ABS":"$OUT_ABS" -w "$ROOT" \
    "$IMAGE" bash scripts/make_engine.sh "$MODEL_ABS" "$PROFILE" "$OUT_ABS"
fi

export PYTHONPATH="$ROOT/build:$ROOT/client${PYTHONPATH:+:$PYTHONPATH}"
# The image has torch, ModelOpt and transformers at TensorRT-LLM's pins; add what else nemo-build imports.
missing=$(python3 -c '
import importlib.util
needed = {"tiktoken": "tiktoken", "yaml": "pyyaml", "tqdm": "tqdm", "safetensors": "safetensors",
          "tritonclient": "tritonclient[grpc]"}  # tritonclient: Triton ModelConfig validation of the repository
print(" ".join(package for module, package in needed.items() if importlib.util.find_spec(module) is None))')
if [ -n "$missing" ]; then
  echo "make engine: installing $missing (pinned by requirements/constraints.txt)" >&2
  # as the invoking user inside the image (see the docker run above): into that user's site-packages
  user_site=$([ "$(id -u)" = 0 ] || echo --user)
  # shellcheck disable=SC2086 # one word per package
  python3 -m pip install --quiet $user_site -c "$ROOT/requirements/constraints.txt" $missing
fi
nemo_build() { python3 -m nemo_build.cli "$@"; }

read -r PROFILE_RUNTIME PRECISION KV_CACHE TP < <(python3 -c "
from nemo_build.profiles import load_profile
p = load_profile('$PROFILE')
print(p.runtime, p.precision, p.kv_cache, p.tp)")
if [ "$PROFILE_RUNTIME" != "$RUNTIME" ]; then
  echo "make engine: profile $PROFILE is for the $PROFILE_RUNTIME runtime, its file read $RUNTIME" >&2
  exit 2
fi

if [ "$RUNTIME" = pytorch ]; then
  nemo_build checkpoint --model-dir "$MODEL_DIR" --out "$OUT/checkpoint" --format hf \
    --quant "$PRECISION" --kv-cache "$KV_CACHE" --device "${DEVICE:-cuda}"
  nemo_build repository --target pytorch --checkpoint "$OUT/checkpoint" --profile "$PROFILE" \
    --tokenizer "$MODEL_DIR/tekken.json" --out "$OUT/repository" --replace
  echo "pytorch runtime (no engines): Hugging Face checkpoint in $OUT/checkpoint, model repository in" \
    "$OUT/repository: make serve REPO=$OUT/repository"
  exit 0
fi

nemo_build checkpoint --model-dir "$MODEL_DIR" --out "$OUT/checkpoint" \
  --quant "$PRECISION" --kv-cache "$KV_CACHE" --tp "$TP" --device "${DEVICE:-cuda}"
nemo_build engine --checkpoint "$OUT/checkpoint" --out "$OUT/engine" --profile "$PROFILE"
nemo_build repository --target gpu --engine "$OUT/engine" --tokenizer "$MODEL_DIR/tekken.json" \
  --out "$OUT/repository" --replace
echo "engines in $OUT/engine, model repository in $OUT/repository: make serve REPO=$OUT/repository"
