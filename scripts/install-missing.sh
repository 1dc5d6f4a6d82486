#!/usr/bin/env bash
# Sourced by the test scripts: `install_missing NEED=PACKAGE …` installs, with Debian's apt,
# each PACKAGE whose NEED (a command on PATH, or an absolute path) is not there yet.
# Works unattended: no prompts.

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_missing() {
    local missing=() pair need package
    for pair in "$@"; do
        need=${pair%%=*}
        package=${pair#*=}
        if [[ $need == /* ]]; then
            [ -e "$need" ] && continue
        else
            command -v "$need" >/dev/null && continue
        fi
        missing+=("$package")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing ${missing[*]}"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
    fi
}
