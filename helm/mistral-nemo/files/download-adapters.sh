#!/usr/bin/env bash
# Downloads the LoRA adapters of lora.download.adapters from the Hugging Face Hub into LORA_DIR (a directory of
# the cache volume that Triton and the gateway mount read-only), one subdirectory per adapter, and removes the
# subdirectories of adapters no longer listed. The runtime rescans the directory, so adapters come and go
# without a restart. Each adapter is downloaded beside the directory and renamed into it when complete: the
# runtime never sees half an adapter.
#
# Inputs (environment): LORA_DIR, ADAPTERS (one `<name> <repo> <revision>` per line); optional: HF_ENDPOINT,
# HF_TOKEN, PYTHON.
set -euo pipefail

log() { printf '%s [download-adapters] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

[[ -n ${LORA_DIR-} ]] || die "LORA_DIR is not set"
PYTHON=${PYTHON:-python3}
staging="$LORA_DIR.staging"
mkdir -p "$LORA_DIR" "$staging"
exec 9>"$LORA_DIR.lock"
flock 9

declare -A listed=()
while read -r name repo revision; do
  [[ -n ${name-} ]] || continue
  [[ -n ${repo-} && -n ${revision-} ]] || die "adapter line '$name $repo $revision' is not '<name> <repo> <revision>'"
  listed[$name]=1
  if [[ -f $LORA_DIR/$name/.source && "$(<"$LORA_DIR/$name/.source")" == "$repo@$revision" ]]; then
    log "$name: $repo@$revision is already there"
    continue
  fi
  log "$name: downloading $repo@$revision"
  rm -rf "${staging:?}/$name"
  REPO="$repo" REVISION="$revision" DEST="$staging/$name" "$PYTHON" - <<'PY'
import os

from huggingface_hub import snapshot_download

snapshot_download(
    repo_id=os.environ["REPO"],
    revision=os.environ["REVISION"],
    local_dir=os.environ["DEST"],
    allow_patterns=["adapter_config.json", "adapter_model.safetensors"],
)
PY
  for file in adapter_config.json adapter_model.safetensors; do
    [[ -f $staging/$name/$file ]] || die "$name: $repo@$revision has no $file: it is not a PEFT adapter"
  done
  printf '%s' "$repo@$revision" >"$staging/$name/.source"
  rm -rf "${LORA_DIR:?}/$name"
  mv "$staging/$name" "$LORA_DIR/$name"
done <<<"${ADAPTERS-}"

for served in "$LORA_DIR"/*/; do
  [[ -d $served ]] || continue
  name=$(basename "$served")
  if [[ -z ${listed[$name]-} ]]; then
    log "$name: no longer listed; removing it"
    rm -rf "${LORA_DIR:?}/$name"
  fi
done
rm -rf "$staging"
log "adapters ready in $LORA_DIR: ${!listed[*]}"
