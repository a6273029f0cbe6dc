package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"

	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
)

// Exit code of @pulumi/pulumi/cmd/run after it has already shown the user an actionable message.
const exitedAfterUserActionableMessage = 32

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

	args := h.runArgs(req, opts, runPath, pwd, program)
	env, err := runEnv(os.Environ(), req, opts)
	if err != nil {
		return nil, err
	}

	cmd := exec.Command(nodeBin, args...)
	cmd.Dir = pwd
	cmd.Env = env
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	return runResponse(cmd.Run()), nil
}

// runArgs is node's argument list for running the program: the `nodeargs` runtime option, then
// @pulumi/pulumi/cmd/run (at runPath) with the flags it reads, the program and its arguments.
func (h *nodeHost) runArgs(req *pulumirpc.RunRequest, opts runtimeOptions, runPath, pwd, program string) []string {
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
	flag("root-directory", req.GetInfo().GetRootDirectory())
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
	return append(args, req.GetArgs()...)
}

// runEnv is the program's environment: base, then the stack's config and the names of its secret
// keys as JSON (never null), whether to compile TypeScript, and the tsconfig runtime option.
func runEnv(base []string, req *pulumirpc.RunRequest, opts runtimeOptions) ([]string, error) {
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
	env := append(base,
		"PULUMI_CONFIG="+string(configJSON),
		"PULUMI_CONFIG_SECRET_KEYS="+string(secretKeysJSON),
		fmt.Sprintf("PULUMI_NODEJS_TYPESCRIPT=%t", opts.typescript),
	)
	if opts.tsconfig != "" {
		env = append(env, "PULUMI_NODEJS_TSCONFIG_PATH="+opts.tsconfig)
	}
	return env, nil
}

// runResponse tells the engine how the program's node process ended (err from exec.Cmd.Run):
// success, a bail when the program has already shown its error to the user, or an error.
func runResponse(err error) *pulumirpc.RunResponse {
	if err == nil {
		return &pulumirpc.RunResponse{}
	}
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		if exitErr.ExitCode() == exitedAfterUserActionableMessage {
			return &pulumirpc.RunResponse{Bail: true}
		}
		return &pulumirpc.RunResponse{
			Error: fmt.Sprintf("Program exited with non-zero exit code: %d", exitErr.ExitCode()),
		}
	}
	return &pulumirpc.RunResponse{Error: "Problem executing program (could not run language executor): " +
		err.Error()}
}
