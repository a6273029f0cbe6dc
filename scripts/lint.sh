#!/usr/bin/env bash
# lint.sh: run every linter of the repo; exit non-zero when any of them reports a finding.
#
#   npm run lint
#
#   TypeScript, JavaScript   prettier --check, then eslint (eslint.config.mjs: typescript-eslint, type-aware)
#   npm                      every dependency with an install script is approved or denied in package.json's
#                            allowScripts (npm >= 11.16 warns about the rest; npm 12 will not run them)
#   shell                    shellcheck on every tracked shell script (*.sh, or a sh/bash shebang) and on
#                            the launcher that scripts/install-pulumi.sh writes from a heredoc
#   Go                       gofmt -l, go mod tidy -diff, go vet and go test on scripts/langhost,
#                            the Go module of the Node.js language host that install-pulumi.sh builds
#
# Needs: node_modules (npm ci), shellcheck (Debian package `shellcheck`), Go. go vet and go test
# resolve the Pulumi Go modules through the module cache, which scripts/install-pulumi.sh fills;
# with a cold cache they download them from the Go module proxy. Every linter runs even after one
# has failed, so one run shows all findings.
#
# The language host's Go test runs here rather than in the test tiers: the tiers' runner
# (scripts/test-tiers.js) drives and counts jest only, and this script already needs Go and runs
# wherever the tests do (.ci/run starts it beside the installs). It takes seconds.
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

# --- npm install scripts ---------------------------------------------------------------------
# package.json's allowScripts is the reviewed list (README, "Install scripts"); a dependency that
# gains an install script fails here until someone decides. Needs npm >= 11.16 (Node 24's npm);
# an older npm cannot check, which fails under CI=true and is only said elsewhere.
install_scripts_reviewed() {
	local out
	if ! out=$(npm install-scripts ls --json 2>/dev/null); then
		echo "npm $(npm --version) has no \`npm install-scripts\` (npm >= 11.16): not checked" >&2
		[ -z "${CI:-}" ]
		return
	fi
	# shellcheck disable=SC2016 # JavaScript's template literal, not a shell expansion
	node -e '
		const pending = JSON.parse(require("fs").readFileSync(0, "utf8")).allowScripts ?? [];
		for (const p of pending) console.error(`not in package.json allowScripts: ${p.changes.map((c) => c.key).join(", ")} (npm install-scripts approve|deny ${p.name})`);
		process.exit(pending.length ? 1 : 0);
	' <<<"$out"
}
step "install scripts reviewed (allowScripts)" install_scripts_reviewed

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

LANGHOST=scripts/langhost
gofmt_check() {
	local unformatted
	unformatted=$("$(dirname "$GO")/gofmt" -l "$LANGHOST") || return 1
	[ -z "$unformatted" ] && return 0
	echo "not gofmt-formatted:" >&2
	"$(dirname "$GO")/gofmt" -d "$LANGHOST" >&2
	return 1
}
# Runs `go "$@"` in the language host's module as install-pulumi.sh builds it: its go.mod and
# go.sum as they are (a missing checksum is a finding, not something to fill in), no workspace.
go_langhost() { (cd "$LANGHOST" && GOFLAGS=-mod=readonly GOWORK=off CGO_ENABLED=0 "$GO" "$@"); }
if [ -z "$GO" ]; then
	echo "== Go"
	echo "Go is not installed (see https://go.dev/doc/install)" >&2
	failed+=(go)
else
	step "gofmt -l" gofmt_check
	# go.mod and go.sum say exactly what the sources need (fails, printing the change, when not).
	step "go mod tidy -diff" go_langhost mod tidy -diff
	step "go vet" go_langhost vet ./...
	step "go test" go_langhost test ./...
fi

if [ "${#failed[@]}" -gt 0 ]; then
	printf -v list '%s; ' "${failed[@]}"
	echo "lint: failed: ${list%; }" >&2
	exit 1
fi
echo "lint: all clean"
