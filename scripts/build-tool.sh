#!/usr/bin/env bash
# build-tool.sh OUT TOOLDIR MODULE VERSION PACKAGE
#
# Builds PACKAGE from the tool module in TOOLDIR into OUT, unless OUT already
# embeds MODULE at VERSION (read with `go version -m`). Tool modules are kept
# out of go.work, so they build with GOWORK=off against their own go.sum.
set -euo pipefail
out=$1 dir=$2 module=$3 version=$4 pkg=$5

if [ -x "$out" ] && go version -m "$out" 2>/dev/null | grep -Eq "^\s+(mod|dep)\s+$module\s+$version(\s|$)"; then
  exit 0
fi
echo "building $(basename "$out") $version from $dir (takes a few minutes, once)"
mkdir -p "$(dirname "$out")"
cd "$dir"
GOWORK=off go build -trimpath -o "$out.tmp" "$pkg"
mv "$out.tmp" "$out"
