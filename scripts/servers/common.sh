# shellcheck shell=bash
# Shared helpers for scripts/servers/*.sh. Source it; do not run it.
#
#   KFMOPS_SERVERS_CACHE  downloads, Maven repo, builds, unzipped distributions
#                         (kept between runs; default ~/.cache/kfmops-servers)
#   KFMOPS_SERVERS_RUN    pid files, data and logs (default $CACHE/run)
#   KFMOPS_JAVA_HOME      Java 17 home (default: Debian's openjdk-17)
set -euo pipefail

# shellcheck disable=SC2034  # used by the scripts that source this file
SERVERS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE_DIR="${KFMOPS_SERVERS_CACHE:-${HOME:-/root}/.cache/kfmops-servers}"
RUN_DIR="${KFMOPS_SERVERS_RUN:-$CACHE_DIR/run}"
M2_REPO="${KFMOPS_SERVERS_M2_REPO:-$CACHE_DIR/m2}"
JAVA17_HOME="${KFMOPS_JAVA_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}"
NAME="${NAME:-server}"

log() { printf '[%s] %s\n' "$NAME" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# pid_of PIDFILE -> prints the pid if the file names a live process.
pid_of() {
  local pid
  [[ -s "$1" ]] || return 1
  pid="$(tr -dc '0-9' <"$1")"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
  # A zombie (exited, not yet reaped) still answers kill -0.
  [[ "$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)" != Z ]] || return 1
  echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ensure_ports_free PORT... : refuse to start when something else listens there.
ensure_ports_free() {
  local p
  for p in "$@"; do
    port_open "$p" && die "port $p on 127.0.0.1 is already in use by another process"
  done
  return 0
}

# wait_for TIMEOUT CHECK_FN LOGFILE...
#   CHECK_FN returns 0 = healthy, 1 = not yet, 2 = process died (fail fast).
#   On failure prints the last 50 lines of each LOGFILE and returns 1.
wait_for() {
  local timeout="$1" check="$2" start rc f
  shift 2
  start="$(date +%s)"
  while :; do
    rc=0; "$check" || rc=$?
    if (( rc == 0 )); then
      log "healthy after $(( $(date +%s) - start ))s"
      return 0
    fi
    if (( rc == 2 )); then
      log "process exited during startup"; break
    fi
    if (( $(date +%s) - start >= timeout )); then
      log "not healthy after ${timeout}s"; break
    fi
    sleep 1
  done
  for f in "$@"; do
    [[ -f "$f" ]] || continue
    log "last 50 lines of $f:"
    tail -n 50 "$f" >&2 || true
  done
  return 1
}

# stop_pidfile PIDFILE [TIMEOUT]: TERM, wait, then KILL. No-op when not running.
stop_pidfile() {
  local pidfile="$1" timeout="${2:-30}" pid i
  if ! pid="$(pid_of "$pidfile")"; then
    log "not running"; rm -f "$pidfile"; return 0
  fi
  log "stopping pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  for (( i = 0; i < timeout; i++ )); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; log "stopped"; return 0; }
    sleep 1
  done
  log "still alive after ${timeout}s, sending KILL"
  kill -KILL "$pid" 2>/dev/null || true
  sleep 1
  rm -f "$pidfile"
}

# stop_group PGID [TIMEOUT]: TERM a process group, wait, then KILL it.
stop_group() {
  local pgid="$1" timeout="${2:-30}" i
  kill -TERM -- "-$pgid" 2>/dev/null || return 0
  for (( i = 0; i < timeout; i++ )); do
    kill -0 -- "-$pgid" 2>/dev/null || return 0
    sleep 1
  done
  kill -KILL -- "-$pgid" 2>/dev/null || true
}

# apt_install PKG...: install Debian packages (runs apt-get update once per hour).
apt_install() {
  local stamp="$CACHE_DIR/.apt-updated" added_policy=""
  (( EUID == 0 )) || die "need root to apt-get install $*"
  export DEBIAN_FRONTEND=noninteractive
  mkdir -p "$CACHE_DIR"
  if [[ -z "$(find "$stamp" -mmin -60 2>/dev/null)" ]]; then
    log "apt-get update"
    apt-get update -q >"$CACHE_DIR/apt.log" 2>&1 \
      || { tail -n 50 "$CACHE_DIR/apt.log" >&2; die "apt-get update failed"; }
    touch "$stamp"
  fi
  # Never let a package's maintainer script start its own service (e.g. redis on 6379).
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    added_policy=1
  fi
  log "apt-get install $* (log: $CACHE_DIR/apt.log)"
  local rc=0
  apt-get install -y -q --no-install-recommends "$@" >"$CACHE_DIR/apt.log" 2>&1 || rc=$?
  [[ -n "$added_policy" ]] && rm -f /usr/sbin/policy-rc.d
  (( rc == 0 )) || { tail -n 50 "$CACHE_DIR/apt.log" >&2; die "apt-get install $* failed"; }
}

# ensure_system_user USER WHY: create a system user (servers that refuse to run as root run as one).
ensure_system_user() {
  id -u "$1" >/dev/null 2>&1 && return 0
  log "creating system user $1 ($2)"
  useradd --system --user-group --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin "$1"
}

# grant_traverse USER PATH: the cache usually lives under /root (mode 700): give USER search (x)
# permission on the blocking parent directories of PATH only, with an ACL.
grant_traverse() {
  local user="$1" target="$2" d=""
  local IFS=/
  for part in ${target#/}; do
    d="$d/$part"
    [[ -d "$d" ]] || break
    runuser -u "$user" -- test -x "$d" && continue
    command -v setfacl >/dev/null || apt_install acl
    log "granting $user search permission on $d (setfacl -m u:$user:x)"
    setfacl -m "u:$user:x" "$d"
  done
}

ensure_java17() {
  [[ -x "$JAVA17_HOME/bin/javac" ]] || apt_install openjdk-17-jdk-headless
  [[ -x "$JAVA17_HOME/bin/java" ]] || die "no Java 17 at $JAVA17_HOME (set KFMOPS_JAVA_HOME)"
}

# mvn_run ARGS...: Maven on Java 17 with the cached local repository.
# Output goes to $CACHE_DIR/maven.log; its tail is shown on failure.
mvn_run() {
  ensure_java17
  command -v mvn >/dev/null || apt_install maven
  mkdir -p "$M2_REPO"
  if ! JAVA_HOME="$JAVA17_HOME" mvn -B -ntp -Dstyle.color=never \
      -Dmaven.repo.local="$M2_REPO" "$@" >"$CACHE_DIR/maven.log" 2>&1; then
    tail -n 50 "$CACHE_DIR/maven.log" >&2
    die "mvn $* failed (full log: $CACHE_DIR/maven.log)"
  fi
}

# main_dispatch "$@": calls do_start / do_stop / do_status defined by the script.
main_dispatch() {
  local cmd="${1:-}"
  case "$cmd" in
    start|stop|status) ;;
    restart) "$0" stop && exec "$0" start ;;
    *) echo "usage: $0 {start|stop|status|restart}" >&2; exit 2 ;;
  esac
  mkdir -p "$CACHE_DIR" "$RUN_DIR"
  # Serialise concurrent start/stop of the same server. Daemons must be
  # launched with 9>&- so that they do not inherit (and hold) this lock.
  exec 9>"$RUN_DIR/.$NAME.lock"
  flock -w 600 9 || die "could not take lock $RUN_DIR/.$NAME.lock"
  "do_$cmd"
}
