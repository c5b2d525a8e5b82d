# Sourced by scripts/bench.sh and scripts/soak.sh: what a load run of Porter's own processes
# on the machine's RabbitMQ (5672) and Redis (6379) needs, under a prefix of its own.

# run_environment PREFIX JWT_SECRET: the environment every process of the run reads (the
# demo Pusher credentials of docs/benchmarks.md, queues and keys under PREFIX).
run_environment() {
    export AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f REDIS_URL=redis://127.0.0.1:6379/
    export PORTER_QUEUE_PREFIX=$1 PORTER_KEY_PREFIX=$1 RUST_LOG=warn
    export PUSHER_APP_ID=100000 PUSHER_KEY=278d425bdf160c739803 PUSHER_SECRET=7ad3773142a6692b25b8
    export PUSHER_ENCRYPTION_MASTER_KEY_BASE64=BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=
    export PORTER_JWT_SECRET=$2
}

# remove_run_data PREFIX: the run's queues (durable: they outlive it) and keys on the machine's
# RabbitMQ and Redis. rabbitmqctl reads stdin, hence </dev/null.
remove_run_data() {
    rabbitmqctl list_queues -q --no-table-headers name 2>/dev/null </dev/null | grep -F "$1" |
        while read -r queue; do rabbitmqctl delete_queue "$queue" >/dev/null 2>&1 </dev/null || true; done || true
    redis-cli --scan --pattern "$1*" 2>/dev/null | xargs -r redis-cli del >/dev/null 2>&1 || true
}

# wait_ready URL: until URL/readyz answers 200, for 10 s at most.
wait_ready() {
    for _ in $(seq 100); do
        curl -fs "$1/readyz" >/dev/null && break
        sleep 0.1
    done
}
