package store

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tidwall/buntdb"
)

// resp encodes one command the way buntdb writes its append-only file.
func resp(args ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b.String()
}

func openT(t testing.TB, path string, opt Options) *Store {
	t.Helper()
	s, err := Open(path, opt)
	if err != nil {
		t.Fatalf("Open(%s) = %v", path, err)
	}
	return s
}

func closeT(t testing.TB, s *Store) {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
}

func markT(t testing.TB, s *Store, id string, ttl time.Duration) bool {
	t.Helper()
	first, err := s.MarkSeen(id, ttl)
	if err != nil {
		t.Fatalf("MarkSeen(%q) = %v", id, err)
	}
	return first
}

func TestOpenSyncPolicy(t *testing.T) {
	tests := []struct {
		sync    string
		want    buntdb.SyncPolicy
		wantErr bool
	}{
		{"", buntdb.EverySecond, false},
		{"everysecond", buntdb.EverySecond, false},
		{"always", buntdb.Always, false},
		{"never", buntdb.Never, false},
		{"Always", 0, true},
		{"sometimes", 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.sync, func(t *testing.T) {
			s, err := Open(filepath.Join(t.TempDir(), "n.db"), Options{Sync: tc.sync})
			if tc.wantErr {
				if err == nil {
					closeT(t, s)
					t.Fatalf("Open(Sync: %q) = nil error, want one", tc.sync)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open(Sync: %q) = %v", tc.sync, err)
			}
			defer closeT(t, s)
			var cfg buntdb.Config
			if err := s.db.ReadConfig(&cfg); err != nil {
				t.Fatal(err)
			}
			if cfg.SyncPolicy != tc.want {
				t.Errorf("Open(Sync: %q): policy %v, want %v", tc.sync, cfg.SyncPolicy, tc.want)
			}
		})
	}
}

func TestMarkSeen(t *testing.T) {
	s := openT(t, Memory, Options{})
	defer closeT(t, s)
	steps := []struct {
		op        string // "mark" or "unmark"
		id        string
		wantFirst bool
	}{
		{"mark", "msg_1", true},
		{"mark", "msg_1", false},
		{"mark", "msg_2", true},
		{"unmark", "msg_1", false},
		{"mark", "msg_1", true},
		{"mark", "msg_1", false},
		{"unmark", "never-seen", false},
		{"mark", "msg_2", false},
	}
	for i, st := range steps {
		switch st.op {
		case "mark":
			if got := markT(t, s, st.id, time.Hour); got != st.wantFirst {
				t.Errorf("step %d: MarkSeen(%q) = %v, want %v", i, st.id, got, st.wantFirst)
			}
		case "unmark":
			if err := s.Unmark(st.id); err != nil {
				t.Errorf("step %d: Unmark(%q) = %v", i, st.id, err)
			}
		}
	}
	if err := s.Healthy(); err != nil {
		t.Errorf("Healthy() = %v, want nil", err)
	}
}

func TestMarkSeenArgs(t *testing.T) {
	s := openT(t, Memory, Options{})
	defer closeT(t, s)
	tests := []struct {
		name string
		id   string
		ttl  time.Duration
	}{
		{"empty id", "", time.Hour},
		{"zero ttl", "a", 0},
		{"negative ttl", "a", -time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.MarkSeen(tc.id, tc.ttl); err == nil {
				t.Errorf("MarkSeen(%q, %v) = nil error, want one", tc.id, tc.ttl)
			}
		})
	}
}

