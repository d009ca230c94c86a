#!/bin/sh
# Starts one role of the consortium from the configuration templates next
# to this script; the same script runs in the containers of
# docker-compose.yml and in tests/netns (and the valgrind test and
# scripts/soak.sh), so the tests exercise the files that are deployed.
#
# usage: entrypoint.sh coordinator           render coordinator.ini, exec flcoord run
#        entrypoint.sh node                  render <FLC_NAME>.ini, exec flnode run
#        entrypoint.sh render coordinator|node   only render, print the file's path
#        entrypoint.sh key-setup [ARGS]      deploy/key-setup.sh ARGS
#        entrypoint.sh health coordinator|node   health check (exit 0 = healthy)
#
# Environment (default):
#   FLC_HOME        the role's volumes: keys/, data/, state/ or ledger/ (/var/lib/flc)
#   FLC_CONFIG_DIR  where the rendered file goes (${TMPDIR:-/tmp}/flc)
#   FLC_BIN         folder of flcoord, flnode, flctl, flaudit (PATH)
#   FLC_WRAP        command put before the daemon, e.g. valgrind options (none)
#   FLC_NAME        the hospital's enrolled name (node: required)
#   FLC_CONSORTIUM  consortium id (hospitals)
#   FLC_LISTEN      coordinator's bind address (tcp://0.0.0.0:7451)
#   FLC_COORDINATOR endpoint the nodes connect to (tcp://coordinator:7451)
#   FLC_ROUNDS (12)  FLC_MIN_NODES (2)  FLC_LOCAL_STEPS (5)  FLC_THRESHOLD (0 = > 2/3)
#   FLC_ROUND_TIMEOUT_MS (60000)  FLC_STEP_TIMEOUT_MS (30000)
#   FLC_JOIN_TIMEOUT_MS (600000)  FLC_MAX_ABANDONED (3)
#   FLC_IDLE_TIMEOUT_MS (600000)  node: give up without word from the coordinator
#   FLC_EPSILON_MAX (3)  FLC_RESERVE_ROUNDS (1)  node: the hospital's own budget
set -eu

here=$(cd "$(dirname "$0")" && pwd)
home=${FLC_HOME:-/var/lib/flc}
confdir=${FLC_CONFIG_DIR:-${TMPDIR:-/tmp}/flc}
bin() { if [ -n "${FLC_BIN:-}" ]; then echo "$FLC_BIN/$1"; else command -v "$1" || echo "$1"; fi; }

# render TEMPLATE OUT: replaces every @KEY@ by its value; refuses values
# that would break the INI line.
render() {
  tpl=$1 out=$2
  set -- \
    HOME "$home" NAME "${FLC_NAME:-}" CONSORTIUM "${FLC_CONSORTIUM:-hospitals}" \
    LISTEN "${FLC_LISTEN:-tcp://0.0.0.0:7451}" \
    COORDINATOR "${FLC_COORDINATOR:-tcp://coordinator:7451}" \
    ROUNDS "${FLC_ROUNDS:-12}" MIN_NODES "${FLC_MIN_NODES:-2}" \
    LOCAL_STEPS "${FLC_LOCAL_STEPS:-5}" THRESHOLD "${FLC_THRESHOLD:-0}" \
    ROUND_TIMEOUT_MS "${FLC_ROUND_TIMEOUT_MS:-60000}" \
    STEP_TIMEOUT_MS "${FLC_STEP_TIMEOUT_MS:-30000}" \
    JOIN_TIMEOUT_MS "${FLC_JOIN_TIMEOUT_MS:-600000}" \
    MAX_ABANDONED "${FLC_MAX_ABANDONED:-3}" \
    IDLE_TIMEOUT_MS "${FLC_IDLE_TIMEOUT_MS:-600000}" \
    EPSILON_MAX "${FLC_EPSILON_MAX:-3}" RESERVE_ROUNDS "${FLC_RESERVE_ROUNDS:-1}"
  script=""
  while [ $# -gt 0 ]; do
    case "$2" in
      *'|'*|*'\'*|*'&'*) echo "entrypoint: FLC_$1 has a character not allowed here: '$2'" >&2; exit 2 ;;
    esac
    script="${script}s|@$1@|$2|g;"
    shift 2
  done
  mkdir -p "$(dirname "$out")"
  sed "$script" "$tpl" > "$out.tmp"
  if grep -q '@[A-Z_]*@' "$out.tmp"; then
    echo "entrypoint: $tpl has a placeholder without a value:" >&2
    grep -n '@[A-Z_]*@' "$out.tmp" >&2
    exit 2
  fi
  mv "$out.tmp" "$out"
}

render_role() {
  case "$1" in
    coordinator) render "$here/coordinator.ini.in" "$confdir/coordinator.ini"
                 echo "$confdir/coordinator.ini" ;;
    node) [ -n "${FLC_NAME:-}" ] || { echo "entrypoint: set FLC_NAME to the hospital's name" >&2; exit 2; }
          render "$here/node.ini.in" "$confdir/$FLC_NAME.ini"
          echo "$confdir/$FLC_NAME.ini" ;;
    *) echo "entrypoint: unknown role '$1' (coordinator or node)" >&2; exit 2 ;;
  esac
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  coordinator)
    cfg=$(render_role coordinator)
    # shellcheck disable=SC2086
    exec ${FLC_WRAP:-} "$(bin flcoord)" run --config "$cfg" "$@" ;;
  node)
    cfg=$(render_role node)
    # shellcheck disable=SC2086
    exec ${FLC_WRAP:-} "$(bin flnode)" run --config "$cfg" "$@" ;;
  render)
    render_role "${1:-}" ;;
  key-setup)
    exec "$here/key-setup.sh" "$@" ;;
  health)
    case "${1:-}" in
      coordinator)
        # Answers on the admin socket: alive and serving its event loop.
        "$(bin flctl)" --socket "$home/state/admin.sock" --timeout 3 status >/dev/null ;;
      node)
        # The daemon runs (PID FLC_PID, 1 in a container) and its privacy
        # ledger, once it has one, verifies.
        [ "$(cat "/proc/${FLC_PID:-1}/comm" 2>/dev/null)" = flnode ] || exit 1
        [ -n "${FLC_NAME:-}" ] || exit 1
        ledger="$home/ledger/$FLC_NAME.ledger"
        [ ! -s "$ledger" ] || "$(bin flaudit)" verify "$ledger" --key "$home/keys/$FLC_NAME.pub" >/dev/null ;;
      *) echo "entrypoint: health coordinator|node" >&2; exit 2 ;;
    esac ;;
  -h|--help|"")
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; [ -n "$cmd" ] ;;
  *) echo "entrypoint: unknown command '$cmd' (try --help)" >&2; exit 2 ;;
esac
