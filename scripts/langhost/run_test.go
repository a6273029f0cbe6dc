package main

import (
	"os/exec"
	"reflect"
	"testing"

	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/protobuf/types/known/structpb"
)

// programInfo is a ProgramInfo whose Pulumi.yaml `runtime.options` are opts.
func programInfo(t *testing.T, opts map[string]any) *pulumirpc.ProgramInfo {
	t.Helper()
	s, err := structpb.NewStruct(opts)
	if err != nil {
		t.Fatal(err)
	}
	return &pulumirpc.ProgramInfo{Options: s}
}

// wantStrings fails the test when got, the result of what, is not want.
func wantStrings(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s =\n  %q\nwant\n  %q", what, got, want)
	}
}

func TestOptionsOf(t *testing.T) {
	tests := []struct {
		name string
		info *pulumirpc.ProgramInfo
		want runtimeOptions
	}{
		{"no program info: TypeScript on", nil, runtimeOptions{typescript: true}},
		{"no options: TypeScript on", &pulumirpc.ProgramInfo{}, runtimeOptions{typescript: true}},
		{"every option", programInfo(t, map[string]any{
			"typescript":     false,
			"nodeargs":       " --enable-source-maps   --max-old-space-size=4096 ",
			"tsconfig":       "tsconfig.build.json",
			"packagemanager": "pnpm",
		}), runtimeOptions{
			typescript:     false,
			nodeargs:       []string{"--enable-source-maps", "--max-old-space-size=4096"},
			tsconfig:       "tsconfig.build.json",
			packagemanager: "pnpm",
		}},
		{"values of the wrong type are ignored", programInfo(t, map[string]any{
			"typescript": "false",
			"nodeargs":   []any{"--inspect"},
			"tsconfig":   1,
		}), runtimeOptions{typescript: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := optionsOf(tt.info); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("optionsOf() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestRunArgs(t *testing.T) {
	tests := []struct {
		name string
		host nodeHost
		req  *pulumirpc.RunRequest
		opts runtimeOptions
		want []string
	}{
		{
			name: "only what is set becomes a flag",
			req:  &pulumirpc.RunRequest{},
			want: []string{"/run.js", "--pwd", "/prog", "."},
		},
		{
			name: "every field, in the order cmd/run is given them",
			host: nodeHost{engineAddress: "127.0.0.1:1", tracing: "file:///t.json"},
			req: &pulumirpc.RunRequest{
				MonitorAddress: "127.0.0.1:2",
				Organization:   "org",
				Project:        "quickstart",
				Stack:          "dev",
				DryRun:         true,
				Parallel:       16,
				Args:           []string{"a", "b"},
				Info:           &pulumirpc.ProgramInfo{RootDirectory: "/root-dir"},
			},
			opts: runtimeOptions{nodeargs: []string{"--enable-source-maps"}},
			want: []string{
				"--enable-source-maps", "/run.js",
				"--monitor", "127.0.0.1:2", "--engine", "127.0.0.1:1", "--organization", "org", "--project", "quickstart",
				"--root-directory", "/root-dir", "--stack", "dev", "--pwd", "/prog", "--dry-run", "--parallel", "16",
				"--tracing", "file:///t.json", ".", "a", "b",
			},
		},
		{
			name: "no --parallel when it is not positive",
			req:  &pulumirpc.RunRequest{Parallel: -1},
			want: []string{"/run.js", "--pwd", "/prog", "."},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantStrings(t, "runArgs()", tt.host.runArgs(tt.req, tt.opts, "/run.js", "/prog", "."), tt.want)
		})
	}
}

func TestRunEnv(t *testing.T) {
	tests := []struct {
		name string
		req  *pulumirpc.RunRequest
		opts runtimeOptions
		want []string
	}{
		{
			name: "no config is {} and no secret keys is [], never null",
			req:  &pulumirpc.RunRequest{},
			opts: runtimeOptions{typescript: true},
			want: []string{"HOME=/h", "PULUMI_CONFIG={}", "PULUMI_CONFIG_SECRET_KEYS=[]", "PULUMI_NODEJS_TYPESCRIPT=true"},
		},
		{
			name: "config, secret keys and tsconfig",
			req: &pulumirpc.RunRequest{
				Config:           map[string]string{"quickstart:host": "10.0.0.1", "kvmnet:key": "s\"q"},
				ConfigSecretKeys: []string{"kvmnet:key"},
			},
			opts: runtimeOptions{typescript: false, tsconfig: "tsconfig.build.json"},
			want: []string{
				"HOME=/h",
				`PULUMI_CONFIG={"kvmnet:key":"s\"q","quickstart:host":"10.0.0.1"}`,
				`PULUMI_CONFIG_SECRET_KEYS=["kvmnet:key"]`,
				"PULUMI_NODEJS_TYPESCRIPT=false",
				"PULUMI_NODEJS_TSCONFIG_PATH=tsconfig.build.json",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := runEnv([]string{"HOME=/h"}, tt.req, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			wantStrings(t, "runEnv()", got, tt.want)
		})
	}
}

func TestRunResponse(t *testing.T) {
	tests := []struct {
		name string
		cmd  *exec.Cmd
		want *pulumirpc.RunResponse
	}{
		{"success", exec.Command("sh", "-c", "exit 0"), &pulumirpc.RunResponse{}},
		{"exit 32: the program has told the user, so bail", exec.Command("sh", "-c", "exit 32"), &pulumirpc.RunResponse{Bail: true}},
		{"another exit code is an error", exec.Command("sh", "-c", "exit 3"), &pulumirpc.RunResponse{Error: "Program exited with non-zero exit code: 3"}},
		{"node could not be started", exec.Command("/nonexistent/node"), &pulumirpc.RunResponse{
			Error: "Problem executing program (could not run language executor): fork/exec /nonexistent/node: no such file or directory",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := runResponse(tt.cmd.Run())
			if got.GetBail() != tt.want.GetBail() || got.GetError() != tt.want.GetError() {
				t.Errorf("runResponse() = {Bail: %v, Error: %q}, want {Bail: %v, Error: %q}", got.GetBail(), got.GetError(), tt.want.GetBail(), tt.want.GetError())
			}
		})
	}
}
