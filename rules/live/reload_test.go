package live

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sidecar/sidecar/engine"
	"github.com/sidecar/sidecar/rules"
)

// rulesWith returns a rules file of n rules on event type "x", each
// emitting event name.
func rulesWith(n int, name string) string {
	var b strings.Builder
	b.WriteString("rules:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - {name: r%d, on: x, emit: {event: %s, to: all()}}\n", i, name)
	}
	return b.String()
}

const brokenRules = "rules:\n  - name: r0\n    on: x\n    emit: {event: e, to: usr(1)}\n"

// syncBuffer is a log sink safe for the reloader's goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type reloadFixture struct {
	path string
	r    *Router
	l    *Reloader
	reg  *prometheus.Registry
	logs *syncBuffer
}

func newReloadFixture(t *testing.T, dir, path string) *reloadFixture {
	t.Helper()
	f := &reloadFixture{path: path, r: &Router{}, reg: prometheus.NewRegistry(), logs: &syncBuffer{}}
	logger := slog.New(slog.NewTextHandler(f.logs, nil))
	f.l = NewReloader(path, rules.Options{Registry: rules.Builtin()}, f.r, logger, f.reg)
	return f
}

// run starts the reloader's Run until the test ends.
func (f *reloadFixture) run(t *testing.T, watch bool, hup <-chan os.Signal) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.l.Run(ctx, watch, hup) }() // stopped by cancel in Cleanup
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v", err)
		}
	})
}

