#!/usr/bin/env bash
# The local control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok), built from
# Go modules and run on 127.0.0.1: scripts/cluster.sh build|up|down|status|kubeconfig (docs/development.md).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 -m tests.cluster.controlplane "$@"
