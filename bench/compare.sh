#!/usr/bin/env bash
# compare.sh: our DP-SGD step (bench_dpsgd --json) against PyTorch on the
# same workloads and thread count (bench/torch_bench.py: plain SGD, DP-SGD
# with functorch vmap, DP-SGD with Opacus-style hooks).  Prints, per
# workload: our DP examples/s, the three PyTorch rates, the ratios
# ours_dp / torch_plain (target >= 1) and ours_dp / torch_vmap (target >= 10),
# our DP/plain cost and the fraction of sgemm GFLOP/s our plain step reaches
# (counting a dense im2col + sgemm step's flops: for the CNN, whose
# backward skips what max-pooling zeroes, this exceeds 1; bench_dpsgd.c).
# Never fails on timing; exits non-zero if a benchmark fails to run or
# torch_bench.py's per-example gradient check fails.
#
# usage: bench/compare.sh [--threads N] [--build DIR] [--ours-json FILE]
#                         [--torch-json FILE] [--min-time S] [--repeats R]
#   --threads N        BLAS / torch threads for both sides (default 1)
#   --build DIR        build directory holding bench/bench_dpsgd (default: build)
#   --ours-json FILE   use these bench_dpsgd --json lines instead of running it
#   --torch-json FILE  use these torch_bench.py JSON lines instead of running it
#   --min-time S       seconds per torch measurement (default 2)
#   --repeats R        torch measurements per (workload, method) (default 3)
#   --rounds K         run both benchmarks K times, alternating (default 1);
#                      the table then shows each rate's median over the
#                      rounds and the spread of the per-round ratios.  On a
#                      shared (virtual) machine whose speed drifts by 20 %
#                      within minutes, one round can land either side of
#                      a target: judge targets on several rounds.
#   --save DIR         also keep both benchmarks' raw output in DIR
# PyTorch runs with the environment the issue prescribes:
#   OMP_WAIT_POLICY=PASSIVE, GLIBC_TUNABLES=glibc.malloc.mmap_max=0:
#   glibc.malloc.trim_threshold=68719476736, OMP_NUM_THREADS=MKL_NUM_THREADS=N;
#   the interpreter is /usr/bin/python3 unless TORCH_PYTHON names another.
# If python3-torch is missing the torch columns say so ("scripts/setup.sh
# --bench" installs it).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
threads=1
build="$here/build"
ours_json=""
torch_json=""
min_time=2
repeats=3
rounds=1
save=""
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --ours-json) ours_json=$2; shift 2 ;;
    --torch-json) torch_json=$2; shift 2 ;;
    --min-time) min_time=$2; shift 2 ;;
    --repeats) repeats=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --save) save=$2; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "compare.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
done
case "$threads" in
  ''|*[!0-9]*|0) echo "compare.sh: --threads needs a positive integer" >&2; exit 2 ;;
esac
case "$rounds" in
  ''|*[!0-9]*|0) echo "compare.sh: --rounds needs a positive integer" >&2; exit 2 ;;
esac

# Debian's python3 carries python3-torch; a pyenv python3 on PATH does not.
# TORCH_PYTHON overrides the interpreter (e.g. a venv with pip's torch).
py=${TORCH_PYTHON:-/usr/bin/python3}
[ -x "$py" ] || py=$(command -v python3 || true)
if [ -z "$py" ]; then
  echo "compare.sh: no python3 found (needed for torch_bench.py and the report)" >&2
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

for round in $(seq 1 "$rounds"); do
  # ---- ours
  if [ -n "$ours_json" ]; then
    grep '^{' "$ours_json" > "$tmp/ours.$round.json" || true
    echo "compare: our numbers from $ours_json"
  else
    exe="$build/bench/bench_dpsgd"
    if [ ! -x "$exe" ]; then
      echo "compare.sh: $exe not found; build it first:" >&2
      echo "  cmake -S $here -B $build -DCMAKE_BUILD_TYPE=RelWithDebInfo &&" \
           "cmake --build $build --target bench_dpsgd" >&2
      exit 1
    fi
    echo "compare: round $round/$rounds: running $exe --json --threads $threads"
    if ! OPENBLAS_NUM_THREADS=$threads "$exe" --json --threads "$threads" \
         > "$tmp/ours.$round.out" 2> "$tmp/ours.$round.err"; then
      echo "compare.sh: bench_dpsgd failed:" >&2
      cat "$tmp/ours.$round.err" >&2
      exit 1
    fi
    grep '^{' "$tmp/ours.$round.out" > "$tmp/ours.$round.json" || true
  fi

  # ---- PyTorch
  torch_note=""
  if [ -n "$torch_json" ]; then
    grep '^{' "$torch_json" > "$tmp/torch.$round.json" || true
    echo "compare: PyTorch numbers from $torch_json"
  elif ! "$py" -c 'import torch, functorch' 2>/dev/null; then
    torch_note="PyTorch not installed for $py (python3-torch): torch columns skipped; install with scripts/setup.sh --bench"
    echo "compare: $torch_note"
    : > "$tmp/torch.$round.json"
  else
    echo "compare: round $round/$rounds: running bench/torch_bench.py --threads $threads (min-time $min_time s, $repeats repeats)"
    rc=0
    env OMP_WAIT_POLICY=PASSIVE \
        GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736 \
        OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads" \
        "$py" "$here/bench/torch_bench.py" --threads "$threads" \
        --min-time "$min_time" --repeats "$repeats" > "$tmp/torch.$round.out" || rc=$?
    grep '^check' "$tmp/torch.$round.out" || true
    if [ "$rc" -ne 0 ]; then
      echo "compare.sh: torch_bench.py failed (exit $rc)" >&2
      cat "$tmp/torch.$round.out" >&2
      exit 1
    fi
    grep '^{' "$tmp/torch.$round.out" > "$tmp/torch.$round.json" || true
  fi
