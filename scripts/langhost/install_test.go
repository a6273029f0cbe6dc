package main

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
)

func TestPackageManager(t *testing.T) {
	tests := []struct {
		name       string
		lock       string
		configured string
		want       string
	}{
		{"no lock file: npm", "", "", "npm"},
		{"npm's own lock file: npm", "package-lock.json", "", "npm"},
		{"yarn.lock: yarn", "yarn.lock", "", "yarn"},
		{"pnpm-lock.yaml: pnpm", "pnpm-lock.yaml", "", "pnpm"},
		{"bun.lockb: bun", "bun.lockb", "", "bun"},
		{"the runtime option wins over a lock file", "yarn.lock", "pnpm", "pnpm"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.lock != "" {
				if err := os.WriteFile(filepath.Join(dir, tt.lock), nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if got := packageManager(dir, tt.configured); got != tt.want {
				t.Errorf("packageManager() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestStreamWriter(t *testing.T) {
	var sent []*pulumirpc.InstallDependenciesResponse
	send := func(r *pulumirpc.InstallDependenciesResponse) error { sent = append(sent, r); return nil }
	mu := &sync.Mutex{}
	out := streamWriter{mu: mu, send: send}
	errOut := streamWriter{mu: mu, send: send, stderr: true}

	buf := []byte("added 3 packages\n")
	if n, err := out.Write(buf); n != len(buf) || err != nil {
		t.Fatalf("Write() = (%d, %v), want (%d, nil)", n, err, len(buf))
	}
	// exec reuses its buffer between writes: what was sent must not change with it.
	copy(buf, "XXXXX")
	if _, err := errOut.Write([]byte("npm warn deprecated\n")); err != nil {
		t.Fatal(err)
	}
	if len(sent) != 2 {
		t.Fatalf("sent %d responses, want 2", len(sent))
	}
	if got := string(sent[0].GetStdout()); got != "added 3 packages\n" || sent[0].GetStderr() != nil {
		t.Errorf("first response: stdout %q, stderr %q; want stdout %q only", got, sent[0].GetStderr(), "added 3 packages\n")
	}
	if got := string(sent[1].GetStderr()); got != "npm warn deprecated\n" || sent[1].GetStdout() != nil {
		t.Errorf("second response: stdout %q, stderr %q; want stderr %q only", sent[1].GetStdout(), got, "npm warn deprecated\n")
	}
}

func TestStreamWriterReportsSendErrors(t *testing.T) {
	gone := errors.New("stream closed")
	w := streamWriter{mu: &sync.Mutex{}, send: func(*pulumirpc.InstallDependenciesResponse) error { return gone }}
	if n, err := w.Write([]byte("x")); n != 0 || !errors.Is(err, gone) {
		t.Errorf("Write() = (%d, %v), want (0, %v)", n, err, gone)
	}
}
