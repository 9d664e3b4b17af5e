#!/usr/bin/env bash
# preStop hook of the Triton container. Waits until endpoints have stopped routing new requests to the
# pod, then asks the rank-0 tritonserver (the one that serves HTTP/gRPC) to stop and waits for it to
# exit: Triton refuses new requests and lets in-flight streams finish for --exit-timeout-secs.
# Under mpirun (TP > 1) this matters: mpirun turns its own SIGTERM into a kill of every rank after a
# few seconds, so the drain must happen before the kubelet signals the container.
# Usage: triton-drain.sh SECONDS_BEFORE_DRAIN
set -uo pipefail

sleep "${1:-15}"
# Rank 0 is the tritonserver process started with --http-port (the worker ranks run with
# --allow-http=false); mpirun's own command line names it too, hence the match on the process name.
pid=""
for candidate in $(pgrep -x tritonserver); do
  if tr '\0' ' ' <"/proc/$candidate/cmdline" 2>/dev/null | grep -q -- '--http-port='; then
    pid=$candidate
    break
  fi
done
[[ -n $pid ]] || exit 0
kill -TERM "$pid" 2>/dev/null || exit 0
while kill -0 "$pid" 2>/dev/null; do
  sleep 1
done
