#!/usr/bin/env bash
# The RabbitMQ part of scripts/cluster.sh: three nodes porter-rabbit-<n>@localhost on 127.0.0.1,
# AMQP on 5701-5703, Erlang distribution on 25701-25703, the management plugin off, joined into
# one cluster. Each node has its own config, env file, data (mnesia), logs, enabled-plugins file
# and pid file under $PORTER_CLUSTER_DIR/rabbitmq-<n>/, and the nodes share an Erlang cookie of
# their own under $PORTER_CLUSTER_DIR/rabbitmq-home/. The machine's own node (rabbit@<host> on
# 5672) is never addressed: every rabbitmqctl call here names its node with -n, and the machine's
# /etc/rabbitmq/rabbitmq-env.conf is not read (RABBITMQ_CONF_ENV_FILE points at the node's own).
#
# Usage: rabbitmq.sh up|down|status|urls | start-node|stop-node|pid <n> | ctl <n> <rabbitmqctl args>
set -euo pipefail

BASE="${PORTER_CLUSTER_DIR:-/tmp/porter-cluster}"
NODES=3
AMQP_PORT_BASE=5700
DIST_PORT_BASE=25700
# The scripts in /usr/sbin switch to the rabbitmq user and its home; the ones in the lib dir run
# as the caller with the environment below.
RMQ_BIN="${RABBITMQ_BIN:-/usr/lib/rabbitmq/bin}"
START_TIMEOUT=90

HOME_DIR="$BASE/rabbitmq-home"

node_name() { echo "porter-rabbit-$1@localhost"; }
node_dir() { echo "$BASE/rabbitmq-$1"; }
pid_file() { echo "$(node_dir "$1")/rabbitmq.pid"; }

check_n() {
    case "$1" in
        '' | *[!0-9]*) echo "error: rabbitmq node must be 1..$NODES" >&2; exit 2 ;;
    esac
    if [ "$1" -lt 1 ] || [ "$1" -gt "$NODES" ]; then
        echo "error: rabbitmq node must be 1..$NODES" >&2
        exit 2
    fi
}

# The cookie the nodes and this script's CLI calls share: Erlang reads $HOME/.erlang.cookie.
ensure_cookie() {
    mkdir -p "$HOME_DIR"
    if [ ! -s "$HOME_DIR/.erlang.cookie" ]; then
        (umask 077 && head -c 30 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$HOME_DIR/.erlang.cookie")
        chmod 400 "$HOME_DIR/.erlang.cookie"
    fi
}

# The environment every call for node $1 runs with (server and CLI alike).
node_env() {
    local n="$1" dir
    dir="$(node_dir "$n")"
    echo HOME="$HOME_DIR" \
        RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf" \
        RABBITMQ_NODENAME="$(node_name "$n")" \
        RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
        RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config" \
        RABBITMQ_MNESIA_BASE="$dir/mnesia" \
        RABBITMQ_LOG_BASE="$dir/log" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
        RABBITMQ_PLUGINS_EXPAND_DIR="$dir/plugins-expand" \
        RABBITMQ_PID_FILE="$(pid_file "$n")" \
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_NODE_PORT=$((AMQP_PORT_BASE + n)) \
        RABBITMQ_DIST_PORT=$((DIST_PORT_BASE + n)) \
        ERL_EPMD_ADDRESS=127.0.0.1 \
        ERL_CRASH_DUMP="$dir/log/erl_crash.dump"
}

ctl() {
    local n="$1"
    shift
    # shellcheck disable=SC2046
    env $(node_env "$n") ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}" \
        "$RMQ_BIN/rabbitmqctl" -q -n "$(node_name "$n")" "$@"
}

running_pid() {
    local f pid
    f="$(pid_file "$1")"
    [ -s "$f" ] || return 1
    pid="$(tr -dc 0-9 <"$f")"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    # A recycled pid must not be taken for our node: the process must have been started as it
    # (the node name is in the environment, not on the command line).
    tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "RABBITMQ_NODENAME=$(node_name "$1")" || return 1
    echo "$pid"
}

amqp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$((AMQP_PORT_BASE + $1))") 2>/dev/null; }

write_files() {
    local n="$1" dir
    dir="$(node_dir "$n")"
    mkdir -p "$dir/mnesia" "$dir/log"
    : >"$dir/rabbitmq-env.conf"
    cat >"$dir/rabbitmq.conf" <<CONF
listeners.tcp.local = 127.0.0.1:$((AMQP_PORT_BASE + n))
# guest may connect from loopback only (RabbitMQ's default, stated here).
loopback_users.guest = true
CONF
    echo '[].' >"$dir/enabled_plugins"
}

start_node() {
    local n="$1" pid
    if pid="$(running_pid "$n")"; then
        echo "rabbitmq-$n: already running (pid $pid)"
        return 0
    fi
    ensure_cookie
    write_files "$n"
    rm -f "$(pid_file "$n")"
    # shellcheck disable=SC2046
    env $(node_env "$n") ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}" \
        setsid "$RMQ_BIN/rabbitmq-server" -detached \
        >>"$(node_dir "$n")/log/startup.log" 2>&1 </dev/null
    echo "rabbitmq-$n: starting $(node_name "$n") on 127.0.0.1:$((AMQP_PORT_BASE + n))"
}

