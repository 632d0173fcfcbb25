#!/usr/bin/env bash
# Redis (Debian's redis-server) on 127.0.0.1:6379, no persistence.
# Usage: scripts/servers/redis.sh {start|stop|status|restart}
set -euo pipefail
NAME=redis
# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

REDIS_PORT="${KFMOPS_REDIS_PORT:-6379}"
REDIS_START_TIMEOUT="${KFMOPS_REDIS_START_TIMEOUT:-30}"
DIR="$RUN_DIR/redis"
PIDFILE="$DIR/redis.pid"
LOGFILE="$DIR/redis.log"

healthy() { [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]; }

check() {
  healthy && pid_of "$PIDFILE" >/dev/null && return 0
  # The pid file appears once the daemon has forked; after that it must stay alive.
  [[ -s "$PIDFILE" ]] && ! pid_of "$PIDFILE" >/dev/null && return 2
  return 1
}

do_start() {
  if pid_of "$PIDFILE" >/dev/null; then
    log "already running (pid $(pid_of "$PIDFILE"))"
    wait_for "$REDIS_START_TIMEOUT" check "$LOGFILE"
    return
  fi
  if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    apt_install redis-server
  fi
  ensure_ports_free "$REDIS_PORT"
  rm -rf "$DIR"; mkdir -p "$DIR"
  log "starting $(redis-server --version | awk '{print $3}') on 127.0.0.1:$REDIS_PORT"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" \
    --pidfile "$PIDFILE" --logfile "$LOGFILE" --dir "$DIR" \
    --save '' --appendonly no --protected-mode yes 9>&-
  wait_for "$REDIS_START_TIMEOUT" check "$LOGFILE"
}

do_stop() { stop_pidfile "$PIDFILE" 30; }

do_status() {
  if pid_of "$PIDFILE" >/dev/null && healthy; then
    log "running (pid $(pid_of "$PIDFILE")) on 127.0.0.1:$REDIS_PORT"
  elif pid_of "$PIDFILE" >/dev/null; then
    log "running but not answering PING"; return 1
  else
    log "not running"; return 3
  fi
}

main_dispatch "$@"
