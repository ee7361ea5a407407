#!/usr/bin/env bash
# Weaviate v1.39.3 on one machine: a single node on 127.0.0.1, anonymous access, no modules.
#   weaviate.sh install            build weaviate-server with `go install` (once; 6-11 min cold)
#   weaviate.sh start DATA_DIR     start on DATA_DIR (objects under DATA_DIR/data), wait until ready
#   weaviate.sh stop DATA_DIR      TERM, then KILL after a grace period
#   weaviate.sh status DATA_DIR    exit 0 while running
# Env: WEAVIATE_HTTP_PORT (8090), WEAVIATE_GRPC_PORT (8091), WEAVIATE_CLUSTER_PORT (17946: first
#      of five consecutive ports: gossip, data, raft, raft rpc, profiling), GOMEMLIMIT (1GiB),
#      WEAVIATE_READY_TIMEOUT (120 s), PHOTOSTORE_ENGINES_HOME (~/.cache/photostore-engines).
# Needs Go 1.26 (https://go.dev/dl) and a C compiler; only v1.39.3 builds from the module proxy.
set -euo pipefail
ENGINE=weaviate
PROCESS_MATCH=weaviate-server
# shellcheck source=deploy/local/lib.sh
source "$(dirname "$0")/lib.sh"

WEAVIATE_VERSION=v1.39.3
WEAVIATE_HTTP_PORT=${WEAVIATE_HTTP_PORT:-8090}
WEAVIATE_GRPC_PORT=${WEAVIATE_GRPC_PORT:-8091}
WEAVIATE_CLUSTER_PORT=${WEAVIATE_CLUSTER_PORT:-17946}
WEAVIATE_READY_TIMEOUT=${WEAVIATE_READY_TIMEOUT:-120}
STOP_GRACE_S=${WEAVIATE_STOP_GRACE:-30}
INSTALL_DIR="${PHOTOSTORE_ENGINES_HOME:-$HOME/.cache/photostore-engines}/weaviate-$WEAVIATE_VERSION"
BIN="$INSTALL_DIR/bin/weaviate-server"
MODULE="github.com/weaviate/weaviate/cmd/weaviate-server"

building() { pgrep -f "$MODULE@" >/dev/null 2>&1; }

install() {
  [[ -x $BIN ]] && return 0
  if building; then  # another install (or a session's own build) is at it: wait for its binary
    say "a build of weaviate-server is already running; waiting for it ..."
    while building; do sleep 5; done
    [[ -x $BIN ]] && return 0
    say "that build left no binary at $BIN; building here"
  fi
  local go
  go=$(command -v go || echo /usr/local/go/bin/go)
  [[ -x $go ]] || die "go not found (need Go 1.26): see https://go.dev/dl"
  mkdir -p "$INSTALL_DIR/bin"
  say "building weaviate $WEAVIATE_VERSION with go install (6-11 min the first time) ..."
  local t0=$SECONDS
  # go install writes the binary only once the build succeeded
  if ! GOBIN="$INSTALL_DIR/bin" CGO_ENABLED=1 \
       "$go" install -trimpath -ldflags="-s -w" "$MODULE@$WEAVIATE_VERSION" >"$INSTALL_DIR/build.log" 2>&1; then
    die "go install failed: $(tail -3 "$INSTALL_DIR/build.log")"
  fi
  say "weaviate $WEAVIATE_VERSION built in $((SECONDS - t0))s: $BIN"
}

ready() {
  [[ $(curl -s -o /dev/null -m 2 -w '%{http_code}' \
       "http://127.0.0.1:$WEAVIATE_HTTP_PORT/v1/.well-known/ready" || true) == 200 ]]
}

start() {
  local dir pid t0 base=$WEAVIATE_CLUSTER_PORT
  dir=$(data_dir "${1:-}")
  if running "$dir"; then
    say "already running on $dir, pid $(cat "$dir/weaviate.pid")"
    cat "$dir/weaviate.pid"; return 0
  fi
  command -v curl >/dev/null || die "curl not found: apt-get install -y curl"
  for port in "$WEAVIATE_HTTP_PORT" "$WEAVIATE_GRPC_PORT" $(seq "$base" $((base + 4))); do
    port_open "$port" && die "port $port is taken by another process; set WEAVIATE_HTTP_PORT / WEAVIATE_GRPC_PORT / WEAVIATE_CLUSTER_PORT"
  done
  install
  mkdir -p "$dir/data"
  [[ -f $dir/weaviate.log ]] && mv -f "$dir/weaviate.log" "$dir/weaviate.log.prev"
  : >"$dir/weaviate.log"
  t0=$SECONDS
  env AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED=true \
    AUTHORIZATION_ADMINLIST_ENABLED=false \
    PERSISTENCE_DATA_PATH="$dir/data" \
    DEFAULT_VECTORIZER_MODULE=none \
    ENABLE_MODULES= \
    API_BASED_MODULES_DISABLED=true \
    DISABLE_TELEMETRY=true \
    LOG_LEVEL="${WEAVIATE_LOG_LEVEL:-info}" \
    QUERY_DEFAULTS_LIMIT=25 \
    GOMEMLIMIT="${GOMEMLIMIT:-1GiB}" \
    CLUSTER_HOSTNAME=node1 \
    CLUSTER_BIND_ADDR=127.0.0.1 \
    CLUSTER_ADVERTISE_ADDR=127.0.0.1 \
    CLUSTER_GOSSIP_BIND_PORT="$base" \
    CLUSTER_ADVERTISE_PORT="$base" \
    CLUSTER_DATA_BIND_PORT=$((base + 1)) \
    RAFT_PORT=$((base + 2)) \
    RAFT_INTERNAL_RPC_PORT=$((base + 3)) \
    RAFT_JOIN="node1:$((base + 3))" \
    RAFT_BOOTSTRAP_EXPECT=1 \
    GO_PROFILING_PORT=$((base + 4)) \
    GO_PROFILING_DISABLE=true \
    GRPC_PORT="$WEAVIATE_GRPC_PORT" \
    nohup "$BIN" --host 127.0.0.1 --port "$WEAVIATE_HTTP_PORT" --scheme http \
    >>"$dir/weaviate.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$dir/weaviate.pid"
  until ready; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$dir/weaviate.pid"
      say "weaviate exited while starting; last log lines:"; tail -20 "$dir/weaviate.log" >&2
      exit 1
    fi
    if (( SECONDS - t0 > WEAVIATE_READY_TIMEOUT )); then
      say "not ready after ${WEAVIATE_READY_TIMEOUT}s (see $dir/weaviate.log); stopping it"
      stop "$dir"; exit 1
    fi
    sleep 0.2
  done
  say "weaviate $WEAVIATE_VERSION ready on 127.0.0.1:$WEAVIATE_HTTP_PORT (gRPC $WEAVIATE_GRPC_PORT) in $((SECONDS - t0))s, pid $pid"
  echo "$pid"
}

engine_main "$@"
