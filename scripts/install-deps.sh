#!/usr/bin/env bash
# Installs every Debian package TokenGate needs to build and test (Debian bookworm).
#
#   scripts/install-deps.sh               build + tests: unit, integration, gateway end-to-end
#                                         (Python websockets, Chromium, Prometheus, Node.js/npm)
#   scripts/install-deps.sh --deploy      the above + the deployment tests' tools (Docker engine,
#                                         docker-compose, debootstrap, shellcheck, ...): heavy
#   scripts/install-deps.sh --build-only  only what the build needs (the Docker build stage)
#
# Every other script that needs packages (scripts/test.sh, .ci/run, .ci/deploy-tests.sh,
# tests/deploy/make-base-image.sh) calls this one. Idempotent and quick when everything is
# present: one dpkg-query, no apt.
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
# tests/gateway (run.sh, *.py, browser_test.mjs), the fuzz targets (clang-14 with its
# libFuzzer runtime) and the test scripts' tools.
TEST_PKGS=(
  python3 python3-websockets procps iproute2 prometheus chromium curl
  clang-14 libclang-rt-14-dev
)
# .ci/deploy-tests.sh: container test (Docker engine + compose v1, a debootstrapped base
# image), static checks (shellcheck, promtool from prometheus, helm unzipped from npm).
DEPLOY_PKGS=(
  docker.io docker-compose iptables debootstrap shellcheck unzip curl tar prometheus
)

mode="test"
case "${1:-}" in
  "") ;;
  --build-only) mode="build" ;;
  --deploy) mode="deploy" ;;
  *)
    echo "usage: $0 [--build-only|--deploy]" >&2
    exit 2
    ;;
esac

want=("${BUILD_PKGS[@]}")
[[ $mode != build ]] && want+=("${TEST_PKGS[@]}")
[[ $mode == deploy ]] && want+=("${DEPLOY_PKGS[@]}")

# One query for all: the packages dpkg reports as installed.
declare -A have=()
while read -r pkg status; do
  [[ $status == ii ]] && have[${pkg%%:*}]=1
done < <(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${want[@]}" 2>/dev/null || true)

missing=()
for p in "${want[@]}"; do
  [[ -n ${have[$p]:-} ]] || missing+=("$p")
done

# Node.js and npm (tests/gateway, tests/deploy): Debian's nodejs + npm, unless a node and npm
# are already installed some other way (a nodejs package that bundles npm conflicts with
# Debian's npm).
if [[ $mode != build ]]; then
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
fi

if ((${#missing[@]})); then
  # Each name once (curl, prometheus are in two lists).
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  echo "install-deps: installing ${missing[*]}"
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "install-deps: all packages present ($mode)"
fi
