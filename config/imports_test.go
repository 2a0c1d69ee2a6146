package config

import (
	"go/build"
	"slices"
	"strings"
	"testing"
)

// TestImports: of the rules side, config imports only package rules (for
// rules.ExpandEnv); of the engine, only the packages whose defaults and
// parsers it shares (engine for DefaultLimits, engine/cluster for Defaults).
func TestImports(t *testing.T) {
	const module = "github.com/sidecar/sidecar"
	allowed := []string{module + "/rules", module + "/engine", module + "/engine/auth", module + "/engine/forward", module + "/engine/webhook", module + "/engine/cluster"}
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range pkg.Imports {
		if strings.HasPrefix(imp, module+"/") && !slices.Contains(allowed, imp) {
			t.Errorf("config imports %s; it may import only %q of the project", imp, allowed)
		}
	}
}
