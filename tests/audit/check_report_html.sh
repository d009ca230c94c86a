#!/usr/bin/env bash
# Renders `flaudit report --html` in headless Chromium and checks with
# ImageMagick that the epsilon chart is really drawn: the screenshot must
# hold a substantial number of pixels of the curve's colour (#d62728),
# which nothing else on the page uses.  An HTML file that merely contains
# the SVG text would pass a grep; only a rendered chart passes this.
#
# usage: check_report_html.sh FLAUDIT AUDIT_MAKE_LEDGER WORKDIR
# Chromium and ImageMagick are test dependencies installed by
# scripts/setup.sh; if either is missing the test FAILS (never skips).
set -euo pipefail

flaudit=$1
make_ledger=$2
work=$3
colour='#d62728'
min_pixels=200

fail() { echo "check_report_html: FAIL: $*" >&2; exit 1; }

chromium=$(command -v chromium || command -v chromium-browser || true)
[ -n "$chromium" ] || fail "chromium is not installed: run scripts/setup.sh (it installs chromium and imagemagick, which the tests need)"
command -v convert >/dev/null 2>&1 && convert -version 2>/dev/null | grep -q ImageMagick ||
  fail "ImageMagick's convert is not installed: run scripts/setup.sh (it installs chromium and imagemagick, which the tests need)"

rm -rf "$work"
mkdir -p "$work"
# 4 charges, 1 s apart, so the chart spans real time.
mapfile -t paths < <("$make_ledger" "$work" 4 1) || fail "cannot create the test ledger"
ledger=${paths[0]}
pub=${paths[1]}

"$flaudit" report "$ledger" --key "$pub" --html "$work/report.html" ||
  fail "flaudit report --html exited with status $?"
grep -q 'id="epsilon-curve"' "$work/report.html" || fail "no epsilon-curve in the HTML"
grep -q 'id="epsilon-cap"' "$work/report.html" || fail "no epsilon-cap in the HTML"
if grep -Eiq '<script|<link|src=|href=|url\(|@import' "$work/report.html"; then
  fail "the report refers to external resources or scripts"
fi

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
rc=0
timeout 60 "$chromium" --headless --no-sandbox --disable-gpu --disable-background-networking \
  --disable-component-update --disable-sync --no-first-run --user-data-dir="$profile" \
  --screenshot="$work/out.png" --window-size=1200,900 "file://$work/report.html" \
  >"$work/chromium.log" 2>&1 || rc=$?
[ "$rc" -eq 0 ] || fail "chromium exited with status $rc (log: $work/chromium.log)"
[ -s "$work/out.png" ] || fail "chromium wrote no screenshot (log: $work/chromium.log)"

# Paint every pixel within 10% of the curve colour white, all others black,
# and count the white ones (mean * width * height).
pixels=$(convert "$work/out.png" -fill black -fuzz 10% +opaque "$colour" \
           -fill white -opaque "$colour" -format '%[fx:round(mean*w*h)]' info:)
echo "check_report_html: $pixels pixels of $colour in the screenshot (need > $min_pixels)"
[ "$pixels" -gt "$min_pixels" ] || fail "the epsilon curve did not render ($pixels pixels of $colour)"

# The same page without the curve must NOT pass: the count is the chart's.
sed 's/stroke="#d62728"/stroke="#ffffff"/g; s/fill="#d62728"/fill="#ffffff"/g' "$work/report.html" >"$work/blank.html"
timeout 60 "$chromium" --headless --no-sandbox --disable-gpu --disable-background-networking \
  --disable-component-update --disable-sync --no-first-run --user-data-dir="$profile" \
  --screenshot="$work/blank.png" --window-size=1200,900 "file://$work/blank.html" \
  >>"$work/chromium.log" 2>&1 || fail "chromium failed on the control page"
blank=$(convert "$work/blank.png" -fill black -fuzz 10% +opaque "$colour" \
          -fill white -opaque "$colour" -format '%[fx:round(mean*w*h)]' info:)
echo "check_report_html: control page without the curve: $blank pixels of $colour"
[ "$blank" -le "$min_pixels" ] || fail "the control page has $blank pixels of $colour: the check does not measure the curve"
echo "check_report_html: PASS"
