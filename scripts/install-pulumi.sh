#!/usr/bin/env bash
# install-pulumi.sh: provide a Pulumi CLI for this repo's tests and examples by
# building it from Go modules (there is no need to download a prebuilt binary).
#
#   PULUMI_BIN=$(scripts/install-pulumi.sh | tail -1)
#   export PATH="$PULUMI_BIN:$PATH"
#
# The last line on stdout is a directory containing
#   pulumi                          the CLI, built from github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
#   pulumi-language-nodejs          a Node.js language host (see the note below)
#   pulumi-resource-pulumi-nodejs   the launcher the engine runs for pulumi.dynamic.Resource providers
# Progress messages go to stderr.
#
# In order, the script uses:
#   1. the cache  ${XDG_CACHE_HOME:-$HOME/.cache}/kvmnet/pulumi/<version>/bin  if it holds a working build;
#   2. a `pulumi` on PATH whose version is >= PULUMI_VERSION and has pulumi-language-nodejs and
#      pulumi-resource-pulumi-nodejs beside it (set KVMNET_PULUMI_IGNORE_PATH=1 to skip this);
#   3. otherwise a build into that cache. A cold build (empty Go module and build caches) takes
#      several minutes on 2 cores. It builds in a temporary directory and renames the result into
#      place, so an interrupted build never leaves a half-filled cache.
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
# host of its own (the Go source is below) against github.com/pulumi/pulumi/sdk/v3 at the same
# version. It does what `pulumi preview/up/refresh/destroy` need from a Node.js program: it runs
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
BIN_DIR="$VERSION_DIR/bin"
TOOLS=(pulumi pulumi-language-nodejs pulumi-resource-pulumi-nodejs)

log() { printf 'install-pulumi: %s\n' "$*" >&2; }
die() {
	log "ERROR: $*"
	log "Alternatively install the Pulumi CLI ($PULUMI_VERSION or newer) as described at" \
		"https://www.pulumi.com/docs/install/ and put it on PATH; this script then uses it."
	exit 1
}

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
SRC="$WORK/src"
OUT="$WORK/bin"
mkdir -p "$SRC/langhost" "$OUT"

export GOFLAGS="-mod=mod"
export GOWORK=off
export CGO_ENABLED=0
# The checksum database has no entry for pkg/v3 at this version; its hash is checked below instead.
export GONOSUMDB="${GONOSUMDB:+$GONOSUMDB,}$PKG_MOD"

started=$(date +%s)
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

cat >"$SRC/langhost/main.go" <<'GO'
// pulumi-language-nodejs: a small Node.js language host for the Pulumi engine, written for
// pulumi-kvmnet's scripts/install-pulumi.sh because the upstream host's Go module is not published.
// It serves the LanguageRuntime gRPC service: Run starts `node @pulumi/pulumi/cmd/run` for the
// program, the way the upstream host does.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	"github.com/pulumi/pulumi/sdk/v3/go/common/version"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Exit code of @pulumi/pulumi/cmd/run after it has already shown the user an actionable message.
const exitedAfterUserActionableMessage = 32

func main() {
	var engineAddress, tracing string
	args := os.Args[1:]
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-tracing" || a == "--tracing":
			if i+1 < len(args) {
				tracing = args[i+1]
				i++
			}
		case strings.HasPrefix(a, "-tracing=") || strings.HasPrefix(a, "--tracing="):
			tracing = a[strings.Index(a, "=")+1:]
		case a == "-root" || a == "--root":
			i++
		case strings.HasPrefix(a, "-"):
			// --logtostderr, -v=N, ...: nothing to do.
		default:
			engineAddress = a
		}
	}

	host := &nodeHost{engineAddress: engineAddress, tracing: tracing}
	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, host)
			return nil
		},
		Options: []grpc.ServerOption{grpc.MaxRecvMsgSize(400 * 1024 * 1024)},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "pulumi-language-nodejs: could not start the gRPC server: %v\n", err)
		os.Exit(1)
	}
	// The engine reads the port from the first line of stdout.
	fmt.Printf("%d\n", handle.Port)
	if err := <-handle.Done; err != nil {
		fmt.Fprintf(os.Stderr, "pulumi-language-nodejs: gRPC server stopped: %v\n", err)
		os.Exit(1)
	}
}

