#!/usr/bin/env bash
# Memcheck of a short real consortium: the coordinator and three hospitals
# on 127.0.0.1 (deploy/key-setup.sh and deploy/entrypoint.sh, secure
# aggregation on, 2 rounds), every flcoord and flnode process under
#   valgrind --error-exitcode=99 --leak-check=full
#            --errors-for-leak-kinds=definite,indirect
# followed by flctl status (while the coordinator runs) and flaudit verify
# of every ledger under the same valgrind. Fails on any memcheck error
# (invalid read/write, use of uninitialised values, definite or indirect
# leak) or on any process failing. tests/valgrind.supp holds the documented
# suppressions of third-party false positives only.
# Exits 77 (ctest: skipped) when valgrind is not installed.
#
# usage: tests/netns/valgrind_consortium.sh --build DIR [--workdir DIR] [--keep]
set -uo pipefail

here=$(cd "$(dirname "$0")/../.." && pwd)
deploy="$here/deploy"
build=""
workdir=""
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --workdir) workdir=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "valgrind_consortium: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
done
[ -n "$build" ] || { echo "valgrind_consortium: --build DIR is required" >&2; exit 2; }
command -v valgrind >/dev/null 2>&1 ||
  { echo "SKIP: valgrind_consortium: valgrind is not installed (apt-get install valgrind)"; exit 77; }
build=$(cd "$build" && pwd)
export PATH="$build/coordinator:$build/node:$build/ctl:$build/audit:$PATH"
# One BLAS thread: no OpenBLAS worker threads (and their noise) under memcheck.
export OPENBLAS_NUM_THREADS=1
for b in flcoord flnode flctl flaudit; do
  command -v "$b" >/dev/null || { echo "valgrind_consortium: $b is not built in $build" >&2; exit 1; }
done
if ldd "$(command -v flcoord)" 2>/dev/null | grep -q libasan; then
  echo "SKIP: valgrind_consortium: $build is a sanitizer build (valgrind needs the normal build)"
  exit 77
fi

if [ -z "$workdir" ]; then
  workdir="${TMPDIR:-/tmp}/flc-valgrind-$$-$(date +%s%N)"
  mkdir -m 0700 "$workdir" || exit 1
else
  rm -rf "$workdir" && mkdir -p "$workdir"
fi
logs="$workdir/logs"
mkdir -p "$logs"
hospitals="hospital-a hospital-b hospital-c"
pids=()
t_start=$(date +%s)

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill -KILL "$p" 2>/dev/null; done
  for p in "${pids[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null; done
  if [ "$keep" = 1 ] || [ "$rc" -ne 0 ]; then
    echo "valgrind_consortium: work directory kept: $workdir"
  else
    rm -rf "$workdir"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "valgrind_consortium: interrupted" >&2; exit 130' INT TERM
fail() { echo "FAIL: valgrind_consortium: $*"; exit 1; }

vg() {
  # vg NAME: the valgrind command line for one process, its report in logs/NAME.vg
  echo "valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect" \
       "--show-leak-kinds=definite,indirect --track-origins=yes --num-callers=30" \
       "--suppressions=$here/tests/valgrind.supp --log-file=$logs/$1.vg"
}

"$deploy/key-setup.sh" --root "$workdir/vol" >"$logs/key-setup.log" 2>&1 ||
  { cat "$logs/key-setup.log"; fail "deploy/key-setup.sh failed"; }
# Generous timeouts: everything runs 20-50 times slower under memcheck; the
# nodes' noise calibration at the first round alone (0.4 s natively) takes
# 20-60 s, and a round timed out before it would be run again.
export FLC_CONSORTIUM=valgrind FLC_ROUNDS=2 FLC_MIN_NODES=3 FLC_LOCAL_STEPS=2 \
       FLC_ROUND_TIMEOUT_MS=200000 FLC_STEP_TIMEOUT_MS=100000 FLC_JOIN_TIMEOUT_MS=120000 \
       FLC_IDLE_TIMEOUT_MS=200000 FLC_EPSILON_MAX=10 FLC_RESERVE_ROUNDS=2 \
       FLC_LISTEN='tcp://127.0.0.1:*' \
       FLC_CONFIG_DIR="$workdir/etc"

