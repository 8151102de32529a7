#!/usr/bin/env bash
# The local base image every ModelForge image builds FROM in CI (`make base-image`): Debian 12 (bookworm)
# made with debootstrap from the machine's Debian mirror and `docker import`ed, since no image registry is
# reachable here. A user's build keeps the Dockerfiles' public default (python:3.11-slim) instead.
#
# Prints the image's name. Its tag is a hash of images/base/packages.txt and this script: a second run
# with the image present is a no-op; a changed package list builds a new one.
set -euo pipefail
cd "$(dirname "$0")/.."
DOCKER="${DOCKER:-$(scripts/docker.sh cli)}"
REPO="${BASE_IMAGE_REPO:-modelforge/base}"
packages=$(grep -v -e '^#' -e '^$' images/base/packages.txt | paste -sd, -)
key=$(cat images/base/packages.txt "$0" | sha256sum | cut -c1-12)
image="$REPO:bookworm-$key"
if "$DOCKER" image inspect "$image" >/dev/null 2>&1; then
  echo "$image"
  exit 0
fi
# The machine's own Debian mirror (the URIs of its apt sources), never a download site.
mirror="${DEBIAN_MIRROR:-$(grep -h -m1 '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | head -n1)}"
mirror="${mirror:-http://deb.debian.org/debian}"
if ! command -v debootstrap >/dev/null 2>&1; then
  if [[ $(id -u) != 0 ]]; then
    echo "base-image.sh: debootstrap is missing; as root run: apt-get install -y debootstrap" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
fi
started=$SECONDS
root=$(mktemp -d "${TMPDIR:-/tmp}/modelforge-base.XXXXXX")
trap 'rm -rf "$root"' EXIT
log="$root.log"
if ! debootstrap --variant=minbase --include="$packages" bookworm "$root" "$mirror" >"$log" 2>&1; then
  echo "base-image.sh: debootstrap failed (log: $log):" >&2
  tail -n 5 "$log" >&2
  exit 1
fi
# Nothing of the build machine's apt state or caches in the image.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/tmp/* "$root"/var/tmp/*
: >"$root/etc/machine-id"
tar -C "$root" -c . | "$DOCKER" import \
  --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' - "$image" >/dev/null
rm -f "$log"
# Older bases of ours (other package lists) go; images built on them keep their layers until rebuilt.
"$DOCKER" image ls --format '{{.Repository}}:{{.Tag}}' "$REPO" | grep -v -x -F "$image" | xargs -r "$DOCKER" rmi >/dev/null 2>&1 || true
echo "base-image.sh: built $image in $(( SECONDS - started )) s ($(du -sh --apparent-size "$root" | cut -f1) rootfs)" >&2
echo "$image"
