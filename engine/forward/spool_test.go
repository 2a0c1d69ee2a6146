package forward

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sidecar/sidecar/engine/store"
)

// spoolFiles lists the body files next to the store file at path.
func spoolFiles(t testing.TB, path string) []string {
	t.Helper()
	entries, err := os.ReadDir(path + ".outbox")
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, filepath.Join(path+".outbox", e.Name()))
	}
	return names
}

// Issue 7: every retry rewrote the whole record, body included, so the
// store file grew by the body per retry. Now the body file is written
// once: its inode and mtime do not change, and the store file grows by
// far less than the body per retry.
func TestRetryDoesNotRewriteBody(t *testing.T) {
	checkLeaks(t)
	clock := newClock()
	a := newApp(t, clock.Now, statuses(503))
	path := filepath.Join(t.TempDir(), "node.db")
	s := openStore(t, path)
	defer func() { _ = s.Close() }()
	f := newForwarder(t, Config{Store: s, Signer: signer(t), Now: clock.Now,
		InitialBackoff: time.Second, MaxBackoff: time.Second, RetryHorizon: time.Hour})
	f.jitter = func(c time.Duration) time.Duration { return c }
	body := bytes.Repeat([]byte("r"), 60<<10)
	enqueue(t, f, Item{ID: "fwd_big", URL: a.URL, Body: body})
	files := spoolFiles(t, path)
	if len(files) != 1 {
		t.Fatalf("body files after Enqueue = %v, want one", files)
	}
	before, err := os.Stat(files[0])
	if err != nil {
		t.Fatal(err)
	}
	dbBefore, _ := os.Stat(path)
	time.Sleep(20 * time.Millisecond) // let a coarse mtime show a rewrite

	const retries = 4
	stop := startRun(t, f)
	for i := 1; i <= retries; i++ {
		waitFor(t, "retry "+strconv.Itoa(i), func() bool { return f.Stats().Retried == int64(i) })
		if i < retries {
			clock.Advance(time.Second)
			f.poke()
		}
	}
	stop()
	after, err := os.Stat(files[0])
	if err != nil {
		t.Fatalf("body file after %d retries: %v", retries, err)
	}
	if !os.SameFile(before, after) || !after.ModTime().Equal(before.ModTime()) {
		t.Errorf("body file rewritten by a retry: mtime %v → %v, same inode %v", before.ModTime(), after.ModTime(), os.SameFile(before, after))
	}
	dbAfter, _ := os.Stat(path)
	if grown := dbAfter.Size() - dbBefore.Size(); grown > retries*1024 {
		t.Errorf("store file grew %d bytes over %d retries, want under 1 KiB each (the body is %d)", grown, retries, len(body))
	}
	for i, r := range a.requests() {
		if !bytes.Equal(r.body, body) || r.verifyErr != nil {
			t.Errorf("attempt %d: %d body bytes, verify %v; want the whole body, signed", i, len(r.body), r.verifyErr)
		}
	}
}

// Issue 7: queued bodies sat in buntdb, in memory (1,000 × 60 KB took RSS
// from 16 MB to 450 MB). With a file store they are on disk: queueing
// 60 MB of bodies leaves the Go heap far below 60 MB. And what an item is
// charged against the byte cap covers what it does take in memory, so the
// cap bounds memory too, whatever the body sizes.
func TestQueuedBodiesOutOfRAM(t *testing.T) {
	tests := []struct {
		name    string
		n, size int
		maxHeap int64
	}{
		{"1000 x 60 KB", 1000, 60 << 10, 12 << 20},
		{"5000 x 256 B (inline)", 5000, 256, 5000 * charge(256)},
		{"5000 x 257 B (in files)", 5000, 257, 5000 * charge(0)},
		{"5000 x 0 B", 5000, 0, 5000 * charge(0)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "node.db")
			s, err := store.Open(path, store.Options{Sync: "never"})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = s.Close() }()
			f := newForwarder(t, Config{Store: s, Signer: signer(t), MaxPendingBytes: 1 << 40})
			b := bytes.Repeat([]byte("m"), tc.size)
			heap := func() int64 {
				runtime.GC()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				return int64(ms.HeapInuse)
			}
			base := heap()
			for i := range tc.n {
				// ids and URL as the engine makes them
				id := "fwd_1764590000000-" + strconv.Itoa(100000+i) + "_0"
				enqueue(t, f, Item{ID: id, EventID: id[4 : len(id)-2], URL: "http://app.internal/api/bookings/socket-update", Body: b})
			}
			grown := heap() - base
			runtime.KeepAlive(f)
			if got := f.Stats().Pending; got != int64(tc.n) {
				t.Fatalf("Stats().Pending = %d, want %d", got, tc.n)
			}
			if grown > tc.maxHeap {
				t.Errorf("heap grew %.1f MB queueing %d x %d B, want at most %.1f MB", mb(grown), tc.n, tc.size, mb(tc.maxHeap))
			}
			t.Logf("heap grew %.1f MB (%d B per item) for %.1f MB of queued bodies", mb(grown), grown/int64(tc.n), mb(int64(tc.n*tc.size)))
		})
	}
}

