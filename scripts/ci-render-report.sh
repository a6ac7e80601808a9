#!/usr/bin/env bash
# CI: run `brigade lab --quick` and render its HTML report in headless Chromium, to check
# that the report a learner opens actually displays (a PNG comes out, the SVGs are in the
# rendered page). Where Chromium cannot be installed (no apt, no root and no sudo, no
# network), says so in one line and succeeds: the report's structure is still checked by
# the unit tests; only the rendering is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

out=target/lab-ci

skip() {
    echo "skipping the report render: chromium is not installable here ($1)"
    exit 0
}

# Installs chromium with apt-get, as root or through sudo without a password; quiet, and
# bounded so that a slow mirror cannot stall CI.
install_chromium() {
    local -a as_root=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || skip "not root and no sudo"
        sudo -n true 2>/dev/null || skip "not root and sudo needs a password"
        as_root=(sudo -n)
    fi
    command -v apt-get >/dev/null || skip "no apt-get"
    local log
    log=$(mktemp)
    export DEBIAN_FRONTEND=noninteractive
    # A fresh machine may have no package lists yet; a failed update can still leave
    # usable ones, so only the install decides.
    timeout 300 "${as_root[@]}" apt-get update -qq >"$log" 2>&1 || true
    if ! timeout 600 "${as_root[@]}" apt-get install -y -qq --no-install-recommends chromium \
        >>"$log" 2>&1; then
        local why
        why=$(grep -v '^\s*$' "$log" | tail -n 1 | cut -c1-160)
        rm -f "$log"
        skip "apt-get install chromium failed: ${why:-no output}"
    fi
    rm -f "$log"
}

if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
    install_chromium
    command -v chromium >/dev/null || command -v chromium-browser >/dev/null ||
        skip "apt-get installed no chromium binary"
fi

rm -rf "$out"
mkdir -p "$out"
# The tables go to a log; a failed experiment fails the step, with the log shown.
if ! cargo run --release -p brigade-cli -- lab --quick --out "$out" >"$out/lab.log" 2>&1; then
    tail -n 40 "$out/lab.log" >&2
    echo "ci-render-report: brigade lab --quick failed (log: $out/lab.log)" >&2
    exit 1
fi
[[ -f $out/report.html ]] || {
    echo "ci-render-report: brigade lab wrote no $out/report.html" >&2
    exit 1
}
scripts/render-report.sh "$out/report.html" "$out/report.png"
