#!/usr/bin/env bash
# The whole suite as `make test` and CI run it: two pytest processes at once, on the same checkout.
#
#   services: tests/cluster (the local control plane and the operator), tests/e2e (kind), tests/images (Docker):
#             most of their time is waiting on an API server, a kubelet, a container or a rollout;
#   cpu:      tests/integration (the real ms-swift, vLLM, multi-process and Ray runs), tests/operator,
#             tests/unit: most of theirs is training and imports.
#
# On 2 cores the waiting overlaps the computing (docs/benchmarks.md, "CI time": the two groups one after the
# other against side by side). The services tiers report live; the cpu tiers' report follows, from its log.
# Either failing fails the run. Options go to both (-x, -k, -m, --durations); a selection that leaves one
# group nothing to run is fine (pytest's exit 5), both nothing is a failure. To run some files, call pytest
# itself: `.venv/bin/python -m pytest FILE...` (with no arguments it runs everything in one process).
# MODELFORGE_TEST_SHARED, a directory for this run, lets the two processes share what tests/conftest.py
# makes once per run (the tiny adapters).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
services=(tests/cluster tests/e2e tests/images)
cpu=(tests/integration tests/operator tests/unit)

for arg in "$@"; do
  if [[ $arg == tests/* || $arg == ./tests/* ]]; then
    echo "scripts/test.sh runs every tier (options only); for some files: $PY -m pytest $*" >&2
    exit 2
  fi
done
# Every test directory is in exactly one group: a new tier must be placed (a missed one would never run here).
known=" ${services[*]} ${cpu[*]} "
for dir in tests/*/; do
  dir=${dir%/}
  if compgen -G "$dir/test_*.py" >/dev/null && [[ $known != *" $dir "* ]]; then
    echo "scripts/test.sh: $dir has tests but is in neither group: add it to services or cpu" >&2
    exit 2
  fi
done

shared=$(mktemp -d -t modelforge-run.XXXXXX)
export MODELFORGE_TEST_SHARED=$shared
log=$shared/cpu-tiers.log
services_pid='' cpu_pid=''
# Both pytests run in the background (asynchronous commands ignore SIGINT, and so do the servers they start),
# so that a signal reaches this script while it waits: it sends them SIGTERM, which tests/conftest.py turns
# into an interrupt, so their fixtures still stop what they started.
stop() {
  trap - INT TERM
  for pid in $services_pid $cpu_pid; do kill -TERM "$pid" 2>/dev/null; done
  wait
  echo "scripts/test.sh: interrupted; the end of the cpu tiers' report ($log):" >&2
  tail -n 20 "$log" >&2
  rm -rf "$shared"
  exit "$1"
}
trap 'stop 130' INT
trap 'stop 143' TERM
start=$(date +%s)
"$PY" -m pytest "${cpu[@]}" -o cache_dir=.pytest_cache/cpu "$@" >"$log" 2>&1 &
cpu_pid=$!
echo "scripts/test.sh: the cpu tiers (${cpu[*]}) run beside these, PID $cpu_pid, report below when done"
"$PY" -m pytest "${services[@]}" "$@" &
services_pid=$!
wait "$services_pid"
services_rc=$?
services_s=$(( $(date +%s) - start ))
wait "$cpu_pid"
cpu_rc=$?
trap - INT TERM
echo
echo "======================== the cpu tiers (${cpu[*]}), run beside the above ========================"
cat "$log"
echo
echo "scripts/test.sh: services tiers exit $services_rc after ${services_s} s; cpu tiers exit $cpu_rc;" \
     "whole run $(( $(date +%s) - start )) s"
rm -rf "$shared"
if (( $# > 0 )); then  # a selection may leave one group nothing to run
  (( services_rc == 5 && cpu_rc != 5 )) && services_rc=0
  (( cpu_rc == 5 && services_rc != 5 )) && cpu_rc=0
fi
(( services_rc == 0 && cpu_rc == 0 ))
