#!/usr/bin/env bash
# Soak test (not part of the default suite; run by hand, result in
# docs/soak.md): a coordinator and N hospitals on 127.0.0.1 (deploy/
# key-setup.sh and deploy/entrypoint.sh, secure aggregation on) train for R
# rounds while hospitals are SIGKILLed at random moments (mid-round or
# between rounds) and restarted a few seconds later. Half the hospitals
# (hospital-1..N/2) are never killed: with the coordinator they are the
# long-lived processes whose memory is followed.
#
# Reports: VmRSS (/proc/PID/status) of the coordinator and of every
# long-lived hospital after round 1 ("start"), after round 10 ("warm") and
# at the last sample before the coordinator exits ("end"); the rounds
# completed; the kills and restarts; 'flaudit verify' of every hospital's
# ledger. Passes (exit 0) when all R rounds complete, every ledger
# verifies, every daemon exits 0 and no long-lived process's RSS grew by
# 10% or more from start to end.
#
# usage: scripts/soak.sh [--nodes N] [--rounds R] [--max-minutes M]
#                        [--kill-every S] [--build DIR] [--workdir DIR] [--seed S]
#   --nodes N        hospitals (8; at least 4)
#   --rounds R       rounds to train (200)
#   --max-minutes M  stop and fail after M minutes (30)
#   --kill-every S   mean seconds between two kills, at most one hospital down (2)
#   --build DIR      build tree with the binaries (build)
#   --workdir DIR    scratch folder, kept (run/soak)
#   --seed S         seed of the kill schedule (default: the pid)
set -uo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
nodes=8
rounds=200
max_minutes=30
kill_every=2
build="$here/build"
workdir="$here/run/soak"
seed=$$
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) nodes=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --max-minutes) max_minutes=$2; shift 2 ;;
    --kill-every) kill_every=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --workdir) workdir=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "soak.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
done
[ "$nodes" -ge 4 ] || { echo "soak.sh: --nodes must be at least 4" >&2; exit 2; }
[ "$rounds" -ge 11 ] || { echo "soak.sh: --rounds must be at least 11" >&2; exit 2; }
build=$(cd "$build" && pwd) || exit 1
export PATH="$build/coordinator:$build/node:$build/ctl:$build/audit:$PATH"
export OPENBLAS_NUM_THREADS=1
for b in flcoord flnode flctl flaudit; do
  command -v "$b" >/dev/null || { echo "soak.sh: $b is not built in $build (scripts/setup.sh)" >&2; exit 1; }
done
RANDOM=$seed

rm -rf "$workdir"
mkdir -p "$workdir/logs"
logs="$workdir/logs"
deploy="$here/deploy"
long=$((nodes / 2))
pids=()
declare -A node_pid=() down_since=()
kills=0
restarts=0

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill -KILL "$p" 2>/dev/null; done
  for p in "${pids[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null; done
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "soak.sh: interrupted" >&2; exit 130' INT TERM

t0=$(date +%s)
deadline=$((t0 + max_minutes * 60))
say() { echo "[$(( $(date +%s) - t0 ))s] $*"; }

"$deploy/key-setup.sh" --root "$workdir/vol" --hospitals "$nodes" >"$logs/key-setup.log" 2>&1 ||
  { cat "$logs/key-setup.log"; exit 1; }
# Budget for R rounds plus 10% of re-run attempts (a charge is kept even
# when the round is abandoned); one BLAS thread; short step timeouts so
# that a killed hospital costs a few seconds, not minutes.
export FLC_CONSORTIUM=soak FLC_ROUNDS=$rounds FLC_MIN_NODES=$((nodes / 2 + 1)) \
       FLC_ROUND_TIMEOUT_MS=4000 FLC_STEP_TIMEOUT_MS=2000 FLC_JOIN_TIMEOUT_MS=60000 \
       FLC_MAX_ABANDONED=10 FLC_IDLE_TIMEOUT_MS=120000 FLC_EPSILON_MAX=60 \
       FLC_RESERVE_ROUNDS=$((rounds / 10)) FLC_LISTEN='tcp://127.0.0.1:*' \
       FLC_CONFIG_DIR="$workdir/etc"
FLC_HOME="$workdir/vol/coordinator" "$deploy/entrypoint.sh" coordinator \
  >"$logs/coordinator.out" 2>"$logs/coordinator.log" &
