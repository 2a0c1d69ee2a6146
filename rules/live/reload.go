package live

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sidecar/sidecar/rules"
)

// reloadDebounce is how long the rules file must stay quiet before a
// reload: editors write a file in several steps (truncate, write, rename),
// and one reload should see the result, not each step.
const reloadDebounce = 100 * time.Millisecond

// reloadPollInterval is how often the rules file is checked when the
// filesystem cannot notify (inotify instances exhausted, an unsupported
// filesystem).
const reloadPollInterval = 2 * time.Second

// Reloader owns the rules in use. A reload builds a complete new set aside
// and swaps it into the router only if it loaded without error, as
// Prometheus' rule manager does: a broken edit leaves the old rules
// serving, and says why, with file and line.
type Reloader struct {
	path   string
	opt    rules.Options
	router *Router
	log    *slog.Logger

	failures    prometheus.Counter
	lastSuccess prometheus.Gauge // 1 if the last reload succeeded, else 0
	lastTime    prometheus.Gauge // unix time of the last successful reload

	// newWatcher and pollInterval are fsnotify.NewWatcher and
	// reloadPollInterval; tests replace them.
	newWatcher   func() (*fsnotify.Watcher, error)
	pollInterval time.Duration

	mu         sync.Mutex // serializes reloads; guards the fields below
	lastErr    error      // of the last reload; nil if it succeeded
	lastReload time.Time  // of the last successful reload
	loaded     fileStamp  // the file as the last reload found it
}

// NewReloader returns a reloader of the rules file at path into r. It
// registers its metrics with reg (if not nil); the engine counts rule
// failures per rule and kind. It loads nothing: call Reload.
func NewReloader(path string, opt rules.Options, r *Router, logger *slog.Logger, reg prometheus.Registerer) *Reloader {
	l := &Reloader{
		path:         path,
		opt:          opt,
		router:       r,
		log:          logger,
		newWatcher:   fsnotify.NewWatcher,
		pollInterval: reloadPollInterval,
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sidecar_rules_reload_failures_total",
			Help: "Rules reloads that failed; the previous rules kept serving.",
		}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sidecar_rules_last_reload_success",
			Help: "Whether the last rules reload succeeded (1) or failed (0).",
		}),
		lastTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sidecar_rules_last_reload_success_timestamp_seconds",
			Help: "When the rules in use were loaded.",
		}),
	}
	if reg != nil {
		reg.MustRegister(l.failures, l.lastSuccess, l.lastTime,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "sidecar_rules_loaded",
				Help: "Rules in the set in use.",
			}, func() float64 {
				if s := r.Set(); s != nil {
					return float64(s.Len())
				}
				return 0
			}))
	}
	return l
}

// Reload loads the rules file and, if it is valid, swaps it in. On failure
// the rules in use stay and the error is returned, not logged: the caller
// reports it (main prints the start-up error once). Reloads that Run
// starts itself are logged by Run.
func (l *Reloader) Reload() error { return l.reload(false) }

// reload is Reload. With logErr, a failure is also logged at Error, each
// error once: the same errors again (a watcher may report several writes
// of one broken save), or the errors the last Reload returned, are not
// logged again.
func (l *Reloader) reload(logErr bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	// Stamp before reading: a write during the load is seen as a change.
	l.loaded = l.stamp()
	set, err := rules.Load(l.path, l.opt)
	if err != nil {
		l.failures.Inc()
		l.lastSuccess.Set(0)
		if logErr && (l.lastErr == nil || l.lastErr.Error() != err.Error()) {
			l.logFailure(err)
		}
		l.lastErr = err
		return err
	}
	l.router.store(set)
	l.lastErr = nil
	l.lastReload = time.Now()
	l.lastSuccess.Set(1)
	l.lastTime.Set(float64(l.lastReload.UnixNano()) / 1e9)
	if set.Len() == 0 {
		// Allowed (rules.allow_empty), but nothing is routed: say so on
		// every load, not only the first, so it cannot go unnoticed.
		l.log.Warn("rules file has no rules: no event is routed (rules.allow_empty is true)", "file", l.path)
	} else {
		l.log.Info("rules loaded", "file", l.path, "rules", set.Len())
	}
	return nil
}

func (l *Reloader) logFailure(err error) {
	kept := "none"
	if s := l.router.Set(); s != nil {
		kept = fmt.Sprintf("%d rules loaded at %s", s.Len(), l.lastReload.Format(time.RFC3339))
	}
	var list rules.ErrorList
	if !errors.As(err, &list) {
		l.log.Error("rules reload failed", "file", l.path, "err", err, "serving", kept)
		return
	}
	for _, e := range list {
		l.log.Error("rules reload failed", "file", l.path, "err", e.Error(), "serving", kept)
	}
}

// Status reports the rules in use (0 before the first successful load),
// the error of the last reload (nil if it succeeded) and when the rules in
// use were loaded.
func (l *Reloader) Status() (count int, lastErr error, lastReload time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s := l.router.Set(); s != nil {
		count = s.Len()
	}
	return count, l.lastErr, l.lastReload
}

