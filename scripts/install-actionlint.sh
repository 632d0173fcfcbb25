#!/usr/bin/env bash
# Install actionlint (the GitHub Actions workflow linter that tests/test_workflows.py runs) from source
# with `go install`, through the Go module proxy; prebuilt release binaries are not used. Idempotent: an
# installed binary of the wanted version is kept. Prints the binary's path on stdout, logs on stderr.
#
#   KFMOPS_ACTIONLINT_VERSION  module version to install (default below)
#   KFMOPS_TOOLS_DIR           where tools go (default ~/.cache/kfmops-tools); the binary lands in bin/
set -euo pipefail

VERSION="${KFMOPS_ACTIONLINT_VERSION:-v1.7.12}"
TOOLS_DIR="${KFMOPS_TOOLS_DIR:-${HOME:-/root}/.cache/kfmops-tools}"
BIN_DIR="$TOOLS_DIR/bin"
BINARY="$BIN_DIR/actionlint"

log() { printf '[actionlint] %s\n' "$*" >&2; }

installed_version() {
  [[ -x "$BINARY" ]] || return 1
  "$BINARY" -version 2>/dev/null | head -n 1
}

if [[ "$(installed_version || true)" == "$VERSION" ]]; then
  log "$VERSION already installed"
  echo "$BINARY"
  exit 0
fi

if ! command -v go >/dev/null; then
  log "ERROR: 'go' is not on PATH; install Go 1.22 or newer (Debian: apt-get install golang-go)"
  exit 1
fi

mkdir -p "$BIN_DIR"
log "installing github.com/rhysd/actionlint/cmd/actionlint@$VERSION with $(go version | awk '{print $3}')"
# GOFLAGS=-mod=mod: a go.mod or vendor/ in the current folder must not get in the way.
if ! GOBIN="$BIN_DIR" GOFLAGS=-mod=mod go install "github.com/rhysd/actionlint/cmd/actionlint@$VERSION" >&2; then
  log "ERROR: go install failed (is the Go module proxy reachable? GOPROXY=$(go env GOPROXY))"
  exit 1
fi

got="$(installed_version || true)"
if [[ "$got" != "$VERSION" ]]; then
  log "ERROR: $BINARY reports version '$got', not $VERSION"
  exit 1
fi
log "installed $VERSION"
echo "$BINARY"
