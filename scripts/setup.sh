#!/usr/bin/env bash
# Installs the Debian packages the build, the demo and the tests need (only
# those missing; as root directly, otherwise through sudo), then configures
# and builds.  Safe to run again: it installs nothing twice and rebuilds
# only what changed.
#
# usage: scripts/setup.sh [--sanitize] [--build-dir DIR] [--no-build]
#   --sanitize       build with AddressSanitizer + UBSan (default dir: build-asan)
#   --build-dir DIR  build in DIR (default: build)
#   --no-build       only install packages
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
sanitize=OFF
build_dir=""
do_build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --sanitize) sanitize=ON; shift ;;
    --build-dir) build_dir=$2; shift 2 ;;
    --no-build) do_build=0; shift ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$build_dir" ]; then
  if [ "$sanitize" = ON ]; then build_dir="$here/build-asan"; else build_dir="$here/build"; fi
fi

# Build: compiler, cmake, pkg-config.  Product: ZeroMQ (CURVE), libsodium,
# protobuf-c, OpenBLAS, inih, SQLite, zlib (gzip IDX files).  Tests: Criterion.
packages=(gcc libc6-dev make cmake pkg-config
          libzmq3-dev libsodium-dev libprotobuf-c-dev protobuf-c-compiler
          libopenblas-dev libinih-dev libsqlite3-dev libcriterion-dev zlib1g-dev)
# Test-only: headless Chromium renders flaudit's HTML report and ImageMagick
# checks the chart in the screenshot (tests/audit/check_report_html.sh);
# Fashion-MNIST (IDX files) exercises the image loader on real data.
# Installed by default, because the tests need them.
test_packages=(chromium imagemagick dataset-fashion-mnist)

missing=()
for p in "${packages[@]}" "${test_packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing missing Debian packages: ${missing[*]}"
  if [ "$(id -u)" -eq 0 ]; then
    sudo=()
  elif command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    echo "setup: not root and no sudo: install these packages yourself: ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all required Debian packages are installed"
fi

[ "$do_build" = 1 ] || exit 0
echo "setup: configuring and building in $build_dir (sanitizers: $sanitize)"
cmake -S "$here" -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFL_SANITIZE="$sanitize" >/dev/null
cmake --build "$build_dir" -j "$(nproc)"
echo "setup: built flcoord and flnode in $build_dir"