// Check is the /readyz check, an engine.Check: ready once rules are
// loaded, even if a later reload failed (the old rules still serve); the
// detail says which.
func (l *Reloader) Check() (bool, string) {
	n, err, at := l.Status()
	if l.router.Set() == nil {
		if err == nil {
			return false, "rules not loaded yet"
		}
		return false, "rules not loaded: " + firstLines(err, 3)
	}
	detail := fmt.Sprintf("%d rules from %s, loaded %s", n, l.path, at.UTC().Format(time.RFC3339))
	if err != nil {
		detail += "; last reload failed, previous rules kept: " + firstLines(err, 3)
	}
	return true, detail
}

// firstLines is err's message cut to n lines, for a one-screen readyz.
func firstLines(err error, n int) string {
	lines := strings.Split(err.Error(), "\n")
	if len(lines) <= n {
		return strings.Join(lines, "; ")
	}
	return fmt.Sprintf("%s; (%d more)", strings.Join(lines[:n], "; "), len(lines)-n)
}

// Run reloads on SIGHUP (each value from hup) and, if watch is set, when
// the rules file changes, until ctx is done. It returns nil then.
//
// It watches the file's directory, not the file: editors save by writing a
// new file and renaming it over the old one, and Kubernetes updates a
// ConfigMap volume by swapping a "..data" symlink, and neither is seen by
// a watch on the old file. Events are filtered by name and debounced. If
// the file is a symlink, the directory of its target is watched too. If
// the filesystem cannot notify, Run logs it and polls the file instead.
func (l *Reloader) Run(ctx context.Context, watch bool, hup <-chan os.Signal) error {
	var events <-chan fsnotify.Event
	var werrs <-chan error
	var w *fsnotify.Watcher
	var polls <-chan time.Time
	var stamp fileStamp
	watched := map[string]bool{}
	if watch {
		var err error
		if w, err = l.newWatcher(); err != nil {
			l.log.Error("rules file watch unavailable; polling the file instead", "file", l.path,
				"every", l.pollInterval, "err", err)
			t := time.NewTicker(l.pollInterval)
			defer t.Stop()
			polls = t.C
		} else {
			defer w.Close()
			l.addWatches(w, watched)
			events, werrs = w.Events, w.Errors
		}
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var debounced <-chan time.Time // non-nil while a reload is pending
	if watch {
		// An edit between the last Reload and the watch's start had no
		// one to see it.
		if stamp = l.loadedStamp(); l.stamp() != stamp {
			timer.Reset(reloadDebounce)
			debounced = timer.C
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
			timer.Stop()
			debounced = nil
			_ = l.reload(true) // no caller to return the error to: log it
			stamp = l.loadedStamp()
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if l.relevant(ev) {
				timer.Reset(reloadDebounce)
				debounced = timer.C
			}
		case err, ok := <-werrs:
			if !ok {
				werrs = nil
				continue
			}
			l.log.Warn("rules file watch", "file", l.path, "err", err)
		case <-polls:
			if s := l.stamp(); s != stamp {
				stamp = s
				timer.Reset(reloadDebounce)
				debounced = timer.C
			}
		case <-debounced:
			debounced = nil
			_ = l.reload(true) // no caller to return the error to: log it
			stamp = l.loadedStamp()
			if w != nil {
				l.addWatches(w, watched) // a symlink may point elsewhere now
			}
		}
	}
}

// fileStamp is what polling compares to notice a change of the rules file.
type fileStamp struct {
	target  string // where symlinks lead (a ConfigMap swap changes it)
	modTime int64  // UnixNano; a time.Time is not meant for ==
	size    int64
	missing bool
}

func (l *Reloader) loadedStamp() fileStamp {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.loaded
}

func (l *Reloader) stamp() fileStamp {
	target, _ := filepath.EvalSymlinks(l.path)
	fi, err := os.Stat(l.path)
	if err != nil {
		return fileStamp{target: target, missing: true}
	}
	return fileStamp{target: target, modTime: fi.ModTime().UnixNano(), size: fi.Size()}
}

// watchDirs are the directories whose entries decide the rules file's
// content: its own, and its symlink target's.
func (l *Reloader) watchDirs() []string {
	dirs := []string{filepath.Dir(l.path)}
	if target, err := filepath.EvalSymlinks(l.path); err == nil {
		if d := filepath.Dir(target); d != dirs[0] {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

func (l *Reloader) addWatches(w *fsnotify.Watcher, watched map[string]bool) {
	for _, d := range l.watchDirs() {
		abs, _ := filepath.Abs(d)
		if watched[abs] {
			continue
		}
		if err := w.Add(d); err != nil {
			l.log.Error("rules file watch", "dir", d, "err", err)
			continue
		}
		watched[abs] = true
	}
}

// relevant reports whether ev may have changed the rules file: an event on
// its name (or its symlink target's), or on a Kubernetes "..data"-style
// entry. Attribute changes alone do not count.
func (l *Reloader) relevant(ev fsnotify.Event) bool {
	if ev.Op == fsnotify.Chmod {
		return false
	}
	name := filepath.Base(ev.Name)
	if name == filepath.Base(l.path) || strings.HasPrefix(name, "..") {
		return true
	}
	if target, err := filepath.EvalSymlinks(l.path); err == nil && name == filepath.Base(target) {
		return true
	}
	return false
}
