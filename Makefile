# Porter: common tasks. `make test` is the command CI runs (see .ci/run).
# clippy and test both use the dev profile, so their build artifacts are shared.

.PHONY: build services lint test bench dev fuzz-smoke

build:
	cargo build --workspace --all-targets --locked

# Start Redis and RabbitMQ locally if they are not already running, and the loopback clusters
# of scripts/cluster.sh (3 RabbitMQ nodes, a 6-node Redis Cluster) the failover tests use;
# and the official Pusher JS SDKs of crates/porter/tests/js (npm ci, pinned by its lock file)
# that the SDK tests run with node, unless installed.
services:
	./scripts/services.sh
	./scripts/cluster.sh up
	test -f crates/porter/tests/js/node_modules/pusher-js/package.json || \
		(cd crates/porter/tests/js && npm ci --no-audit --no-fund)

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

# All tests, including integration tests against the real RabbitMQ and Redis.
test: services
	$(MAKE) lint
	cargo test --workspace

# Every fuzz target for 5 s, one after another (fuzz/run.sh; needs cargo-fuzz, which .ci/run
# installs). The long runs and their counts: docs/reliability.md.
fuzz-smoke:
	./fuzz/run.sh smoke

# Criterion micro-benchmarks, then the load suites of docs/benchmarks.md; scripts/bench.sh builds
# the release `porter` and `porter-bench` binaries itself.
bench:
	cargo bench -p porter-core --bench core
	./scripts/bench.sh 3 8

dev:
	cargo run --release -p porter -- dev
