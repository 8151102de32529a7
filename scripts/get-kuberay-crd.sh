#!/usr/bin/env bash
# KubeRay's RayJob CRD (ray.io/v1), from the ray-operator Go module on the Go module proxy, written to
# tests/data/kuberay/ray.io_rayjobs.json: its storage version only (v1; v1alpha1 dropped), compact JSON. The unit tests validate rendered RayJobs against it; the cluster tier installs it.
# Checked in, so tests never need the network; rerun to move to another KubeRay version.
set -euo pipefail
cd "$(dirname "$0")/.."
version="${KUBERAY_VERSION:-v1.5.0}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && go mod init kuberay-crd >/dev/null 2>&1 &&
  go mod download -json "github.com/ray-project/kuberay/ray-operator@${version}" > module.json)
dir="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["Dir"])' "$work/module.json")"
.venv/bin/python scripts/strip_crd.py "$dir/config/crd/bases/ray.io_rayjobs.yaml" > tests/data/kuberay/ray.io_rayjobs.json
echo "$version" > tests/data/kuberay/VERSION
echo "wrote tests/data/kuberay/ray.io_rayjobs.json from ray-operator ${version}"