wait_node() {
    local n="$1"
    # await_startup waits for the pid file's node to boot fully (or fail).
    if ! ctl "$n" wait --timeout "$START_TIMEOUT" "$(pid_file "$n")" >/dev/null 2>&1; then
        echo "error: rabbitmq-$n did not start (see $(node_dir "$n")/log/)" >&2
        return 1
    fi
    ctl "$n" await_startup --timeout "$START_TIMEOUT" >/dev/null
}

# The cluster's member nodes as node 1 (or the first running node) sees them.
running_members() {
    ctl "$1" eval 'io:format("~s~n", [lists:join(" ", [atom_to_list(N) || N <- rabbit_nodes:all_running()])]).' 2>/dev/null | head -1
}

all_members() {
    ctl "$1" eval 'io:format("~s~n", [lists:join(" ", [atom_to_list(N) || N <- rabbit_nodes:all()])]).' 2>/dev/null | head -1
}

join_node() {
    local n="$1" seed="$2"
    if all_members "$n" | tr ' ' '\n' | grep -qx "$(node_name "$seed")"; then
        return 0
    fi
    echo "rabbitmq-$n: joining $(node_name "$seed")"
    local log
    log="$(node_dir "$n")/log/cli.log"
    # The CLI prints the node's transient errors while its app restarts: into the log.
    {
        ctl "$n" stop_app &&
            ctl "$n" reset &&
            ctl "$n" join_cluster "$(node_name "$seed")" &&
            ctl "$n" start_app &&
            ctl "$n" await_startup --timeout "$START_TIMEOUT"
    } >>"$log" 2>&1 || {
        echo "error: rabbitmq-$n could not join $(node_name "$seed") (see $log)" >&2
        return 1
    }
}

cmd_up() {
    local start n rc=0
    start=$(date +%s)
    mkdir -p "$BASE"
    for n in $(seq "$NODES"); do start_node "$n"; done
    for n in $(seq "$NODES"); do wait_node "$n" || rc=1; done
    [ "$rc" = 0 ] || return 1
    for n in $(seq 2 "$NODES"); do join_node "$n" 1 || return 1; done
    local members
    members="$(running_members 1)"
    for n in $(seq "$NODES"); do
        if ! echo " $members " | grep -q " $(node_name "$n") "; then
            echo "error: $(node_name "$n") is not a running member of the cluster ($members)" >&2
            return 1
        fi
    done
    echo "rabbitmq: cluster of $NODES up ($(cmd_urls)) in $(($(date +%s) - start)) s"
}

stop_pid() {
    local n="$1" how="$2" pid
    if ! pid="$(running_pid "$n")"; then
        echo "rabbitmq-$n: not running"
        return 0
    fi
    kill "-$how" "$pid"
    for _ in $(seq 60); do
        kill -0 "$pid" 2>/dev/null || { echo "rabbitmq-$n: stopped (pid $pid)"; rm -f "$(pid_file "$n")"; return 0; }
        sleep 0.5
    done
    echo "rabbitmq-$n: pid $pid still running after 30 s; killing" >&2
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$(pid_file "$n")"
}

cmd_down() {
    local n
    for n in $(seq "$NODES"); do stop_pid "$n" TERM; done
}

cmd_status() {
    local n pid rc=0 members=""
    for n in $(seq "$NODES"); do
        if pid="$(running_pid "$n")" && amqp_open "$n"; then
            [ -n "$members" ] || members="$(running_members "$n" || true)"
            echo "rabbitmq-$n: up (pid $pid, $(node_name "$n"), amqp 127.0.0.1:$((AMQP_PORT_BASE + n)))"
        else
            echo "rabbitmq-$n: down ($(node_name "$n"), amqp 127.0.0.1:$((AMQP_PORT_BASE + n)))"
            rc=1
        fi
    done
    if [ -n "$members" ]; then
        echo "rabbitmq: running cluster members: $members"
    fi
    return "$rc"
}

cmd_urls() {
    local n urls=()
    for n in $(seq "$NODES"); do urls+=("amqp://guest:guest@127.0.0.1:$((AMQP_PORT_BASE + n))/%2f"); done
    (IFS=,; echo "${urls[*]}")
}

[ $# -ge 1 ] || { echo "usage: $0 up|down|status|urls | start-node|stop-node|pid <n>" >&2; exit 2; }
case "$1" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    urls) cmd_urls ;;
    start-node)
        check_n "${2:-}"
        start_node "$2"
        wait_node "$2"
        ;;
    stop-node)
        check_n "${2:-}"
        stop_pid "$2" TERM
        ;;
    pid)
        check_n "${2:-}"
        running_pid "$2" || { echo "rabbitmq-$2: not running" >&2; exit 1; }
        ;;
    ctl)
        # rabbitmqctl against node <n> of this cluster, with its cookie (tests list connections
        # and queue leaders with it).
        check_n "${2:-}"
        n="$2"
        shift 2
        ctl "$n" "$@"
        ;;
    *) echo "usage: $0 up|down|status|urls | start-node|stop-node|pid <n>" >&2; exit 2 ;;
esac