type nodeHost struct {
	pulumirpc.UnimplementedLanguageRuntimeServer
	engineAddress string
	tracing       string
}

// runtimeOptions are the `runtime.options` of Pulumi.yaml that this host understands.
type runtimeOptions struct {
	typescript     bool
	nodeargs       []string
	tsconfig       string
	packagemanager string
}

func optionsOf(info *pulumirpc.ProgramInfo) runtimeOptions {
	o := runtimeOptions{typescript: true}
	if info == nil || info.GetOptions() == nil {
		return o
	}
	m := info.GetOptions().AsMap()
	if v, ok := m["typescript"].(bool); ok {
		o.typescript = v
	}
	if v, ok := m["nodeargs"].(string); ok {
		o.nodeargs = strings.Fields(v)
	}
	if v, ok := m["tsconfig"].(string); ok {
		o.tsconfig = v
	}
	if v, ok := m["packagemanager"].(string); ok {
		o.packagemanager = v
	}
	return o
}

func firstNonEmpty(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

// resolveModule asks node where `require` finds mod when run from dir.
func resolveModule(nodeBin, dir, mod string) (string, error) {
	cmd := exec.Command(nodeBin, "-e", "console.log(require.resolve(process.argv[1]))", mod)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

func (h *nodeHost) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	info := req.GetInfo()
	opts := optionsOf(info)
	pwd := firstNonEmpty(req.GetPwd(), info.GetProgramDirectory())
	if pwd == "" {
		pwd, _ = os.Getwd()
	}
	program := firstNonEmpty(req.GetProgram(), info.GetEntryPoint(), ".")

	nodeBin, err := exec.LookPath("node")
	if err != nil {
		return &pulumirpc.RunResponse{Error: "could not find node on the $PATH: " + err.Error()}, nil
	}
	runPath := os.Getenv("PULUMI_LANGUAGE_NODEJS_RUN_PATH")
	if runPath == "" {
		if runPath, err = resolveModule(nodeBin, pwd, "@pulumi/pulumi/cmd/run"); err != nil || runPath == "" {
			return &pulumirpc.RunResponse{Error: "It looks like the Pulumi SDK has not been installed. " +
				"Have you run npm install or yarn install?"}, nil
		}
	}

	args := append([]string{}, opts.nodeargs...)
	args = append(args, runPath)
	flag := func(k, v string) {
		if v != "" {
			args = append(args, "--"+k, v)
		}
	}
	flag("monitor", req.GetMonitorAddress())
	flag("engine", h.engineAddress)
	flag("organization", req.GetOrganization())
	flag("project", req.GetProject())
	flag("root-directory", info.GetRootDirectory())
	flag("stack", req.GetStack())
	flag("pwd", pwd)
	if req.GetDryRun() {
		args = append(args, "--dry-run")
	}
	if req.GetParallel() > 0 {
		flag("parallel", fmt.Sprint(req.GetParallel()))
	}
	flag("tracing", h.tracing)
	args = append(args, program)
	args = append(args, req.GetArgs()...)

	config := req.GetConfig()
	if config == nil {
		config = map[string]string{}
	}
	configJSON, err := json.Marshal(config)
	if err != nil {
		return nil, err
	}
	secretKeys := req.GetConfigSecretKeys()
	if secretKeys == nil {
		secretKeys = []string{}
	}
	secretKeysJSON, err := json.Marshal(secretKeys)
	if err != nil {
		return nil, err
	}
	env := append(os.Environ(),
		"PULUMI_CONFIG="+string(configJSON),
		"PULUMI_CONFIG_SECRET_KEYS="+string(secretKeysJSON),
		fmt.Sprintf("PULUMI_NODEJS_TYPESCRIPT=%t", opts.typescript),
	)
	if opts.tsconfig != "" {
		env = append(env, "PULUMI_NODEJS_TSCONFIG_PATH="+opts.tsconfig)
	}

	cmd := exec.Command(nodeBin, args...)
	cmd.Dir = pwd
	cmd.Env = env
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			if exitErr.ExitCode() == exitedAfterUserActionableMessage {
				return &pulumirpc.RunResponse{Bail: true}, nil
			}
			return &pulumirpc.RunResponse{
				Error: fmt.Sprintf("Program exited with non-zero exit code: %d", exitErr.ExitCode()),
			}, nil
		}
		return &pulumirpc.RunResponse{Error: "Problem executing program (could not run language executor): " +
			err.Error()}, nil
	}
	return &pulumirpc.RunResponse{}, nil
}

