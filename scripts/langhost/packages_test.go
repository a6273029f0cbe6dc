package main

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
)

// writeFiles creates each file (path relative to root: content) with its directories.
func writeFiles(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for rel, content := range files {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// workspace is a program directory root/app below a root with node_modules of its own, like a
// program inside a repository whose dependencies are hoisted.
func workspace(t *testing.T) (root, app string) {
	root = t.TempDir()
	writeFiles(t, root, map[string]string{
		"node_modules/@pulumi/pulumi/package.json":     `{"name": "@pulumi/pulumi", "version": "3.276.0"}`,
		"node_modules/@pulumi/random/package.json":     `{"name": "@pulumi/random", "version": "4.16.0", "pulumi": {"resource": true}}`,
		"node_modules/@acme/widgets/package.json":      `{"name": "@acme/widgets", "version": "0.3.0", "pulumi": {"resource": true}}`,
		"node_modules/kvm-plugin/package.json":         `{"name": "kvm-plugin", "version": "9.9.9", "pulumi": {"resource": true, "name": "kvm", "version": "v1.2.3", "server": "https://plugins.example"}}`,
		"node_modules/no-version/package.json":         `{"name": "no-version", "pulumi": {"resource": true}}`,
		"node_modules/broken/package.json":             `{"name": `,
		"node_modules/.bin/package.json":               `{"name": "dot-dir", "version": "1.0.0", "pulumi": {"resource": true}}`,
		"node_modules/left-pad/package.json":           `{"name": "left-pad", "version": "1.3.0"}`,
		"app/node_modules/@pulumi/random/package.json": `{"name": "@pulumi/random", "version": "4.18.1", "pulumi": {"resource": true}}`,
		"app/node_modules/typescript/package.json":     `{"name": "typescript", "version": "5.9.3"}`,
		"app/package.json": `{"name": "app", "dependencies": {"@pulumi/pulumi": "^3", "@pulumi/random": "^4", "not-installed": "1"},
			"devDependencies": {"typescript": "^5"}}`,
	})
	return root, filepath.Join(root, "app")
}

func TestNodeModulesDirsNearestFirst(t *testing.T) {
	root, app := workspace(t)
	dirs := nodeModulesDirs(filepath.Join(app, "src"))
	want := []string{filepath.Join(app, "node_modules"), filepath.Join(root, "node_modules")}
	if len(dirs) < 2 || !reflect.DeepEqual(dirs[:2], want) {
		t.Errorf("nodeModulesDirs() = %q, want it to start with %q", dirs, want)
	}
}

type plugin struct{ name, kind, version, server string }

func TestGetRequiredPlugins(t *testing.T) {
	_, app := workspace(t)
	want := []plugin{
		{"acme/widgets", "resource", "v0.3.0", ""},
		// The program's own node_modules wins over the one above it.
		{"random", "resource", "v4.18.1", ""},
		{"kvm", "resource", "v1.2.3", "https://plugins.example"},
	}
	for _, req := range []*pulumirpc.GetRequiredPluginsRequest{
		{Info: &pulumirpc.ProgramInfo{ProgramDirectory: app}},
		{Pwd: app},
		{Program: app},
	} {
		resp, err := (&nodeHost{}).GetRequiredPlugins(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		var got []plugin
		for _, p := range resp.GetPlugins() {
			got = append(got, plugin{p.GetName(), p.GetKind(), p.GetVersion(), p.GetServer()})
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("GetRequiredPlugins(%v) =\n  %+v\nwant\n  %+v", req, got, want)
		}
	}
}

func TestGetProgramDependencies(t *testing.T) {
	_, app := workspace(t)
	deps := func(transitive bool) map[string]string {
		t.Helper()
		resp, err := (&nodeHost{}).GetProgramDependencies(context.Background(), &pulumirpc.GetProgramDependenciesRequest{
			Info: &pulumirpc.ProgramInfo{ProgramDirectory: app}, TransitiveDependencies: transitive,
		})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, d := range resp.GetDependencies() {
			got[d.GetName()] = d.GetVersion()
		}
		return got
	}
	// Dependencies and devDependencies that are installed, at their nearest installed version.
	direct := map[string]string{"@pulumi/pulumi": "3.276.0", "@pulumi/random": "4.18.1", "typescript": "5.9.3"}
	if got := deps(false); !reflect.DeepEqual(got, direct) {
		t.Errorf("direct dependencies = %v, want %v", got, direct)
	}
	all := deps(true)
	for name, version := range map[string]string{"left-pad": "1.3.0", "kvm-plugin": "9.9.9", "@pulumi/random": "4.18.1"} {
		if all[name] != version {
			t.Errorf("transitive dependencies have %s at %q, want %q (all: %v)", name, all[name], version, all)
		}
	}
	if _, ok := all["not-installed"]; ok {
		t.Errorf("transitive dependencies list not-installed, which is in package.json but not installed: %v", all)
	}
}

func TestGetProgramDependenciesWithoutPackageJSON(t *testing.T) {
	_, err := (&nodeHost{}).GetProgramDependencies(context.Background(), &pulumirpc.GetProgramDependenciesRequest{Pwd: t.TempDir()})
	if err == nil {
		t.Fatal("GetProgramDependencies succeeded for a directory without package.json")
	}
}
