#!/usr/bin/env bash
# install-pulumi.sh: provide a Pulumi CLI for this repo's tests and examples by
# building it from Go modules (there is no need to download a prebuilt binary).
#
#   PULUMI_BIN=$(scripts/install-pulumi.sh | tail -1)
#   export PATH="$PULUMI_BIN:$PATH"
#
# The last line on stdout is a directory containing
#   pulumi                          the CLI, built from github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
#   pulumi-language-nodejs          a Node.js language host, built from scripts/langhost (see the note below)
#   pulumi-resource-pulumi-nodejs   the launcher the engine runs for pulumi.dynamic.Resource providers
# Progress messages go to stderr.
#
# In order, the script uses:
#   1. the cache  ${XDG_CACHE_HOME:-$HOME/.cache}/kvmnet/pulumi/<version>/bin-<langhost key>  if it
#      holds a working build; the key is a hash of scripts/langhost's go.mod, go.sum and non-test
#      .go files, so an edit of the language host makes the next run build it again;
#   2. a `pulumi` on PATH whose version is >= PULUMI_VERSION and has pulumi-language-nodejs and
#      pulumi-resource-pulumi-nodejs beside it (set KVMNET_PULUMI_IGNORE_PATH=1 to skip this);
#   3. otherwise a build into that cache. A cold build (empty Go module and build caches) takes
#      several minutes on 2 cores. When another bin-* directory of the same version (or the bin
#      directory of earlier versions of this script) holds a pulumi of that version, the build
#      hard-links it and compiles only the language host (seconds once Go's build cache holds its
#      dependencies, about a minute before). It builds in a temporary directory and renames the
#      result into place, so an interrupted build never leaves a half-filled cache. Directories
#      for older language host keys stay (other checkouts may use them); delete the cache to
#      reclaim them.
#
# Environment:
#   PULUMI_VERSION              CLI version to build (default below; keep it equal to the
#                               @pulumi/pulumi version pinned in package.json)
#   KVMNET_PULUMI_IGNORE_PATH=1 ignore any pulumi already on PATH
#   XDG_CACHE_HOME              cache root (default $HOME/.cache)
# Go's own module cache and build cache (GOMODCACHE, GOCACHE) are used as they are, so they are
# shared with other Go builds on the machine.
#
# A note on pulumi-language-nodejs: upstream keeps its source in its own Go module
# (github.com/pulumi/pulumi/sdk/nodejs/cmd/pulumi-language-nodejs/v3), which has no tagged
# releases, so the Go module proxy cannot serve it. This script therefore builds a small language
# host of this repo's own, the Go module in scripts/langhost (with its own go.mod, go.sum and
# tests), against github.com/pulumi/pulumi/sdk/v3 at the same version. It does what
# `pulumi preview/up/refresh/destroy` need from a Node.js program: it runs
# @pulumi/pulumi/cmd/run (JavaScript, or TypeScript through the ts-node and typescript that
# @pulumi/pulumi bundles), passes config and secrets, lists provider plugins from node_modules,
# and supports `pulumi install` and `pulumi about`. It does not support policy packs, Node.js
# plugins run by the engine (RunPlugin), `pulumi new` templates, code generation or debugging.
set -euo pipefail

PULUMI_VERSION="${PULUMI_VERSION:-v3.276.0}"
case "$PULUMI_VERSION" in v*) ;; *) PULUMI_VERSION="v$PULUMI_VERSION" ;; esac

# h1: hash of github.com/pulumi/pulumi/pkg/v3 at the default version, as served by the Go module
# proxy. The checksum database does not list this module version, so without this pin the download
# would only be trusted because it came from the proxy.
PINNED_PKG_VERSION="v3.276.0"
PINNED_PKG_SUM="h1:RKovVWNh+H8qnmbv88QZWirM/HmfBqR28rbnRN3n6FA="

