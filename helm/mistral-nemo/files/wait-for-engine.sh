#!/usr/bin/env bash
# Holds a Triton pod until the engine of its key is complete (engineBuild.mode=job): BUILD_COMPLETE
# exists, holds exactly this release's build spec, and the model repository is there.
# Inputs (environment): ENGINE_DIR BUILD_SPEC; optional: POLL_SECONDS, BUILD_JOB (named in the log).
set -euo pipefail

log() { printf '%s [wait-for-engine] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
: "${ENGINE_DIR:?ENGINE_DIR is not set}" "${BUILD_SPEC:?BUILD_SPEC is not set}"
marker="$ENGINE_DIR/BUILD_COMPLETE"
poll=${POLL_SECONDS:-20}

complete() { [[ -f $marker && "$(<"$marker")" == "$BUILD_SPEC" && -d $ENGINE_DIR/repository ]]; }
until complete; do
  log "engine not ready in $ENGINE_DIR; waiting ${poll}s (kubectl logs job/${BUILD_JOB:-<build job>} shows the build)"
  sleep "$poll"
done
log "engine ready in $ENGINE_DIR"