// Idempotency survives a restart, whatever the sync policy (Close syncs).
func TestMarkSeenSurvivesRestart(t *testing.T) {
	for _, policy := range []string{"always", "everysecond", "never"} {
		t.Run(policy, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "node.db")
			s := openT(t, path, Options{Sync: policy})
			markT(t, s, "msg_restart", 24*time.Hour)
			markT(t, s, "msg_unmarked", 24*time.Hour)
			if err := s.Unmark("msg_unmarked"); err != nil {
				t.Fatal(err)
			}
			closeT(t, s)

			s = openT(t, path, Options{Sync: policy})
			defer closeT(t, s)
			if markT(t, s, "msg_restart", 24*time.Hour) {
				t.Error("MarkSeen(msg_restart) after reopen = true, want false (already seen)")
			}
			if !markT(t, s, "msg_unmarked", 24*time.Hour) {
				t.Error("MarkSeen(msg_unmarked) after reopen = false, want true (was unmarked)")
			}
		})
	}
}

func TestMarkSeenTTL(t *testing.T) {
	s := openT(t, Memory, Options{})
	defer closeT(t, s)
	const ttl = 30 * time.Millisecond
	if !markT(t, s, "short", ttl) {
		t.Fatal("MarkSeen(short) = false, want true")
	}
	if markT(t, s, "short", ttl) {
		t.Fatal("MarkSeen(short) again within TTL = true, want false")
	}
	time.Sleep(3 * ttl)
	if !markT(t, s, "short", ttl) {
		t.Error("MarkSeen(short) after TTL = false, want true (expired)")
	}
}

// Keys past their absolute expiry are dropped when the file is loaded.
func TestExpiredKeysDroppedOnLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.db")
	past := strconv.FormatInt(time.Now().Add(-time.Hour).Unix(), 10)
	future := strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)
	aof := resp("set", "wh:old", "1", "ae", past) + resp("set", "wh:live", "1", "ae", future)
	if err := os.WriteFile(path, []byte(aof), 0o600); err != nil {
		t.Fatal(err)
	}
	s := openT(t, path, Options{})
	defer closeT(t, s)
	if !markT(t, s, "old", time.Hour) {
		t.Error("MarkSeen(old) = false, want true: its expiry had passed")
	}
	if markT(t, s, "live", time.Hour) {
		t.Error("MarkSeen(live) = true, want false: still within its TTL")
	}
}

// RELIABILITY case 40: ten concurrent deliveries of one id, one winner.
func TestMarkSeenConcurrent(t *testing.T) {
	s := openT(t, filepath.Join(t.TempDir(), "node.db"), Options{})
	defer closeT(t, s)
	for round := range 20 {
		id := "msg_concurrent_" + strconv.Itoa(round)
		var (
			wg     sync.WaitGroup
			start  = make(chan struct{})
			mu     sync.Mutex
			firsts int
		)
		for range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				first, err := s.MarkSeen(id, time.Hour)
				if err != nil {
					t.Errorf("MarkSeen(%q) = %v", id, err)
					return
				}
				if first {
					mu.Lock()
					firsts++
					mu.Unlock()
				}
			}()
		}
		close(start)
		wg.Wait()
		if firsts != 1 {
			t.Fatalf("round %d: %d callers got first=true, want exactly 1", round, firsts)
		}
	}
}

// RELIABILITY case 48: garbage mid-file. The store opens empty, the damaged
// file is kept under a new name, and it is logged at Error.
func TestOpenCorruptMovesAside(t *testing.T) {
	good := resp("set", "wh:a", "1")
	tests := []struct {
		name string
		aof  string
	}{
		{"garbage between records", good + "this is not resp\r\n" + resp("set", "wh:b", "1")},
		{"bad bulk length", good + "*3\r\n$x\r\nset\r\n" + resp("set", "wh:b", "1")},
		{"unknown command", good + resp("incr", "wh:a") + resp("set", "wh:b", "1")},
		{"bad expiry number", good + resp("set", "wh:b", "1", "ae", "soon") + good},
		{"empty command name (buntdb panics)", good + resp("") + good},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "node.db")
			if err := os.WriteFile(path, []byte(tc.aof), 0o600); err != nil {
				t.Fatal(err)
			}
			var logs bytes.Buffer
			s := openT(t, path, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			defer closeT(t, s)

			if !markT(t, s, "a", time.Hour) {
				t.Error("MarkSeen(a) = false, want true: the corrupt file's keys must not load")
			}
			aside, err := filepath.Glob(path + ".corrupt-*")
			if err != nil || len(aside) != 1 {
				t.Fatalf("files %s.corrupt-* = %v, %v; want exactly one", path, aside, err)
			}
			if got, err := os.ReadFile(aside[0]); err != nil || string(got) != tc.aof {
				t.Errorf("moved-aside file = %q, %v; want the original bytes", got, err)
			}
			if suffix := strings.TrimPrefix(aside[0], path+".corrupt-"); !isDigits(suffix) {
				t.Errorf("moved-aside name %q, want %s.corrupt-<unix>", aside[0], path)
			}
			if out := logs.String(); !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "moved aside") {
				t.Errorf("log = %q, want an ERROR saying the file was moved aside", out)
			}
		})
	}
}

func isDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

// Two corruptions within the same second keep both damaged files.
func TestMoveAsideNeverOverwrites(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "node.db")
	now := time.Unix(1700000000, 0)
	for i, content := range []string{"first", "second", "third"} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		aside, err := moveAside(path, now)
		if err != nil {
			t.Fatalf("moveAside #%d = %v", i, err)
		}
		if got, _ := os.ReadFile(aside); string(got) != content {
			t.Errorf("moveAside #%d → %s holds %q, want %q", i, aside, got, content)
		}
	}
	if m, _ := filepath.Glob(path + ".corrupt-1700000000*"); len(m) != 3 {
		t.Errorf("moved-aside files = %v, want 3", m)
	}
}

// RELIABILITY case 47: a kill -9 mid-append leaves a torn tail, which loads
// without the partial record, and the file stays appendable.
func TestOpenTornTail(t *testing.T) {
	full := resp("set", "wh:a", "1") + resp("set", "wh:b", "1")
	torn := resp("set", "wh:c", "1")
	for cut := 1; cut < len(torn); cut += 3 {
		t.Run("cut at "+strconv.Itoa(cut), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "node.db")
			if err := os.WriteFile(path, []byte(full+torn[:cut]), 0o600); err != nil {
				t.Fatal(err)
			}
			s := openT(t, path, Options{})
			if markT(t, s, "a", time.Hour) || markT(t, s, "b", time.Hour) {
				t.Error("keys before the torn record were lost")
			}
			if !markT(t, s, "c", time.Hour) {
				t.Error("the torn record loaded, want it dropped")
			}
			closeT(t, s)
			if m, _ := filepath.Glob(path + ".corrupt-*"); len(m) != 0 {
				t.Errorf("torn tail treated as corruption: %v", m)
			}
			s = openT(t, path, Options{})
			defer closeT(t, s)
			if markT(t, s, "c", time.Hour) {
				t.Error("after reopen, c (written after the tear) was lost")
			}
		})
	}
}

func TestOpenUnreadableIsAnError(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(filepath.Join(dir, "missing-dir", "node.db"), Options{}); err == nil {
		t.Error("Open(path in a missing directory) = nil error, want one")
	}
	if _, err := Open(dir, Options{}); err == nil {
		t.Error("Open(a directory) = nil error, want one")
	}
	if m, _ := filepath.Glob(dir + ".corrupt-*"); len(m) != 0 {
		t.Errorf("an unreadable path was moved aside: %v", m)
	}
}

