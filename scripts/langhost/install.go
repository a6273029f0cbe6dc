package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
)

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

// packageManager is the `packagemanager` runtime option when set, otherwise the tool whose lock
// file is in dir, otherwise npm.
func packageManager(dir, configured string) string {
	if configured != "" {
		return configured
	}
	pm := "npm"
	for lock, tool := range map[string]string{"yarn.lock": "yarn", "pnpm-lock.yaml": "pnpm", "bun.lockb": "bun"} {
		if _, err := os.Stat(filepath.Join(dir, lock)); err == nil {
			pm = tool
		}
	}
	return pm
}

// InstallDependencies runs `<package manager> install` in the program directory.
func (h *nodeHost) InstallDependencies(req *pulumirpc.InstallDependenciesRequest,
	server grpc.ServerStreamingServer[pulumirpc.InstallDependenciesResponse],
) error {
	dir := firstNonEmpty(req.GetDirectory(), req.GetInfo().GetProgramDirectory(), ".")
	pm := packageManager(dir, optionsOf(req.GetInfo()).packagemanager)
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
