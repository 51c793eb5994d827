# shellcheck shell=bash
# Docker engine helpers for the container test.

# Starts Debian's dockerd if no engine answers (CI machines have none running). The daemon is
# left running for later steps and CI runs; its log goes to $TG_CACHE_DIR/dockerd.log.
tg_ensure_dockerd() {
  local docker
  docker=$(tg_docker)
  "$docker" info >/dev/null 2>&1 && return 0
  command -v dockerd >/dev/null || [[ -x /usr/sbin/dockerd ]] || return 1
  mkdir -p "$TG_CACHE_DIR"
  # A daemon killed with its session leaves its pid file behind; dockerd refuses to start then.
  if [[ -f /var/run/docker.pid ]] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    rm -f /var/run/docker.pid
  fi
  echo "starting dockerd (log: $TG_CACHE_DIR/dockerd.log)"
  nohup /usr/sbin/dockerd >>"$TG_CACHE_DIR/dockerd.log" 2>&1 &
  for _ in $(seq 60); do
    "$docker" info >/dev/null 2>&1 && return 0
    sleep 1
  done
  tail -20 "$TG_CACHE_DIR/dockerd.log"
  return 1
}