type packageJSON struct {
	Name            string            `json:"name"`
	Version         string            `json:"version"`
	Dependencies    map[string]string `json:"dependencies"`
	DevDependencies map[string]string `json:"devDependencies"`
	Pulumi          struct {
		Resource bool   `json:"resource"`
		Name     string `json:"name"`
		Version  string `json:"version"`
		Server   string `json:"server"`
	} `json:"pulumi"`
}

func readPackageJSON(path string) (*packageJSON, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var p packageJSON
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// nodeModulesDirs lists the node_modules directories visible from dir: its own and its parents'.
func nodeModulesDirs(dir string) []string {
	var dirs []string
	for d := dir; ; d = filepath.Dir(d) {
		if st, err := os.Stat(filepath.Join(d, "node_modules")); err == nil && st.IsDir() {
			dirs = append(dirs, filepath.Join(d, "node_modules"))
		}
		if filepath.Dir(d) == d {
			return dirs
		}
	}
}

// installedPackages maps package name to its package.json, for the packages directly under the
// node_modules directories visible from dir (nearest wins).
func installedPackages(dir string) map[string]*packageJSON {
	pkgs := map[string]*packageJSON{}
	add := func(path string) {
		if p, err := readPackageJSON(path); err == nil && p.Name != "" {
			if _, seen := pkgs[p.Name]; !seen {
				pkgs[p.Name] = p
			}
		}
	}
	for _, nm := range nodeModulesDirs(dir) {
		entries, _ := os.ReadDir(nm)
		for _, e := range entries {
			name := e.Name()
			if strings.HasPrefix(name, ".") {
				continue
			}
			if strings.HasPrefix(name, "@") {
				scoped, _ := os.ReadDir(filepath.Join(nm, name))
				for _, s := range scoped {
					add(filepath.Join(nm, name, s.Name(), "package.json"))
				}
				continue
			}
			add(filepath.Join(nm, name, "package.json"))
		}
	}
	return pkgs
}

func programDir(info *pulumirpc.ProgramInfo, pwd, program string) string {
	if d := info.GetProgramDirectory(); d != "" {
		return d
	}
	return firstNonEmpty(pwd, program, ".")
}

// GetRequiredPlugins reports the resource plugins that installed packages declare through
// `"pulumi": {"resource": true}` in their package.json, as the upstream host does.
func (h *nodeHost) GetRequiredPlugins(ctx context.Context,
	req *pulumirpc.GetRequiredPluginsRequest,
) (*pulumirpc.GetRequiredPluginsResponse, error) {
	pkgs := installedPackages(programDir(req.GetInfo(), req.GetPwd(), req.GetProgram()))
	names := make([]string, 0, len(pkgs))
	for n := range pkgs {
		names = append(names, n)
	}
	sort.Strings(names)
	var plugins []*pulumirpc.PluginDependency
	for _, n := range names {
		p := pkgs[n]
		if !p.Pulumi.Resource {
			continue
		}
		name := p.Pulumi.Name
		if name == "" {
			name = strings.TrimPrefix(strings.TrimPrefix(p.Name, "@pulumi/"), "@")
		}
		v := firstNonEmpty(p.Pulumi.Version, p.Version)
		if v == "" {
			continue
		}
		if !strings.HasPrefix(v, "v") {
			v = "v" + v
		}
		plugins = append(plugins, &pulumirpc.PluginDependency{
			Name: name, Kind: "resource", Version: v, Server: p.Pulumi.Server,
		})
	}
	return &pulumirpc.GetRequiredPluginsResponse{Plugins: plugins}, nil
}

func (h *nodeHost) GetPluginInfo(ctx context.Context, req *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version.Version}, nil
}

