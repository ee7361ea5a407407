#!/usr/bin/env bash
# The tools that check deploy/ without a cluster or a Docker engine, built with Go from the module
# proxy into $PHOTOSTORE_TOOLS_BIN (default ~/.cache/photostore-engines/bin):
#   helm          lint and render deploy/helm/photostore (v3.22.0; 3-4 min the first time)
#   composecheck  loads deploy/compose.yaml with compose-go, the loader `docker compose` uses
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
HELM_VERSION=v3.22.0
bin=${PHOTOSTORE_TOOLS_BIN:-${PHOTOSTORE_ENGINES_HOME:-$HOME/.cache/photostore-engines}/bin}
mkdir -p "$bin"
command -v go >/dev/null || { echo "deploy/tools: Go is needed (https://go.dev/dl/)" >&2; exit 1; }

# A helm built by `go install` reports only "v3.22": a stamp beside it records the exact version.
if [[ ! -x $bin/helm || $(cat "$bin/helm.version" 2>/dev/null) != "$HELM_VERSION" ]]; then
  echo "[helm] building $HELM_VERSION with go install (3-4 min the first time) ..." >&2
  GOBIN="$bin" GOFLAGS=-mod=mod go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  echo "$HELM_VERSION" > "$bin/helm.version"
fi
# Go's build cache makes this a second when nothing changed.
(cd "$here/composecheck" && go build -trimpath -o "$bin/composecheck" .)
echo "[deploy tools] helm $HELM_VERSION and composecheck in $bin" >&2
