package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
)

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
	var plugins []*pulumirpc.PluginDependency
	for _, n := range slices.Sorted(maps.Keys(pkgs)) {
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
	var deps []*pulumirpc.DependencyInfo
	for _, n := range slices.Sorted(maps.Keys(wanted)) {
		if p, ok := installed[n]; ok {
			deps = append(deps, &pulumirpc.DependencyInfo{Name: n, Version: p.Version})
		}
	}
	return &pulumirpc.GetProgramDependenciesResponse{Dependencies: deps}, nil
}
