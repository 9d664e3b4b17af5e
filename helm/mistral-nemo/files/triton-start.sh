#!/usr/bin/env bash
# Starts Triton: the Triton container's command (its arguments after this script: `tritonserver ...`, or
# `mpirun ... tritonserver ...` with tensor parallelism) with Triton's admin key put where an argument says
# ${NEMO_TRITON_ADMIN_KEY} (the --grpc-restricted-protocol and --http-restricted-api flags of rank 0).
# The key comes from a Secret through the environment, so it never stands in the pod spec; it is checked
# as nemo-serve checks it (16-256 characters from A-Z a-z 0-9 . _ ~ -: Triton splits the flag at ':' and
# '=', and the key travels in a header), and taken out of the environment Triton and its models inherit.
# Usage: triton-start.sh COMMAND [ARG...]
set -euo pipefail

placeholder='${NEMO_TRITON_ADMIN_KEY}'
key=${NEMO_TRITON_ADMIN_KEY:-}
# A key written to a file with a trailing newline (kubectl create secret --from-file) is meant without it.
key=${key#"${key%%[![:space:]]*}"}
key=${key%"${key##*[![:space:]]}"}
unset NEMO_TRITON_ADMIN_KEY

fail() {
  echo "triton-start: $*" >&2
  exit 2
}
(($# > 0)) || fail "no command to start"
[[ -n $key ]] || fail "NEMO_TRITON_ADMIN_KEY is empty: the Secret named by triton.adminKey holds no key"
if ((${#key} < 16 || ${#key} > 256)) || [[ ! $key =~ ^[A-Za-z0-9._~-]+$ ]]; then
  fail "the admin key (NEMO_TRITON_ADMIN_KEY, from the Secret named by triton.adminKey) must be 16 to 256" \
    "characters from A-Z a-z 0-9 . _ ~ - (got ${#key} characters)"
fi

args=()
placed=0
for arg in "$@"; do
  if [[ $arg == *"$placeholder"* ]]; then
    arg=${arg//"$placeholder"/"$key"}
    placed=$((placed + 1))
  fi
  args+=("$arg")
done
# Without the restriction flags the admin APIs would be open to every client: refuse to start so.
((placed > 0)) || fail "no argument takes the admin key (${placeholder}): refusing to start Triton with open admin APIs"
exec "${args[@]}"
