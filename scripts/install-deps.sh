#!/usr/bin/env bash
# Installs every Debian package TokenGate needs to build and test (Debian bookworm).
# Idempotent: skips apt when everything is already present.
set -euo pipefail

BUILD_PKGS=(
  build-essential cmake ninja-build pkg-config git ccache
  libzmq3-dev cppzmq-dev
  capnproto libcapnp-dev
  libboost1.81-dev libboost-json1.81-dev libboost-system1.81-dev
  prometheus-cpp-dev libxgboost-dev xgboost
  libgtest-dev libgmock-dev
  libspdlog-dev libfmt-dev libcli11-dev
  libssl-dev libabsl-dev
)
TEST_PKGS=(
  python3 python3-websockets procps iproute2 prometheus chromium
)

want=("${BUILD_PKGS[@]}")
if [[ "${1:-}" != "--build-only" ]]; then
  want+=("${TEST_PKGS[@]}")
fi

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "install-deps: all packages present"
fi