coord=$!
pids+=("$coord")
for _ in $(seq 1 100); do
  [ -s "$workdir/vol/coordinator/state/endpoint" ] && break
  sleep 0.1
done
[ -s "$workdir/vol/coordinator/state/endpoint" ] || { cat "$logs/coordinator.log"; exit 1; }
export FLC_COORDINATOR
FLC_COORDINATOR=$(cat "$workdir/vol/coordinator/state/endpoint")
sock="$workdir/vol/coordinator/state/admin.sock"

start_node() {
  FLC_HOME="$workdir/vol/$1" FLC_NAME="$1" "$deploy/entrypoint.sh" node >>"$logs/$1.log" 2>&1 &
  node_pid[$1]=$!
  pids+=("$!")
}
# Hold training until every hospital has joined, so that round 1 has them all.
for _ in $(seq 1 100); do
  flctl --socket "$sock" --timeout 2 pause >/dev/null 2>&1 && break
  sleep 0.1
done
for i in $(seq 1 "$nodes"); do start_node "hospital-$i"; done
for _ in $(seq 1 300); do
  flctl --socket "$sock" --timeout 2 --json status 2>/dev/null | grep -q "\"nodes_online\":$nodes," && break
  sleep 0.1
done
flctl --socket "$sock" --timeout 2 resume >/dev/null || { say "flctl resume failed"; exit 1; }
say "coordinator pid $coord at $FLC_COORDINATOR; $nodes hospitals; long-lived: hospital-1..$long; seed $seed"

rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null; }
completed() {
  flctl --socket "$sock" --timeout 2 --json status 2>/dev/null |
    grep -o '"rounds_completed":[0-9]*' | cut -d: -f2
}
sample() { # one line: rounds, coordinator RSS, long-lived hospitals' RSS (kB)
  local line
  line="$1 $(rss "$coord")"
  for i in $(seq 1 "$long"); do line="$line $(rss "${node_pid[hospital-$i]}")"; done
  echo "$line"
}
header="rounds flcoord$(for i in $(seq 1 "$long"); do printf ' hospital-%d' "$i"; done)"
echo "$header" >"$logs/rss.txt"
start_sample="" warm_sample="" end_sample=""
next_kill=$(( $(date +%s) + 1 + RANDOM % (2 * kill_every) ))
done_rounds=0
while kill -0 "$coord" 2>/dev/null; do
  now=$(date +%s)
  [ "$now" -lt "$deadline" ] || { say "FAIL: --max-minutes $max_minutes reached at $done_rounds rounds"; exit 1; }
  c=$(completed)
  if [ -n "$c" ]; then
    done_rounds=$c
    s=$(sample "$c")
    if [ "$(echo "$s" | wc -w)" -eq $((long + 2)) ]; then
      end_sample=$s
      [ -z "$start_sample" ] && [ "$c" -ge 1 ] && start_sample=$s
      [ -z "$warm_sample" ] && [ "$c" -ge 10 ] && warm_sample=$s
      echo "$s" >>"$logs/rss.txt"
    fi
  fi
  # Restart killed hospitals after 2-6 s; kill one churn hospital at a
  # time, at random moments, until 5 rounds before the end.
  for h in "${!down_since[@]}"; do
    if [ $((now - ${down_since[$h]})) -ge $((2 + RANDOM % 5)) ]; then
      start_node "$h"
      unset "down_since[$h]"
      restarts=$((restarts + 1))
    fi
  done
  if [ "$now" -ge "$next_kill" ] && [ "${#down_since[@]}" -eq 0 ] && [ "$done_rounds" -lt $((rounds - 5)) ]; then
    h="hospital-$((long + 1 + RANDOM % (nodes - long)))"
    kill -KILL "${node_pid[$h]}" 2>/dev/null && kills=$((kills + 1))
    wait "${node_pid[$h]}" 2>/dev/null
    down_since[$h]=$now
    echo "$(date -u +%FT%TZ) killed $h at $done_rounds rounds completed" >>"$logs/kills.txt"
    next_kill=$((now + 1 + RANDOM % (2 * kill_every)))
  fi
  # Every 0.1 s until the first round is sampled, then every second.
  if [ -z "$start_sample" ]; then sleep 0.1; else sleep 1; fi
