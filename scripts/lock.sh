#!/usr/bin/env bash
# Regenerate constraints.txt (`make lock`): the exact versions every ModelForge Python environment installs.
# A fresh venv gets torch (TORCH_VERSION, default: the current pin), then modelforge with the dev, train and
# ray extras from pyproject.toml's ranges, then DeepSpeed (DEEPSPEED_VERSION); `pip freeze` of it is the
# lock. The CUDA trainer image's own packages (bitsandbytes, liger-kernel) are pinned below by hand: they
# do not install in a CPU venv's tests. Review the diff, then rebuild (`make setup images`).
set -euo pipefail
cd "$(dirname "$0")/.."
pin() { sed -n "s/^$1==//p" constraints.txt; }
TORCH_VERSION="${TORCH_VERSION:-$(pin torch)}"
DEEPSPEED_VERSION="${DEEPSPEED_VERSION:-$(pin deepspeed)}"
CUDA_EXTRAS=("bitsandbytes==${BITSANDBYTES_VERSION:-$(pin bitsandbytes)}" "liger-kernel==${LIGER_VERSION:-$(pin liger-kernel)}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
py="$work/venv/bin/python"
"$py" -m pip install -q --upgrade pip
"$py" -m pip install -q "torch==$TORCH_VERSION"
"$py" -m pip install -q -e ".[dev,train,ray]"
DS_BUILD_OPS=0 "$py" -m pip install -q --no-build-isolation "deepspeed==$DEEPSPEED_VERSION"
header=$(sed -n '/^#/!q;p' constraints.txt)
{
  echo "$header"
  "$py" -m pip freeze --exclude-editable | grep -v -i '^modelforge'
  echo "# the CUDA trainer image (images/trainer)"
  printf '%s\n' "${CUDA_EXTRAS[@]}"
} > constraints.txt.new
mv constraints.txt.new constraints.txt
echo "lock.sh: constraints.txt has $(grep -vc '^#' constraints.txt) pins (torch $TORCH_VERSION, deepspeed $DEEPSPEED_VERSION)"
