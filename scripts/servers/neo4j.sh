#!/usr/bin/env bash
# Neo4j community 5.26 LTS (in-process neo4j-harness, built from Maven Central)
# with Bolt on 127.0.0.1:7687 and HTTP on 127.0.0.1:7474, auth disabled.
# Usage: scripts/servers/neo4j.sh {start|stop|status|restart}
set -euo pipefail
NAME=neo4j
# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

NEO4J_BOLT_PORT="${KFMOPS_NEO4J_BOLT_PORT:-7687}"
NEO4J_HTTP_PORT="${KFMOPS_NEO4J_HTTP_PORT:-7474}"
NEO4J_START_TIMEOUT="${KFMOPS_NEO4J_START_TIMEOUT:-180}"
NEO4J_JAVA_OPTS="${KFMOPS_NEO4J_JAVA_OPTS:--Xms256m -Xmx1g}"
SRC_DIR="$SERVERS_DIR/neo4j"            # pom.xml + Java main (in the repo)
BUILD_DIR="$CACHE_DIR/neo4j-build"      # jar + lib/ (cached)
JAR="$BUILD_DIR/kfmops-neo4j-test-server.jar"
DIR="$RUN_DIR/neo4j"
PIDFILE="$DIR/neo4j.pid"
LOGFILE="$DIR/neo4j.log"
# Python used for the optional `RETURN 1` check over Bolt (needs the neo4j driver).
PYTHON="${KFMOPS_SERVERS_PYTHON:-python3}"

src_hash() {
  (cd "$SRC_DIR" && find pom.xml src -type f -print0 | sort -z | xargs -0 sha256sum) \
    | sha256sum | cut -d' ' -f1
}

build() {
  local hash stamp="$BUILD_DIR/.src-hash"
  hash="$(src_hash)"
  if [[ -f "$JAR" && -f "$stamp" && "$(cat "$stamp")" == "$hash" ]]; then
    return 0
  fi
  log "building the Neo4j test server with Maven into $BUILD_DIR (first time: downloads ~150 MB)"
  rm -rf "$BUILD_DIR"
  mvn_run -f "$SRC_DIR/pom.xml" -Dkfmops.build.dir="$BUILD_DIR" package
  echo "$hash" >"$stamp"
}

bolt_ok() {
  # RETURN 1 over Bolt when the Python driver is importable; else TCP + ready line.
  # (run from / so that scripts/servers/neo4j/ is not mistaken for the package)
  if (cd / && "$PYTHON" -c 'from neo4j import GraphDatabase') 2>/dev/null; then
    (cd / && "$PYTHON" - "bolt://127.0.0.1:$NEO4J_BOLT_PORT") <<'PY' >/dev/null 2>&1
import sys
from neo4j import GraphDatabase
with GraphDatabase.driver(sys.argv[1], connection_timeout=5) as d:
    assert d.execute_query("RETURN 1 AS x").records[0]["x"] == 1
PY
  else
    port_open "$NEO4J_BOLT_PORT"
  fi
}

healthy() { grep -q KFMOPS_NEO4J_READY "$LOGFILE" 2>/dev/null && bolt_ok; }

check() {
  pid_of "$PIDFILE" >/dev/null || return 2
  healthy
}

do_start() {
  if pid_of "$PIDFILE" >/dev/null; then
    log "already running (pid $(pid_of "$PIDFILE"))"
    wait_for "$NEO4J_START_TIMEOUT" check "$LOGFILE"
    return
  fi
  build
  ensure_ports_free "$NEO4J_BOLT_PORT" "$NEO4J_HTTP_PORT"
  rm -rf "$DIR"; mkdir -p "$DIR/data"
  log "starting Neo4j on bolt://127.0.0.1:$NEO4J_BOLT_PORT, http://127.0.0.1:$NEO4J_HTTP_PORT"
  # shellcheck disable=SC2086  # NEO4J_JAVA_OPTS is a list of JVM flags
  (
    cd "$DIR"
    export KFMOPS_NEO4J_HOST=127.0.0.1 KFMOPS_NEO4J_WORKDIR="$DIR/data" \
      KFMOPS_NEO4J_BOLT_PORT="$NEO4J_BOLT_PORT" KFMOPS_NEO4J_HTTP_PORT="$NEO4J_HTTP_PORT"
    exec setsid nohup "$JAVA17_HOME/bin/java" $NEO4J_JAVA_OPTS \
      -XX:+UseG1GC -XX:-OmitStackTraceInFastThrow -Dio.netty.tryReflectionSetAccessible=true \
      --add-opens=java.base/java.lang=ALL-UNNAMED --add-opens=java.base/java.nio=ALL-UNNAMED \
      --add-opens=java.base/java.io=ALL-UNNAMED --add-opens=java.base/sun.nio.ch=ALL-UNNAMED \
      -jar "$JAR" </dev/null >"$LOGFILE" 2>&1 9>&-
  ) &
  echo "$!" >"$PIDFILE"
  if ! wait_for "$NEO4J_START_TIMEOUT" check "$LOGFILE"; then
    tail -n 50 "$DIR"/data/*/neo4j.log >&2 2>/dev/null || true
    do_stop
    return 1
  fi
}

do_stop() { stop_pidfile "$PIDFILE" 60; }

do_status() {
  if pid_of "$PIDFILE" >/dev/null && healthy; then
    log "running (pid $(pid_of "$PIDFILE")) on bolt://127.0.0.1:$NEO4J_BOLT_PORT"
  elif pid_of "$PIDFILE" >/dev/null; then
    log "running but not healthy"; return 1
  else
    log "not running"; return 3
  fi
}

main_dispatch "$@"
