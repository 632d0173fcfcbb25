#!/usr/bin/env bash
# Install opa and conftest (to run kfmops' Rego policies outside kfmops, as docs/policy.md shows) from
# source with `go install` through the Go module proxy. Idempotent: installed versions are kept.
# Prints the bin folder on stdout, logs on stderr.
#
#   KFMOPS_OPA_VERSION, KFMOPS_CONFTEST_VERSION   module versions (defaults below)
#   KFMOPS_TOOLS_DIR                              where tools go (default ~/.cache/kfmops-tools)
set -euo pipefail

OPA_VERSION="${KFMOPS_OPA_VERSION:-v1.22.3}"
CONFTEST_VERSION="${KFMOPS_CONFTEST_VERSION:-v0.71.1}"
TOOLS_DIR="${KFMOPS_TOOLS_DIR:-${HOME:-/root}/.cache/kfmops-tools}"
BIN_DIR="$TOOLS_DIR/bin"
mkdir -p "$BIN_DIR"

log() { printf '[policy-tools] %s\n' "$*" >&2; }

if ! command -v go >/dev/null; then
  log "ERROR: 'go' is not on PATH; install Go 1.22 or newer (Debian: apt-get install golang-go)"
  exit 1
fi

install() {  # install NAME MODULE VERSION
  local name="$1" module="$2" version="$3" stamp="$BIN_DIR/.$1.version"
  if [[ -x "$BIN_DIR/$name" && "$(cat "$stamp" 2>/dev/null)" == "$version" ]]; then
    log "$name $version already installed"
    return
  fi
  log "building $name $version (first time only; a few minutes)"
  GOBIN="$BIN_DIR" GOFLAGS=-mod=mod go install "$module@$version" >&2
  echo "$version" > "$stamp"
}

install opa github.com/open-policy-agent/opa "$OPA_VERSION"
install conftest github.com/open-policy-agent/conftest "$CONFTEST_VERSION"
echo "$BIN_DIR"
