#!/usr/bin/env bash
# Apache Kafka 4.4.0 on one machine: KRaft, broker and controller in one JVM, on 127.0.0.1.
#   kafka.sh install            jars from Maven Central (once; later runs return at once)
#   kafka.sh start DATA_DIR     format DATA_DIR once, start, wait until ready, print the pid
#   kafka.sh stop DATA_DIR      TERM, then KILL after a grace period
#   kafka.sh status DATA_DIR    exit 0 while running
# Env: KAFKA_PORT (19092), KAFKA_CONTROLLER_PORT (19093), KAFKA_HEAP (512m),
#      KAFKA_READY_TIMEOUT (120 s), PHOTOSTORE_ENGINES_HOME (~/.cache/photostore-engines).
# Needs Java 17+ and Maven (apt-get install -y openjdk-17-jre-headless maven).
set -euo pipefail
ENGINE=kafka
PROCESS_MATCH=kafka.Kafka
# shellcheck source=deploy/local/lib.sh
source "$(dirname "$0")/lib.sh"

KAFKA_VERSION=4.4.0
SLF4J_VERSION=2.0.17
LOG4J_VERSION=2.25.3
KAFKA_PORT=${KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-19093}
KAFKA_HEAP=${KAFKA_HEAP:-512m}
KAFKA_READY_TIMEOUT=${KAFKA_READY_TIMEOUT:-120}
STOP_GRACE_S=${KAFKA_STOP_GRACE:-30}
INSTALL_DIR="${PHOTOSTORE_ENGINES_HOME:-$HOME/.cache/photostore-engines}/kafka/$KAFKA_VERSION"
LIB="$INSTALL_DIR/lib"


install() {
  [[ -f $LIB/.complete ]] && return 0
  command -v java >/dev/null || die "java not found (need 17+): apt-get install -y openjdk-17-jre-headless"
  command -v mvn >/dev/null || die "mvn not found: apt-get install -y maven"
  mkdir -p "$INSTALL_DIR"
  # Kafka's poms pin slf4j-api 1.7.36, with which the log4j2 binding silently logs nothing:
  # slf4j-api 2.x is declared directly so that it wins.
  cat >"$INSTALL_DIR/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.photostore</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>$SLF4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
EOF
  say "resolving kafka $KAFKA_VERSION jars from Maven Central (about a minute) ..."
  rm -rf "$LIB"
  local t0=$SECONDS
  if ! mvn -q -B -Dstyle.color=never -f "$INSTALL_DIR/pom.xml" dependency:copy-dependencies \
       -DoutputDirectory="$LIB" -DincludeScope=runtime >"$INSTALL_DIR/mvn.log" 2>&1; then
    rm -rf "$LIB"
    die "maven failed: $(grep -m1 ERROR "$INSTALL_DIR/mvn.log" || tail -1 "$INSTALL_DIR/mvn.log")"
  fi
  touch "$LIB/.complete"
  say "kafka $KAFKA_VERSION installed in $((SECONDS - t0))s under $INSTALL_DIR"
}

write_config() {  # write_config DATA_DIR
  local dir=$1
  cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
# the application creates its topics (with its own partition count)
auto.create.topics.enable=false
num.partitions=4
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# the first member of an empty group gets its partitions at once (the default waits 3 s)
group.initial.rebalance.delay.ms=0
log.retention.hours=168
log.segment.bytes=16777216
EOF
  cat >"$dir/log4j2.properties" <<'EOF'
status = warn
appender.console.type = Console
appender.console.name = OUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.state.name = state.change.logger
logger.state.level = WARN
EOF
  cat >"$dir/log4j2-tools.properties" <<'EOF'
status = warn
appender.console.type = Console
appender.console.name = ERR
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = ERR
EOF
}

start() {
  local dir pid t0
  dir=$(data_dir "${1:-}")
  if running "$dir"; then
    say "already running on $dir, pid $(cat "$dir/kafka.pid")"
    cat "$dir/kafka.pid"; return 0
  fi
  for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
    port_open "$port" && die "port $port is taken by another process; set KAFKA_PORT / KAFKA_CONTROLLER_PORT"
  done
  install
  local cp="$LIB/*" tools_log="-Dlog4j2.configurationFile=$dir/log4j2-tools.properties"
  # the single voter's address is written into the log at format time: it must not change after
  if [[ -f $dir/controller.port && $(cat "$dir/controller.port") != "$KAFKA_CONTROLLER_PORT" ]]; then
    die "$dir was formatted with KAFKA_CONTROLLER_PORT=$(cat "$dir/controller.port"); start it with that port"
  fi
  write_config "$dir"
  if [[ ! -f $dir/data/meta.properties ]]; then
    local cluster_id
    cluster_id=$(java $tools_log -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)
    java $tools_log -cp "$cp" kafka.tools.StorageTool format --standalone --ignore-formatted \
      -t "$cluster_id" -c "$dir/server.properties" >"$dir/format.log" 2>&1 \
      || { say "format failed:"; tail -20 "$dir/format.log" >&2; exit 1; }
    echo "$KAFKA_CONTROLLER_PORT" >"$dir/controller.port"
    say "formatted $dir/data (cluster id $cluster_id)"
  fi
  [[ -f $dir/kafka.log ]] && mv -f "$dir/kafka.log" "$dir/kafka.log.prev"
  : >"$dir/kafka.log"
  t0=$SECONDS
  nohup java -Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true "-Dlog4j2.configurationFile=$dir/log4j2.properties" \
    -cp "$cp" kafka.Kafka "$dir/server.properties" >>"$dir/kafka.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$dir/kafka.pid"
  until grep -q 'Kafka Server started' "$dir/kafka.log" && port_open "$KAFKA_PORT"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$dir/kafka.pid"
      say "kafka exited while starting:"; grep -E 'ERROR|Exception' "$dir/kafka.log" | head -20 >&2
      exit 1
    fi
    if (( SECONDS - t0 > KAFKA_READY_TIMEOUT )); then
      say "not ready after ${KAFKA_READY_TIMEOUT}s (see $dir/kafka.log); stopping it"
      stop "$dir"; exit 1
    fi
    sleep 0.2
  done
  say "kafka $KAFKA_VERSION ready on 127.0.0.1:$KAFKA_PORT in $((SECONDS - t0))s, pid $pid"
  echo "$pid"
}

engine_main "$@"
