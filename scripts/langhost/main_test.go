package main

import "testing"

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name            string
		args            []string
		engine, tracing string
	}{
		{"no arguments", nil, "", ""},
		{"address only", []string{"127.0.0.1:4321"}, "127.0.0.1:4321", ""},
		{"tracing as the next argument", []string{"-tracing", "file:///t.json", "127.0.0.1:1"}, "127.0.0.1:1", "file:///t.json"},
		{"tracing with two dashes", []string{"127.0.0.1:1", "--tracing", "t"}, "127.0.0.1:1", "t"},
		{"tracing after =", []string{"--tracing=file:///a=b", "127.0.0.1:1"}, "127.0.0.1:1", "file:///a=b"},
		{"tracing without its value", []string{"127.0.0.1:1", "-tracing"}, "127.0.0.1:1", ""},
		{"root's value is not the address", []string{"127.0.0.1:1", "-root", "/proj"}, "127.0.0.1:1", ""},
		{"other flags are ignored", []string{"--logtostderr", "-v=9", "127.0.0.1:1"}, "127.0.0.1:1", ""},
		{"the last address wins", []string{"127.0.0.1:1", "127.0.0.1:2"}, "127.0.0.1:2", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			engine, tracing := parseArgs(tt.args)
			if engine != tt.engine || tracing != tt.tracing {
				t.Errorf("parseArgs(%q) = (%q, %q), want (%q, %q)", tt.args, engine, tracing, tt.engine, tt.tracing)
			}
		})
	}
}
