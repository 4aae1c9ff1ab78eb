#!/usr/bin/env bash
# Builds tools/bin/ferretdb: FerretDB v1.24.2 (SQLite backend) embedded in main.go, from a vendored
# copy of its module with pushdown.patch applied (README.md beside this file says what and why).
# The one build procedure: the Makefile's `ferretdb` target and app/devdb.py both run it.
#
#   tools/ferretdb/build.sh              -> tools/bin/ferretdb             (patched)
#   tools/ferretdb/build.sh --unpatched  -> tools/bin/ferretdb-unpatched   (FerretDB as released;
#                                           for benchmarks' "before" column)
#
# Needs Go and the Go module proxy only (plus `patch`, or git). Idempotent: every run vendors
# afresh into tools/ferretdb/vendor (git-ignored) and applies the patch again; it fails if the
# patch does not apply cleanly. The local Go is tried first, then the toolchain FerretDB was
# released with (DESIGN.md §3), which the module proxy serves.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="$here/../bin"
toolchain=go1.24.3
module=github.com/FerretDB/FerretDB
patchfile="$here/pushdown.patch"

case "${1:-}" in
  "") unpatched=0 ;;
  --unpatched) unpatched=1 ;;
  *) echo "usage: $0 [--unpatched]" >&2; exit 2 ;;
esac

cd "$here"
mkdir -p "$bin"
export CGO_ENABLED=0

# Run a go command with the local Go, then again with the release's toolchain if that fails.
go_() {
  go "$@" || { echo "build.sh: 'go $*' failed with the local Go ($(go version 2>/dev/null || echo 'no go version')); retrying with GOTOOLCHAIN=$toolchain" >&2
               GOTOOLCHAIN=$toolchain go "$@"; }
}

if [ "$unpatched" = 1 ]; then
  # Straight from the module cache: -mod=mod ignores the (patched) vendor directory.
  go_ build -mod=mod -o "$bin/ferretdb-unpatched" .
  echo "build.sh: built $bin/ferretdb-unpatched (FerretDB as released, no patch)"
  exit 0
fi

# Vendor afresh, then patch the vendored FerretDB module.
rm -rf vendor
go_ mod vendor
dir="vendor/$module"
[ -d "$dir/internal/backends/sqlite" ] || { echo "build.sh: $dir/internal/backends/sqlite is missing after go mod vendor" >&2; exit 1; }
if command -v patch >/dev/null 2>&1; then
  patch --batch --forward --fuzz=0 -p1 -d "$dir" <"$patchfile" || {
    echo "build.sh: $patchfile does not apply to the vendored $module" >&2; exit 1; }
else
  # git apply outside any repository (vendor/ sits in ours, but is ignored).
  (cd "$dir" && GIT_CEILING_DIRECTORIES="$PWD/.." git apply -p1 --unsafe-paths --verbose) <"$patchfile" || {
    echo "build.sh: $patchfile does not apply to the vendored $module" >&2; exit 1; }
fi
# Leave no .orig/.rej files behind to be compiled or confused with sources.
find "$dir" \( -name '*.orig' -o -name '*.rej' \) -delete

go_ build -mod=vendor -o "$bin/ferretdb" .
echo "build.sh: built $bin/ferretdb (FerretDB with $(basename "$patchfile"))"
