#!/usr/bin/env bash
# Renders a `brigade lab` report in headless Chromium to a PNG, and checks that the page
# rendered: a PNG of some size came out, and the DOM Chromium built holds the report's SVG
# timelines (as many as the file has).
#
#   scripts/render-report.sh REPORT.html OUT.png
#
# Environment: CHROMIUM (the browser binary; default: chromium, then chromium-browser),
# RENDER_HEIGHT (the window's height in pixels; default: from the page's size, at most 16000).
set -euo pipefail

die() {
    echo "render-report: $*" >&2
    exit 1
}

# How many times PATTERN occurs in FILE (grep -c counts lines, and fails on none).
occurrences() {
    { grep -o -- "$1" "$2" || true; } | wc -l
}

[[ $# -eq 2 ]] || die "usage: $0 REPORT.html OUT.png"
report=$1
png=$2
[[ -f $report ]] || die "no such report: $report"

browser=${CHROMIUM:-}
if [[ -z $browser ]]; then
    browser=$(command -v chromium || command -v chromium-browser || true)
fi
[[ -n $browser && -x $(command -v "$browser" || true) ]] ||
    die "chromium is not installed (apt-get install chromium, or set CHROMIUM)"

abs_report=$(realpath "$report")
mkdir -p "$(dirname "$png")"
abs_png=$(realpath -m "$png")
rm -f "$abs_png"

# A fresh profile each time: no state from an earlier run, and no lock held by another.
profile=$(mktemp -d "${TMPDIR:-/tmp}/render-report.XXXXXX")
trap 'rm -rf "$profile"' EXIT

# The window is the screenshot: tall enough for the whole page. Without scripts there is
# no asking the page its height, so it is estimated, generously, from what the page holds:
# a blank strip at the bottom costs little, a cut-off report misleads.
if [[ -n ${RENDER_HEIGHT:-} ]]; then
    height=$RENDER_HEIGHT
else
    figures=$(occurrences '<svg ' "$abs_report")
    rows=$(occurrences 'class="lane"' "$abs_report")
    sections=$(occurrences '<section ' "$abs_report")
    height=$((1200 + 500 * sections + 130 * figures + 18 * rows))
    ((height <= 16000)) || height=16000
fi

flags=(
    --headless --no-sandbox --disable-gpu --disable-quic --no-first-run
    --disable-background-networking --disable-component-update --disable-sync
    --hide-scrollbars --user-data-dir="$profile"
)
run() {
    # Bounded: a browser that hangs must not hang CI. Its chatter goes to a log, shown on failure.
    timeout 120 "$browser" "${flags[@]}" "$@" 2>>"$profile/chromium.log"
}

run --window-size=1280,"$height" --screenshot="$abs_png" "file://$abs_report" >/dev/null ||
    true # Chromium's exit status is not reliable under --screenshot; the PNG is the test.
if [[ ! -s $abs_png ]]; then
    tail -n 5 "$profile/chromium.log" >&2 || true
    die "chromium wrote no PNG to $png"
fi

magic=$(head -c 8 "$abs_png" | od -An -tx1 | tr -d ' \n')
[[ $magic == 89504e470d0a1a0a ]] || die "$png is not a PNG (starts with $magic)"
size=$(stat -c %s "$abs_png")
# A blank page compresses to about 6 bytes per pixel row at this width; text, tables and
# bars take several times that.
min_size=$((20000 + 8 * height))
((size >= min_size)) || die "$png is only $size bytes (under $min_size): the page looks blank"

dom=$profile/dom.html
run --dump-dom "file://$abs_report" >"$dom" || die "chromium could not load $report"
expected=$(occurrences '<svg ' "$abs_report")
rendered=$(occurrences '<svg ' "$dom")
((rendered == expected)) ||
    die "the rendered page has $rendered SVG timelines, the file $expected"
grep -q '<h1>brigade lab</h1>' "$dom" || die "the rendered page has no report title"

echo "rendered $report to $png (1280x$height, $size bytes, $rendered timelines)"
