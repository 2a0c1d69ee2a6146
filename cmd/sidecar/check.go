package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/sidecar/sidecar/config"
	"github.com/sidecar/sidecar/rules"
	"github.com/sidecar/sidecar/rules/rulestest"
)

// runCheck is `sidecar check [--config F] [--strict TESTFILE...]`: it
// loads the config and the rules file as serve would, prints "ok: N rules
// in FILE", or every problem as "file:line: ..." on stderr and fails. With
// --strict it also runs the rules on the events of the test files and
// reports the run-time errors no case expects (type errors the load-time
// checker cannot see, since data's fields come from JSON) and the rules
// no example reaches.
func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("check")
	path := fs.String("config", "", "config file (YAML); SIDECAR_* environment variables override it")
	strict := fs.Bool("strict", false, "also run every rule on the events of the test files named after the flags\n(e.g. testdata/rules/*.yaml), and report run-time errors and rules no event reaches")
	if ok, err := parseFlags(fs, args, stdout, stderr); !ok {
		return err
	}
	if fs.NArg() > 0 && !*strict {
		fmt.Fprintf(stderr, "sidecar check: unexpected argument %q (test files go with --strict)\n", fs.Arg(0))
		return errReported
	}
	if *strict && fs.NArg() == 0 {
		fmt.Fprintln(stderr, "sidecar check: --strict runs the rules on the events of test files: name them, e.g. testdata/rules/*.yaml")
		return errReported
	}
	environ := os.Environ()
	cfg, warnings, err := config.Load(*path, environ)
	for _, w := range warnings {
		fmt.Fprintln(stderr, "warning:", w)
	}
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	set, err := rules.Load(cfg.Rules.File, cfg.Rules.Options(lookupIn(environ)))
	if err != nil {
		var list rules.ErrorList
		if !errors.As(err, &list) {
			return err
		}
		for _, e := range list {
			fmt.Fprintln(stderr, e.Error())
		}
		return fmt.Errorf("%s: %d %s", cfg.Rules.File, len(list), plural(len(list), "error", "errors"))
	}
	if !*strict {
		fmt.Fprintf(stdout, "ok: %d rules in %s\n", set.Len(), cfg.Rules.File)
		return nil
	}
	examples, err := rulestest.Examples(fs.Args())
	if err != nil {
		return err
	}
	list, err := rulestest.Strict(ctx, set, examples)
	if err != nil {
		return err
	}
	for _, e := range list {
		fmt.Fprintln(stderr, e.Error())
	}
	if len(list) > 0 {
		return fmt.Errorf("%s: %d %s on %d example %s", cfg.Rules.File, len(list),
			plural(len(list), "problem", "problems"), len(examples), plural(len(examples), "event", "events"))
	}
	fmt.Fprintf(stdout, "ok: %d rules in %s, run on %d example %s\n", set.Len(), cfg.Rules.File,
		len(examples), plural(len(examples), "event", "events"))
	return nil
}

// lookupIn is os.LookupEnv over environ ("K=V" strings).
func lookupIn(environ []string) func(string) (string, bool) {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// runTest is `sidecar test FILE...`: rulestest.Run over the files. It
// fails if any case or file does.
func runTest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("test")
	if ok, err := parseFlags(fs, args, stdout, stderr); !ok {
		return err
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "usage: sidecar test FILE...")
		return errReported
	}
	_, err := rulestest.Run(ctx, fs.Args(), stdout)
	return err
}
