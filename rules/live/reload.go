package live

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sidecar/sidecar/internal/filewatch"
	"github.com/sidecar/sidecar/rules"
)

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
	// filewatch.PollInterval; tests replace them.
	newWatcher   func() (*fsnotify.Watcher, error)
	pollInterval time.Duration

	mu         sync.Mutex      // serializes reloads; guards the fields below
	lastErr    error           // of the last reload; nil if it succeeded
	lastReload time.Time       // of the last successful reload
	loaded     filewatch.Stamp // the file as the last reload found it
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
		pollInterval: filewatch.PollInterval,
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
// the rules file changes, until ctx is done. It returns nil then. How the
// file is watched (its directory, symlinks, Kubernetes ConfigMaps, polling
// when the filesystem cannot notify) is internal/filewatch's.
func (l *Reloader) Run(ctx context.Context, watch bool, hup <-chan os.Signal) error {
	w := filewatch.Watcher{
		Paths:        []string{l.path},
		What:         "rules file",
		Log:          l.log,
		NewWatcher:   l.newWatcher,
		PollInterval: l.pollInterval,
	}
	// No caller to return a reload's error to: reload(true) logs it.
	return w.Run(ctx, watch, hup, l.loadedStamp, func() { _ = l.reload(true) })
}

func (l *Reloader) loadedStamp() filewatch.Stamp {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.loaded
}

func (l *Reloader) stamp() filewatch.Stamp { return filewatch.StampOf(l.path) }
