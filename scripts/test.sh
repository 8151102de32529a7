#!/usr/bin/env bash
# The whole suite as `make test` and CI run it: two pytest processes at once, on the same checkout.
#
#   services: tests/cluster (the local control plane and the operator), tests/e2e (kind), tests/images (Docker):
#             most of their time is waiting on an API server, a kubelet, a container or a rollout;
#   cpu:      tests/integration (the real ms-swift, vLLM, multi-process and Ray runs), tests/operator,
#             tests/unit: most of theirs is training and imports.
#
# On 2 cores the waiting overlaps the computing (docs/benchmarks.md has the measurement against one process).
# The services tiers report live; the cpu tiers' report follows, from its log. Either failing fails the run;
# nothing ran (pytest's exit 5) is a failure too. Arguments go to both (e.g. -x, -k). `python -m pytest` with
# no arguments still runs everything in one process (pyproject.toml's testpaths).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
services=(tests/cluster tests/e2e tests/images)
cpu=(tests/integration tests/operator tests/unit)

# Every test directory is in exactly one group: a new tier must be placed (a missed one would never run here).
known=" ${services[*]} ${cpu[*]} "
for dir in tests/*/; do
  dir=${dir%/}
  if compgen -G "$dir/test_*.py" >/dev/null && [[ $known != *" $dir "* ]]; then
    echo "scripts/test.sh: $dir has tests but is in neither group: add it to services or cpu" >&2
    exit 2
  fi
done

log=$(mktemp -t modelforge-cpu-tiers.XXXXXX)
start=$(date +%s)
"$PY" -m pytest "${cpu[@]}" "$@" >"$log" 2>&1 &
cpu_pid=$!
# Ctrl-C reaches the foreground pytest; the background one (asynchronous commands ignore SIGINT) gets SIGTERM,
# which tests/conftest.py turns into an interrupt, so its fixtures still stop what they started.
trap 'kill -TERM "$cpu_pid" 2>/dev/null; wait "$cpu_pid"; exit 130' INT TERM
echo "scripts/test.sh: the cpu tiers (${cpu[*]}) run beside these, PID $cpu_pid, report in $log"
"$PY" -m pytest "${services[@]}" "$@"
services_rc=$?
services_s=$(( $(date +%s) - start ))
wait "$cpu_pid"
cpu_rc=$?
echo
echo "======================== the cpu tiers (${cpu[*]}), run beside the above ========================"
cat "$log"
echo
echo "scripts/test.sh: services tiers exit $services_rc after ${services_s} s; cpu tiers exit $cpu_rc; whole run $(( $(date +%s) - start )) s"
rm -f "$log"
if (( services_rc != 0 || cpu_rc != 0 )); then
  exit 1
fi
