#!/usr/bin/env bash
# Builds (or finds) the TensorRT-LLM engine and the Triton model repository of one engine cache key.
# RUNTIME=pytorch (engine.runtime) builds no engine: the Hugging Face FP8 checkpoint (`--format hf`) and a
# `--target pytorch` repository (TensorRT-LLM's LLM API) with the profile's limits and LLM arguments.
#
# Runs as the engine-build Job (engineBuild.mode=job) or as the first init container of every Triton
# pod (engineBuild.mode=initContainer), always in the serving image and on the GPU type it serves on.
# Idempotent: the whole run is skipped when BUILD_COMPLETE already holds this build's spec, and each
# `nemo-build` step skips work whose manifest.json matches. Runs for the same key (several pods,
# several releases sharing one cache volume) take turns on a lock file on the volume.
#
# Inputs (environment): ENGINE_DIR MODEL_DIR MODEL_SOURCE(download|pvc) TOKENIZER_FILE SERVED_MODEL_NAME
# PROFILE TP QUANTIZATION KV_CACHE_DTYPE BUILD_SPEC; optional: RUNTIME (engine, the default, or pytorch) HF_MODEL_NAME HF_MODEL_REVISION HF_ALLOW_PATTERNS
# (download), EXPECTED_TRTLLM_VERSION, EXPECTED_GPU_PRODUCT, CHECKPOINT_ARGS ENGINE_ARGS
# REPOSITORY_ARGS (one argument per line), LORA_DIR MAX_LORA_RANK (lora.source: the adapter directory as Triton
# mounts it, and the largest rank served), NEMO_BUILD, PYTHON, CALIBRATION_DEVICE (cuda; cpu for dry runs).
set -euo pipefail

log() { printf '%s [build-engine] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}
# One argument per non-empty line of $1.
arg_lines() { if [[ -n ${1-} ]]; then printf '%s\n' "$1" | sed '/^$/d'; fi; }

for var in ENGINE_DIR MODEL_DIR MODEL_SOURCE TOKENIZER_FILE SERVED_MODEL_NAME PROFILE TP QUANTIZATION KV_CACHE_DTYPE BUILD_SPEC; do
  [[ -n ${!var-} ]] || die "$var is not set"
done
RUNTIME=${RUNTIME:-engine}
[[ $RUNTIME == engine || $RUNTIME == pytorch ]] || die "RUNTIME is '$RUNTIME' (engine or pytorch)"
NEMO_BUILD=${NEMO_BUILD:-nemo-build}
PYTHON=${PYTHON:-python3}
marker="$ENGINE_DIR/BUILD_COMPLETE"
mapfile -t checkpoint_args < <(arg_lines "${CHECKPOINT_ARGS-}")
mapfile -t engine_args < <(arg_lines "${ENGINE_ARGS-}")
mapfile -t repository_args < <(arg_lines "${REPOSITORY_ARGS-}")
# The repository names the adapter directory as Triton mounts it; it is rescanned while serving, not read here.
if [[ -n ${LORA_DIR-} ]]; then
  repository_args+=(--lora-dir "$LORA_DIR")
  if [[ -n ${MAX_LORA_RANK-} ]]; then repository_args+=(--max-lora-rank "$MAX_LORA_RANK"); fi
fi

mkdir -p "$ENGINE_DIR"
exec 9>"$ENGINE_DIR/.build.lock"
if ! flock -n 9; then
  log "another build of this key holds $ENGINE_DIR/.build.lock; waiting for it"
  flock 9
fi

if [[ -f $marker && "$(<"$marker")" == "$BUILD_SPEC" ]]; then
  log "engine in $ENGINE_DIR is complete for this spec; nothing to build"
  exit 0
fi
rm -f "$marker"

# The cache key names the TensorRT-LLM version and the GPU product: refuse to file an engine under a
# key it does not belong to.
if [[ -n ${EXPECTED_TRTLLM_VERSION-} ]]; then
  actual=$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("tensorrt_llm"))') ||
    die "TensorRT-LLM is not installed in this image"
  [[ $actual == "$EXPECTED_TRTLLM_VERSION" ]] ||
    die "the image has TensorRT-LLM $actual but engine.trtllmVersion is $EXPECTED_TRTLLM_VERSION; set engine.trtllmVersion=$actual (it is part of the engine cache key)"
