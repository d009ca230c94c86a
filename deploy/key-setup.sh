#!/bin/sh
# One-shot consortium setup, used by docker-compose.yml (service key-setup),
# tests/netns, tests/netns/valgrind_consortium.sh and scripts/soak.sh.
#
# For every role of the topology file it fills ROOT/<role>/<volume>:
#   coordinator/keys   coordinator.key (0600), coordinator.pub, enrolled.txt
#   coordinator/data   schema.ini, test.csv (the shared public test set)
#   coordinator/state  (empty: flcoord's SQLite state, admin socket, model)
#   <hospital>/keys    <hospital>.key (0600), <hospital>.pub,
#                      coordinator.pub, peers.txt (secure-aggregation peers)
#   <hospital>/data    schema.ini, train.csv (this hospital's disjoint shard)
#   <hospital>/ledger  (empty: the hospital's privacy ledger)
# A hospital's secret key is written only into that hospital's keys volume.
# The data: flnode split of CSV into a 20% test set and one shard per
# hospital, in topology order. Safe to run again: once the coordinator's
# enrollment file exists it changes nothing (identities are never replaced).
#
# usage: key-setup.sh --root DIR [--topology FILE] [--data CSV] [--schema FILE]
#                     [--hospitals N] [--consortium ID] [--chown UID:GID]
#   --topology FILE  roles, one per line (default: topology.txt next to this script)
#   --hospitals N    ignore the topology's hospitals; use hospital-1..N instead
#   --data CSV       labelled records (default: the bundled data/wdbc/wdbc.csv)
#   --schema FILE    the consortium's public feature schema (default: its schema.ini)
#   --chown U:G      hand the files to this user (when run as root, e.g. in compose)
# Programs: flcoord and flnode from $FLC_BIN if set, else from PATH.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=""
topology="$here/topology.txt"
data=""
schema=""
hospitals=""
owner=""
for d in "$here/../data/wdbc" /opt/flc/share/wdbc; do
  if [ -z "$data" ] && [ -r "$d/wdbc.csv" ]; then data="$d/wdbc.csv"; schema="$d/schema.ini"; fi
done
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root=$2; shift 2 ;;
    --topology) topology=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --schema) schema=$2; shift 2 ;;
    --hospitals) hospitals=$2; shift 2 ;;
    --chown) owner=$2; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "key-setup: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
done
[ -n "$root" ] || { echo "key-setup: --root DIR is required" >&2; exit 2; }
[ -r "$data" ] || { echo "key-setup: no data file (--data CSV)" >&2; exit 2; }
[ -r "$schema" ] || { echo "key-setup: no schema file (--schema FILE)" >&2; exit 2; }
if [ -n "${FLC_BIN:-}" ]; then
  flcoord="$FLC_BIN/flcoord"; flnode="$FLC_BIN/flnode"
else
  flcoord=$(command -v flcoord || true); flnode=$(command -v flnode || true)
fi
[ -x "$flcoord" ] && [ -x "$flnode" ] || { echo "key-setup: flcoord/flnode not found (set FLC_BIN)" >&2; exit 1; }

if [ -n "$hospitals" ]; then
  names=$(i=1; while [ "$i" -le "$hospitals" ]; do echo "hospital-$i"; i=$((i + 1)); done)
else
  names=$(sed -e 's/#.*//' "$topology" | awk 'NF && $1 != "coordinator" {print $1}')
fi
n=$(echo "$names" | grep -c .)
[ "$n" -ge 2 ] || { echo "key-setup: need at least 2 hospitals (secure aggregation), got $n" >&2; exit 2; }

co="$root/coordinator"
if [ -s "$co/keys/enrolled.txt" ]; then
  echo "key-setup: $co/keys/enrolled.txt exists: consortium already set up, nothing changed"
  exit 0
fi
umask 077
mkdir -p "$co/keys" "$co/data" "$co/state"
tmp="$co/state/.split"
rm -rf "$tmp"
"$flnode" split --in "$data" --label malignant --test-fraction 0.2 --shards "$n" \
  --seed 1 --out "$tmp" >/dev/null
cp "$schema" "$co/data/schema.ini"
mv "$tmp/test.csv" "$co/data/test.csv"
"$flcoord" init --dir "$co/keys" --force >/dev/null

enroll="$co/keys/enrolled.txt.tmp"
echo "# name  identity key (written by deploy/key-setup.sh)" > "$enroll"
i=1
for name in $names; do
  h="$root/$name"
  mkdir -p "$h/keys" "$h/data" "$h/ledger"
  "$flnode" init --dir "$h/keys" --name "$name" --force | tail -n 1 >> "$enroll"
  cp "$co/keys/coordinator.pub" "$h/keys/coordinator.pub"
  cp "$schema" "$h/data/schema.ini"
  mv "$tmp/shard-$i.csv" "$h/data/train.csv"
  i=$((i + 1))
done
rmdir "$tmp" 2>/dev/null || rm -rf "$tmp"
for name in $names; do
  cp "$enroll" "$root/$name/keys/peers.txt"
done
# The enrollment file is the "done" marker: written last, by rename (an
# interrupted run left no enrollment, and the next one starts over, --force).
mv "$enroll" "$co/keys/enrolled.txt"
if [ -n "$owner" ]; then
  chown -R "$owner" "$co"
  for name in $names; do chown -R "$owner" "$root/$name"; done
fi
echo "key-setup: consortium of $n hospitals ready in $root ($(echo $names))"
