#!/usr/bin/env bash
# Installs the Debian packages the build, the demo and the tests need (only
# those missing; as root directly, otherwise through sudo), then configures
# and builds.  Safe to run again: it installs nothing twice and rebuilds
# only what changed.
#
# usage: scripts/setup.sh [--sanitize] [--build-dir DIR] [--no-build] [--bench]
#   --sanitize       build with AddressSanitizer + UBSan (default dir: build-asan)
#   --build-dir DIR  build in DIR (default: build)
#   --no-build       only install packages
#   --bench          also install python3-torch and python3-numpy (opt-in, large)
#                    for bench/torch_bench.py and bench/compare.sh
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
sanitize=OFF
build_dir=""
do_build=1
bench=0
while [ $# -gt 0 ]; do
  case "$1" in
    --sanitize) sanitize=ON; shift ;;
    --build-dir) build_dir=$2; shift 2 ;;
    --no-build) do_build=0; shift ;;
    --bench) bench=1; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$build_dir" ]; then
  if [ "$sanitize" = ON ]; then build_dir="$here/build-asan"; else build_dir="$here/build"; fi
fi

# Build: compiler, cmake, pkg-config.  Product: ZeroMQ (CURVE), libsodium,
# libcrypto (OpenSSL: the ChaCha20 keystream of the DP noise),
# protobuf-c, OpenBLAS, inih, SQLite, zlib (gzip IDX files).  Tests: Criterion.
packages=(gcc libc6-dev make cmake pkg-config
          libzmq3-dev libsodium-dev libssl-dev libprotobuf-c-dev protobuf-c-compiler
          libopenblas-dev libinih-dev libsqlite3-dev libcriterion-dev zlib1g-dev)
# Test-only: headless Chromium renders flaudit's HTML report and ImageMagick
# checks the chart in the screenshot (tests/audit/check_report_html.sh);
# Fashion-MNIST (IDX files) exercises the image loader on real data.
# numpy and onnx read the model exports independently (tests/export), and
# Node.js runs onnxruntime-node on the ONNX export (below).
# docker-compose validates docker-compose.yml, iproute2 (ip, tc) builds the
# network namespaces of tests/netns, valgrind runs the memcheck test.
# clang and its runtimes (libFuzzer, ASan, UBSan) build the fuzz targets
# that scripts/test.sh runs (scripts/fuzz.sh).
# Installed by default, because the tests need them.
test_packages=(chromium imagemagick dataset-fashion-mnist python3-numpy python3-onnx nodejs
               docker-compose iproute2 valgrind clang libclang-rt-dev)
# Opt-in (--bench): PyTorch 1.13 with functorch, the baseline that
# bench/compare.sh measures us against (bench/torch_bench.py).
if [ "$bench" = 1 ]; then
  test_packages+=(python3-torch python3-numpy)
fi

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

# Test-only: onnxruntime-node (its exact version is pinned in
# tests/export/package-lock.json) runs the ONNX exports.  The CPU runtime
# ships inside the npm package, so its install script (which would fetch
# GPU builds) is not run.  Some nodejs packages bring npm, Debian's does not.
if ! command -v npm >/dev/null 2>&1; then
  echo "setup: installing Debian's npm (for onnxruntime-node in tests/export)"
  if [ "$(id -u)" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm || true
  elif command -v sudo >/dev/null 2>&1; then
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm || true
  fi
fi
if [ ! -d "$here/tests/export/node_modules/onnxruntime-node" ] && command -v npm >/dev/null 2>&1; then
  echo "setup: installing onnxruntime-node for the export tests (npm ci in tests/export)"
  (cd "$here/tests/export" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
fi

[ "$do_build" = 1 ] || exit 0
echo "setup: configuring and building in $build_dir (sanitizers: $sanitize)"
cmake -S "$here" -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFL_SANITIZE="$sanitize" >/dev/null
cmake --build "$build_dir" -j "$(nproc)"
echo "setup: built flcoord and flnode in $build_dir"