fi
if [[ -n ${EXPECTED_GPU_PRODUCT-} ]]; then
  gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1) || die "nvidia-smi failed: no GPU is visible to this container"
  [[ $EXPECTED_GPU_PRODUCT == "${gpu// /-}"* ]] ||
    die "this pod runs on a '$gpu' but the engine key is for $EXPECTED_GPU_PRODUCT; check gpu.product and the node selector"
fi

if [[ $MODEL_SOURCE == download ]]; then
  : "${HF_MODEL_NAME:?HF_MODEL_NAME is not set}" "${HF_MODEL_REVISION:?HF_MODEL_REVISION is not set}"
  mkdir -p "$MODEL_DIR"
  exec 8>"$MODEL_DIR.lock"
  flock 8
  log "downloading $HF_MODEL_NAME@$HF_MODEL_REVISION into $MODEL_DIR (files already there are kept)"
  "$PYTHON" - <<'PY'
import os

from huggingface_hub import snapshot_download

patterns = [line for line in os.environ.get("HF_ALLOW_PATTERNS", "").splitlines() if line]
snapshot_download(
    repo_id=os.environ["HF_MODEL_NAME"],
    revision=os.environ["HF_MODEL_REVISION"],
    local_dir=os.environ["MODEL_DIR"],
    allow_patterns=patterns or None,
)
PY
  flock -u 8
fi

[[ -f $MODEL_DIR/config.json ]] || die "$MODEL_DIR has no config.json: it is not a Hugging Face checkpoint directory"
[[ -f $MODEL_DIR/$TOKENIZER_FILE ]] || die "tokenizer $TOKENIZER_FILE not found in $MODEL_DIR"

if [[ $RUNTIME == pytorch ]]; then
  log "step 1/2: Hugging Face FP8 checkpoint ($QUANTIZATION weights, $KV_CACHE_DTYPE KV cache; pytorch runtime, no engine)"
  "$NEMO_BUILD" checkpoint --model-dir "$MODEL_DIR" --out "$ENGINE_DIR/checkpoint" --format hf \
    --quant "$QUANTIZATION" --kv-cache "$KV_CACHE_DTYPE" --device "${CALIBRATION_DEVICE:-cuda}" \
    "${checkpoint_args[@]}"
  log "step 2/2: Triton model repository (pytorch, profile $PROFILE, TP $TP)"
  "$NEMO_BUILD" repository --target pytorch --checkpoint "$ENGINE_DIR/checkpoint" --profile "$PROFILE" \
    --tensor-parallel-size "$TP" --tokenizer "$MODEL_DIR/$TOKENIZER_FILE" \
    --out "$ENGINE_DIR/repository" --replace --served-model-name "$SERVED_MODEL_NAME" "${repository_args[@]}"
else
  log "step 1/3: TensorRT-LLM checkpoint ($QUANTIZATION weights, $KV_CACHE_DTYPE KV cache, TP $TP)"
  "$NEMO_BUILD" checkpoint --model-dir "$MODEL_DIR" --out "$ENGINE_DIR/checkpoint" \
    --quant "$QUANTIZATION" --kv-cache "$KV_CACHE_DTYPE" --tp "$TP" --device "${CALIBRATION_DEVICE:-cuda}" \
    "${checkpoint_args[@]}"
  log "step 2/3: engine (profile $PROFILE)"
  "$NEMO_BUILD" engine --checkpoint "$ENGINE_DIR/checkpoint" --out "$ENGINE_DIR/engine" \
    --profile "$PROFILE" "${engine_args[@]}"
  log "step 3/3: Triton model repository"
  # The repository takes its own copy of the tokenizer, so Triton pods need only the cache volume.
  # --replace renders beside the current repository and swaps the new one in when it is complete.
  "$NEMO_BUILD" repository --target gpu --engine "$ENGINE_DIR/engine" --tokenizer "$MODEL_DIR/$TOKENIZER_FILE" \
    --out "$ENGINE_DIR/repository" --replace --served-model-name "$SERVED_MODEL_NAME" "${repository_args[@]}"
fi

printf '%s' "$BUILD_SPEC" >"$marker.tmp"
mv -f "$marker.tmp" "$marker"
log "engine ready in $ENGINE_DIR"