// waitFor polls cond until it holds or 5 s pass.
func (f *reloadFixture) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; reloader logs:\n%s", what, f.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// writeReplace writes a file the way editors save: a new file renamed over
// the old one.
func writeReplace(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp~"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (f *reloadFixture) count() int { n, _, _ := f.l.Status(); return n }

func (f *reloadFixture) lastErr() error { _, err, _ := f.l.Status(); return err }

func (f *reloadFixture) metric(t *testing.T, name string) float64 {
	return gatherValues(t, f.reg, name)[""]
}

// routeEvent is the event name the rules in use give event type "x".
func (f *reloadFixture) routeEvent(t *testing.T) string {
	t.Helper()
	out, err := f.r.Route(context.Background(), &engine.Event{Type: "x"}, nil)
	if err != nil || len(out) == 0 {
		t.Fatalf("Route() = %v, %v", out, err)
	}
	return out[0].Event
}

func TestReloadFollowsEdits(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rules.yaml")
	writeFile(t, path, rulesWith(1, "v1"))
	f := newReloadFixture(t, dir, path)
	if err := f.l.Reload(); err != nil {
		t.Fatalf("first Reload() = %v", err)
	}
	f.run(t, true, nil)

	// An editor's save (write aside, rename over) swaps the set.
	writeReplace(t, path, rulesWith(2, "v2"))
	f.waitFor(t, "the edit to load", func() bool { return f.count() == 2 })
	if got := f.routeEvent(t); got != "v2" {
		t.Errorf("after the edit, Route() emits %q, want v2", got)
	}

	// A broken edit, written in place, keeps the old set and says where.
	writeFile(t, path, brokenRules)
	f.waitFor(t, "the broken edit to be seen", func() bool { return f.lastErr() != nil })
	if n := f.count(); n != 2 {
		t.Errorf("after a broken edit, %d rules in use, want the previous 2", n)
	}
	if got := f.routeEvent(t); got != "v2" {
		t.Errorf("after a broken edit, Route() emits %q, want v2 (the old rules)", got)
	}
	wantErr := path + `:4: rule "r0": emit.to: unknown name usr`
	if err := f.lastErr(); !strings.Contains(err.Error(), wantErr) {
		t.Errorf("Status() error = %v, want %q", err, wantErr)
	}
	if ready, detail := f.l.Check(); !ready || !strings.Contains(detail, "last reload failed, previous rules kept: "+wantErr) {
		t.Errorf("Check() = %v, %q", ready, detail)
	}
	if f.metric(t, "sidecar_rules_reload_failures_total") < 1 || f.metric(t, "sidecar_rules_last_reload_success") != 0 {
		t.Errorf("metrics after a failed reload: failures %v, success %v",
			f.metric(t, "sidecar_rules_reload_failures_total"), f.metric(t, "sidecar_rules_last_reload_success"))
	}
	if logs := f.logs.String(); strings.Count(logs, "unknown name usr") != 1 || !strings.Contains(logs, "level=ERROR") {
		t.Errorf("the file:line error should be logged once at ERROR; logs:\n%s", logs)
	}

	// Fixing the file recovers.
	writeReplace(t, path, rulesWith(3, "v3"))
	f.waitFor(t, "the fix to load", func() bool { return f.count() == 3 && f.lastErr() == nil })
	if got := f.routeEvent(t); got != "v3" {
		t.Errorf("after the fix, Route() emits %q, want v3", got)
	}
	if f.metric(t, "sidecar_rules_last_reload_success") != 1 || f.metric(t, "sidecar_rules_loaded") != 3 {
		t.Errorf("metrics after the fix: success %v, loaded %v",
			f.metric(t, "sidecar_rules_last_reload_success"), f.metric(t, "sidecar_rules_loaded"))
	}
	if ts := f.metric(t, "sidecar_rules_last_reload_success_timestamp_seconds"); time.Since(time.Unix(int64(ts), 0)) > time.Minute {
		t.Errorf("sidecar_rules_last_reload_success_timestamp_seconds = %v", ts)
	}
}

func TestReloadOnSIGHUP(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rules.yaml")
	writeFile(t, path, rulesWith(1, "v1"))
	f := newReloadFixture(t, dir, path)
	if err := f.l.Reload(); err != nil {
		t.Fatal(err)
	}
	hup := make(chan os.Signal, 1)
	f.run(t, false, hup)
	writeFile(t, path, rulesWith(2, "v2"))
	hup <- syscall.SIGHUP
	f.waitFor(t, "the SIGHUP reload", func() bool { return f.count() == 2 })
	writeFile(t, path, brokenRules)
	hup <- syscall.SIGHUP
	f.waitFor(t, "the failed SIGHUP reload", func() bool { return f.lastErr() != nil })
	if f.count() != 2 || f.routeEvent(t) != "v2" {
		t.Errorf("a failed SIGHUP reload replaced the rules")
	}
}

// TestReloadLogsOnce: Reload returns its error and logs nothing, so that
// its caller (main, at start-up) prints it once. A reload the reloader
// starts itself (a watch event, SIGHUP) has no caller, so Run logs it, once
// per distinct error: an error already returned or logged is not logged
// again.
func TestReloadLogsOnce(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rules.yaml")
	writeFile(t, path, brokenRules)
	f := newReloadFixture(t, dir, path)
	err := f.l.Reload()
	if err == nil || !strings.Contains(err.Error(), "unknown name usr") {
		t.Fatalf("Reload() = %v, want the file:line error", err)
	}
	if logs := f.logs.String(); strings.Contains(logs, "unknown name usr") || strings.Contains(logs, "level=ERROR") {
		t.Errorf("Reload() logged what it returned:\n%s", logs)
	}

	hup := make(chan os.Signal, 1)
	f.run(t, false, hup)
	failures := func(n float64) func() bool {
		return func() bool { return f.metric(t, "sidecar_rules_reload_failures_total") == n }
	}
	hup <- syscall.SIGHUP
	hup <- syscall.SIGHUP
	f.waitFor(t, "two more failed reloads", failures(3))
	writeFile(t, path, strings.Replace(brokenRules, "usr(1)", "nope(1)", 1))
	hup <- syscall.SIGHUP
	f.waitFor(t, "a failed reload with a new error", failures(4))
	hup <- syscall.SIGHUP
	f.waitFor(t, "the new error again", failures(5))
	logs := f.logs.String()
	if n := strings.Count(logs, "level=ERROR"); n != 1 || !strings.Contains(logs, "unknown name nope") {
		t.Errorf("%d error lines, want 1, for the new error only:\n%s", n, logs)
	}
}

// TestReloadEmptyRules: a reload to an empty rules list is refused and the
// old rules keep serving, unless AllowEmpty; then every such load warns.
func TestReloadEmptyRules(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rules.yaml")
	writeFile(t, path, rulesWith(2, "v1"))
	f := newReloadFixture(t, dir, path)
	if err := f.l.Reload(); err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, "rules: []\n")
	err := f.l.Reload()
	if err == nil || !strings.Contains(err.Error(), "set rules.allow_empty: true") {
		t.Errorf("Reload() of an empty list = %v, want the allow_empty error", err)
	}
	if f.count() != 2 || f.routeEvent(t) != "v1" {
		t.Errorf("a refused empty list replaced the rules: %d in use", f.count())
	}
	if ready, _ := f.l.Check(); !ready {
		t.Errorf("Check() = not ready; the old rules still serve")
	}

	f.l.opt.AllowEmpty = true
	for range 2 {
		if err := f.l.Reload(); err != nil {
			t.Fatalf("Reload() of an empty list with AllowEmpty = %v", err)
		}
	}
	if f.count() != 0 {
		t.Errorf("%d rules in use, want 0", f.count())
	}
	if out, _ := f.r.Route(context.Background(), &engine.Event{Type: "x"}, nil); len(out) != 0 {
		t.Errorf("Route() with no rules = %v", out)
	}
	if n := strings.Count(f.logs.String(), "level=WARN msg=\"rules file has no rules"); n != 2 {
		t.Errorf("%d warnings for 2 empty loads, want 2:\n%s", n, f.logs.String())
	}
}

