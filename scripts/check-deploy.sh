#!/usr/bin/env bash
# Offline checks of the deployment files and the API spec (docs/deploy.md, "Checked in CI"):
#
#   1. every kustomize overlay renders (`kubectl kustomize`);
#   2. the rendered core objects, and the production Secrets example, validate with
#      `kubernetes-validate --strict` against Kubernetes $K8S_VERSION; the KEDA objects
#      against KEDA 2.16's CRD schemas kept in deploy/keda/ (deploy/keda/validate.py);
#   3. yamllint over the deployment files and the specs;
#   4. `promtool check rules` and `promtool test rules` on deploy/prometheus/;
#   5. `porter policy check` on the policy the manifests ship;
#   6. schemathesis against `porter dev` (docs/openapi.yaml): no 5xx, every answer conforms;
#      and against `porter gateway` with an admin token and a worker, over the real RabbitMQ
#      (127.0.0.1:5672) and Redis (127.0.0.1:6379) that `make services` starts, for /admin.
#
# Needs kubectl (with its kustomize) and python3; installs nothing but a venv under
# ${XDG_CACHE_HOME:-$HOME/.cache}/porter-ci-venv (pinned PyPI packages) and, when promtool is
# missing, Debian's `prometheus` package unpacked beside it (see below). Runs `porter` from
# $PORTER_BIN, else target/debug/porter (build it first: `make test` does).
# Ends with the line `check-deploy: N passed, M failed`.
set -euo pipefail

cd "$(dirname "$0")/.."

K8S_VERSION=1.32.0
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}
VENV=$CACHE/porter-ci-venv
PORTER_BIN=${PORTER_BIN:-target/debug/porter}
# Pinned: each exists on PyPI (installed and run here on 2026-12-01).
REQUIREMENTS="kubernetes-validate==1.37.0 jsonschema==4.26.0 yamllint==1.38.0 schemathesis==4.32.5"

passed=0
failed=0
step() { printf '\n== %s\n' "$1"; }
ok() { passed=$((passed + 1)); echo "ok: $1"; }
fail() { failed=$((failed + 1)); echo "FAILED: $1"; }

command -v kubectl >/dev/null 2>&1 || {
    echo "check-deploy: kubectl is required (Debian: apt-get install kubectl from the Kubernetes or Google Cloud apt repository)" >&2
    exit 2
}
[ -x "$PORTER_BIN" ] || {
    echo "check-deploy: $PORTER_BIN is missing: run \`cargo build -p porter\` or set PORTER_BIN" >&2
    exit 2
}

# The venv is rebuilt when the pinned list changes.
if [ "$(cat "$VENV/.requirements" 2>/dev/null)" != "$REQUIREMENTS" ]; then
    rm -rf "$VENV"
    # Debian's own python3 needs python3-venv for this; the machine image's python3 has it.
    python3 -m venv "$VENV" 2>/dev/null || {
        rm -rf "$VENV"
        apt-get update -qq && apt-get install -y -qq python3-venv && python3 -m venv "$VENV"
    }
    # shellcheck disable=SC2086
    "$VENV/bin/pip" install --quiet --disable-pip-version-check $REQUIREMENTS
    echo "$REQUIREMENTS" > "$VENV/.requirements"
fi

# promtool: Debian's `prometheus` package ships it. Installing the package would also start a
# Prometheus server on this machine (its postinst starts the service), so the package is
# downloaded and unpacked into the cache instead: the same binary, and no daemon.
PROMTOOL=$(command -v promtool || true)
if [ -z "$PROMTOOL" ]; then
    tools=$CACHE/porter-ci-tools
    PROMTOOL=$tools/root/usr/bin/promtool
    if [ ! -x "$PROMTOOL" ]; then
        mkdir -p "$tools"
        (cd "$tools" && { apt-get download prometheus >/dev/null 2>&1 \
            || { apt-get update -qq && apt-get download prometheus; }; } \
            && dpkg-deb -x prometheus_*.deb root && rm -f prometheus_*.deb)
    fi
fi

work=$(mktemp -d)
started=()
prefix=""
cleanup() {
    for pid in "${started[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${started[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    # What the gateway pass left on the shared services: its task queues and its keys.
    if [ -n "$prefix" ]; then
        if command -v rabbitmqctl >/dev/null 2>&1; then
            for queue in auth auth/high; do
                rabbitmqctl -q delete_queue "$prefix$queue" >/dev/null 2>&1 </dev/null || true
            done
        fi
        if command -v redis-cli >/dev/null 2>&1; then
            redis-cli -h 127.0.0.1 --scan --pattern "$prefix*" \
                | xargs -r redis-cli -h 127.0.0.1 del >/dev/null 2>&1 || true
        fi
    fi
    rm -rf "$work"
}
trap cleanup EXIT

