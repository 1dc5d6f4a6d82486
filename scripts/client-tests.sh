#!/usr/bin/env bash
# The JavaScript client package's checks (web/): its JSDoc type-checked with `tsc --strict`,
# the types a TypeScript user gets compiled, then `node --test` against target/debug/parley
# (or $PARLEY_BIN), which also fails when the generated declarations are stale.
# Installs Node and the package's dev dependencies when missing; works unattended.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/install-missing.sh
source scripts/install-missing.sh
install_missing node=nodejs npm=npm

cd web
# Installed again when the lock file changed since.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund
fi
if [ -z "${PARLEY_BIN:-}" ] && [ ! -x ../target/debug/parley ]; then
    (cd .. && cargo build --bin parley)
fi
npx tsc -p . --noEmit
npx tsc -p test
node --test test/*.test.mjs
