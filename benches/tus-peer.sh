#!/usr/bin/env bash
# Starts @tus/server (file store) for `spool load ... --protocol tus`.
#
#   bash benches/tus-peer.sh [PORT] [DIR]     # then, in another shell:
#   spool load realistic --protocol tus --server http://127.0.0.1:1080/files ...
#
# Needs Node 18+ and npm (the packages are installed into a scratch directory).
set -euo pipefail
port="${1:-1080}"
dir="${2:-$(mktemp -d)/files}"
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$here/tus-peer.mjs" "$work/"
(cd "$work" && npm init -y >/dev/null && npm install --silent --no-audit --no-fund @tus/server@2 @tus/file-store@2 >/dev/null)
mkdir -p "$dir"
cd "$work" && exec node tus-peer.mjs "$port" "$dir"
