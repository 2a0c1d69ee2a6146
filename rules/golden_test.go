package rules

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// goldenEnv is the environment golden files load with.
var goldenEnv = map[string]string{"APP_URL": "http://app.test"}

func checkGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (go test -update rewrites it):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// TestGoldenMatch runs testdata/golden/NAME.events.yaml through
// NAME.rules.yaml and compares the outputs and errors with NAME.golden.
func TestGoldenMatch(t *testing.T) {
	files, _ := filepath.Glob("testdata/golden/*.events.yaml")
	if len(files) == 0 {
		t.Fatal("no testdata/golden/*.events.yaml")
	}
	for _, evPath := range files {
		name := strings.TrimSuffix(filepath.Base(evPath), ".events.yaml")
		t.Run(name, func(t *testing.T) {
			s, err := Load(filepath.Join("testdata/golden", name+".rules.yaml"), Options{Lookup: lookupFrom(goldenEnv)})
			if err != nil {
				t.Fatal(err)
			}
			src, err := os.ReadFile(evPath)
			if err != nil {
				t.Fatal(err)
			}
			var events []struct {
				Type   string         `yaml:"type"`
				Source string         `yaml:"source"`
				Sender map[string]any `yaml:"sender"`
				Data   any            `yaml:"data"`
			}
			if err := yaml.Unmarshal(src, &events); err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			for i, e := range events {
				ev := &Event{ID: fmt.Sprintf("ev%d", i+1), Type: e.Type, Source: e.Source, Sender: e.Sender, Data: e.Data,
					Time: time.Date(2024, 1, 1, 0, 0, i, 0, time.UTC)}
				out, err := s.Match(context.Background(), ev, nil)
				in, _ := json.Marshal(e.Data)
				fmt.Fprintf(&b, "== %s %s\n", e.Type, in)
				for _, o := range out {
					j, _ := json.Marshal(o)
					fmt.Fprintf(&b, "%s\n", j)
				}
				if err != nil {
					fmt.Fprintf(&b, "error: %v\n", err)
				}
			}
			checkGolden(t, filepath.Join("testdata/golden", name+".golden"), b.Bytes())
		})
	}
}

// TestGoldenErrors loads each testdata/errors/*.yaml and compares the
// complete error list with its .golden file.
func TestGoldenErrors(t *testing.T) {
	files, _ := filepath.Glob("testdata/errors/*.yaml")
	if len(files) == 0 {
		t.Fatal("no testdata/errors/*.yaml")
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			_, err := Load(path, Options{Lookup: lookupFrom(goldenEnv)})
			if err == nil {
				t.Fatalf("Load(%s) = nil error; these files are all broken", path)
			}
			checkGolden(t, strings.TrimSuffix(path, ".yaml")+".golden", []byte(err.Error()+"\n"))
		})
	}
}
