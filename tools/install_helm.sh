#!/usr/bin/env bash
# Install a pinned Helm v3 into a bin directory (default: tools/bin), building it from source with
# `go install`: no registry reachable from CI ships a helm binary, only the Go module proxy has it.
#
#   tools/install_helm.sh [BIN_DIR]
#
# Idempotent: does nothing when BIN_DIR/helm is already this build (pinned version, same flags).
# Environment:
#   HELM_VERSION      the Helm tag to build (default below; tests and docs name the same)
#   HELM_GOTOOLCHAIN  the Go toolchain to retry with when the local Go cannot build it; fetched
#                     through the module proxy like any module (GOTOOLCHAIN=goX.Y.Z)
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.21.4}"
# helm v3.21.x declares `go 1.26.0` in its go.mod.
HELM_GOTOOLCHAIN="${HELM_GOTOOLCHAIN:-go1.26.0}"
# Helm's release Makefile stamps the Kubernetes version its client libraries speak (client-go
# v0.36 -> 1.36 for v3.21.4); without it `helm template` assumes Kubernetes 1.20 and refuses
# charts that need newer. Keep in step with HELM_VERSION (`go list -m k8s.io/client-go` in helm).
HELM_K8S_MAJOR="${HELM_K8S_MAJOR:-1}"
HELM_K8S_MINOR="${HELM_K8S_MINOR:-36}"

repo_root="$(cd "$(dirname "$0")/.." && pwd)"
bin_dir="${1:-$repo_root/tools/bin}"
mkdir -p "$bin_dir"
bin_dir="$(cd "$bin_dir" && pwd)"
helm_bin="$bin_dir/helm"
stamp_file="$bin_dir/.helm.stamp"
stamp="helm $HELM_VERSION kubernetes $HELM_K8S_MAJOR.$HELM_K8S_MINOR"

if [ -x "$helm_bin" ] && [ "$(cat "$stamp_file" 2>/dev/null)" = "$stamp" ] \
  && [ "$("$helm_bin" version --template '{{.Version}}' 2>/dev/null)" = "$HELM_VERSION" ]; then
  echo "helm $HELM_VERSION already at $helm_bin"
  exit 0
fi

command -v go >/dev/null 2>&1 || { echo "install_helm.sh: Go is required to build helm" >&2; exit 1; }

ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
for pkg in pkg/lint/rules pkg/chartutil; do
  ldflags+=" -X helm.sh/helm/v3/$pkg.k8sVersionMajor=$HELM_K8S_MAJOR"
  ldflags+=" -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$HELM_K8S_MINOR"
done
module="helm.sh/helm/v3/cmd/helm@$HELM_VERSION"

echo "building helm $HELM_VERSION into $bin_dir (a few minutes the first time)"
start=$(date +%s)
rm -f "$stamp_file"
if ! CGO_ENABLED=0 GOBIN="$bin_dir" go install -trimpath -ldflags "$ldflags" "$module"; then
  echo "the local $(go version) failed; retrying with GOTOOLCHAIN=$HELM_GOTOOLCHAIN" >&2
  CGO_ENABLED=0 GOBIN="$bin_dir" GOTOOLCHAIN="$HELM_GOTOOLCHAIN" go install -trimpath -ldflags "$ldflags" "$module"
fi
echo "$stamp" > "$stamp_file"
echo "helm $("$helm_bin" version --short) built in $(( $(date +%s) - start ))s at $helm_bin"
