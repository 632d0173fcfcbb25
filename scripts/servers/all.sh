#!/usr/bin/env bash
# Start/stop/check Redis, PostgreSQL, Neo4j and Elasticsearch for the integration tests.
# Usage: scripts/servers/all.sh {start|stop|status|restart}
# On start (and status) prints the test environment and writes it to $RUN_DIR/env.sh.
set -euo pipefail
NAME=all
# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SERVERS=(redis postgres neo4j elasticsearch)

write_env() {
  mkdir -p "$RUN_DIR"
  cat >"$RUN_DIR/env.sh" <<ENV
export KFMOPS_TEST_REDIS_URL=redis://127.0.0.1:${KFMOPS_REDIS_PORT:-6379}/0
export KFMOPS_TEST_NEO4J_URI=bolt://127.0.0.1:${KFMOPS_NEO4J_BOLT_PORT:-7687}
export KFMOPS_TEST_ES_URL=http://127.0.0.1:${KFMOPS_ES_HTTP_PORT:-9200}
export KFMOPS_TEST_POSTGRES_DSN=postgresql://kfmops:${KFMOPS_POSTGRES_PASSWORD:-kfmops-test}@127.0.0.1:${KFMOPS_POSTGRES_PORT:-5432}/kfmops
ENV
  log "test environment (also in $RUN_DIR/env.sh):"
  sed 's/^export //' "$RUN_DIR/env.sh"
}

cmd="${1:-}"
case "$cmd" in
  start)
    start_all="$(date +%s)"
    for s in "${SERVERS[@]}"; do "$SERVERS_DIR/$s.sh" start; done
    log "all servers up in $(( $(date +%s) - start_all ))s"
    write_env
    ;;
  stop)
    rc=0
    for (( i = ${#SERVERS[@]} - 1; i >= 0; i-- )); do
      "$SERVERS_DIR/${SERVERS[i]}.sh" stop || rc=1
    done
    exit "$rc"
    ;;
  status)
    rc=0
    for s in "${SERVERS[@]}"; do "$SERVERS_DIR/$s.sh" status || rc=1; done
    (( rc == 0 )) && write_env
    exit "$rc"
    ;;
  restart) "$0" stop && exec "$0" start ;;
  *) echo "usage: $0 {start|stop|status|restart}" >&2; exit 2 ;;
esac