FLC_HOME="$workdir/vol/coordinator" FLC_WRAP="$(vg flcoord)" \
  "$deploy/entrypoint.sh" coordinator >"$logs/coordinator.out" 2>"$logs/coordinator.log" &
coord=$!
pids+=("$coord")
endpoint_file="$workdir/vol/coordinator/state/endpoint"
for _ in $(seq 1 600); do
  [ -s "$endpoint_file" ] && break
  kill -0 "$coord" 2>/dev/null || { cat "$logs/coordinator.log" "$logs/flcoord.vg"; fail "flcoord did not start"; }
  sleep 0.1
done
[ -s "$endpoint_file" ] || fail "flcoord did not publish its endpoint within 60 s"
endpoint=$(cat "$endpoint_file")
echo "coordinator under valgrind at $endpoint"

declare -A node_pid
for h in $hospitals; do
  FLC_HOME="$workdir/vol/$h" FLC_NAME="$h" FLC_COORDINATOR="$endpoint" FLC_WRAP="$(vg "flnode-$h")" \
    "$deploy/entrypoint.sh" node >"$logs/$h.log" 2>&1 &
  node_pid[$h]=$!
  pids+=("$!")
done

# flctl against the running coordinator, under valgrind too.
sock="$workdir/vol/coordinator/state/admin.sock"
for _ in $(seq 1 300); do
  [ -S "$sock" ] && break
  sleep 0.1
done
# shellcheck disable=SC2046
$(vg flctl) flctl --socket "$sock" --timeout 30 status >"$logs/flctl.out" 2>&1 ||
  { cat "$logs/flctl.out"; fail "flctl status failed (exit $?) under valgrind: see $logs/flctl.vg"; }

# Bounded wait for the coordinator (2 rounds), then the nodes.
status=0
for _ in $(seq 1 2400); do
  kill -0 "$coord" 2>/dev/null || break
  sleep 0.1
done
kill -0 "$coord" 2>/dev/null && fail "flcoord did not finish 2 rounds within 240 s"
wait "$coord"; rc=$?
[ "$rc" -eq 0 ] || { echo "flcoord exited with $rc"; status=1; }
for h in $hospitals; do
  p=${node_pid[$h]}
  for _ in $(seq 1 600); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$p" 2>/dev/null && fail "$h did not finish within 60 s of the coordinator"
  wait "$p"; rc=$?
  [ "$rc" -eq 0 ] || { echo "flnode $h exited with $rc"; status=1; }
done
pids=()
for h in $hospitals; do
  # shellcheck disable=SC2046
  $(vg "flaudit-$h") flaudit verify "$workdir/vol/$h/ledger/$h.ledger" \
    --key "$workdir/vol/$h/keys/$h.pub" >"$logs/$h.verify" 2>&1 ||
    { cat "$logs/$h.verify"; echo "flaudit verify of $h failed (exit $?)"; status=1; }
done

# Every report must say 0 errors; print the ones that do not.
for f in "$logs"/*.vg; do
  summary=$(grep "ERROR SUMMARY" "$f" | tail -n 1)
  if ! echo "$summary" | grep -q "ERROR SUMMARY: 0 errors"; then
    echo "==== $(basename "$f"): $summary"
    cat "$f"
    status=1
  else
    echo "$(basename "$f" .vg): ${summary#*== }"
  fi
done
grep -q "training complete: 2 rounds" "$logs/coordinator.log" || { tail -n 20 "$logs/coordinator.log"; status=1; }
[ "$status" -eq 0 ] || fail "memcheck errors or failed processes (above)"
echo "PASS: 2 rounds, 1 flcoord + 3 flnode + flctl + 3 flaudit under memcheck: 0 errors, no definite or indirect leaks ($(( $(date +%s) - t_start )) s)"
