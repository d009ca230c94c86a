#!/usr/bin/env bash
# Sets up (scripts/setup.sh), then runs the whole test suite with ctest
# under AddressSanitizer + UBSan (build-asan), runs every fuzz target for a
# bounded time under ASan + UBSan (scripts/fuzz.sh; FL_FUZZ_SECONDS per
# target, default 15; FL_SKIP_FUZZ=1 skips it), and last runs the suite in
# the normal build (build), whose ctest summary closes the output.  Exits
# non-zero if any test fails in either build or a fuzzer finds a crash.
# The deployment tests (tests/netns, docs/deployment.md) are in both runs:
# netns_faults needs root (skipped otherwise), valgrind_consortium (1 to
# 2.5 min) runs in the normal build only; ctest -LE 'netns|valgrind' leaves
# them out.
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
# Each fuzzer for a bounded time under ASan + UBSan (clang, build-fuzz);
# skipped where clang cannot build libFuzzer binaries (fuzz.sh exits 77).
if [ "${FL_SKIP_FUZZ:-0}" != 1 ]; then
  echo "== fuzzing every decoder for ${FL_FUZZ_SECONDS:-15}s (scripts/fuzz.sh)"
  "$here/scripts/fuzz.sh" --seconds "${FL_FUZZ_SECONDS:-15}"
  frc=$?
  if [ "$frc" = 77 ]; then
    echo "== fuzzing skipped: clang with libFuzzer is not installed"
  elif [ "$frc" != 0 ]; then
    rc=1
  fi
fi
# The normal build's suite last, so that its ctest summary (tests passed
# and failed) is the closing line.
echo "== test suite (normal build)"
ctest --test-dir "$here/build" --output-on-failure "$@" || rc=1
exit $rc
