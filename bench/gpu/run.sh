#!/usr/bin/env bash
# The GPU benchmark in one call: install the carried wheels, then bench/gpu/bench.py (throughput of
# transformers+peft against `modelforge run` with performance: auto, and the planner's memory estimates
# against measured peaks). Everything ends within the budget (default 450 s), even if a step hangs.
#
# On the lent GPU machine (the `device` tool's run, carry [".whl"]; make .whl here with bench/gpu/wheels.sh):
#   bash bench/gpu/run.sh                       # report in $OUT: gpu-bench.{json,md,log}, gpu-bench-logs.tar.gz
# Rehearsal here, on the CPU (what CI runs; tests/integration/test_gpu_rehearsal.py):
#   bench/gpu/run.sh --rehearse [--out DIR]     # tiny model, same steps, same wheel install into a scratch
#                                               # target, from a Python that has only the device's packages
# Options: --out DIR (default $OUT, else bench-gpu-work/out), --budget SECONDS (the whole call).
set -uo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s)
rehearse=0
out=${OUT:-}
budget=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rehearse) rehearse=1 ;;
    --out) out="$2"; shift ;;
    --budget) budget="$2"; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
work=$PWD/bench-gpu-work
out=$(mkdir -p "${out:-$work/out}" && cd "${out:-$work/out}" && pwd)
exec > >(tee "$out/gpu-bench.log") 2>&1
tee_pid=$!
trap 'exec >&- 2>&-; wait "$tee_pid"' EXIT  # the log is complete before the call returns

if [[ $rehearse == 1 ]]; then
  # Room for a CPU shared with CI's other pytest (measured: 212 s alone, over 330 s with a third load beside it);
  # the steps' own limits are the GPU call's, the deadline only has to let a loaded CPU finish them.
  budget=${budget:-540}
  wheels=$work/wheels-local
  # The same names and versions as the device's set, built for this interpreter (cached; no download when warm).
  bench/gpu/wheels.sh --local --dest "$wheels" || exit 1
  # A venv that holds only the device's packages (bench/gpu/bare_env.py says why this way): a wheel missing
  # from the carried set fails here as it would on the GPU machine.
  .venv/bin/python bench/gpu/bare_env.py "$work/bare" >/dev/null || exit 1
  python=$work/bare/bin/python
  flag=(--rehearse)
else
  budget=${budget:-450}
  wheels=$PWD/.whl
  python=python3
  flag=()
  if ! compgen -G "$wheels/*.whl" >/dev/null; then
    echo "run.sh: no wheels in $wheels: run bench/gpu/wheels.sh on the developer machine and carry [\".whl\"]" >&2
    exit 1
  fi
fi
deadline=$((start + budget))
site=$work/site
rm -rf "$site"

# DeepSpeed first: it is a source distribution built against the torch already there (no build isolation, no
# ops), and installing it after the wheels would clash with their scripts in $site/bin.
echo "== install: $(ls "$wheels" | wc -l) carried files from $wheels into $site ($("$python" --version))"
if ! DS_BUILD_OPS=0 timeout 180 "$python" -m pip install -q --no-index --no-deps --no-build-isolation \
     --no-cache-dir --target "$site" "$wheels"/deepspeed-*.tar.gz; then
  echo "run.sh: building the carried deepspeed sdist failed (output above)" >&2
  exit 1
fi
if ! timeout 120 "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
     --target "$site" "$wheels"/*.whl; then
  echo "run.sh: installing the carried wheels failed (output above)" >&2
  exit 1
fi
echo "   installed in $(( $(date +%s) - start )) s"

export PYTHONPATH=$site:$PWD/operator PATH=$site/bin:$PATH
# Nothing may reach a hub: the GPU machine has no network, and a retry loop there would eat the budget.
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MODELSCOPE_OFFLINE=1 USE_HF=1
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
left=$((deadline - $(date +%s)))
timeout --kill-after=15 "$left" "$python" bench/gpu/bench.py "${flag[@]}" --work "$work" --out "$out" \
  --deadline "$deadline"
status=$?
echo "run.sh: finished in $(( $(date +%s) - start )) s (budget $budget s), exit $status; report in $out"
exit $status