// TestReloadKubernetesConfigMap mimics a ConfigMap volume update: the file
// is a symlink through "..data", and the update swaps "..data" to a new
// directory; the file itself never gets an event.
func TestReloadKubernetesConfigMap(t *testing.T) {
	dir := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Mkdir(filepath.Join(dir, "..v1"), 0o755))
	writeFile(t, filepath.Join(dir, "..v1", "rules.yaml"), rulesWith(1, "v1"))
	must(os.Symlink("..v1", filepath.Join(dir, "..data")))
	must(os.Symlink(filepath.Join("..data", "rules.yaml"), filepath.Join(dir, "rules.yaml")))
	path := filepath.Join(dir, "rules.yaml")
	f := newReloadFixture(t, dir, path)
	must(f.l.Reload())
	f.run(t, true, nil)

	must(os.Mkdir(filepath.Join(dir, "..v2"), 0o755))
	writeFile(t, filepath.Join(dir, "..v2", "rules.yaml"), rulesWith(2, "v2"))
	must(os.Symlink("..v2", filepath.Join(dir, "..data_tmp")))
	must(os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")))
	must(os.RemoveAll(filepath.Join(dir, "..v1")))
	f.waitFor(t, "the ConfigMap swap to load", func() bool { return f.count() == 2 })
}

func TestReloadFirstLoadFails(t *testing.T) {
	dir := t.TempDir()
	f := newReloadFixture(t, dir, filepath.Join(dir, "missing.yaml"))
	if err := f.l.Reload(); err == nil {
		t.Fatal("Reload() of a missing file = nil")
	}
	n, err, at := f.l.Status()
	if n != 0 || err == nil || !at.IsZero() || f.r.Set() != nil {
		t.Errorf("Status() = %d, %v, %v", n, err, at)
	}
	if ready, detail := f.l.Check(); ready || !strings.Contains(detail, "rules not loaded: load rules:") {
		t.Errorf("Check() = %v, %q", ready, detail)
	}
}

// TestReloadUnderLoad: events routed while sets are swapped see one set or
// the other, never a mix (the contract, docs/DESIGN.md: a reload swaps the
// whole set).
func TestReloadUnderLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rules.yaml")
	writeFile(t, path, rulesWith(4, "v0"))
	f := newReloadFixture(t, dir, path)
	if err := f.l.Reload(); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() { // stopped by close(stop)
			defer wg.Done()
			var out []engine.Command
			for {
				select {
				case <-stop:
					return
				default:
				}
				var err error
				out, err = f.r.Route(context.Background(), &engine.Event{Type: "x"}, out[:0])
				if err != nil || len(out) != 4 {
					t.Errorf("Route() = %d commands, %v", len(out), err)
					return
				}
				for _, c := range out[1:] {
					if c.Event != out[0].Event {
						t.Errorf("one event saw two rule sets: %s and %s", out[0].Event, c.Event)
						return
					}
				}
			}
		}()
	}
	for i := 1; i <= 20; i++ {
		writeFile(t, path, rulesWith(4, fmt.Sprintf("v%d", i)))
		if err := f.l.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if got := f.routeEvent(t); got != "v20" {
		t.Errorf("Route() emits %q after the last reload, want v20", got)
	}
}

// TestReloadPollsWithoutNotify: when the filesystem cannot notify (say the
// inotify instances are used up), edits are still noticed, by polling.
func TestReloadPollsWithoutNotify(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rules.yaml")
	writeFile(t, path, rulesWith(1, "v1"))
	f := newReloadFixture(t, dir, path)
	f.l.newWatcher = func() (*fsnotify.Watcher, error) { return nil, errors.New("too many open files") }
	f.l.pollInterval = 20 * time.Millisecond
	if err := f.l.Reload(); err != nil {
		t.Fatal(err)
	}
	f.run(t, true, nil)
	writeReplace(t, path, rulesWith(2, "v2"))
	f.waitFor(t, "the polled edit to load", func() bool { return f.count() == 2 })
	if !strings.Contains(f.logs.String(), "polling the file instead") {
		t.Errorf("the fallback to polling was not logged:\n%s", f.logs.String())
	}
}
