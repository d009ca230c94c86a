#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, -DFL_FUZZ=ON, in build-fuzz) and runs
# each for a bounded time under AddressSanitizer + UBSan, starting from a
# temporary copy of its committed corpus (fuzz/corpus/<name>), so the
# repository is never modified.  A crash, leak, sanitizer report, timeout or
# out-of-memory fails the run; the input that caused it is kept in
# build-fuzz/artifacts/<name>/ and the command to reproduce it is printed.
# Add such an input to fuzz/corpus/<name>/ (as a regression) once fixed.
#
# usage: scripts/fuzz.sh [--seconds N] [--target NAME]... [--jobs J] [--keep-corpus DIR]
#   --seconds N        time per target (default 15)
#   --target NAME      fuzz only NAME (repeatable; default: every target)
#   --jobs J           targets run at once (default: number of cores, at most 2)
#   --keep-corpus DIR  leave the grown corpora in DIR/<name> (e.g. to minimise
#                      them with -merge=1 and commit new seeds)
# Exits 0 when all ran clean, 1 on a finding, 2 on usage error, 77 if clang
# cannot build fuzzers here (callers may treat that as "skipped").
set -uo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
seconds=15
targets=()
jobs=$(nproc 2>/dev/null || echo 1)
[ "$jobs" -gt 2 ] && jobs=2
keep=""
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --target) targets+=("$2"); shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --keep-corpus) keep=$2; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "fuzz.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
done
case "$seconds" in ''|*[!0-9]*) echo "fuzz.sh: --seconds needs a whole number" >&2; exit 2 ;; esac

start=$(date +%s)
build="$here/build-fuzz"

# Can clang link a libFuzzer binary here?
probe=$(mktemp -d)
printf '#include <stddef.h>\n#include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' \
  >"$probe/p.c"
if ! command -v clang >/dev/null 2>&1 ||
   ! clang -fsanitize=fuzzer,address,undefined "$probe/p.c" -o "$probe/p" >/dev/null 2>&1; then
  rm -rf "$probe"
  echo "fuzz.sh: clang with libFuzzer is not available: skipping the fuzz runs (apt-get install clang)"
  exit 77
fi
rm -rf "$probe"

echo "== fuzz: building the targets in $build (clang, ASan + UBSan + libFuzzer)"
if ! CC=clang cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFL_FUZZ=ON \
       -DFL_BUILD_TESTS=OFF -DFL_BUILD_BENCH=OFF >"$build.configure.log" 2>&1; then
  cat "$build.configure.log" >&2
  exit 1
fi
rm -f "$build.configure.log"
cmake --build "$build" -j "$(nproc)" --target fuzz_all >/dev/null || {
  echo "fuzz.sh: building the fuzz targets failed" >&2
  cmake --build "$build" -j 1 --target fuzz_all 2>&1 | grep -E 'error' | head -20 >&2
  exit 1
}

if [ ${#targets[@]} -eq 0 ]; then
  for f in "$here"/fuzz/fuzz_*.c; do
    n=$(basename "$f" .c)
    n=${n#fuzz_}
    [ -x "$build/fuzz/fuzz_$n" ] && targets+=("$n")
  done
fi

work=$(mktemp -d)
# Harness scratch files on tmpfs when there is one: the decoders fsync what
# they write (ledger appends, atomic rewrites), which on a disk would make
# those targets ten times slower.
scratch=$( { [ -d /dev/shm ] && [ -w /dev/shm ] && mktemp -d -p /dev/shm; } || mktemp -d)
trap 'rm -rf "$work" "$scratch"' EXIT
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

# run_one NAME: fuzzes one target; writes its verdict to $work/NAME.rc.
run_one() {
  local name=$1 bin="$build/fuzz/fuzz_$1" corpus="$work/corpus/$1"
  local art="$build/artifacts/$1"
  mkdir -p "$corpus" "$art"
  cp -r "$here/fuzz/corpus/$name/." "$corpus/" 2>/dev/null
  # Scratch files of the harnesses go to a private TMPDIR removed afterwards.
  mkdir -p "$scratch/$name"
  TMPDIR="$scratch/$name" "$bin" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=20 \
    -max_len=65536 -print_final_stats=1 -artifact_prefix="$art/" "$corpus" \
    >"$work/$name.log" 2>&1
  echo $? >"$work/$name.rc"
}

echo "== fuzz: ${#targets[@]} targets, ${seconds}s each, $jobs at a time"
running=0
for t in "${targets[@]}"; do
  if [ ! -x "$build/fuzz/fuzz_$t" ]; then
    echo "fuzz.sh: no fuzz target '$t' (see fuzz/fuzz_*.c)" >&2
    exit 2
  fi
  run_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n
    running=$((running - 1))
  fi
done
wait

rc=0
for t in "${targets[@]}"; do
  r=$(cat "$work/$t.rc" 2>/dev/null || echo 1)
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/$t.log" | grep -o '[0-9]*$')
  cov=$(grep -o 'cov: [0-9]*' "$work/$t.log" | tail -1)
  if [ "$r" = 0 ]; then
    printf '  %-16s ok      %10s runs  %s\n' "$t" "${runs:-?}" "$cov"
  else
    rc=1
    printf '  %-16s FAILED  (exit %s)\n' "$t" "$r"
    grep -E 'ERROR|runtime error|SUMMARY|Test unit written|==[0-9]+==' "$work/$t.log" | head -12 | sed 's/^/      /'
    echo "      reproduce: $build/fuzz/fuzz_$t <the file above>"
  fi
  if [ -n "$keep" ]; then
    mkdir -p "$keep/$t" && cp -r "$work/corpus/$t/." "$keep/$t/"
  fi
done
echo "== fuzz: done in $(( $(date +%s) - start ))s ($([ $rc = 0 ] && echo clean || echo 'findings above'))"
exit $rc
