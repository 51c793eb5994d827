#!/bin/sh
# Container entrypoint: `coordinator` and `node` are shorthands that turn the TG_* environment
# into flags; anything else is executed as given (e.g. `tgctl ...`, `tokengate-bench ...`).
set -eu

case "${1:-}" in
  coordinator)
    shift
    # A token file (Docker/Kubernetes secret) wins over the plain variable; the coordinator
    # reads TG_GATEWAY_TOKEN, so the file never shows up in `ps`.
    if [ -n "${TG_GATEWAY_TOKEN_FILE:-}" ]; then
      TG_GATEWAY_TOKEN=$(cat "$TG_GATEWAY_TOKEN_FILE")
      export TG_GATEWAY_TOKEN
    fi
    # shellcheck disable=SC2086 # TG_COORDINATOR_ARGS is a list of flags
    set -- tokengate-coordinator \
      --listen "${TG_LISTEN:-tcp://0.0.0.0:5555}" \
      --gateway "${TG_GATEWAY_LISTEN:-0.0.0.0:${TG_GATEWAY_PORT:-8080}}" \
      ${TG_SCHEDULER:+--scheduler "$TG_SCHEDULER"} \
      ${TG_COORDINATOR_ARGS:-} "$@"
    ;;
  node)
    shift
    # Under `--scale node=N` every replica gets a distinct id: its hostname (the container id
    # under Compose, the pod name under Kubernetes) unless TG_NODE_ID says otherwise.
    # shellcheck disable=SC2086 # TG_NODE_ARGS is a list of flags
    # TG_NODE_BINARY: a node built with the SDK's tokengate_add_node() (same flags).
    set -- "${TG_NODE_BINARY:-tokengate-node}" \
      --coordinator "${TG_COORDINATOR:-tcp://coordinator:5555}" \
      --id "${TG_NODE_ID:-$(hostname)}" \
      ${TG_NODE_ARGS:-} "$@"
    ;;
esac
exec "$@"