func mb(n int64) float64 { return float64(n) / (1 << 20) }

// A body file removed behind the forwarder's back (while it was down):
// New drops the item, counts it Failed and logs once; the others are
// delivered. A body file with no record is removed.
func TestRestartWithMissingBody(t *testing.T) {
	checkLeaks(t)
	path := filepath.Join(t.TempDir(), "node.db")
	a := newApp(t, time.Now, nil)
	s := openStore(t, path)
	f := newForwarder(t, Config{Store: s, Signer: signer(t)})
	for i := range 3 {
		enqueue(t, f, Item{ID: "fwd_" + strconv.Itoa(i), URL: a.URL, Body: body(1000)}) // over 512 bytes: in a file
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	files := spoolFiles(t, path)
	if len(files) != 3 {
		t.Fatalf("body files = %v, want 3", files)
	}
	if err := os.Remove(files[1]); err != nil {
		t.Fatal(err)
	}
	orphan := filepath.Join(path+".outbox", "00000000000000ff")
	if err := os.WriteFile(orphan, []byte("no record"), 0o600); err != nil {
		t.Fatal(err)
	}

	var logs bytes.Buffer
	s = openStore(t, path)
	defer func() { _ = s.Close() }()
	f = newForwarder(t, Config{Store: s, Signer: signer(t), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if got := f.Stats(); got.Pending != 2 || got.Failed != 1 {
		t.Errorf("Stats() after restart = %+v, want 2 pending, 1 failed", got)
	}
	if n := strings.Count(logs.String(), "level=ERROR"); n != 1 {
		t.Errorf("%d errors logged, want 1:\n%s", n, logs.String())
	}
	if _, err := os.Stat(orphan); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("orphan body file after New: %v, want removed", err)
	}
	stop := startRun(t, f)
	waitFor(t, "two deliveries", func() bool { return f.Stats().Delivered == 2 })
	stop()
	if got := a.count(); got != 2 {
		t.Errorf("app got %d requests, want 2", got)
	}
	if files := spoolFiles(t, path); len(files) != 0 {
		t.Errorf("body files after delivery = %v, want none", files)
	}
}

// The disk fills up while a body is written (RLIMIT_FSIZE cuts the write
// short with EFBIG, the same path as ENOSPC): Enqueue returns the error,
// not ErrFull, nothing is queued or left on disk, and the store reports
// it. Not parallel: the limit is process-wide.
func TestEnqueueDiskFull(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.db")
	s := openStore(t, path)
	defer func() { _ = s.Close() }()
	f := newForwarder(t, Config{Store: s, Signer: signer(t)})
	enqueue(t, f, Item{ID: "fwd_before", URL: "http://app.invalid/", Body: body(1000)})

	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	restore := func() {
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
			t.Fatalf("restore RLIMIT_FSIZE: %v", err)
		}
	}
	t.Cleanup(restore)
	full := old
	full.Cur = 1 << 20 // above the test binary's own log, below the body
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &full); err != nil {
		t.Fatal(err)
	}
	err := f.Enqueue(context.Background(), Item{ID: "fwd_big", URL: "http://app.invalid/", Body: make([]byte, 2<<20)})
	restore()
	if !errors.Is(err, syscall.EFBIG) || errors.Is(err, ErrFull) {
		t.Fatalf("Enqueue on a full disk = %v, want EFBIG and not ErrFull", err)
	}
	if err := s.Healthy(); !errors.Is(err, syscall.EFBIG) {
		t.Errorf("store Healthy() = %v, want EFBIG", err)
	}
	if got := f.Stats().Pending; got != 1 {
		t.Errorf("Stats().Pending = %d, want 1 (only the earlier item)", got)
	}
	if _, ok := loadT(t, f, "fwd_big"); ok {
		t.Error("the item was queued although its body was not written")
	}
	if files := spoolFiles(t, path); len(files) != 1 {
		t.Errorf("body files = %v, want only the earlier item's", files)
	}
	enqueue(t, f, Item{ID: "fwd_big", URL: "http://app.invalid/", Body: make([]byte, 2<<20)})
	if err := s.Healthy(); err != nil {
		t.Errorf("store Healthy() after a successful Enqueue = %v, want nil", err)
	}
}
