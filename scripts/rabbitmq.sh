#!/usr/bin/env bash
# A private RabbitMQ node with Web-STOMP, for interop runs against a STOMP server we did
# not write. It is not the system service: its data, logs, config, Erlang cookie and epmd
# all live in a scratch directory and every listener is bound to 127.0.0.1.
#
#   scripts/rabbitmq.sh up       install rabbitmq-server if missing, start the node, wait
#                                until ws://127.0.0.1:15674/ws accepts a STOMP WebSocket
#   scripts/rabbitmq.sh status   say whether the node is up and where
#   scripts/rabbitmq.sh down     stop the node and the epmd it started, remove scratch data
#
# Settings (environment):
#   STOMPEDE_STATE                 scratch root (default <repo>/.stompede); the node uses <root>/rabbitmq
#   STOMPEDE_RABBITMQ_WS_PORT      Web-STOMP port (default 15674)
#   STOMPEDE_RABBITMQ_TIMEOUT      seconds `up` waits for Web-STOMP (default 90)
#
# Destinations: RabbitMQ's /topic/<routing-key> goes through the amq.topic exchange, so a
# chat room maps to /topic/room.<roomId> for both SEND and SUBSCRIBE.
set -euo pipefail

readonly NODE_NAME=stompede@localhost
readonly RMQ_BIN=/usr/lib/rabbitmq/bin
STATE_ROOT=${STOMPEDE_STATE:-$(cd "$(dirname "$0")/.." && pwd)/.stompede}
mkdir -p "$STATE_ROOT"
STATE_ROOT=$(cd "$STATE_ROOT" && pwd)
readonly DIR=$STATE_ROOT/rabbitmq
readonly WS_PORT=${STOMPEDE_RABBITMQ_WS_PORT:-15674}
readonly TIMEOUT=${STOMPEDE_RABBITMQ_TIMEOUT:-90}
readonly WS_URL="ws://127.0.0.1:${WS_PORT}/ws"

log() { printf 'rabbitmq: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# True when something accepts TCP connections on 127.0.0.1:$1.
port_busy() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# First port at or above $1 with no listener on 127.0.0.1.
free_port() {
  local p=$1
  while port_busy "$p"; do
    p=$((p + 1))
    [ "$p" -lt $(($1 + 200)) ] || die "no free port in $1..$p on 127.0.0.1"
  done
  echo "$p"
}

# Reads a recorded PID from $DIR/$1.pid; prints nothing if absent.
recorded_pid() { [ -f "$DIR/$1.pid" ] && tr -dc '0-9' < "$DIR/$1.pid" || true; }

# True if PID $1 is alive and its command line contains $2 (guards against PID reuse).
pid_is() {
  local pid=$1 want=$2
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -- "$want"
}

# Environment shared by the node and by rabbitmqctl, so both find the same cookie and epmd.
node_env() {
  # shellcheck disable=SC1091
  . "$DIR/ports.env"
  export HOME=$DIR/home
  export RABBITMQ_NODENAME=$NODE_NAME
  export RABBITMQ_CONF_ENV_FILE=$DIR/rabbitmq-env.conf
  export RABBITMQ_CONFIG_FILE=$DIR/rabbitmq.conf
  export RABBITMQ_ADVANCED_CONFIG_FILE=$DIR/advanced.config
  export RABBITMQ_ENABLED_PLUGINS_FILE=$DIR/enabled_plugins
  export RABBITMQ_MNESIA_BASE=$DIR/mnesia
  export RABBITMQ_LOG_BASE=$DIR/log
  export RABBITMQ_PID_FILE=$DIR/beam.pid
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT=$AMQP_PORT
  export RABBITMQ_DIST_PORT=$DIST_PORT
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  export RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  export ERL_EPMD_PORT=$EPMD_PORT
  export ERL_EPMD_ADDRESS=127.0.0.1
}

ctl() { (node_env && cd "$DIR" && "$RMQ_BIN/rabbitmqctl" -n "$NODE_NAME" "$@"); }

# True when Web-STOMP answers a WebSocket upgrade with 101 Switching Protocols.
# curl keeps the upgraded connection open until --max-time, so its exit status is ignored.
ws_ready() {
  local reply
  reply=$(curl -s -i -N --max-time 1 "http://127.0.0.1:${WS_PORT}/ws" \
    -H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' \
    -H 'Sec-WebSocket-Key: c3RvbXBlZGUtcHJvYmUtMQ==' -H 'Sec-WebSocket-Protocol: v12.stomp' \
    2>/dev/null || true)
  case "${reply%%$'\r'*}" in
    HTTP/1.1\ 101*) return 0 ;;
    *) return 1 ;;
  esac
}

install_if_missing() {
  [ -x "$RMQ_BIN/rabbitmq-server" ] && return 0
  [ "$(id -u)" = 0 ] || die "rabbitmq-server is not installed and installing it needs root: apt-get install rabbitmq-server"
  log "installing the Debian rabbitmq-server package"
  # Keep apt from starting the system service; we only want the binaries.
  local made_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  local rc=0
  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rabbitmq-server; } || rc=$?
  [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
  [ "$rc" = 0 ] || die "apt-get install rabbitmq-server failed (exit $rc)"
}

is_up() { pid_is "$(recorded_pid server)" rabbitmq-server; }

