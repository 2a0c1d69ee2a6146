package rules

import (
	"go/build"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/sidecar/sidecar"

// TestImports keeps the dependencies pointing one way: rules imports no
// project package, rulestest only rules, and live is where engine and
// rules meet (with internal/filewatch, the file watching it shares with
// the key files).
func TestImports(t *testing.T) {
	for _, tc := range []struct {
		dir     string
		allowed []string
	}{
		{".", nil}, // package rules
		{"rulestest", []string{module + "/rules"}},
		{"live", []string{module + "/rules", module + "/engine", module + "/engine/auth", module + "/internal/filewatch"}},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			pkg, err := build.ImportDir(tc.dir, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range pkg.Imports {
				if (imp == module || strings.HasPrefix(imp, module+"/")) && !slices.Contains(tc.allowed, imp) {
					t.Errorf("package in %s imports %s; it may import only %q of the project", tc.dir, imp, tc.allowed)
				}
			}
		})
	}
}