done
wait "$coord"
coord_rc=$?
train_s=$(( $(date +%s) - t0 ))
fail=0
[ "$coord_rc" -eq 0 ] || { say "the coordinator exited with status $coord_rc"; fail=1; }
# The hospitals exit when the coordinator says training is over (30 s at
# most for all). A hospital restarted during the last rounds may have missed
# that word and wait for a round that will not come: it is stopped; only
# the long-lived ones must exit by themselves, with status 0.
for _ in $(seq 1 300); do
  running=0
  for i in $(seq 1 "$nodes"); do kill -0 "${node_pid[hospital-$i]}" 2>/dev/null && running=1; done
  [ "$running" = 0 ] && break
  sleep 0.1
done
for i in $(seq 1 "$nodes"); do
  h="hospital-$i"
  p=${node_pid[$h]}
  if kill -0 "$p" 2>/dev/null; then
    kill "$p"; wait "$p" 2>/dev/null
    [ "$i" -gt "$long" ] || { say "$h (long-lived) did not exit"; fail=1; }
  else
    wait "$p"
    rc=$?
    [ "$rc" -eq 0 ] || [ "$i" -gt "$long" ] || { say "$h exited with status $rc"; fail=1; }
  fi
done
pids=()

summary="$workdir/vol/coordinator/state/summary.json"
done_rounds=$(sed -n 's/.*"rounds_completed": *\([0-9]*\).*/\1/p' "$summary" 2>/dev/null | head -n 1)
acc=$(sed -n 's/.*"accuracy": *\([0-9.]*\).*/\1/p' "$summary" 2>/dev/null | head -n 1)
[ "${done_rounds:-0}" = "$rounds" ] || { say "only ${done_rounds:-0} of $rounds rounds completed"; fail=1; }
abandoned=$(grep -c "abandoned:" "$logs/coordinator.log")
timeouts=$(grep -c "timed out" "$logs/coordinator.log")

echo
echo "== soak: $nodes hospitals, $rounds rounds in $train_s s (total $(( $(date +%s) - t0 )) s), seed $seed"
echo "machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1); $(date -u +%F)"
echo "rounds completed: ${done_rounds:-0} of $rounds (final test accuracy ${acc:-?}); kills $kills, restarts $restarts; abandoned attempts $abandoned, step timeouts $timeouts"
echo
printf '%-12s %10s %10s %10s %8s\n' process "start kB" "warm kB" "end kB" growth
read -r -a cols <<<"$header"
for k in $(seq 2 $((long + 2))); do
  a=$(echo "$start_sample" | cut -d' ' -f"$k")
  w=$(echo "$warm_sample" | cut -d' ' -f"$k")
  b=$(echo "$end_sample" | cut -d' ' -f"$k")
  g=$(awk -v a="$a" -v b="$b" 'BEGIN{ if (a > 0) printf "%+.1f%%", 100 * (b - a) / a; else print "?" }')
  printf '%-12s %10s %10s %10s %8s\n' "${cols[$((k - 1))]}" "${a:-?}" "${w:-?}" "${b:-?}" "$g"
  awk -v a="$a" -v b="$b" 'BEGIN{ exit !(a > 0 && b < 1.10 * a) }' ||
    { echo "  RSS of ${cols[$((k - 1))]} grew by 10% or more (or was not measured)"; fail=1; }
done
echo "(start: after round $(echo "$start_sample" | cut -d' ' -f1), warm: after round $(echo "$warm_sample" | cut -d' ' -f1), end: after round $(echo "$end_sample" | cut -d' ' -f1); every sample in $logs/rss.txt)"
echo
for i in $(seq 1 "$nodes"); do
  h="hospital-$i"
  if flaudit verify "$workdir/vol/$h/ledger/$h.ledger" --key "$workdir/vol/$h/keys/$h.pub" \
       >"$logs/$h.verify" 2>&1; then
    echo "ledger $h: $(sed -n 's/^ledger [^:]*: //p' "$logs/$h.verify" | cut -c1-60) | $(sed -n 's/^epsilon spent: //p' "$logs/$h.verify")"
  else
    echo "ledger $h: DOES NOT VERIFY:"; cat "$logs/$h.verify"; fail=1
  fi
done
echo
if [ "$fail" = 0 ]; then echo "== soak PASSED"; else echo "== soak FAILED (logs: $logs)"; fi
exit "$fail"
