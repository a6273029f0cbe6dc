#!/usr/bin/env bash
# lint.sh: run every linter of the repo; exit non-zero when any of them reports a finding.
#
#   npm run lint
#
#   TypeScript, JavaScript   prettier --check, then eslint (eslint.config.mjs: typescript-eslint, type-aware)
#   shell                    shellcheck on every tracked shell script (*.sh, or a sh/bash shebang) and on
#                            the launcher that scripts/install-pulumi.sh writes from a heredoc
#   Go                       gofmt -l and go vet on the language host that scripts/install-pulumi.sh
#                            writes from a heredoc, in a module like the one that script builds it in
#
# Needs: node_modules (npm ci), shellcheck (Debian package `shellcheck`), Go. go vet resolves the
# Pulumi Go modules through the module cache, which scripts/install-pulumi.sh fills; with a cold cache
# it downloads them from the Go module proxy. Every linter runs even after one has failed, so one
# run shows all findings.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

failed=()
# Runs one linter ("$@") under the heading $1 and remembers it when it fails.
step() {
	local name=$1
	shift
	echo "== $name"
	"$@" || failed+=("$name")
}

# The body of the quoted heredoc <<'$2' in file $1, or a failure when there is none (so a renamed
# marker makes the lint fail instead of silently checking nothing).
heredoc() {
	awk -v tag="$2" '$0 ~ "<<\x27" tag "\x27$" { on = 1; next } on && $0 == tag { exit } on { print; n++ } END { exit n == 0 }' "$1"
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/kvmnet-lint.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# --- TypeScript and JavaScript ---------------------------------------------------------------
# The examples import "pulumi-kvmnet", whose types are the built dist/sdk/*.d.ts.
step "build (types for the examples)" npm run --silent build
step "prettier --check" npx --no-install prettier --check --log-level warn "**/*.{ts,js,mjs}"
step "eslint" npx --no-install eslint --max-warnings 0 .

# --- shell -----------------------------------------------------------------------------------
shell_files() {
	git ls-files -z | while IFS= read -r -d '' f; do
		[ -f "$f" ] || continue
		case "$f" in
		*.sh) printf '%s\0' "$f" ;;
		*) head -n 1 -- "$f" | grep -Eq '^#!.*[/ ](ba|da)?sh( |$)' && printf '%s\0' "$f" ;;
		esac
	done
}
shellcheck_all() {
	local files=()
	mapfile -d '' files < <(shell_files)
	[ "${#files[@]}" -gt 0 ] || { echo "no shell scripts found (is this a git checkout?)" >&2; return 1; }
	# The fallback launcher install-pulumi.sh writes when sdk/v3 does not ship one.
	heredoc scripts/install-pulumi.sh SH >"$WORK/pulumi-resource-pulumi-nodejs" || { echo "no <<'SH' heredoc in scripts/install-pulumi.sh" >&2; return 1; }
	echo "${#files[@]} scripts: ${files[*]}, and install-pulumi.sh's <<'SH' launcher"
	shellcheck "${files[@]}" "$WORK/pulumi-resource-pulumi-nodejs"
}
if command -v shellcheck >/dev/null 2>&1; then
	step shellcheck shellcheck_all
else
	echo "== shellcheck"
	echo "shellcheck is not installed (Debian: apt-get install shellcheck)" >&2
	failed+=(shellcheck)
fi

# --- Go --------------------------------------------------------------------------------------
GO=$(command -v go 2>/dev/null || true)
if [ -z "$GO" ] && [ -x /usr/local/go/bin/go ]; then GO=/usr/local/go/bin/go; fi

