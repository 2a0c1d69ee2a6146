// Package filewatch calls a reload function when one of a few files
// changes, or on SIGHUP. It is how the rules file (rules/live) and the
// public key files (engine/auth) are followed without a restart.
//
// It watches each file's directory, not the file: editors save by writing
// a new file and renaming it over the old one, and Kubernetes updates a
// ConfigMap or Secret volume by swapping a "..data" symlink, and neither is
// seen by a watch on the old file. Events are filtered by name and
// debounced. If a file is a symlink, the directory of its target is watched
// too. If the filesystem cannot notify, Run logs it and polls the files
// instead.
package filewatch

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Debounce is how long the files must stay quiet before a reload: editors
// write a file in several steps (truncate, write, rename), and one reload
// should see the result, not each step.
const Debounce = 100 * time.Millisecond

// PollInterval is how often the files are checked when the filesystem
// cannot notify (inotify instances exhausted, an unsupported filesystem).
const PollInterval = 2 * time.Second

// Stamp is what polling compares to notice a change of the files: for
// each, where its symlinks lead, its modification time and size, or that
// it is missing. Take it before reading the files, so that a write during
// the read is seen as a change.
type Stamp string

// StampOf returns the current stamp of paths.
func StampOf(paths ...string) Stamp {
	var b strings.Builder
	for _, p := range paths {
		target, _ := filepath.EvalSymlinks(p)
		if fi, err := os.Stat(p); err != nil {
			fmt.Fprintf(&b, "%s\x00missing\x00", target)
		} else {
			fmt.Fprintf(&b, "%s\x00%d\x00%d\x00", target, fi.ModTime().UnixNano(), fi.Size())
		}
	}
	return Stamp(b.String())
}

// Watcher follows Paths. Its zero fields take defaults.
type Watcher struct {
	Paths []string
	What  string // what the files are, for log lines: "rules file", "public key file"
	Log   *slog.Logger

	// NewWatcher is fsnotify.NewWatcher when nil; tests replace it.
	NewWatcher func() (*fsnotify.Watcher, error)
	// PollInterval is PollInterval when 0.
	PollInterval time.Duration
}

// Run calls reload on each value from hup and, if watch is set, when one
// of the files changes, until ctx is done. It returns nil then. loaded
// returns the stamp the last reload took (StampOf before reading): an edit
// between that reload and Run's start is picked up at once. Run calls
// reload from its own goroutine, one call at a time.
func (w *Watcher) Run(ctx context.Context, watch bool, hup <-chan os.Signal, loaded func() Stamp, reload func()) error {
	log := w.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	what, files := w.What, strings.Join(w.Paths, ", ")
	if what == "" {
		what = "file"
	}
	newWatcher, poll := w.NewWatcher, w.PollInterval
	if newWatcher == nil {
		newWatcher = fsnotify.NewWatcher
	}
	if poll <= 0 {
		poll = PollInterval
	}

	var events <-chan fsnotify.Event
	var werrs <-chan error
	var fw *fsnotify.Watcher
	var polls <-chan time.Time
	var stamp Stamp
	watched := map[string]bool{}
	if watch {
		var err error
		if fw, err = newWatcher(); err != nil {
			log.Error(what+" watch unavailable; polling the file instead", "file", files, "every", poll, "err", err)
			t := time.NewTicker(poll)
			defer t.Stop()
			polls = t.C
		} else {
			defer fw.Close()
			w.addWatches(fw, watched, log, what)
			events, werrs = fw.Events, fw.Errors
		}
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var debounced <-chan time.Time // non-nil while a reload is pending
	if watch {
		// An edit between the last reload and the watch's start had no
		// one to see it.
		if stamp = loaded(); StampOf(w.Paths...) != stamp {
			timer.Reset(Debounce)
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
			reload()
			stamp = loaded()
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if w.relevant(ev) {
				timer.Reset(Debounce)
				debounced = timer.C
			}
		case err, ok := <-werrs:
			if !ok {
				werrs = nil
				continue
			}
			log.Warn(what+" watch", "file", files, "err", err)
		case <-polls:
			if s := StampOf(w.Paths...); s != stamp {
				stamp = s
				timer.Reset(Debounce)
				debounced = timer.C
			}
		case <-debounced:
			debounced = nil
			reload()
			stamp = loaded()
			if fw != nil {
				w.addWatches(fw, watched, log, what) // a symlink may point elsewhere now
			}
		}
	}
}

// watchDirs are the directories whose entries decide the files' contents:
// their own, and their symlink targets'.
func (w *Watcher) watchDirs() []string {
	var dirs []string
	add := func(d string) {
		for _, have := range dirs {
			if have == d {
				return
			}
		}
		dirs = append(dirs, d)
	}
	for _, p := range w.Paths {
		add(filepath.Dir(p))
		if target, err := filepath.EvalSymlinks(p); err == nil {
			add(filepath.Dir(target))
		}
	}
	return dirs
}

func (w *Watcher) addWatches(fw *fsnotify.Watcher, watched map[string]bool, log *slog.Logger, what string) {
	for _, d := range w.watchDirs() {
		abs, _ := filepath.Abs(d)
		if watched[abs] {
			continue
		}
		if err := fw.Add(d); err != nil {
			log.Error(what+" watch", "dir", d, "err", err)
			continue
		}
		watched[abs] = true
	}
}

// relevant reports whether ev may have changed one of the files: an event
// on its name (or its symlink target's), or on a Kubernetes "..data"-style
// entry. Attribute changes alone do not count.
func (w *Watcher) relevant(ev fsnotify.Event) bool {
	if ev.Op == fsnotify.Chmod {
		return false
	}
	name := filepath.Base(ev.Name)
	if strings.HasPrefix(name, "..") {
		return true
	}
	for _, p := range w.Paths {
		if name == filepath.Base(p) {
			return true
		}
		if target, err := filepath.EvalSymlinks(p); err == nil && name == filepath.Base(target) {
			return true
		}
	}
	return false
}
