#!/usr/bin/env bash
# Every check parley has, in one command: formatting, lints, unit and end-to-end tests,
# the conformance suite against a server it spawns on a free loopback port, and the web
# chat page driven in headless Chromium.
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

step() { printf '\n== %s\n' "$*"; }

step "format"
cargo fmt --all -- --check
step "lint"
cargo clippy --workspace --all-targets -- -D warnings
step "build"
cargo build --workspace --bins
step "unit and end-to-end tests"
cargo test --workspace
step "conformance suite against a spawned server"
target/debug/parley-conformance --spawn
step "web chat in headless Chromium"
bash scripts/browser-tests.sh