// RELIABILITY case 49. The disk filling up is simulated with RLIMIT_FSIZE:
// a write crossing the limit is cut short and fails with EFBIG (Go ignores
// SIGXFSZ), which takes the same path in buntdb as ENOSPC: truncate the
// partial record, roll back, return the error. Not parallel: the limit is
// process-wide.
func TestWriteFailureAndRecovery(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.db")
	s := openT(t, path, Options{Sync: "always"})
	markT(t, s, "before", time.Hour)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
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
	full.Cur = uint64(fi.Size()) + 8 // room for part of a record only
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &full); err != nil {
		t.Fatal(err)
	}

	for i := range 3 {
		if _, err := s.MarkSeen("during", time.Hour); !errors.Is(err, syscall.EFBIG) {
			t.Fatalf("attempt %d: MarkSeen with the disk full = %v, want EFBIG", i, err)
		}
		if err := s.Healthy(); !errors.Is(err, syscall.EFBIG) {
			t.Fatalf("attempt %d: Healthy() = %v, want EFBIG", i, err)
		}
	}
	// Reads keep working and the failed write left nothing behind.
	if first := markT(t, s, "before", time.Hour); first {
		t.Error("MarkSeen(before) = true: a failed write disturbed older keys")
	}
	if err := s.Healthy(); err == nil {
		t.Error("Healthy() = nil after a no-op transaction, want the write error kept")
	}
	if fi2, _ := os.Stat(path); fi2.Size() != fi.Size() {
		t.Errorf("file size %d after failed writes, want %d (partial record truncated)", fi2.Size(), fi.Size())
	}

	restore()
	if !markT(t, s, "during", time.Hour) {
		t.Error("MarkSeen(during) after space freed = false, want true (the failed one was rolled back)")
	}
	if err := s.Healthy(); err != nil {
		t.Errorf("Healthy() after a successful write = %v, want nil", err)
	}
	closeT(t, s)
	s = openT(t, path, Options{})
	defer closeT(t, s)
	if markT(t, s, "before", time.Hour) || markT(t, s, "during", time.Hour) {
		t.Error("after reopen a key was lost")
	}
	if m, _ := filepath.Glob(path + ".corrupt-*"); len(m) != 0 {
		t.Errorf("file corrupt after failed writes: %v", m)
	}
}

// buntdb panics, holding its write lock, when it cannot truncate a partial
// write. That cannot be provoked from outside (truncating down does not
// fail on a full disk), so commit is replaced by one that panics the same way
// before writing.
func TestCommitPanicMarksBroken(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.db")
	var logs bytes.Buffer
	s := openT(t, path, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	markT(t, s, "before", time.Hour)
	s.commit = func(*buntdb.Tx) error {
		panic(fmt.Errorf("buntdb: %w", errors.New("truncate node.db: input/output error")))
	}

	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := s.MarkSeen("boom", time.Hour); !errors.Is(err, ErrBroken) {
			t.Errorf("MarkSeen when commit panics = %v, want ErrBroken", err)
		}
		if err := s.Healthy(); !errors.Is(err, ErrBroken) {
			t.Errorf("Healthy() = %v, want ErrBroken", err)
		}
		// The lock was released: later writes fail fast instead of hanging.
		s.commit = (*buntdb.Tx).Commit
		if _, err := s.MarkSeen("after", time.Hour); !errors.Is(err, ErrBroken) {
			t.Errorf("MarkSeen after the store broke = %v, want ErrBroken", err)
		}
		if err := update(s, func(tx *buntdb.Tx) error { return nil }); !errors.Is(err, ErrBroken) {
			t.Errorf("write after the store broke = %v, want ErrBroken", err)
		}
		// Reads still work, and the panicking transaction was rolled back.
		err := s.db.View(func(tx *buntdb.Tx) error {
			if _, err := tx.Get(prefixWebhook + "before"); err != nil {
				t.Errorf("Get(before) = %v, want it kept", err)
			}
			if _, err := tx.Get(prefixWebhook + "boom"); !errors.Is(err, buntdb.ErrNotFound) {
				t.Errorf("Get(boom) = %v, want ErrNotFound (rolled back)", err)
			}
			return nil
		})
		if err != nil {
			t.Errorf("View = %v", err)
		}
		closeT(t, s)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("store deadlocked after a commit panic")
	}
	if !strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("log = %q, want an ERROR", logs.String())
	}
	s = openT(t, path, Options{})
	defer closeT(t, s)
	if err := s.Healthy(); err != nil {
		t.Errorf("Healthy() after restart = %v, want nil", err)
	}
}