// streamWriter forwards a command's output to an InstallDependencies stream.
type streamWriter struct {
	mu     *sync.Mutex
	send   func(*pulumirpc.InstallDependenciesResponse) error
	stderr bool
}

func (w streamWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	b := bytes.Clone(p)
	resp := &pulumirpc.InstallDependenciesResponse{Stdout: b}
	if w.stderr {
		resp = &pulumirpc.InstallDependenciesResponse{Stderr: b}
	}
	if err := w.send(resp); err != nil {
		return 0, err
	}
	return len(p), nil
}

// InstallDependencies runs `<package manager> install` in the program directory.
func (h *nodeHost) InstallDependencies(req *pulumirpc.InstallDependenciesRequest,
	server grpc.ServerStreamingServer[pulumirpc.InstallDependenciesResponse],
) error {
	dir := firstNonEmpty(req.GetDirectory(), req.GetInfo().GetProgramDirectory(), ".")
	pm := optionsOf(req.GetInfo()).packagemanager
	if pm == "" {
		pm = "npm"
		for lock, tool := range map[string]string{"yarn.lock": "yarn", "pnpm-lock.yaml": "pnpm", "bun.lockb": "bun"} {
			if _, err := os.Stat(filepath.Join(dir, lock)); err == nil {
				pm = tool
			}
		}
	}
	bin, err := exec.LookPath(pm)
	if err != nil {
		return fmt.Errorf("could not find %s on the $PATH: %w", pm, err)
	}
	mu := &sync.Mutex{}
	cmd := exec.Command(bin, "install")
	cmd.Dir = dir
	cmd.Stdout = streamWriter{mu: mu, send: server.Send}
	cmd.Stderr = streamWriter{mu: mu, send: server.Send, stderr: true}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s install failed: %w", pm, err)
	}
	return nil
}

func (h *nodeHost) About(ctx context.Context, req *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		return nil, fmt.Errorf("could not find node on the $PATH: %w", err)
	}
	out, err := exec.Command(nodeBin, "--version").Output()
	if err != nil {
		return nil, fmt.Errorf("running node --version: %w", err)
	}
	return &pulumirpc.AboutResponse{
		Executable: nodeBin,
		Version:    strings.TrimPrefix(strings.TrimSpace(string(out)), "v"),
	}, nil
}

// GetProgramDependencies lists the installed versions of the program's package.json dependencies.
func (h *nodeHost) GetProgramDependencies(ctx context.Context,
	req *pulumirpc.GetProgramDependenciesRequest,
) (*pulumirpc.GetProgramDependenciesResponse, error) {
	dir := programDir(req.GetInfo(), req.GetPwd(), req.GetProgram())
	manifest, err := readPackageJSON(filepath.Join(dir, "package.json"))
	if err != nil {
		return nil, fmt.Errorf("reading package.json: %w", err)
	}
	installed := installedPackages(dir)
	wanted := map[string]bool{}
	for n := range manifest.Dependencies {
		wanted[n] = true
	}
	for n := range manifest.DevDependencies {
		wanted[n] = true
	}
	if req.GetTransitiveDependencies() {
		for n := range installed {
			wanted[n] = true
		}
	}
	names := make([]string, 0, len(wanted))
	for n := range wanted {
		names = append(names, n)
	}
	sort.Strings(names)
	var deps []*pulumirpc.DependencyInfo
	for _, n := range names {
		if p, ok := installed[n]; ok {
			deps = append(deps, &pulumirpc.DependencyInfo{Name: n, Version: p.Version})
		}
	}
	return &pulumirpc.GetProgramDependenciesResponse{Dependencies: deps}, nil
}
GO

LDFLAGS="-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$PULUMI_VERSION"
log "compiling pulumi (the long step)"
cd "$SRC"
run "$GO" build -trimpath -ldflags "$LDFLAGS" -o "$OUT/pulumi" "$PKG_MOD/cmd/pulumi" ||
	die "building the Pulumi CLI $PULUMI_VERSION failed (Go output above)."
log "compiling pulumi-language-nodejs"
run "$GO" build -trimpath -ldflags "$LDFLAGS" -o "$OUT/pulumi-language-nodejs" ./langhost ||
	die "building pulumi-language-nodejs $PULUMI_VERSION failed (Go output above)."
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
