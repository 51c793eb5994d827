#!/usr/bin/env bash
# Quick start: installs dependencies, builds (release) if needed, then starts a local cluster
# (a coordinator with its gateway + 2 node processes on loopback) and runs the 1M-term
# Leibniz job through it. Extra arguments go to tokengate-local, e.g.
#   scripts/demo.sh --precision dec50 --hold     (keep the cluster and control page up)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --build-only
if [[ ! -f build/release/build.ninja ]]; then
  cmake --preset release >/dev/null
fi
cmake --build --preset release --target tokengate-local tokengate-coordinator tokengate-node tgctl
exec build/release/bin/tokengate-local --nodes 2 --terms 1000000 "$@"
