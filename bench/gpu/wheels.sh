#!/usr/bin/env bash
# The wheels the GPU benchmark carries to the lent GPU machine, which has no network (../shared/GPU.md).
#
#   bench/gpu/wheels.sh                 # the device's set (CPython 3.12, manylinux x86-64) into .whl/
#   bench/gpu/wheels.sh --local         # the same names and versions for this machine's interpreter, for
#                                       # the CPU rehearsal (cp312 binaries such as pydantic-core, cffi and
#                                       # cryptography do not import on 3.11): into bench-gpu-work/wheels-local/
#   bench/gpu/wheels.sh --dest DIR      # somewhere else
#
# Downloads come from PyPI only and are cached in ~/.cache/modelforge/gpu-wheels/<set>/: a warm run asks no
# registry. The destination ends up holding exactly this set (one version of each: two stop the install).
# Fails when the set, plus the working tree that travels with it, is over the device's 64 MiB limit.
#
# What is in the set, and why (the device has Python 3.12, torch 2.11 CUDA 13, transformers 5.17, peft,
# accelerate, tokenizers, safetensors, triton, pyyaml, numpy, pandas, pyarrow, ... : bench/gpu/device-packages.txt):
# - ms-swift 4.6 and what it imports that the device lacks (trl, datasets, modelscope, json-repair, dill,
#   multiprocess, cryptography/cffi/pycparser for modelscope), and peft 0.20 (ms-swift 4.6 pins peft < 0.21);
# - liger-kernel: the fused kernels `performance: auto` switches on when it is installed;
# - bitsandbytes for the QLoRA memory check, stripped to its CPU and CUDA 13.x libraries (43 MB -> 7 MB);
# - deepspeed 0.19.8 as a source distribution (its wheel does not exist; it builds in ~20 s without ops) and
#   hjson, its one missing dependency: ms-swift and transformers import it whenever it is installed;
# - modelforge's own imports on the `modelforge run` / `modelforge plan` path: pydantic (+ pydantic-core,
#   annotated-types, typing-inspection) and common-expression-language (`cel`, imported by the spec
#   validation; its package imports prompt-toolkit and wcwidth at import time). pyyaml and prometheus-client
#   are on the device already. The rehearsal (run.sh --rehearse) runs from an environment holding only the
#   device's packages, so a name missing here fails it.
set -euo pipefail
trap 'echo "wheels.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
cd "$(dirname "$0")/../.."

# Names only: the versions are the CUDA trainer image's lock (locks/cuda.txt), the same as the venv's and the
# images'. Downloaded by name==version: the lock's hashes are not checked here (a known gap; the installs are).
NAMES=(
  ms-swift trl datasets modelscope modelscope-hub cryptography cffi pycparser json-repair multiprocess dill
  pydantic pydantic-core annotated-types typing-inspection peft liger-kernel hjson common-expression-language
  prompt-toolkit wcwidth
)
locked() {  # name==version as locks/cuda.txt pins it (names compared as PEP 503 normalises them)
  local pattern
  pattern=$(sed 's/[-_.]/[-_.]/g' <<<"$1")
  local line
  line=$(grep -i -m1 -E "^${pattern}==" locks/cuda.txt) || { echo "wheels.sh: $1 is not in locks/cuda.txt" >&2; exit 1; }
  line=${line#*==}
  echo "$1==${line%% *}"
}
WHEELS=()
for name in "${NAMES[@]}"; do WHEELS+=("$(locked "$name")"); done
SDISTS=("$(locked deepspeed)")
BITSANDBYTES=$(locked bitsandbytes)
LIMIT_MIB=64

local=0
dest=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --local) local=1 ;;
    --dest) dest="$2"; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "wheels.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

PYTHON=${PYTHON:-.venv/bin/python}
[[ -x $PYTHON ]] || PYTHON=python3
if [[ $local == 1 ]]; then
  tag=$("$PYTHON" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}-local")')
  platform=()  # pip picks this interpreter's own tags
  dest=${dest:-bench-gpu-work/wheels-local}
else
  tag=cp312-manylinux_x86_64
  platform=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
            --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
  dest=${dest:-.whl}
fi
cache=${MODELFORGE_WHEEL_CACHE:-$HOME/.cache/modelforge/gpu-wheels}/$tag
mkdir -p "$cache/download" "$cache/stripped" "$dest"