// update is write for a callback that always changes something.
func update(s *Store, fn func(tx *buntdb.Tx) error) error {
	return s.write(func(tx *buntdb.Tx) (bool, error) { return true, fn(tx) })
}

// A panic in a write callback (a bug) propagates, but does not leave the
// write lock held or the half-done transaction applied.
func TestWritePanicRollsBack(t *testing.T) {
	s := openT(t, Memory, Options{})
	defer closeT(t, s)
	func() {
		defer func() {
			if r := recover(); r != "bug" {
				t.Errorf("recover() = %v, want the callback's panic", r)
			}
		}()
		_ = update(s, func(tx *buntdb.Tx) error {
			if _, _, err := tx.Set(prefixWebhook+"half", "1", nil); err != nil {
				return err
			}
			panic("bug")
		})
	}()
	if !markT(t, s, "half", time.Hour) {
		t.Error("MarkSeen(half) = false, want true: the panicking write was applied")
	}
}

// An error from a write callback rolls back and does not touch health.
func TestWriteCallbackError(t *testing.T) {
	s := openT(t, Memory, Options{})
	defer closeT(t, s)
	errStop := errors.New("stop")
	err := update(s, func(tx *buntdb.Tx) error {
		if _, _, err := tx.Set(prefixWebhook+"x", "1", nil); err != nil {
			return err
		}
		return errStop
	})
	if !errors.Is(err, errStop) {
		t.Errorf("write() = %v, want the callback's error", err)
	}
	if err := s.Healthy(); err != nil {
		t.Errorf("Healthy() = %v, want nil: a callback error is not a write failure", err)
	}
	if !markT(t, s, "x", time.Hour) {
		t.Error("the failed write's Set was kept")
	}
}

func TestCloseTwiceAndUseAfterClose(t *testing.T) {
	s := openT(t, filepath.Join(t.TempDir(), "node.db"), Options{})
	closeT(t, s)
	if err := s.Close(); !errors.Is(err, buntdb.ErrDatabaseClosed) {
		t.Errorf("second Close() = %v, want ErrDatabaseClosed", err)
	}
	if _, err := s.MarkSeen("x", time.Hour); !errors.Is(err, buntdb.ErrDatabaseClosed) {
		t.Errorf("MarkSeen after Close = %v, want ErrDatabaseClosed", err)
	}
	if err := s.Healthy(); err != nil {
		t.Errorf("Healthy() after use-after-close = %v, want nil: not a disk failure", err)
	}
}

func TestMemoryKeepsNothing(t *testing.T) {
	s := openT(t, Memory, Options{})
	markT(t, s, "m", time.Hour)
	closeT(t, s)
	s = openT(t, Memory, Options{})
	defer closeT(t, s)
	if !markT(t, s, "m", time.Hour) {
		t.Error("a :memory: store kept a key across Open")
	}
	if _, err := os.Stat(Memory); err == nil {
		t.Errorf("a file named %s was created", Memory)
	}
}

func BenchmarkMarkSeen(b *testing.B) {
	for _, bc := range []struct{ name, path, sync string }{
		{"memory", Memory, ""},
		{"file everysecond", "file", "everysecond"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			path := bc.path
			if path == "file" {
				path = filepath.Join(b.TempDir(), "node.db")
			}
			s := openT(b, path, Options{Sync: bc.sync})
			defer closeT(b, s)
			ids := make([]string, 4096)
			for i := range ids {
				ids[i] = "msg_" + strconv.Itoa(i)
			}
			b.ReportAllocs()
			b.ResetTimer()
			i := 0
			for b.Loop() {
				// First sightings and duplicates, as retries produce.
				if _, err := s.MarkSeen(ids[i%len(ids)], time.Hour); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
