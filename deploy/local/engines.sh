#!/usr/bin/env bash
# The four scale-out engines together: Kafka, Weaviate, MongoDB-wire (SecantusDB), S3 (SeaweedFS).
#   engines.sh install                 install every engine (first run: minutes; later: seconds)
#   engines.sh start|stop|status DIR   each engine on DIR/ENGINE (see README.md beside this file)
# ENGINES="kafka weaviate" picks a subset.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
command=${1:?usage: engines.sh install|start|stop|status [DATA_DIR]}
engines=${ENGINES:-kafka weaviate mongodb s3}

case "$command" in
  install)
    # Independent downloads and builds run side by side; the slowest (Weaviate's build) sets the pace.
    pids=()
    for engine in $engines; do bash "$here/$engine.sh" install & pids+=($!); done
    status=0
    for pid in "${pids[@]}"; do wait "$pid" || status=1; done
    exit $status ;;
  start|stop|status)
    dir=${2:?usage: engines.sh $command DATA_DIR}
    mkdir -p "$dir"
    order=$engines
    [[ $command == stop ]] && order=$(echo "$engines" | tr ' ' '\n' | tac | tr '\n' ' ')
    status=0
    for engine in $order; do
      mkdir -p "$dir/$engine"
      bash "$here/$engine.sh" "$command" "$dir/$engine" >/dev/null || status=1
    done
    exit $status ;;
  *) echo "usage: engines.sh install|start|stop|status [DATA_DIR]" >&2; exit 2 ;;
esac
