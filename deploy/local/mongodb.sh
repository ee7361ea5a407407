#!/usr/bin/env bash
# A MongoDB-wire server on one machine: SecantusDB (WiredTiger storage) on 127.0.0.1.
#   mongodb.sh install            SecantusDB from PyPI into its own venv (once; later runs return at once)
#   mongodb.sh start DATA_DIR     start on DATA_DIR/data, wait until a ping answers, print the pid
#   mongodb.sh stop DATA_DIR      TERM, then KILL after a grace period
#   mongodb.sh status DATA_DIR    exit 0 while running
# Env: MONGODB_PORT (27117), MONGODB_CACHE_SIZE (256M), MONGODB_SYNC_ON_COMMIT (0; 1 fsyncs every
#      commit: slower, survives power loss), MONGODB_READY_TIMEOUT (60 s),
#      PHOTOSTORE_ENGINES_HOME (~/.cache/photostore-engines).
#
# Licence: SecantusDB is GPL-2.0. It runs only as a separate server process that the project talks
# to over the MongoDB wire protocol (pymongo); the project never imports it, and it is installed
# into its own venv, apart from the project's.
set -euo pipefail
ENGINE=mongodb
PROCESS_MATCH=secantusd
# shellcheck source=deploy/local/lib.sh
source "$(dirname "$0")/lib.sh"

SECANTUS_VERSION=0.7.0b3
MONGODB_PORT=${MONGODB_PORT:-27117}
MONGODB_CACHE_SIZE=${MONGODB_CACHE_SIZE:-256M}
MONGODB_SYNC_ON_COMMIT=${MONGODB_SYNC_ON_COMMIT:-0}
MONGODB_READY_TIMEOUT=${MONGODB_READY_TIMEOUT:-60}
STOP_GRACE_S=${MONGODB_STOP_GRACE:-30}
INSTALL_DIR="${PHOTOSTORE_ENGINES_HOME:-$HOME/.cache/photostore-engines}/mongodb"
VENV="$INSTALL_DIR/venv-$SECANTUS_VERSION"


install() {
  [[ -f $VENV/.complete ]] && return 0
  command -v python3 >/dev/null || die "python3 not found (need 3.10+)"
  mkdir -p "$INSTALL_DIR"
  say "installing secantusdb $SECANTUS_VERSION from PyPI into $VENV ..."
  local t0=$SECONDS
  rm -rf "$VENV"
  python3 -m venv "$VENV" || die "python3 -m venv failed (apt-get install -y python3-venv)"
  if ! "$VENV/bin/pip" install -q --disable-pip-version-check "secantusdb==$SECANTUS_VERSION" \
       >"$INSTALL_DIR/pip.log" 2>&1; then
    rm -rf "$VENV"
    die "pip failed: $(grep -m1 -i error "$INSTALL_DIR/pip.log" || tail -1 "$INSTALL_DIR/pip.log")"
  fi
  touch "$VENV/.complete"
  say "secantusdb $SECANTUS_VERSION installed in $((SECONDS - t0))s"
}

ping() {  # a real MongoDB ping through pymongo (a dependency of secantusdb, so in its venv)
  "$VENV/bin/python" - "$MONGODB_PORT" <<'EOF' >/dev/null 2>&1
import sys
import pymongo
client = pymongo.MongoClient(f"mongodb://127.0.0.1:{sys.argv[1]}/", directConnection=True,
                             serverSelectionTimeoutMS=2000, connectTimeoutMS=2000)
client.admin.command("ping")
EOF
}

start() {
  local dir pid t0
  dir=$(data_dir "${1:-}")
  if running "$dir"; then
    say "already running on $dir, pid $(cat "$dir/mongodb.pid")"
    cat "$dir/mongodb.pid"; return 0
  fi
  port_open "$MONGODB_PORT" && die "port $MONGODB_PORT is taken by another process; set MONGODB_PORT"
  install
  mkdir -p "$dir/data"
  # An explicit config file stops secantusd from picking up a secantusd.toml from elsewhere.
  echo "# flags on the command line (deploy/local/mongodb.sh) decide everything" >"$dir/secantusd.toml"
  local flags=(--config "$dir/secantusd.toml" --host 127.0.0.1 --port "$MONGODB_PORT"
               --storage-path "$dir/data" --cache-size "$MONGODB_CACHE_SIZE" --log-level WARNING)
  [[ $MONGODB_SYNC_ON_COMMIT == 1 ]] && flags+=(--sync-on-commit)
  [[ -f $dir/mongodb.log ]] && mv -f "$dir/mongodb.log" "$dir/mongodb.log.prev"
  t0=$SECONDS
  nohup "$VENV/bin/secantusd-py" "${flags[@]}" >"$dir/mongodb.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$dir/mongodb.pid"
  until port_open "$MONGODB_PORT" && ping; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$dir/mongodb.pid"
      say "secantusd exited while starting:"; tail -20 "$dir/mongodb.log" >&2
      exit 1
    fi
    if (( SECONDS - t0 > MONGODB_READY_TIMEOUT )); then
      say "no ping answer after ${MONGODB_READY_TIMEOUT}s (see $dir/mongodb.log); stopping it"
      stop "$dir"; exit 1
    fi
    sleep 0.2
  done
  say "secantusdb $SECANTUS_VERSION ready on 127.0.0.1:$MONGODB_PORT in $((SECONDS - t0))s, pid $pid"
  echo "$pid"
}

engine_main "$@"