PKG_MOD="github.com/pulumi/pulumi/pkg/v3"
SDK_MOD="github.com/pulumi/pulumi/sdk/v3"
CACHE_ROOT="${XDG_CACHE_HOME:-${HOME:?HOME is not set}/.cache}/kvmnet/pulumi"
VERSION_DIR="$CACHE_ROOT/$PULUMI_VERSION"
LANGHOST_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/langhost"
TOOLS=(pulumi pulumi-language-nodejs pulumi-resource-pulumi-nodejs)

log() { printf 'install-pulumi: %s\n' "$*" >&2; }
die() {
	log "ERROR: $*"
	log "Alternatively install the Pulumi CLI ($PULUMI_VERSION or newer) as described at" \
		"https://www.pulumi.com/docs/install/ and put it on PATH; this script then uses it."
	exit 1
}

[ -f "$LANGHOST_DIR/go.mod" ] || die "the language host's Go module is missing: $LANGHOST_DIR/go.mod"
# The sdk/v3 version the language host's go.mod requires.
LANGHOST_SDK_VERSION=$(awk -v mod="$SDK_MOD" '$1 == mod { print $2; exit } $1 == "require" && $2 == mod { print $3; exit }' "$LANGHOST_DIR/go.mod")
# The cache key of the language host: a hash of the files its binary is built from (by name and
# content; its tests are no part of it), so that editing them makes the next run build it again.
LANGHOST_KEY=$(cd "$LANGHOST_DIR" && find . -type f \( -name go.mod -o -name go.sum -o \( -name '*.go' ! -name '*_test.go' \) \) -print0 |
	LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
BIN_DIR="$VERSION_DIR/bin-$LANGHOST_KEY"

# Prints the version `$1 version` reports, or nothing.
tool_version() { "$1" version 2>/dev/null | head -n 1 | tr -d '[:space:]' || true; }

# True when the version $1 is at least $2 (both with or without a leading v).
version_ge() {
	local a="${1#v}" b="${2#v}"
	[ "$(printf '%s\n%s\n' "$a" "$b" | sort -V | head -n 1)" = "$b" ]
}

# True when directory $1 holds all tools and its pulumi reports exactly $PULUMI_VERSION.
dir_complete() {
	local t
	for t in "${TOOLS[@]}"; do [ -x "$1/$t" ] || return 1; done
}
cache_ok() {
	dir_complete "$BIN_DIR" && [ "$(tool_version "$BIN_DIR/pulumi")" = "$PULUMI_VERSION" ]
}

# --- 1. cache ---------------------------------------------------------------------------------
if cache_ok; then
	log "using cached Pulumi CLI $PULUMI_VERSION"
	echo "$BIN_DIR"
	exit 0
fi

# --- 2. a pulumi on PATH ----------------------------------------------------------------------
if [ "${KVMNET_PULUMI_IGNORE_PATH:-}" != 1 ] && found=$(command -v pulumi 2>/dev/null) && [ -n "$found" ]; then
	found_version=$(tool_version "$found")
	if [ -n "$found_version" ] && version_ge "$found_version" "$PULUMI_VERSION"; then
		# The language host lives beside the real binary, which may sit behind a symlink.
		for dir in "$(dirname "$found")" "$(dirname "$(readlink -f "$found")")"; do
			if dir_complete "$dir"; then
				log "using Pulumi CLI $found_version from $dir"
				echo "$dir"
				exit 0
			fi
		done
		log "ignoring $found ($found_version): pulumi-language-nodejs or pulumi-resource-pulumi-nodejs is missing beside it"
	elif [ -n "$found_version" ]; then
		log "ignoring $found: version $found_version is older than $PULUMI_VERSION"
	fi
fi

# --- 3. build ---------------------------------------------------------------------------------
GO=$(command -v go 2>/dev/null || true)
if [ -z "$GO" ] && [ -x /usr/local/go/bin/go ]; then GO=/usr/local/go/bin/go; fi
[ -n "$GO" ] || die "Go is not installed (it is needed to build the Pulumi CLI $PULUMI_VERSION; see https://go.dev/doc/install)."

mkdir -p "$CACHE_ROOT"
# One build at a time; a second caller waits and then finds the cache filled.
if command -v flock >/dev/null 2>&1; then
	exec 9>"$CACHE_ROOT/.lock"
	if ! flock -n 9; then
		log "another install-pulumi.sh is building; waiting for it"
		flock 9
	fi
	if cache_ok; then
		log "using cached Pulumi CLI $PULUMI_VERSION"
		echo "$BIN_DIR"
		exit 0
	fi
	# Holding the lock, any build directory left behind belongs to a build that was killed.
	rm -rf "$CACHE_ROOT"/.build-*
fi

WORK=$(mktemp -d "$CACHE_ROOT/.build-$PULUMI_VERSION.XXXXXX")
# On a signal, stop the running go command and remove the work directory.
child=""
on_signal() {
	if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null || true; wait "$child" 2>/dev/null || true; fi
	exit "$1"
}
trap 'rm -rf "$WORK"' EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM
trap 'on_signal 129' HUP
# Runs a command in the background and waits for it, so that signals are handled at once.
run() {
	"$@" >&2 &
	child=$!
	local rc=0
	wait "$child" || rc=$?
	child=""
	return "$rc"
}
OUT="$WORK/bin"
mkdir -p "$OUT"

# The builds set their own flags; a GOFLAGS of the caller's is no part of them.
export GOFLAGS=""
export GOWORK=off
export CGO_ENABLED=0
LDFLAGS="-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$PULUMI_VERSION"

# A directory of this cache whose pulumi (and launcher) this build can take instead of compiling
# them: one built for other language host sources, or by an earlier version of this script, which
# kept its build in $VERSION_DIR/bin.
reusable_cli() {
	local dir
	for dir in "$VERSION_DIR"/bin "$VERSION_DIR"/bin-*; do
		[ "$dir" != "$BIN_DIR" ] && dir_complete "$dir" && [ "$(tool_version "$dir/pulumi")" = "$PULUMI_VERSION" ] && echo "$dir" && return 0
	done
	return 1
}
# Hard links (copies on another file system) of directory $1's pulumi and launcher in $OUT. On a
# failure it removes what it linked: the build that follows writes into these paths, and writing
# through a hard link would change the other directory's file.
take_cli() {
	local t
	for t in pulumi pulumi-resource-pulumi-nodejs; do
		ln "$1/$t" "$OUT/$t" 2>/dev/null || cp "$1/$t" "$OUT/$t" || {
			rm -f "$OUT/pulumi" "$OUT/pulumi-resource-pulumi-nodejs"
			return 1
		}
	done
}

# Builds pulumi and the launcher into $OUT, in a wrapper module that requires pkg/v3 and sdk/v3.
build_cli() {
	local SRC="$WORK/src"
	mkdir -p "$SRC"
	local -x GOFLAGS="-mod=mod"
	# The checksum database has no entry for pkg/v3 at this version; its hash is checked below instead.
	local -x GONOSUMDB="${GONOSUMDB:+$GONOSUMDB,}$PKG_MOD"
	log "building Pulumi CLI $PULUMI_VERSION from Go modules with $("$GO" version | cut -d' ' -f3) ($(nproc 2>/dev/null || echo '?') cores)."
	log "The first build takes several minutes (7-8 minutes on 2 cores with empty Go caches, under a minute with warm ones); later runs reuse $BIN_DIR."

	# Fetch both modules to read their go.mod/go.sum (and check pkg/v3 against the pin).
	log "downloading $PKG_MOD@$PULUMI_VERSION and $SDK_MOD@$PULUMI_VERSION"
	dl_json=$(cd "$WORK" && "$GO" mod download -json "$PKG_MOD@$PULUMI_VERSION" "$SDK_MOD@$PULUMI_VERSION") ||
		die "could not download the Pulumi Go modules at $PULUMI_VERSION: $(printf '%s\n' "$dl_json" | grep '"Error"' | head -n 2)"

	# Pull a field of one module out of `go mod download -json` output (concatenated JSON objects).
	mod_field() {
		printf '%s\n' "$dl_json" | awk -v mod="$1" -v field="$2" '
			/^{/ { cur = "" }
			$1 == "\"Path\":" { p = $2; gsub(/[",]/, "", p); cur = p }
			cur == mod && $1 == "\"" field "\":" { v = $0; sub(/^[^:]*: *"/, "", v); sub(/",? *$/, "", v); print v; exit }'
	}
	PKG_DIR=$(mod_field "$PKG_MOD" Dir)
	SDK_DIR=$(mod_field "$SDK_MOD" Dir)
	PKG_SUM=$(mod_field "$PKG_MOD" Sum)
	if [ -z "$PKG_DIR" ] || [ ! -f "$PKG_DIR/go.mod" ] || [ -z "$SDK_DIR" ] || [ ! -f "$SDK_DIR/go.mod" ]; then
		die "could not locate the downloaded Pulumi Go modules"
	fi
	if [ "$PULUMI_VERSION" = "$PINNED_PKG_VERSION" ] && [ "$PKG_SUM" != "$PINNED_PKG_SUM" ]; then
		die "$PKG_MOD@$PULUMI_VERSION has hash $PKG_SUM, expected $PINNED_PKG_SUM"
	fi

	# Wrapper module: requires pkg/v3 and sdk/v3 at the same version and repeats pkg/v3's replace
	# directives except the local ones (its go.mod points sdk/v3 at ../sdk inside the pulumi repo).
	go_directive=$(awk '$1 == "go" { print $2; exit }' "$PKG_DIR/go.mod")
	replaces=$(awk '
		function keep(line) { if (line !~ /=>[ \t]*(\.\.?\/|\/)/) print "replace " line }
		$1 == "replace" && $2 == "(" { block = 1; next }
		block && $1 == ")" { block = 0; next }
		block && NF && $1 !~ /^\/\// { keep($0); next }
		$1 == "replace" { sub(/^[ \t]*replace[ \t]+/, ""); keep($0) }' "$PKG_DIR/go.mod")
	{
		echo "module kvmnet.invalid/pulumi-build"
		echo
		echo "go ${go_directive:-1.25}"
		echo
		echo "require ("
		echo "	$PKG_MOD $PULUMI_VERSION"
		echo "	$SDK_MOD $PULUMI_VERSION"
		echo ")"
		echo
		printf '%s\n' "$replaces"
	} >"$SRC/go.mod"
	# Checksums: pkg/v3's and sdk/v3's go.sum cover the dependency graph pulumi itself builds with.
	{
		cat "$PKG_DIR/go.sum" "$SDK_DIR/go.sum"
		echo "$PKG_MOD $PULUMI_VERSION $PKG_SUM"
		echo "$PKG_MOD $PULUMI_VERSION/go.mod $(mod_field "$PKG_MOD" GoModSum)"
		echo "$SDK_MOD $PULUMI_VERSION $(mod_field "$SDK_MOD" Sum)"
		echo "$SDK_MOD $PULUMI_VERSION/go.mod $(mod_field "$SDK_MOD" GoModSum)"
	} | sort -u >"$SRC/go.sum"
	[ -z "$replaces" ] || log "replace directives from $PKG_MOD: $(printf '%s; ' "$replaces")"

	log "compiling pulumi (the long step)"
	cd "$SRC"
	run "$GO" build -trimpath -ldflags "$LDFLAGS" -o "$OUT/pulumi" "$PKG_MOD/cmd/pulumi" ||
		die "building the Pulumi CLI $PULUMI_VERSION failed (Go output above)."
	cd /

	# The dynamic-provider launcher: upstream ships it in sdk/v3 (nodejs/dist) and in its release
	# archives. It resolves @pulumi/pulumi/cmd/dynamic-provider from the working directory, which the
	# engine sets to the program's directory, so the program's own @pulumi/pulumi serves its providers.
	launcher_src="$SDK_DIR/nodejs/dist/pulumi-resource-pulumi-nodejs"
	if [ -f "$launcher_src" ]; then
		cp "$launcher_src" "$OUT/pulumi-resource-pulumi-nodejs"
	else
		cat >"$OUT/pulumi-resource-pulumi-nodejs" <<'SH'
#!/bin/sh
PULUMI_DYNAMIC_PROVIDER_SCRIPT_PATH=$(node -e "console.log(require.resolve('@pulumi/pulumi/cmd/dynamic-provider'))")
if [ -n "$PULUMI_DYNAMIC_PROVIDER_SCRIPT_PATH" ]; then
    node "$PULUMI_DYNAMIC_PROVIDER_SCRIPT_PATH" "$@"
fi
SH
	fi
}

# Builds pulumi-language-nodejs from scripts/langhost into $OUT: as its go.mod and go.sum say when
# PULUMI_VERSION is the sdk/v3 version they require, or else against sdk/v3 at PULUMI_VERSION, in
# a copy whose go.mod requires only that (go mod tidy resolves the rest and checks it against the
# checksum database).
build_langhost() {
	local dir="$LANGHOST_DIR"
	if [ "$PULUMI_VERSION" != "$LANGHOST_SDK_VERSION" ]; then
		log "building pulumi-language-nodejs against $SDK_MOD@$PULUMI_VERSION (scripts/langhost/go.mod requires $LANGHOST_SDK_VERSION)"
		dir="$WORK/langhost"
		mkdir -p "$dir"
		cp "$LANGHOST_DIR"/*.go "$dir/"
		rm -f "$dir"/*_test.go
		printf 'module %s\n\ngo %s\n\nrequire %s %s\n' "$(awk '$1 == "module" { print $2; exit }' "$LANGHOST_DIR/go.mod")" \
			"$(awk '$1 == "go" { print $2; exit }' "$LANGHOST_DIR/go.mod")" "$SDK_MOD" "$PULUMI_VERSION" >"$dir/go.mod"
		cd "$dir"
		run "$GO" mod tidy || die "resolving pulumi-language-nodejs's modules with $SDK_MOD@$PULUMI_VERSION failed (Go output above)."
	fi
	log "compiling pulumi-language-nodejs"
	cd "$dir"
	# -mod=readonly: go.mod and go.sum say what is built. -buildvcs=false: the sources sit in a git
	# checkout, whose state is no part of the binary.
	run "$GO" build -mod=readonly -buildvcs=false -trimpath -ldflags "$LDFLAGS" -o "$OUT/pulumi-language-nodejs" . ||
		die "building pulumi-language-nodejs $PULUMI_VERSION failed (Go output above)."
	cd /
}

started=$(date +%s)
if cli_dir=$(reusable_cli) && take_cli "$cli_dir"; then
	log "taking pulumi $PULUMI_VERSION from $cli_dir; only pulumi-language-nodejs (scripts/langhost) is built"
else
	build_cli
fi
build_langhost
chmod 755 "$OUT"/*

built_version=$(tool_version "$OUT/pulumi")
[ "$built_version" = "$PULUMI_VERSION" ] ||
	die "the built pulumi reports version '$built_version', expected $PULUMI_VERSION."

# Publish with a rename, so the cache holds either nothing or a complete build.
mkdir -p "$VERSION_DIR"
if [ -e "$BIN_DIR" ]; then mv "$BIN_DIR" "$WORK/stale-bin"; fi
mv "$OUT" "$BIN_DIR"
log "built Pulumi CLI $PULUMI_VERSION in $(($(date +%s) - started)) s into $BIN_DIR"
echo "$BIN_DIR"
