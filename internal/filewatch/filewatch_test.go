package filewatch

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
)

// follow runs w over paths until the test ends and counts reloads; each
// reload takes the stamp first, as callers do.
func follow(t *testing.T, w *Watcher, hup <-chan os.Signal) *atomic.Int32 {
	t.Helper()
	var n atomic.Int32
	var loaded atomic.Value
	loaded.Store(StampOf(w.Paths...))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- w.Run(ctx, true, hup, func() Stamp { return loaded.Load().(Stamp) }, func() {
			loaded.Store(StampOf(w.Paths...))
			n.Add(1)
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	})
	return &n
}

func waitCount(t *testing.T, n *atomic.Int32, want int32) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for n.Load() < want {
		if time.Now().After(deadline) {
			t.Fatalf("%d reloads, want %d", n.Load(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp~"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestSeveralFilesInTwoDirectories: an edit of either file reloads; an
// unrelated file in the same directory does not; SIGHUP always does.
func TestSeveralFilesInTwoDirectories(t *testing.T) {
	a := filepath.Join(t.TempDir(), "a.pem")
	b := filepath.Join(t.TempDir(), "b.pem")
	write(t, a, "a1")
	write(t, b, "b1")
	hup := make(chan os.Signal, 1)
	n := follow(t, &Watcher{Paths: []string{a, b}, What: "key file"}, hup)
	time.Sleep(50 * time.Millisecond) // let the watch start
	write(t, b, "b2")
	waitCount(t, n, 1)
	write(t, a, "a2")
	waitCount(t, n, 2)
	if err := os.WriteFile(filepath.Join(filepath.Dir(a), "other.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * Debounce)
	if got := n.Load(); got != 2 {
		t.Errorf("%d reloads after an unrelated file changed, want 2", got)
	}
	hup <- syscall.SIGHUP
	waitCount(t, n, 3)
}

// TestPollsWithoutNotify: when the filesystem cannot notify, edits are
// still noticed, by polling.
func TestPollsWithoutNotify(t *testing.T) {
	a := filepath.Join(t.TempDir(), "a.pem")
	write(t, a, "a1")
	w := &Watcher{
		Paths:        []string{a},
		NewWatcher:   func() (*fsnotify.Watcher, error) { return nil, errors.New("too many open files") },
		PollInterval: 20 * time.Millisecond,
	}
	n := follow(t, w, nil)
	write(t, a, "a2 longer")
	waitCount(t, n, 1)
}