done

if [ -n "$save" ]; then
  mkdir -p "$save"
  for f in "$tmp"/ours.*.out "$tmp"/ours.*.err "$tmp"/torch.*.out; do
    if [ -f "$f" ]; then cp "$f" "$save/"; fi
  done
  echo "compare: raw output saved in $save"
fi

# ---- report (stdlib json only)
"$py" - "$tmp" "$rounds" "$threads" "$torch_note" <<'EOF'
import json, statistics, sys

tmp, rounds, threads, torch_note = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

def lines(path):
    out = []
    with open(path) as f:
        for ln in f:
            ln = ln.strip()
            if ln.startswith("{"):
                try:
                    out.append(json.loads(ln))
                except ValueError:
                    print("compare: ignoring malformed JSON line: %s" % ln)
    return out

def num(x):
    return x if isinstance(x, (int, float)) and x > 0 else None

# per round: {workload: {"dp", "cost", "frac", "plain", "vmap", "hooks"}}
per_round = []
for k in range(1, rounds + 1):
    ours, torch = {}, {}
    for r in lines("%s/ours.%d.json" % (tmp, k)):
        if int(r.get("threads", threads)) == threads and "workload" in r:
            ours[r["workload"]] = r
    for r in lines("%s/torch.%d.json" % (tmp, k)):
        if int(r.get("threads", threads)) == threads and "workload" in r:
            torch[(r["workload"], r.get("method"))] = r
    got = {}
    for w in ["mlp30", "mlp784", "cnn"]:
        if w not in ours:
            continue
        o = ours[w]
        frac = o.get("step_gflops_fraction")
        got[w] = {"dp": num(o.get("dp_examples_per_s")),
                  "cost": num(o.get("dp_over_plain_cost")),
                  "frac": frac if isinstance(frac, (int, float)) else None}
        for m in ["plain", "vmap", "hooks"]:
            got[w][m] = num(torch.get((w, m), {}).get("examples_per_s"))
    per_round.append(got)

def med(w, key):
    v = [g[w][key] for g in per_round if w in g and g[w][key] is not None]
    return statistics.median(v) if v else None

def fmt(x, spec="%.0f"):
    return spec % x if x is not None else "not measured"

def ratio(a, b, target):
    if a is None or b is None:
        return "-"
    v = a / b
    return "%.2f (%s)" % (v, "meets >= %g" % target if v >= target else "MISSES >= %g" % target)

print("\nthreads = %d" % threads)
if torch_note:
    print(torch_note)
hdr = ["workload", "ours DP ex/s", "torch plain", "torch vmap", "torch hooks",
       "ours_dp/torch_plain", "ours_dp/torch_vmap", "ours_dp/torch_hooks",
       "ours dp/plain cost", "ours plain-step GFLOP fraction (dense-equivalent)"]
if rounds > 1:
    print("%d rounds, each rate below the median over them; per round:" % rounds)
    for k, g in enumerate(per_round, 1):
        for w in ["mlp30", "mlp784", "cnn"]:
            if w in g and g[w]["dp"] and g[w]["plain"] and g[w]["vmap"]:
                print("  round %d %-6s ours DP %9.0f  torch plain %9.0f  vmap %8.0f  "
                      "ours/plain %5.2f  ours/vmap %6.2f"
                      % (k, w, g[w]["dp"], g[w]["plain"], g[w]["vmap"],
                         g[w]["dp"] / g[w]["plain"], g[w]["dp"] / g[w]["vmap"]))
rows = []
for w in ["mlp30", "mlp784", "cnn"]:
    dp, tp, tv, th = med(w, "dp"), med(w, "plain"), med(w, "vmap"), med(w, "hooks")
    cost, frac = med(w, "cost"), med(w, "frac")
    rows.append([w, fmt(dp), fmt(tp) if not torch_note else "skipped",
                 fmt(tv) if not torch_note else "skipped",
                 fmt(th) if not torch_note else "skipped",
                 ratio(dp, tp, 1), ratio(dp, tv, 10),
                 "%.2f" % (dp / th) if dp and th else "-",
                 fmt(cost, "%.2f"), fmt(frac, "%.2f")])
    json_out = {"workload": w, "threads": threads, "ours_dp_examples_per_s": dp,
                "torch_plain_examples_per_s": tp, "torch_vmap_examples_per_s": tv,
                "torch_hooks_examples_per_s": th,
                "ours_dp_over_torch_plain": dp / tp if dp and tp else None,
                "ours_dp_over_torch_vmap": dp / tv if dp and tv else None,
                "ours_dp_over_torch_hooks": dp / th if dp and th else None,
                "ours_dp_over_plain_cost": cost, "ours_step_gflops_fraction": frac,
                "rounds": rounds,
                "per_round_ours_dp_over_torch_vmap":
                    [g[w]["dp"] / g[w]["vmap"] for g in per_round
                     if w in g and g[w]["dp"] and g[w]["vmap"]]}
    print("json: " + json.dumps(json_out))
widths = [max(len(str(r[i])) for r in rows + [hdr]) for i in range(len(hdr))]
print()
print("  ".join(h.ljust(widths[i]) for i, h in enumerate(hdr)))
for r in rows:
    print("  ".join(str(c).ljust(widths[i]) for i, c in enumerate(r)))
missing = [w for w in ["mlp30", "mlp784", "cnn"] if all(w not in g for g in per_round)]
if missing:
    print("\nnot measured by bench_dpsgd (threads %d): %s" % (threads, ", ".join(missing)))
EOF
