#!/usr/bin/env bash
# Network-namespace fault test: the coordinator and each hospital of
# deploy/topology.txt run in their own network namespace, joined by veth
# pairs to a bridge in a namespace of their own (addresses 10.77.0.x exist
# only inside these namespaces). The real binaries run from the real
# deploy/ templates through deploy/entrypoint.sh, with secure aggregation.
#
# Faults, each at a known round (the test holds training with 'flctl pause'
# between them and freezes one node with SIGSTOP so that the round waits at
# a known step):
#   1. a hospital SIGKILLed in the middle of a round (after it sent its
#      secure-aggregation keys), then restarted;
#   2. a hospital's link cut (ip link set down) while the coordinator waits
#      for the secure-aggregation share exchange (flctl status shows step
#      share_keys), then restored;
#   3. the coordinator SIGKILLed in the middle of a round and restarted on
#      the same state_dir;
#   4. 200 ms delay and 1% loss on one hospital's link (tc netem) for two
#      rounds; skipped with a message when the kernel has no netem, and a
#      rate-limited link (tc tbf) is used instead.
# Asserts: the coordinator completes the configured rounds and evaluates
# the final model (summary.json metrics), every hospital's privacy ledger
# verifies with flaudit verify, every daemon exits 0.
#
# Exits 77 (ctest: skipped) when not root or namespaces cannot be created.
#
# usage: tests/netns/netns_faults.sh --build DIR [--workdir DIR] [--keep]
#        tests/netns/netns_faults.sh --print-topology
#   --print-topology  print "ROLE ADDRESS VOLUME..." per namespace and exit
#                     (tests/netns/compose_check.sh compares it with compose)
set -uo pipefail

here=$(cd "$(dirname "$0")/../.." && pwd)
deploy="$here/deploy"
topology="$deploy/topology.txt"
build=""
workdir=""
keep=0
rounds=10
deadline_s=150

topo() { sed -e 's/#.*//' "$topology" | awk 'NF'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --workdir) workdir=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --print-topology) topo; exit 0 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "netns_faults: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
done
[ -n "$build" ] || { echo "netns_faults: --build DIR is required" >&2; exit 2; }
build=$(cd "$build" && pwd)
export PATH="$build/coordinator:$build/node:$build/ctl:$build/audit:$PATH"
export OPENBLAS_NUM_THREADS=1
for b in flcoord flnode flctl flaudit; do
  command -v "$b" >/dev/null || { echo "netns_faults: $b is not built in $build" >&2; exit 1; }
done

