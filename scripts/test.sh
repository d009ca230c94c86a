#!/usr/bin/env bash
# Sets up (scripts/setup.sh), then runs the whole test suite with ctest twice:
# under AddressSanitizer + UBSan (build-asan), then in the normal build
# (build).  Exits non-zero if any test fails in either.
#
# usage: scripts/test.sh [--no-sanitize] [ctest options...]
set -uo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
sanitize=1
if [ "${1:-}" = "--no-sanitize" ]; then sanitize=0; shift; fi

# One BLAS thread per process: the suite starts several processes at once.
export OPENBLAS_NUM_THREADS=1
rc=0
if [ "$sanitize" = 1 ]; then
  "$here/scripts/setup.sh" --sanitize || exit 1
  echo "== test suite under AddressSanitizer + UBSan"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir "$here/build-asan" --output-on-failure "$@" || rc=1
fi
"$here/scripts/setup.sh" || exit 1
echo "== test suite (normal build)"
ctest --test-dir "$here/build" --output-on-failure "$@" || rc=1
exit $rc
