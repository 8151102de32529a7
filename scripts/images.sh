#!/usr/bin/env bash
# Build ModelForge's images (`make images`): operator, trainer-cpu, trainer (CUDA), vllm-cpu.
#
#   make images                                   # FROM the Dockerfiles' public base (python:3.11-slim)
#   make images REGISTRY=registry.example.com/ml TAG=0.1.0 PUSH=1   # then docker push each
#   make images BASE=local                        # FROM a Debian 12 base made here (scripts/base-image.sh):
#                                                 # what CI and `make test` do, with no image registry reachable
#   make images IMAGES="operator trainer-cpu"     # some of them
#
# Each is tagged REGISTRY/NAME:TAG (default ghcr.io/modelforge/NAME:0.1.0, the chart's own defaults, so a
# cluster that loads local images needs no chart values). Layers are cached by Docker (BuildKit; pip's cache
# is a build cache mount), so a rebuild with nothing changed takes seconds. One line per image: build time
# and size. Builds reach the package registries only (--network host); nothing is pulled when BASE=local.
set -euo pipefail
cd "$(dirname "$0")/.."
DOCKER="${DOCKER:-$(scripts/docker.sh cli)}"
REGISTRY="${REGISTRY:-ghcr.io/modelforge}"
TAG="${TAG:-0.1.0}"
IMAGES="${IMAGES:-operator trainer-cpu trainer vllm-cpu}"
BASE="${BASE:-}"
PUSH="${PUSH:-0}"
export DOCKER_BUILDKIT=1

if ! "$DOCKER" info >/dev/null 2>&1; then
  echo "images.sh: no Docker engine answers; start one (scripts/docker.sh up, as root) and retry" >&2
  exit 1
fi
args=()
if [[ $BASE == local ]]; then
  BASE=$(scripts/base-image.sh)
fi
[[ -n $BASE ]] && args+=(--build-arg "BASE=$BASE")
# A machine behind a TLS-inspecting proxy trusts its CA through pip's cert setting: the build gets that
# bundle as a secret (images/with-pip-ca), which no layer keeps.
ca="${PIP_CERT:-${SSL_CERT_FILE:-}}"
[[ -n $ca && -s $ca ]] && args+=(--secret "id=pip-ca,src=$ca")
for name in $IMAGES; do
  dockerfile="images/$name/Dockerfile"
  if [[ ! -f $dockerfile ]]; then
    echo "images.sh: no image named $name (there is: $(ls images | grep -v -e README -e base -e '\.py$' | paste -sd' '))" >&2
    exit 2
  fi
  image="$REGISTRY/$name:$TAG"
  started=$SECONDS
  log=$(mktemp)
  if ! "$DOCKER" build --network host --progress plain -f "$dockerfile" "${args[@]}" -t "$image" . >"$log" 2>&1; then
    echo "images.sh: building $image failed; the end of its log ($log):" >&2
    tail -n 30 "$log" >&2
    exit 1
  fi
  rm -f "$log"
  # The previous build of this image, now untagged, goes (only ModelForge's own images carry the label).
  "$DOCKER" image prune --force --filter "label=io.modelforge.image=$name" >/dev/null
  size=$("$DOCKER" image inspect --format '{{.Size}}' "$image")
  printf 'images.sh: %-40s built in %4d s, %s GB\n' "$image" $(( SECONDS - started )) "$(awk -v s="$size" 'BEGIN { printf "%.2f", s / 1e9 }')"
  if [[ $PUSH == 1 ]]; then
    "$DOCKER" push "$image"
  fi
done
