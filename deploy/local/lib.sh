# What every engine script shares (sourced, not run). The script sets ENGINE (its name, also the
# pid and log file names), PROCESS_MATCH (a word of the server's command line) and STOP_GRACE_S,
# defines install and start, then ends with `engine_main "$@"`.

say() { echo "[$ENGINE] $*" >&2; }
die() { say "$*"; exit 1; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

data_dir() {  # data_dir DIR: DIR made absolute (and created)
  [[ -n ${1:-} ]] || die "usage: $ENGINE.sh $command DATA_DIR"
  mkdir -p "$1"
  cd "$1" && pwd
}

running() {  # running DATA_DIR: the pid file names a live process of this engine
  local pidfile="$1/$ENGINE.pid" pid
  [[ -f $pidfile ]] || return 1
  pid=$(cat "$pidfile")
  kill -0 "$pid" 2>/dev/null && grep -qa "$PROCESS_MATCH" "/proc/$pid/cmdline" 2>/dev/null
}

after_stop() { :; }  # a script may clean up more (sockets, ...)

stop() {  # TERM, then KILL after STOP_GRACE_S
  local dir pid
  dir=$(data_dir "${1:-}")
  if ! running "$dir"; then rm -f "$dir/$ENGINE.pid"; say "not running"; return 0; fi
  pid=$(cat "$dir/$ENGINE.pid")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 $((STOP_GRACE_S * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    say "pid $pid ignored TERM for ${STOP_GRACE_S}s: KILL"; kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$dir/$ENGINE.pid"
  after_stop "$dir"
  say "stopped pid $pid"
}

status() {
  local dir
  dir=$(data_dir "${1:-}")
  if running "$dir"; then say "running, pid $(cat "$dir/$ENGINE.pid")"; return 0; fi
  say "not running"; return 1
}

engine_main() {
  command=${1:-}
  case "$command" in
    install) install ;;
    start) start "${2:-}" ;;
    stop) stop "${2:-}" ;;
    status) status "${2:-}" ;;
    *) echo "usage: $ENGINE.sh install|start DATA_DIR|stop DATA_DIR|status DATA_DIR" >&2; exit 2 ;;
  esac
}
