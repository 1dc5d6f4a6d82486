#!/usr/bin/env bash
# Every check parley has, in one command: formatting, lints, unit and end-to-end tests
# (three-node cluster tests on PostgreSQL and Redis included, both installed when missing),
# the conformance suite against a server it spawns on a free loopback port, the web
# chat page driven in headless Chromium, and the JavaScript client package's types and tests.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
    echo "cargo is required: install Rust with rustup first" >&2
    exit 1
fi
for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        rustup component add "$component"
    fi
done

# A clean clone gains nothing from incremental caches, and they take gigabytes of disk.
if [[ -n "${CI:-}" ]]; then
    export CARGO_INCREMENTAL=0
fi

step() { printf '\n== %s\n' "$*"; }

step "format"
cargo fmt --all -- --check
step "lint"
cargo clippy --workspace --all-targets -- -D warnings
step "build"
cargo build --workspace --bins
step "PostgreSQL and Redis for the cluster tests, promtool for the metrics check, nginx for the proxy example"
# The tests start their own throwaway servers on loopback; only the programs are needed.
# shellcheck source=scripts/install-missing.sh
source scripts/install-missing.sh
postgres_found=$(ls -d /usr/lib/postgresql/*/bin/postgres 2>/dev/null | head -n 1 || true)
nginx_found=$(ls /usr/sbin/nginx /usr/bin/nginx 2>/dev/null | head -n 1 || true)
install_missing "${postgres_found:-/usr/lib/postgresql/none}=postgresql" redis-server=redis-server promtool=prometheus \
    "${nginx_found:-/usr/sbin/nginx}=nginx-light"
step "unit and end-to-end tests"
cargo test --workspace
step "conformance suite against a spawned server"
target/debug/parley-conformance --spawn
step "web chat in headless Chromium"
bash scripts/browser-tests.sh
step "JavaScript client: types and tests against a spawned server"
bash scripts/client-tests.sh