write_config() {
  mkdir -p "$DIR/home" "$DIR/mnesia" "$DIR/log"
  chmod 700 "$DIR/home"
  local amqp dist epmd
  amqp=$(free_port 5672)
  dist=$(free_port 25672)
  epmd=$(free_port 4369)
  printf 'AMQP_PORT=%s\nDIST_PORT=%s\nEPMD_PORT=%s\n' "$amqp" "$dist" "$epmd" > "$DIR/ports.env"
  : > "$DIR/rabbitmq-env.conf"
  echo '[rabbitmq_web_stomp].' > "$DIR/enabled_plugins"
  echo '[].' > "$DIR/advanced.config"
  cat > "$DIR/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:${amqp}
stomp.listeners.tcp = none
web_stomp.tcp.ip = 127.0.0.1
web_stomp.tcp.port = ${WS_PORT}
loopback_users.guest = true
log.console = false
log.file.level = info
EOF
}

cmd_up() {
  if is_up; then
    log "already up (pid $(recorded_pid server))"
    echo "$WS_URL"
    return 0
  fi
  [ ! -d "$DIR" ] || cleanup_stale
  install_if_missing
  command -v epmd >/dev/null || die "epmd not found; the erlang-base package should provide it"
  command -v curl >/dev/null || die "curl is needed to probe Web-STOMP; apt-get install curl"
  port_busy "$WS_PORT" && die "127.0.0.1:${WS_PORT} is already taken by another process; stop it or set STOMPEDE_RABBITMQ_WS_PORT"

  local started=$SECONDS
  write_config
  node_env

  # Our own epmd on a private port, so `down` can stop exactly the one we started.
  setsid epmd -port "$EPMD_PORT" -address 127.0.0.1 < /dev/null > "$DIR/log/epmd.log" 2>&1 &
  echo $! > "$DIR/epmd.pid"

  (cd "$DIR" && exec setsid "$RMQ_BIN/rabbitmq-server" < /dev/null > "$DIR/log/startup.log" 2>&1) &
  echo $! > "$DIR/server.pid"
  log "starting node $NODE_NAME (pid $!, epmd port $EPMD_PORT, AMQP 127.0.0.1:$AMQP_PORT, data in $DIR)"

  until ws_ready; do
    if ! is_up; then
      log "the node exited during start-up; last lines of $DIR/log/startup.log:"
      tail -n 30 "$DIR/log/startup.log" >&2 || true
      cmd_down >/dev/null 2>&1 || true
      exit 1
    fi
    if [ $((SECONDS - started)) -ge "$TIMEOUT" ]; then
      log "Web-STOMP did not accept a WebSocket on $WS_URL within ${TIMEOUT}s; logs in $DIR/log"
      tail -n 30 "$DIR/log/startup.log" >&2 || true
      exit 1
    fi
    sleep 0.5
  done
  log "up in $((SECONDS - started))s"
  echo "$WS_URL"
}

# Waits up to $2 seconds for PID $1 to exit.
wait_gone() {
  local pid=$1 deadline=$((SECONDS + $2))
  while [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

stop_processes() {
  local server beam epmd
  server=$(recorded_pid server)
  beam=$(recorded_pid beam)
  epmd=$(recorded_pid epmd)
  pid_is "$beam" beam || beam=
  if pid_is "$server" rabbitmq-server || [ -n "$beam" ]; then
    ctl stop >/dev/null 2>&1 || log "rabbitmqctl stop failed; signalling the node instead"
    if ! wait_gone "$beam" 30 || ! wait_gone "$server" 5; then
      pid_is "$server" rabbitmq-server && kill -TERM "$server" 2>/dev/null || true
      wait_gone "$beam" 15 || { [ -z "$beam" ] || kill -KILL "$beam" 2>/dev/null || true; }
      wait_gone "$server" 5 || { pid_is "$server" rabbitmq-server && kill -KILL "$server" 2>/dev/null || true; }
    fi
  fi
  if pid_is "$epmd" epmd; then
    kill -TERM "$epmd" 2>/dev/null || true
    wait_gone "$epmd" 5 || kill -KILL "$epmd" 2>/dev/null || true
  fi
}

cleanup_stale() {
  log "removing leftovers of an earlier node in $DIR"
  stop_processes
  rm -rf "$DIR"
}

cmd_down() {
  if [ ! -d "$DIR" ]; then
    log "not running (no $DIR)"
    return 0
  fi
  stop_processes
  rm -rf "$DIR"
  log "stopped; removed $DIR"
}

cmd_status() {
  if is_up; then
    # shellcheck disable=SC1091
    . "$DIR/ports.env"
    local ws=down
    ws_ready && ws=accepting
    echo "up: node $NODE_NAME, pid $(recorded_pid server) (beam $(recorded_pid beam)), epmd pid $(recorded_pid epmd) on port $EPMD_PORT"
    echo "web-stomp: $WS_URL ($ws)"
    echo "amqp: amqp://guest:guest@127.0.0.1:$AMQP_PORT/"
    echo "data and logs: $DIR"
  else
    echo "down"
    [ ! -d "$DIR" ] || echo "(stale data in $DIR; 'scripts/rabbitmq.sh down' removes it)"
    return 3
  fi
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *)
    echo "usage: $0 up|down|status" >&2
    exit 2
    ;;
esac
