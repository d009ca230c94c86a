#!/usr/bin/env bash
# Checks docker-compose.yml without a Docker engine:
#   1. 'docker-compose config -q' accepts it;
#   2. its services are key-setup plus exactly the roles tests/netns runs in
#      network namespaces (deploy/topology.txt, via netns_faults.sh
#      --print-topology), and its named volumes are exactly <role>-<volume>
#      for the volumes listed there;
#   3. every role's service mounts its own volumes (and key-setup all of
#      them), uses the deploy/entrypoint.sh role the netns test starts it
#      with, and has a health check; the daemons wait for key-setup with
#      condition service_completed_successfully.
# Exits 77 (ctest: skipped) when docker-compose is not installed.
#
# usage: tests/netns/compose_check.sh [COMPOSE_FILE]
set -uo pipefail

here=$(cd "$(dirname "$0")/../.." && pwd)
file=${1:-$here/docker-compose.yml}
compose=""
if command -v docker-compose >/dev/null 2>&1; then
  compose=docker-compose
elif command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
  compose="docker compose"
else
  echo "SKIP: compose_check: docker-compose is not installed (apt-get install docker-compose)"
  exit 77
fi
fail() { echo "FAIL: compose_check: $*"; exit 1; }

# docker-compose reads .env and the project name from the file's folder;
# run there, with an empty environment for the FLC_ variables.
cd "$(dirname "$file")" || exit 1
$compose -f "$file" config -q 2>"${TMPDIR:-/tmp}/compose-check.$$" || {
  cat "${TMPDIR:-/tmp}/compose-check.$$"; rm -f "${TMPDIR:-/tmp}/compose-check.$$"
  fail "$compose config -q rejects $file"; }
rm -f "${TMPDIR:-/tmp}/compose-check.$$"
echo "ok: $compose config -q accepts $file"

topology=$("$here/tests/netns/netns_faults.sh" --print-topology) || fail "netns_faults.sh --print-topology failed"
want_services=$( (echo key-setup; echo "$topology" | awk '{print $1}') | sort)
want_volumes=$(echo "$topology" | awk '{for (i = 3; i <= NF; i++) print $1 "-" $i}' | sort)
got_services=$($compose -f "$file" config --services | sort)
got_volumes=$($compose -f "$file" config --volumes | sort)
[ "$got_services" = "$want_services" ] ||
  fail "services differ from the netns test's namespaces (+ key-setup):
$(diff <(echo "$want_services") <(echo "$got_services"))"
echo "ok: services = key-setup + netns roles: $(echo $got_services)"
[ "$got_volumes" = "$want_volumes" ] ||
  fail "named volumes differ from the topology's:
$(diff <(echo "$want_volumes") <(echo "$got_volumes"))"
echo "ok: named volumes = <role>-<volume> of deploy/topology.txt ($(echo "$got_volumes" | wc -l))"

# The resolved configuration (anchors expanded), one service at a time.
resolved=$($compose -f "$file" config) || fail "$compose config failed"
service_block() {
  echo "$resolved" | awk -v s="  $1:" '
    /^services:/ {in_s = 1; next}
    in_s && /^[^ ]/ {in_s = 0}
    in_s && $0 == s {on = 1; next}
    in_s && on && /^  [^ ]/ {on = 0}
    on {print}'
}
while read -r role _addr vols; do
  block=$(service_block "$role")
  [ -n "$block" ] || fail "no service $role in the resolved configuration"
  for v in $vols; do
    echo "$block" | grep -Eq "source: $role-$v\$|$role-$v:/var/lib/flc/$v" ||
      fail "service $role does not mount volume $role-$v"
    service_block key-setup | grep -Eq "source: $role-$v\$|$role-$v:/srv/flc/$role/$v" ||
      fail "key-setup does not mount $role-$v at /srv/flc/$role/$v"
  done
  if [ "$role" = coordinator ]; then want_cmd=coordinator; else want_cmd=node; fi
  echo "$block" | grep -Eq -- "- $want_cmd\$|command: .*$want_cmd" ||
    fail "service $role does not run 'entrypoint.sh $want_cmd'"
  [ "$want_cmd" = coordinator ] || echo "$block" | grep -q "FLC_NAME: $role" ||
    fail "service $role does not set FLC_NAME: $role"
  echo "$block" | grep -q "healthcheck:" || fail "service $role has no health check"
  echo "$block" | grep -A2 "key-setup:" | grep -q "condition: service_completed_successfully" ||
    fail "service $role does not wait for key-setup (service_completed_successfully)"
done <<<"$topology"
echo "ok: every role mounts its own volumes, runs its entrypoint role, has a health check and waits for key-setup"
