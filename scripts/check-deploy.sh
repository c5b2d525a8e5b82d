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
#   6. schemathesis against `porter dev` (docs/openapi.yaml): no 5xx, every answer conforms.
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
    python3 -m venv "$VENV"
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
dev_pid=""
cleanup() {
    if [ -n "$dev_pid" ]; then
        kill "$dev_pid" 2>/dev/null || true
        wait "$dev_pid" 2>/dev/null || true
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

step "schemathesis against porter dev"
port=$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$PORTER_BIN" dev --listen "127.0.0.1:$port" > "$work/dev.log" 2>&1 &
dev_pid=$!
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
# --checks all, less two that do not fit this API (docs/deploy.md, "API spec"):
# - positive_data_acceptance: schema-valid requests are refused by design where the data is
#   meaningful (an unknown app_id is 404, a channel the policy refuses is 403, a token must be
#   signed), which no schema can say;
# - ignored_auth: the channel endpoints accept anonymous callers on purpose (`security: [{}]`),
#   and porter dev has no admin token, so /admin answers 404 admin_disabled to everyone.
if "$VENV/bin/schemathesis" run docs/openapi.yaml \
    --url "http://127.0.0.1:$port" \
    --checks all \
    --exclude-checks positive_data_acceptance,ignored_auth \
    --max-examples 30 \
    --seed 1 \
    --no-color \
    > "$work/schemathesis.log" 2>&1; then
    tail -n 15 "$work/schemathesis.log"
    ok "schemathesis: no 5xx, every answer conforms to docs/openapi.yaml"
else
    cat "$work/schemathesis.log"
    fail "schemathesis"
fi
kill "$dev_pid" 2>/dev/null || true
wait "$dev_pid" 2>/dev/null || true
dev_pid=""

echo
echo "check-deploy: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