# The file a requirement name==version was saved as in $cache/download ("" when it is not there yet).
cached() {
  local name=${1%%==*} version=${1##*==}
  local stem
  stem=$(echo "$name" | tr 'A-Z-.' 'a-z__')
  compgen -G "$cache/download/${stem}-${version}-*.whl" | sed -n 1p ||
    compgen -G "$cache/download/${stem}-${version}.tar.gz" | sed -n 1p || true
}

missing_wheels=() missing_sdists=()
for req in "${WHEELS[@]}" "$BITSANDBYTES"; do [[ -n $(cached "$req") ]] || missing_wheels+=("$req"); done
for req in "${SDISTS[@]}"; do [[ -n $(cached "$req") ]] || missing_sdists+=("$req"); done
if [[ ${#missing_wheels[@]} -gt 0 ]]; then
  echo "downloading from PyPI into $cache/download: ${missing_wheels[*]}"
  # bitsandbytes is a py3-none wheel tagged manylinux_2_24; the other binaries are manylinux_2_17/2_28.
  extra=()
  [[ $local == 1 ]] || extra=(--platform manylinux_2_24_x86_64)
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: "${platform[@]}" "${extra[@]}" \
    -d "$cache/download" "${missing_wheels[@]}"
fi
if [[ ${#missing_sdists[@]} -gt 0 ]]; then
  echo "downloading from PyPI into $cache/download: ${missing_sdists[*]} (source)"
  "$PYTHON" -m pip download -q --no-deps --no-binary=:all: --no-build-isolation -d "$cache/download" \
    "${missing_sdists[@]}"
fi

# bitsandbytes ships one library per CUDA/ROCm/XPU version (43 MB): keep the CPU one (the rehearsal) and
# CUDA 13.x (the device's torch is cu130), drop the others' lines from RECORD, re-zip under the same name.
bnb_original=$(cached "$BITSANDBYTES")
bnb=$cache/stripped/$(basename "$bnb_original")
if [[ ! -f $bnb ]]; then
  "$PYTHON" - "$bnb_original" "$bnb" <<'PY'
import re
import sys
import zipfile

source, target = sys.argv[1:]
keep = re.compile(r"libbitsandbytes_(cpu|cuda13\d)\.so$")
with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target + ".part", "w", zipfile.ZIP_DEFLATED) as zout:
    dropped = {i.filename for i in zin.infolist() if i.filename.endswith(".so") and not keep.search(i.filename)}
    for info in zin.infolist():
        if info.filename in dropped:
            continue
        data = zin.read(info.filename)
        if info.filename.endswith(".dist-info/RECORD"):
            lines = data.decode().splitlines(keepends=True)
            data = "".join(line for line in lines if line.split(",", 1)[0] not in dropped).encode()
        zout.writestr(info, data)
print(f"bitsandbytes: dropped {len(dropped)} libraries ({', '.join(sorted(d.rsplit('/', 1)[-1] for d in dropped))})")
PY
  mv "$bnb.part" "$bnb"
fi

# The destination holds exactly the set: stale versions are removed, the rest hard-linked (or copied).
wanted=()
for req in "${WHEELS[@]}" "${SDISTS[@]}"; do wanted+=("$(cached "$req")"); done
wanted+=("$bnb")
declare -A keep_names=()
for file in "${wanted[@]}"; do keep_names[$(basename "$file")]=1; done
for file in "$dest"/*; do
  [[ -e $file ]] || continue
  [[ -n ${keep_names[$(basename "$file")]:-} ]] || { echo "removing $file (not in the set)"; rm -rf "$file"; }
done
for file in "${wanted[@]}"; do
  [[ -f $dest/$(basename "$file") ]] || ln "$file" "$dest/" 2>/dev/null || cp "$file" "$dest/"
done

bytes=$(cat "$dest"/* | wc -c)
# What else travels: the files git tracks or would track (a tracked file deleted in the work tree travels not).
tree=$(git ls-files -co --exclude-standard -z | xargs -0 -r stat -c %s -- 2>/dev/null |
       awk '{ s += $1 } END { print s + 0 }') || true
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
echo "wheel set $tag in $dest: ${#wanted[@]} files, $(mib "$bytes") MiB" \
     "(+ $(mib "$tree") MiB working tree = $(mib $((bytes + tree))) of $LIMIT_MIB MiB that may travel)"
if (( bytes + tree > LIMIT_MIB * 1048576 )); then
  echo "wheels.sh: over the device's $LIMIT_MIB MiB limit for the working tree and carried paths" >&2
  exit 1
fi
