#!/usr/bin/env bash
# The web chat page's end-to-end tests: installs what is missing (Debian's Chromium, Node,
# the one npm package), then runs them against target/debug/parley, which must be built.
# Works unattended: no prompts, no browser downloads.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}
apt_install() {
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
}

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}"
    apt_install "${missing[@]}"
fi

if [ ! -d tests/browser/node_modules ]; then
    (cd tests/browser && npm ci --no-audit --no-fund)
fi

if [ ! -x target/debug/parley ]; then
    cargo build --bin parley
fi
node --test tests/browser/