step "render and validate the manifests (Kubernetes $K8S_VERSION, KEDA 2.16)"
for dir in deploy/k8s/base deploy/k8s/overlays/*/; do
    dir=${dir%/}
    name=$(echo "$dir" | tr '/' '_')
    if ! kubectl kustomize "$dir" > "$work/$name.yaml"; then
        fail "kubectl kustomize $dir"
        continue
    fi
    if "$VENV/bin/python" deploy/keda/validate.py "$work/$name.yaml" "$work/$name.core.yaml" \
        && "$VENV/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "$work/$name.core.yaml"; then
        ok "$dir renders and validates"
    else
        fail "$dir"
    fi
done
if "$VENV/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" \
    deploy/k8s/overlays/production/secrets.example.yaml; then
    ok "the production Secrets example validates"
else
    fail "deploy/k8s/overlays/production/secrets.example.yaml"
fi

step "yamllint"
if "$VENV/bin/yamllint" --strict -c deploy/yamllint.yaml deploy docs/openapi.yaml docs/openapi-worker.yaml; then
    ok "yamllint"
else
    fail "yamllint"
fi

step "promtool"
if "$PROMTOOL" check rules deploy/prometheus/porter-alerts.yaml \
    && (cd deploy/prometheus && "$PROMTOOL" test rules porter-alerts.test.yaml); then
    ok "promtool check rules and test rules"
else
    fail "promtool"
fi

step "the shipped policy"
if "$PORTER_BIN" policy check deploy/k8s/base/policy.toml; then
    ok "porter policy check deploy/k8s/base/policy.toml"
else
    fail "porter policy check deploy/k8s/base/policy.toml"
fi

# Starts a process in the background, remembered for cleanup (stopped by pid at exit).
start() {
    "$@" >> "$work/processes.log" 2>&1 &
    started+=($!)
}
wait_healthy() {
    for _ in $(seq 1 200); do
        curl -fsS "$1" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "no answer from $1" >&2
    return 1
}
free_port() {
    "$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# schemathesis LABEL SPEC URL [more options]: the checks a run skips are named where it runs.
schemathesis() {
    local label=$1 spec=$2 url=$3
    shift 3
    if "$VENV/bin/schemathesis" run "$spec" --url "$url" --checks all --max-examples 30 \
        --seed 1 --no-color "$@" > "$work/schemathesis.log" 2>&1; then
        grep -E '^(API Operations|  Tested|Test cases|  [0-9]+ generated)|passed|in [0-9.]+s' \
            "$work/schemathesis.log" | tail -n 4
        ok "schemathesis ($label): no 5xx, every answer conforms to $spec"
    else
        cat "$work/schemathesis.log"
        fail "schemathesis ($label)"
    fi
}

step "schemathesis against porter dev"
port=$(free_port)
start "$PORTER_BIN" dev --listen "127.0.0.1:$port"
# --checks all, less (docs/deploy.md, "Checked in CI"):
# - positive_data_acceptance: schema-valid requests are refused by design where the values
#   mean something (an unknown app_id is 404, a channel the policy refuses 403, a token must
#   be signed), which no schema can say;
# and without /admin: porter dev has no admin token, so every /admin route answers 404
# admin_disabled before it looks at the method or a header; the next pass covers /admin.
if wait_healthy "http://127.0.0.1:$port/healthz"; then
    schemathesis "porter dev" docs/openapi.yaml "http://127.0.0.1:$port" \
        --exclude-path-regex '^/admin' \
        --exclude-checks positive_data_acceptance
else
    fail "porter dev never answered /healthz"
fi

step "schemathesis against porter gateway (the admin API) and the worker's listener, over the real RabbitMQ and Redis"
prefix="porter-check-deploy.$$."
admin_token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
port=$(free_port)
worker_port=$(free_port)
backend_env=(env AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f REDIS_URL=redis://127.0.0.1:6379/
    PORTER_QUEUE_PREFIX="$prefix" PORTER_KEY_PREFIX="$prefix" RUST_LOG=warn)
start "${backend_env[@]}" PUSHER_APP_ID=100000 PUSHER_KEY=check-deploy-key \
    PUSHER_SECRET=check-deploy-secret PORTER_JWT_SECRET=check-deploy-jwt-secret \
    PORTER_ADMIN_TOKEN="$admin_token" "$PORTER_BIN" gateway --listen "127.0.0.1:$port"
start "${backend_env[@]}" "$PORTER_BIN" worker --http-listen "127.0.0.1:$worker_port"
if wait_healthy "http://127.0.0.1:$port/readyz" && wait_healthy "http://127.0.0.1:$worker_port/readyz"; then
    # With the admin token every check applies, except positive_data_acceptance (above).
    schemathesis "porter gateway, /admin" docs/openapi.yaml "http://127.0.0.1:$port" \
        --include-path-regex '^/admin' \
        -H "Authorization: Bearer $admin_token" \
        --exclude-checks positive_data_acceptance
    schemathesis "porter worker --http-listen" docs/openapi-worker.yaml \
        "http://127.0.0.1:$worker_port"
else
    fail "porter gateway or worker never became ready (is RabbitMQ on 5672 and Redis on 6379 up?)"
fi

echo
echo "check-deploy: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
