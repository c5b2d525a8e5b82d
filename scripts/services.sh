#!/usr/bin/env bash
# Start Redis and RabbitMQ on 127.0.0.1 if they are not already running,
# then wait (up to 60 s) until both answer. Used by `make services`.
set -euo pipefail

TIMEOUT=60

redis_up() {
    [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]
}

rabbitmq_up() {
    # The AMQP port must accept connections; the node must answer a ping.
    (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null || return 1
    rabbitmq-diagnostics -q ping >/dev/null 2>&1
}

if redis_up; then
    echo "redis: already running"
else
    echo "redis: starting"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
        --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi

if rabbitmq_up; then
    echo "rabbitmq: already running"
else
    echo "rabbitmq: starting"
    rabbitmq-server -detached
fi

for _ in $(seq "$TIMEOUT"); do
    if redis_up && rabbitmq_up; then
        echo "services: redis and rabbitmq are up"
        exit 0
    fi
    sleep 1
done

redis_up || echo "error: redis did not answer PING on 127.0.0.1:6379 within ${TIMEOUT}s (see /var/log/redis/ci.log)" >&2
rabbitmq_up || echo "error: rabbitmq did not come up on 127.0.0.1:5672 within ${TIMEOUT}s (see /var/log/rabbitmq/)" >&2
exit 1
