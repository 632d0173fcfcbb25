#!/usr/bin/env bash
# PostgreSQL (Debian's `postgresql` package) on 127.0.0.1:5432 with its own data directory, run as the
# system user `postgres` (PostgreSQL refuses to run as root). It holds kfmops' shared state in the tests:
# database `kfmops`, role `kfmops` (password auth over TCP; a test password, not a secret). Data is
# wiped on each start, unless KFMOPS_POSTGRES_KEEP_DATA=1 (a restart after a crash, as tests need).
# Usage: scripts/servers/postgres.sh {start|stop|status|restart}
set -euo pipefail
NAME=postgres
# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PG_PORT="${KFMOPS_POSTGRES_PORT:-5432}"
PG_START_TIMEOUT="${KFMOPS_POSTGRES_START_TIMEOUT:-60}"
PG_OS_USER="${KFMOPS_POSTGRES_OS_USER:-postgres}"
PG_PASSWORD="${KFMOPS_POSTGRES_PASSWORD:-kfmops-test}"
PG_ROLE=kfmops
PG_DATABASE=kfmops
DIR="$RUN_DIR/postgres"        # data/, the unix socket, the pid file, the log
DATA="$DIR/data"
PIDFILE="$DIR/postgres.pid"    # the postmaster's pid (line 1 of data/postmaster.pid)
LOGFILE="$DIR/postgres.log"
DSN="postgresql://$PG_ROLE:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DATABASE"
BIN=""
AS_USER=()                     # as root: run as $PG_OS_USER; otherwise as the calling user

find_bin() {
  local found
  found="$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/initdb' 2>/dev/null | sort -V | tail -n 1)"
  if [[ -z "$found" ]]; then
    apt_install postgresql
    found="$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/initdb' | sort -V | tail -n 1)"
  fi
  [[ -n "$found" ]] || die "no PostgreSQL server binaries under /usr/lib/postgresql after installing postgresql"
  BIN="$(dirname "$found")"
  if (( EUID == 0 )); then AS_USER=(runuser -u "$PG_OS_USER" --); fi
}

healthy() {
  "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -d "$PG_DATABASE" -U "$PG_ROLE" -t 5 2>/dev/null
}

check() {
  healthy && pid_of "$PIDFILE" >/dev/null && return 0
  [[ -s "$PIDFILE" ]] && ! pid_of "$PIDFILE" >/dev/null && return 2
  return 1
}

# Export the DSN in the env.sh that all.sh writes (replacing an older line of it).
write_env() {
  local env="$RUN_DIR/env.sh"
  touch "$env"
  sed -i '/^export KFMOPS_TEST_POSTGRES_DSN=/d' "$env"
  echo "export KFMOPS_TEST_POSTGRES_DSN=$DSN" >>"$env"
}

# A new, empty data directory with the role and its password (database created once the server runs).
init_data() {
  rm -rf "$DIR"; mkdir -p "$DIR"
  if (( EUID == 0 )); then
    ensure_system_user "$PG_OS_USER" "PostgreSQL refuses to run as root"
    chown "$PG_OS_USER:" "$DIR"
    grant_traverse "$PG_OS_USER" "$DIR"
  fi
  chmod 700 "$DIR"
  local pwfile="$DIR/.pwfile"
  printf '%s\n' "$PG_PASSWORD" >"$pwfile"
  if (( EUID == 0 )); then chown "$PG_OS_USER:" "$pwfile"; fi
  log "initdb $DATA ($("$BIN/postgres" --version))"
  "${AS_USER[@]}" "$BIN/initdb" -D "$DATA" -U "$PG_ROLE" --pwfile="$pwfile" --auth-local=trust \
    --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >"$DIR/initdb.log" 2>&1 \
    || { rm -f "$pwfile"; tail -n 50 "$DIR/initdb.log" >&2; die "initdb failed"; }
  rm -f "$pwfile"
}

do_start() {
  find_bin
  if pid_of "$PIDFILE" >/dev/null; then
    log "already running (pid $(pid_of "$PIDFILE"))"
    wait_for "$PG_START_TIMEOUT" check "$LOGFILE"
    write_env
    return
  fi
  ensure_ports_free "$PG_PORT"
  local fresh=1
  if [[ "${KFMOPS_POSTGRES_KEEP_DATA:-}" == 1 && -s "$DATA/PG_VERSION" ]]; then
    log "keeping the data in $DATA (KFMOPS_POSTGRES_KEEP_DATA=1)"; fresh=""
  else
    init_data
  fi
  # Again on every start: a parent directory's mode may have changed since (chmod resets an ACL's mask).
  if (( EUID == 0 )); then grant_traverse "$PG_OS_USER" "$DIR"; fi
  log "starting on 127.0.0.1:$PG_PORT (log: $LOGFILE)"
  "${AS_USER[@]}" "$BIN/pg_ctl" start -D "$DATA" -l "$LOGFILE" -w -t "$PG_START_TIMEOUT" \
    -o "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=$DIR -c max_connections=200" \
    >"$DIR/pg_ctl.log" 2>&1 9>&- || { tail -n 50 "$DIR/pg_ctl.log" "$LOGFILE" >&2 || true; die "pg_ctl start failed"; }
  head -n 1 "$DATA/postmaster.pid" >"$PIDFILE"
  if [[ -n "$fresh" ]]; then
    "${AS_USER[@]}" "$BIN/createdb" -h "$DIR" -p "$PG_PORT" -U "$PG_ROLE" "$PG_DATABASE" \
      || { do_stop; die "createdb $PG_DATABASE failed"; }
  fi
  wait_for "$PG_START_TIMEOUT" check "$LOGFILE" || { do_stop; return 1; }
  write_env
}

# Fast shutdown (SIGINT): smart shutdown (SIGTERM) would wait for every client to disconnect.
do_stop() {
  if ! pid_of "$PIDFILE" >/dev/null; then
    log "not running"; rm -f "$PIDFILE"; return 0
  fi
  find_bin
  log "stopping pid $(pid_of "$PIDFILE") (fast shutdown)"
  if "${AS_USER[@]}" "$BIN/pg_ctl" stop -D "$DATA" -m fast -w -t 60 >>"$DIR/pg_ctl.log" 2>&1; then
    rm -f "$PIDFILE"; log "stopped"
  else
    stop_pidfile "$PIDFILE" 30
  fi
}

do_status() {
  find_bin
  if pid_of "$PIDFILE" >/dev/null && healthy; then
    log "running (pid $(pid_of "$PIDFILE")) on 127.0.0.1:$PG_PORT, $("$BIN/postgres" --version)"
    write_env
  elif pid_of "$PIDFILE" >/dev/null; then
    log "running but not accepting connections"; return 1
  else
    log "not running"; return 3
  fi
}

main_dispatch "$@"