# The language host's source, in a wrapper module like install-pulumi.sh's: it requires pkg/v3 and
# sdk/v3 at the script's PULUMI_VERSION, repeats pkg/v3's non-local replace directives and takes
# its checksums from both modules' go.sum.
go_module() {
	local version pkg=github.com/pulumi/pulumi/pkg/v3 sdk=github.com/pulumi/pulumi/sdk/v3 json pkg_dir sdk_dir
	version=$(sed -n '/^PULUMI_VERSION=/{s/.*:-\(v[0-9.]*\)}.*/\1/p;q}' scripts/install-pulumi.sh)
	version=${PULUMI_VERSION:-$version}
	case "$version" in v*) ;; *) version="v$version" ;; esac
	[ "$version" != v ] || { echo "no default PULUMI_VERSION in scripts/install-pulumi.sh" >&2; return 1; }
	mkdir -p "$WORK/go/langhost"
	heredoc scripts/install-pulumi.sh GO >"$WORK/go/langhost/main.go" || { echo "no <<'GO' heredoc in scripts/install-pulumi.sh" >&2; return 1; }
	json=$(cd "$WORK" && "$GO" mod download -json "$pkg@$version" "$sdk@$version") || { printf '%s\n' "$json" >&2; return 1; }
	pkg_dir=$(printf '%s\n' "$json" | sed -n 's/^\t"Dir": "\(.*\/pkg\/v3@.*\)",$/\1/p')
	sdk_dir=$(printf '%s\n' "$json" | sed -n 's/^\t"Dir": "\(.*\/sdk\/v3@.*\)",$/\1/p')
	if [ ! -f "$pkg_dir/go.mod" ] || [ ! -f "$sdk_dir/go.mod" ]; then
		echo "could not locate $pkg and $sdk at $version" >&2
		return 1
	fi
	{
		echo "module kvmnet.invalid/pulumi-build"
		echo
		echo "go $(awk '$1 == "go" { print $2; exit }' "$pkg_dir/go.mod")"
		echo
		printf 'require (\n\t%s %s\n\t%s %s\n)\n\n' "$pkg" "$version" "$sdk" "$version"
		awk '
			function keep(line) { if (line !~ /=>[ \t]*(\.\.?\/|\/)/) print "replace " line }
			$1 == "replace" && $2 == "(" { block = 1; next }
			block && $1 == ")" { block = 0; next }
			block && NF && $1 !~ /^\/\// { keep($0); next }
			$1 == "replace" { sub(/^[ \t]*replace[ \t]+/, ""); keep($0) }' "$pkg_dir/go.mod"
	} >"$WORK/go/go.mod"
	# pkg/v3's and sdk/v3's own lines come from the download (pkg/v3 is not in the checksum database).
	{
		cat "$pkg_dir/go.sum" "$sdk_dir/go.sum"
		printf '%s\n' "$json" | awk '
			$1 == "\"Path\":" { p = $2; gsub(/[",]/, "", p) }
			$1 == "\"Version\":" { v = $2; gsub(/[",]/, "", v) }
			$1 == "\"Sum\":" { s = $2; gsub(/[",]/, "", s); print p, v, s }
			$1 == "\"GoModSum\":" { s = $2; gsub(/[",]/, "", s); print p, v "/go.mod", s }'
	} | sort -u >"$WORK/go/go.sum"
}
gofmt_check() {
	local unformatted
	unformatted=$("$(dirname "$GO")/gofmt" -l "$WORK/go/langhost") || return 1
	[ -z "$unformatted" ] && return 0
	echo "not gofmt-formatted (the <<'GO' heredoc in scripts/install-pulumi.sh):" >&2
	"$(dirname "$GO")/gofmt" -d "$WORK/go/langhost" >&2
	return 1
}
go_vet() { (cd "$WORK/go" && GOFLAGS=-mod=mod GOWORK=off CGO_ENABLED=0 GONOSUMDB="${GONOSUMDB:+$GONOSUMDB,}github.com/pulumi/pulumi/pkg/v3" "$GO" vet ./langhost); }
if [ -z "$GO" ]; then
	echo "== Go"
	echo "Go is not installed (see https://go.dev/doc/install)" >&2
	failed+=(go)
elif step "Go module for install-pulumi.sh's language host" go_module; then
	step "gofmt -l" gofmt_check
	step "go vet" go_vet
fi

if [ "${#failed[@]}" -gt 0 ]; then
	printf -v list '%s; ' "${failed[@]}"
	echo "lint: failed: ${list%; }" >&2
	exit 1
fi
echo "lint: all clean"
