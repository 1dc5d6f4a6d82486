#!/usr/bin/env bash
# The web chat page's end-to-end tests: installs what is missing (Debian's Chromium, Node,
# the one npm package), then runs them against target/debug/parley, which must be built.
# Works unattended: no prompts, no browser downloads.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/install-missing.sh
source scripts/install-missing.sh
install_missing /usr/bin/chromium=chromium node=nodejs npm=npm

# Installed again when the lock file changed since (a new test dependency, say).
if [ ! -d tests/browser/node_modules ] ||
    [ tests/browser/package-lock.json -nt tests/browser/node_modules/.package-lock.json ]; then
    (cd tests/browser && npm ci --no-audit --no-fund)
fi

if [ ! -x target/debug/parley ]; then
    cargo build --bin parley
fi
node --test tests/browser/