skip() { echo "SKIP: netns_faults: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root to create network namespaces (run as root, or ctest -LE netns)"
command -v ip >/dev/null || skip "the 'ip' command (iproute2) is missing"

t_start=$(date +%s.%N)
elapsed() { awk -v a="$t_start" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b - a}'; }
say() { echo "[$(elapsed)s] $*"; }

tag="flc$$"
brns="$tag-br"
roles=$(topo | awk '{print $1}')
hospitals=$(echo "$roles" | grep -v '^coordinator$')
addr_of() { topo | awk -v r="$1" '$1 == r {print $2}'; }
ns_of() { echo "$tag-$1"; }
created_ns=()
pids=()   # every daemon started, killed at exit

if [ -z "$workdir" ]; then
  workdir="${TMPDIR:-/tmp}/flc-netns-$$-$(date +%s%N)"
  mkdir -m 0700 "$workdir" || exit 1
else
  rm -rf "$workdir" && mkdir -p "$workdir"
fi
logs="$workdir/logs"
mkdir -p "$logs"
clog="$logs/coordinator.log"

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for p in "${pids[@]:-}"; do
    [ -n "$p" ] && kill -CONT "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
  done
  for p in "${pids[@]:-}"; do
    [ -n "$p" ] && wait "$p" 2>/dev/null
  done
  for ns in "${created_ns[@]:-}"; do
    [ -n "$ns" ] && ip netns del "$ns" 2>/dev/null
  done
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then
    echo "---- coordinator log (last 40 lines) ----"
    tail -n 40 "$clog" 2>/dev/null
    for h in $hospitals; do
      echo "---- $h log (last 10 lines) ----"
      tail -n 10 "$logs/$h.log" 2>/dev/null
    done
  fi
  if [ "$keep" = 1 ] || { [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; }; then
    echo "netns_faults: work directory kept: $workdir"
  else
    rm -rf "$workdir"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "netns_faults: interrupted" >&2; exit 130' INT TERM

fail() { say "FAIL: $*"; exit 1; }

# ---- the network: a bridge namespace, one namespace per role ---------------
ip netns add "$brns" 2>"$logs/netns.err" || skip "cannot create a network namespace: $(cat "$logs/netns.err")"
created_ns+=("$brns")
ip -n "$brns" link add br0 type bridge 2>"$logs/netns.err" || skip "cannot create a bridge in a namespace: $(cat "$logs/netns.err")"
ip -n "$brns" link set lo up
ip -n "$brns" link set br0 up
for r in $roles; do
  ns=$(ns_of "$r")
  ip netns add "$ns" || fail "ip netns add $ns"
  created_ns+=("$ns")
  ip -n "$ns" link set lo up
  ip -n "$brns" link add "v-$r" type veth peer name eth0 netns "$ns" 2>"$logs/netns.err" ||
    skip "cannot create veth pairs: $(cat "$logs/netns.err")"
  ip -n "$brns" link set "v-$r" master br0 up
  ip -n "$ns" addr add "$(addr_of "$r")/24" dev eth0
  ip -n "$ns" link set eth0 up
done
coord_addr=$(addr_of coordinator)
say "namespaces ${created_ns[*]}: bridge br0 in $brns, coordinator at $coord_addr"

# ---- identities, enrollment, shards: the compose key-setup script ----------
"$deploy/key-setup.sh" --root "$workdir/vol" --topology "$topology" >"$logs/key-setup.log" 2>&1 ||
  { cat "$logs/key-setup.log"; fail "deploy/key-setup.sh failed"; }

export FLC_CONSORTIUM=netns FLC_ROUNDS=$rounds FLC_MIN_NODES=2 FLC_THRESHOLD=2 \
       FLC_ROUND_TIMEOUT_MS=4000 FLC_STEP_TIMEOUT_MS=1500 FLC_JOIN_TIMEOUT_MS=30000 \
       FLC_MAX_ABANDONED=5 FLC_LOCAL_STEPS=3 FLC_IDLE_TIMEOUT_MS=30000 \
       FLC_EPSILON_MAX=30 FLC_RESERVE_ROUNDS=2 \
       FLC_COORDINATOR="tcp://$coord_addr:7451" FLC_LISTEN="tcp://$coord_addr:7451"
sock="$workdir/vol/coordinator/state/admin.sock"
declare -A node_pid

start_coordinator() {
  ip netns exec "$(ns_of coordinator)" env FLC_HOME="$workdir/vol/coordinator" \
    FLC_CONFIG_DIR="$workdir/etc" "$deploy/entrypoint.sh" coordinator \
    >>"$logs/coordinator.out" 2>>"$clog" &
  coord_pid=$!
  pids+=("$coord_pid")
}
start_node() {
  ip netns exec "$(ns_of "$1")" env FLC_HOME="$workdir/vol/$1" FLC_NAME="$1" \
    FLC_CONFIG_DIR="$workdir/etc" "$deploy/entrypoint.sh" node >>"$logs/$1.log" 2>&1 &
  node_pid[$1]=$!
  pids+=("$!")
}

# ---- bounded waiting ---------------------------------------------------------
# wait_until SECONDS DESCRIPTION COMMAND...: polls every 50 ms.
wait_until() {
  local limit=$1 what=$2 t0
  shift 2
  t0=$(date +%s%N)
  while ! "$@"; do
    [ $(( ($(date +%s%N) - t0) / 1000000 )) -lt $((limit * 1000)) ] ||
      fail "timed out after ${limit}s waiting for: $what"
    awk -v a="$t_start" -v b="$(date +%s.%N)" -v d="$deadline_s" 'BEGIN{exit !(b - a > d)}' &&
      fail "the whole test exceeded ${deadline_s}s"
    sleep 0.05
  done
}
status_json() { flctl --socket "$sock" --timeout 2 --json status 2>/dev/null; }
coord_up() { status_json >/dev/null; }
# field NAME: the first "NAME": value of the status (last_metrics has a "round" too)
field() { status_json | grep -o "\"$1\":[^,}]*" | head -n 1 | cut -d: -f2- | tr -d '"'; }
is_field() { [ "$(field "$1")" = "$2" ]; }
field_ge() { local v; v=$(field "$1"); [ -n "$v" ] && [ "$v" != null ] && [ "$v" -ge "$2" ]; }
log_has() { grep -q -- "$1" "$clog" 2>/dev/null; }
count_log() { grep -c -- "$1" "$clog" 2>/dev/null; }
log_count_gt() { [ "$(count_log "$1")" -gt "$2" ]; }
ctl() { flctl --socket "$sock" --timeout 3 "$@" >>"$logs/flctl.log" 2>&1 || fail "flctl $* failed"; }
pause_and_settle() {
  ctl pause
  wait_until 20 "phase paused" is_field phase paused
}

# ---- start: coordinator held paused until every hospital has joined ---------
start_coordinator
wait_until 10 "the coordinator's admin socket" coord_up
ctl pause
for h in $hospitals; do start_node "$h"; done
nh=$(echo "$hospitals" | wc -l)
wait_until 20 "$nh hospitals online" field_ge nodes_online "$nh"
say "coordinator (pid $coord_pid) and $nh hospitals up; training paused"

# One round without faults: pause as soon as it has started (the round in
# progress finishes; no new one starts).
ctl resume
wait_until 20 "round 1 started" log_has "round 1/$rounds: started"
pause_and_settle
field_ge rounds_completed 1 || fail "round 1 did not complete"
say "round 1 completed without faults"

set -- $hospitals
victim=$1 gate=$2 cut=$3

# ---- fault 1: a hospital SIGKILLed mid-round --------------------------------
r=$(field round)
kill -STOP "${node_pid[$gate]}"        # the round waits for $gate's keys
ctl resume
wait_until 10 "round $r: $victim sent its keys" log_has "round $r: $victim trained and joined"
kill -KILL "${node_pid[$victim]}"
wait "${node_pid[$victim]}" 2>/dev/null
ctl pause
kill -CONT "${node_pid[$gate]}"
say "fault 1: $victim SIGKILLed during round $r (after its key advertisement)"
wait_until 20 "round $r completed without $victim" field_ge rounds_completed "$r"
wait_until 20 "phase paused" is_field phase paused
log_has "round $r: secure aggregation complete, 2 inputs" ||
  fail "round $r did not complete with the 2 survivors"
joins=$(count_log "node $victim joined")
start_node "$victim"
wait_until 20 "$victim joined again" log_count_gt "node $victim joined" "$joins"
say "fault 1: round $r completed with 2 inputs; $victim restarted and joined again"

# ---- fault 2: a hospital's link cut during the share exchange ---------------
r=$(field round)
kill -STOP "${node_pid[$gate]}"
ctl resume
wait_until 10 "round $r: $cut sent its keys" log_has "round $r: $cut trained and joined"
wait_until 10 "round $r: $victim sent its keys" log_has "round $r: $victim trained and joined"
ip -n "$brns" link set "v-$cut" down
ctl pause
kill -CONT "${node_pid[$gate]}"
wait_until 10 "coordinator at step share_keys with $cut cut off" is_field secagg_step share_keys
say "fault 2: link of $cut down while the coordinator waits at step share_keys (round $r)"
wait_until 20 "round $r completed without $cut" field_ge rounds_completed "$r"
wait_until 20 "phase paused" is_field phase paused
log_has "round $r: secure-aggregation step 1 timed out" ||
  fail "round $r: no share_keys timeout in the coordinator's log"
log_has "round $r: secure aggregation complete, 2 inputs" ||
  fail "round $r did not complete with the 2 connected hospitals"
ip -n "$brns" link set "v-$cut" up
say "fault 2: round $r completed with 2 inputs after the share_keys timeout; link restored"

# ---- fault 3: the coordinator SIGKILLed mid-round and restarted -------------
r=$(field round)
done_before=$(field rounds_completed)
kill -STOP "${node_pid[$gate]}"
ctl resume
wait_until 10 "round $r under way" log_has "round $r: $victim trained and joined"
kill -KILL "$coord_pid"
wait "$coord_pid" 2>/dev/null
kill -CONT "${node_pid[$gate]}"
say "fault 3: coordinator SIGKILLed during round $r ($done_before rounds completed)"
resumes=$(count_log "resuming from")
# Hold the hospitals while the coordinator comes back, so that it is paused
# before any of them can rejoin (it would otherwise train at once).
for h in $hospitals; do kill -STOP "${node_pid[$h]}"; done
start_coordinator
wait_until 10 "the restarted coordinator's admin socket" coord_up
ctl pause
for h in $hospitals; do kill -CONT "${node_pid[$h]}"; done
log_count_gt "resuming from" "$resumes" || fail "the restarted coordinator did not resume from its state"
wait_until 20 "phase paused after the restart" is_field phase paused
wait_until 30 "$nh hospitals online after the restart" field_ge nodes_online "$nh"
[ "$(field rounds_completed)" -ge "$done_before" ] || fail "completed rounds went backwards"
flctl --socket "$sock" round "$r" >"$logs/round-$r.txt" 2>&1 && grep -q interrupted "$logs/round-$r.txt" ||
  { cat "$logs/round-$r.txt"; fail "flctl round $r does not show the interrupted attempt"; }
say "fault 3: coordinator restarted (pid $coord_pid), resumed at $(field rounds_completed) completed rounds, $nh hospitals back"

# ---- fault 4: 200 ms delay + 1% loss on one link ----------------------------
slow=$gate
slow_ns=$(ns_of "$slow")
if ip -n "$slow_ns" link show eth0 >/dev/null &&
   ip netns exec "$slow_ns" tc qdisc add dev eth0 root netem delay 200ms loss 1% 2>"$logs/tc.err"; then
  ip -n "$brns" link show "v-$slow" >/dev/null &&
    ip netns exec "$brns" tc qdisc add dev "v-$slow" root netem delay 200ms loss 1%
  fault4="netem delay 200ms loss 1% both ways on $slow's link"
else
  say "SKIP fault 4 (netem): tc netem is not available in this kernel: $(head -n 1 "$logs/tc.err")"
  ip netns exec "$slow_ns" tc qdisc add dev eth0 root tbf rate 64kbit burst 4kb latency 400ms ||
    fail "neither netem nor tbf could shape $slow's link"
  fault4="tbf 64 kbit/s rate limit on $slow's uplink (netem unavailable)"
fi
r=$(field round)
[ $((rounds - r)) -ge 2 ] || fail "only $((rounds - r + 1)) rounds left for fault 4"
# Two rounds: pause once the second has started (it finishes, no third starts).
starts=$(count_log "round $((r + 1))/$rounds: started")
ctl resume
wait_until 40 "round $((r + 1)) started with $fault4" log_count_gt "round $((r + 1))/$rounds: started" "$starts"
pause_and_settle
field_ge rounds_completed "$((r + 1))" || fail "rounds $r and $((r + 1)) did not complete with $fault4"
ip netns exec "$slow_ns" tc qdisc del dev eth0 root 2>/dev/null
ip netns exec "$brns" tc qdisc del dev "v-$slow" root 2>/dev/null
inputs=$(grep -E "round ($r|$((r + 1))): secure aggregation complete" "$clog" | sed 's/.*complete, //' | tr '\n' ';')
say "fault 4: rounds $r and $((r + 1)) completed with $fault4 ($inputs)"

# ---- the rest of the training, then the checks -------------------------------
ctl resume
wait_until 60 "the coordinator to finish all $rounds rounds" eval '! kill -0 "$coord_pid" 2>/dev/null'
wait "$coord_pid"
rc=$?
[ "$rc" -eq 0 ] || fail "the coordinator exited with status $rc"
for h in $hospitals; do
  p=${node_pid[$h]}
  wait_until 20 "$h to finish" eval "! kill -0 $p 2>/dev/null"
  wait "$p"
  rc=$?
  [ "$rc" -eq 0 ] || fail "$h exited with status $rc"
done
pids=()
summary="$workdir/vol/coordinator/state/summary.json"
[ -s "$summary" ] || fail "no summary.json"
done_rounds=$(sed -n 's/.*"rounds_completed": *\([0-9]*\).*/\1/p' "$summary" | head -n 1)
[ "$done_rounds" = "$rounds" ] && grep -q '"completed": *true' "$summary" ||
  fail "summary.json: $done_rounds of $rounds rounds completed: $(cat "$summary")"
log_has "training complete: $rounds rounds" || fail "the coordinator did not report $rounds completed rounds"
acc=$(sed -n 's/.*"accuracy": *\([0-9.eE+-]*\).*/\1/p' "$summary" | head -n 1)
auc=$(sed -n 's/.*"auc": *\([0-9.eE+-]*\).*/\1/p' "$summary" | head -n 1)
[ -n "$acc" ] && [ -n "$auc" ] || fail "summary.json has no final evaluation (accuracy, auc): $(cat "$summary")"
for h in $hospitals; do
  flaudit verify "$workdir/vol/$h/ledger/$h.ledger" --key "$workdir/vol/$h/keys/$h.pub" \
    >"$logs/$h.verify" 2>&1 || { cat "$logs/$h.verify"; fail "the ledger of $h does not verify"; }
done
say "PASS: $rounds rounds completed, final model accuracy $acc, AUC $auc; ledgers of $(echo $hospitals) verified"
