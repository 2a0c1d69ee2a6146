package store

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// spoolFiles lists the names in the store's outbox directory.
func spoolFiles(t testing.TB, s *Store) []string {
	t.Helper()
	entries, err := os.ReadDir(s.path + spoolSuffix)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// big pads s past inlineMax, so that its body goes to a file.
func big(s string) string { return s + strings.Repeat(".", inlineMax) }

// bodyPath is the file holding id's body.
func bodyPath(t testing.TB, o *Outbox, id string) string {
	t.Helper()
	sr, ok, err := o.get(id)
	if err != nil || !ok || sr.File == 0 {
		t.Fatalf("get(%s) = %+v, %v, %v; want a record with a body file", id, sr, ok, err)
	}
	return o.sp.path(sr.File)
}

// A retry rewrites the small record, never the body: the body file keeps
// its inode and mtime, and the store file grows by far less than the body.
func TestOutboxRetryDoesNotRewriteBody(t *testing.T) {
	for _, policy := range []string{"always", "everysecond"} {
		t.Run(policy, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "node.db")
			s := openT(t, path, Options{Sync: policy})
			defer closeT(t, s)
			o := s.Outbox()
			restoreT(t, o)
			body := bytes.Repeat([]byte("b"), 60<<10)
			if err := o.Insert(OutboxRecord{ID: "big", URL: "http://app/x", Due: 1}, body); err != nil {
				t.Fatal(err)
			}
			file := bodyPath(t, o, "big")
			before, err := os.Stat(file)
			if err != nil {
				t.Fatal(err)
			}
			dbBefore, _ := os.Stat(path)
			// Let a filesystem with coarse timestamps show a rewrite.
			time.Sleep(20 * time.Millisecond)
			const retries = 5
			for i := range retries {
				if err := o.Reschedule("big", int64(i+2), i+1, "503 Service Unavailable"); err != nil {
					t.Fatal(err)
				}
			}
			after, err := os.Stat(file)
			if err != nil {
				t.Fatalf("body file after retries: %v", err)
			}
			if !os.SameFile(before, after) || !after.ModTime().Equal(before.ModTime()) || after.Size() != int64(len(body)) {
				t.Errorf("body file changed by a retry: before %v %v, after %v %v (same inode %v)",
					before.ModTime(), before.Size(), after.ModTime(), after.Size(), os.SameFile(before, after))
			}
			dbAfter, _ := os.Stat(path)
			if grown := dbAfter.Size() - dbBefore.Size(); grown > retries*1024 {
				t.Errorf("store file grew %d bytes over %d retries, want under 1 KiB each (the body is %d)", grown, retries, len(body))
			}
			if got, err := o.Body("big"); err != nil || !bytes.Equal(got, body) {
				t.Errorf("Body(big) after retries: %d bytes, %v", len(got), err)
			}
		})
	}
}

// Body files are named by a number the spool picks, never by the id, so
// an id cannot steer a path; removing an item removes its file.
func TestOutboxBodyFileNames(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, filepath.Join(dir, "node.db"), Options{})
	defer closeT(t, s)
	o := s.Outbox()
	restoreT(t, o)
	ids := []string{"../../escape", "/abs", "a/b", "con", strings.Repeat("x", 256), "fwd_1"}
	for _, id := range ids {
		if err := o.Insert(OutboxRecord{ID: id, Due: 1}, []byte(big("body of "+id))); err != nil {
			t.Fatalf("Insert(%q) = %v", id, err)
		}
	}
	names := spoolFiles(t, s)
	if len(names) != len(ids) {
		t.Fatalf("spool holds %v, want %d files", names, len(ids))
	}
	for _, n := range names {
		if _, ok := parseSpoolName(n); !ok {
			t.Errorf("spool file %q is not a spool number", n)
		}
	}
	if top, _ := os.ReadDir(dir); len(top) != 2 {
		t.Errorf("%s holds %d entries, want node.db and node.db.outbox only", dir, len(top))
	}
	for _, id := range ids {
		if got, err := o.Body(id); err != nil || string(got) != big("body of "+id) {
			t.Errorf("Body(%q) = %q, %v", id, got, err)
		}
		if err := o.Remove(id); err != nil {
			t.Fatal(err)
		}
	}
	if names := spoolFiles(t, s); len(names) != 0 {
		t.Errorf("spool after removing every item = %v, want empty", names)
	}
}

func TestSpoolName(t *testing.T) {
	for _, n := range []uint64{1, 0xabc, 1<<64 - 1} {
		name := spoolName(n)
		if got, ok := parseSpoolName(name); !ok || got != n || len(name) != spoolNameLen {
			t.Errorf("parseSpoolName(spoolName(%d) = %q) = %d, %v", n, name, got, ok)
		}
	}
	for _, bad := range []string{"", "0000000000000000", "000000000000000g", "00000000000000001", "ABCDEF0123456789", "000000000000000a.tmp"} {
		if _, ok := parseSpoolName(bad); ok {
			t.Errorf("parseSpoolName(%q) ok, want rejected", bad)
		}
	}
}

// Restore removes orphan body files and drops records whose body is gone
// or cut short; a file that is not a spool name is left alone.
func TestOutboxRestoreSpool(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.db")
	s := openT(t, path, Options{Sync: "always"})
	o := s.Outbox()
	restoreT(t, o)
	for _, id := range []string{"kept", "missing", "short"} {
		insertT(t, o, id, 1, big("the body of "+id))
	}
	insertT(t, o, "empty", 1, "")
	insertT(t, o, "small", 1, "inline")
	missing, short := bodyPath(t, o, "missing"), bodyPath(t, o, "short")
	closeT(t, s)

	if err := os.Remove(missing); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(short, 3); err != nil {
		t.Fatal(err)
	}
	dir := path + spoolSuffix
	orphan := filepath.Join(dir, spoolName(1<<40))
	foreign := filepath.Join(dir, "README")
	for _, p := range []string{orphan, foreign} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	var logs bytes.Buffer
	s = openT(t, path, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	defer closeT(t, s)
	o = s.Outbox()
	recs, dropped := restoreT(t, o)
	if dropped != 2 {
		t.Errorf("Restore dropped %d, want 2 (missing, short)", dropped)
	}
	if _, ok := recs["kept"]; !ok || len(recs) != 3 {
		t.Errorf("restored %v, want kept, empty and small", recs)
	}
	if _, err := os.Stat(orphan); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("orphan body file still there: %v", err)
	}
	if _, err := os.Stat(foreign); err != nil {
		t.Errorf("a file that is not a spool name was touched: %v", err)
	}
	if _, err := os.Stat(short); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the short body of a dropped record is still there: %v", err)
	}
	if got := scanT(t, o); !slices.Equal(got, []string{"empty", "kept", "small"}) {
		t.Errorf("Scan after Restore = %v, want [empty kept small]", got)
	}
	if !strings.Contains(logs.String(), "files=2") { // the orphan and the short body
		t.Errorf("log = %q, want the orphan removal counted", logs.String())
	}
	// New bodies never reuse a number in use or left on disk.
	insertT(t, o, "new", 1, big("fresh"))
	if got, err := o.Body("new"); err != nil || string(got) != big("fresh") {
		t.Errorf("Body(new) = %q, %v", got, err)
	}
	if got, err := o.Body("kept"); err != nil || string(got) != big("the body of kept") {
		t.Errorf("Body(kept) = %q, %v", got, err)
	}
	if got, err := o.Body("empty"); err != nil || len(got) != 0 {
		t.Errorf("Body(empty) = %q, %v", got, err)
	}
	if got, err := o.Body("small"); err != nil || string(got) != "inline" {
		t.Errorf("Body(small) = %q, %v", got, err)
	}
}

// A body altered after Restore (same size, other bytes) or removed is
// unreadable: the item can never be sent as it was queued.
func TestOutboxBodyChecked(t *testing.T) {
	s := openT(t, filepath.Join(t.TempDir(), "node.db"), Options{})
	defer closeT(t, s)
	o := s.Outbox()
	restoreT(t, o)
	insertT(t, o, "flipped", 1, big("abcdef"))
	insertT(t, o, "gone", 1, big("abcdef"))
	if err := os.WriteFile(bodyPath(t, o, "flipped"), []byte(big("abcdeX")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(bodyPath(t, o, "gone")); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"flipped", "gone"} {
		if _, err := o.Body(id); !errors.Is(err, ErrUnreadable) {
			t.Errorf("Body(%s) = %v, want ErrUnreadable", id, err)
		}
		if err := o.Remove(id); err != nil {
			t.Errorf("Remove(%s) = %v", id, err)
		}
	}
}

// Records written before the spool carry their body inline and no size;
// Restore moves a large one to a file, keeps a small one inline, and sets
// the sizes.
func TestOutboxRestoreMovesInlineBodies(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.db")
	large := big(`{"n":2}`)
	oldSmall := `{"id":"small","url":"http://app/x","body":"eyJuIjoxfQ==","created":"2026-01-02T03:04:05Z","due":5,"attempts":2}`
	oldLarge := `{"id":"large","url":"http://app/x","body":"` + base64.StdEncoding.EncodeToString([]byte(large)) + `","created":"2026-01-02T03:04:05Z","due":6}`
	aof := resp("set", recordKey("small"), oldSmall) + resp("set", dueKey(5, "small"), "") +
		resp("set", recordKey("large"), oldLarge) + resp("set", dueKey(6, "large"), "")
	if err := os.WriteFile(path, []byte(aof), 0o600); err != nil {
		t.Fatal(err)
	}
	s := openT(t, path, Options{})
	o := s.Outbox()
	recs, dropped := restoreT(t, o)
	if r := recs["small"]; dropped != 0 || r.Size != 7 || r.Attempts != 2 || r.Due != 5 {
		t.Errorf("restored %+v, dropped %d; want small with 7 bytes, 2 attempts", recs, dropped)
	}
	if r := recs["large"]; r.Size != int64(len(large)) {
		t.Errorf("restored large = %+v, want %d bytes", r, len(large))
	}
	if sr, _, _ := o.get("large"); sr.File == 0 || sr.Body != nil {
		t.Errorf("large record after Restore = %+v, want a file and no inline body", sr)
	}
	closeT(t, s)

	s = openT(t, path, Options{})
	defer closeT(t, s)
	o = s.Outbox()
	recs, _ = restoreT(t, o)
	if recs["small"].Size != 7 || recs["large"].Size != int64(len(large)) {
		t.Errorf("sizes after a second restart = %+v", recs)
	}
	if got, err := o.Body("small"); err != nil || string(got) != `{"n":1}` {
		t.Errorf("Body(small) = %q, %v", got, err)
	}
	if got, err := o.Body("large"); err != nil || string(got) != large {
		t.Errorf("Body(large) = %q, %v", got, err)
	}
}

// Bodies of up to inlineMax bytes stay in the record: no file.
func TestOutboxSmallBodiesInline(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.db")
	s := openT(t, path, Options{})
	o := s.Outbox()
	restoreT(t, o)
	small := strings.Repeat("s", inlineMax)
	insertT(t, o, "small", 1, small)
	insertT(t, o, "large", 1, small+"l")
	if names := spoolFiles(t, s); len(names) != 1 {
		t.Errorf("spool = %v, want one file (the large body)", names)
	}
	closeT(t, s)
	s = openT(t, path, Options{})
	defer closeT(t, s)
	o = s.Outbox()
	if recs, dropped := restoreT(t, o); len(recs) != 2 || dropped != 0 {
		t.Errorf("Restore = %v, dropped %d", recs, dropped)
	}
	if got, err := o.Body("small"); err != nil || string(got) != small {
		t.Errorf("Body(small) = %d bytes, %v", len(got), err)
	}
	if got, err := o.Body("large"); err != nil || string(got) != small+"l" {
		t.Errorf("Body(large) = %d bytes, %v", len(got), err)
	}
}

// A full disk while a body is written: Insert fails with the disk's
// error, nothing is left half-queued (no record, no file, partial or
// whole), Healthy reports it, and the next Insert with room succeeds.
func TestOutboxBodyWriteFails(t *testing.T) {
	s := openT(t, filepath.Join(t.TempDir(), "node.db"), Options{Sync: "always"})
	defer closeT(t, s)
	o := s.Outbox()
	restoreT(t, o)
	o.sp.write = func(name string, body []byte, sync bool) error {
		// Half the body reaches the disk, then the disk is full; what is
		// left behind is for Insert to clean up.
		if err := os.WriteFile(name, body[:len(body)/2], 0o600); err != nil {
			return err
		}
		return &fs.PathError{Op: "write", Path: name, Err: syscall.ENOSPC}
	}
	err := o.Insert(OutboxRecord{ID: "x", Due: 1}, []byte(big("a body that does not fit")))
	if !errors.Is(err, syscall.ENOSPC) || errors.Is(err, ErrExists) {
		t.Fatalf("Insert on a full disk = %v, want ENOSPC", err)
	}
	if err := s.Healthy(); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Healthy() = %v, want ENOSPC", err)
	}
	if _, ok := loadOutboxT(t, o, "x"); ok {
		t.Error("a record was committed for a body that was not written")
	}
	if names := spoolFiles(t, s); len(names) != 0 {
		t.Errorf("spool after the failed write = %v, want empty", names)
	}
	o.sp.write = writeBodyFile
	insertT(t, o, "x", 1, big("fits now"))
	if err := s.Healthy(); err != nil {
		t.Errorf("Healthy() after a successful Insert = %v, want nil", err)
	}
}

// writeBodyFile removes what it wrote when the write fails part way
// (RLIMIT_FSIZE cuts the write short with EFBIG, as a full disk does
// with ENOSPC). Not parallel: the limit is process-wide.
func TestWriteBodyFileCleansUp(t *testing.T) {
	dir := t.TempDir()
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old) })
	limited := old
	// Above what the test binary's own log (testlog.txt, written on every
	// open) reaches, below the body.
	limited.Cur = 1 << 20
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &limited); err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(dir, spoolName(1))
	err := writeBodyFile(name, make([]byte, 2<<20), true)
	_ = syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old)
	if !errors.Is(err, syscall.EFBIG) {
		t.Fatalf("writeBodyFile past the limit = %v, want EFBIG", err)
	}
	if _, err := os.Stat(name); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("partial body file left behind: %v", err)
	}
	if err := writeBodyFile(name, []byte("x"), false); err != nil {
		t.Errorf("writeBodyFile with room = %v", err)
	}
	if err := writeBodyFile(name, []byte("y"), false); !errors.Is(err, fs.ErrExist) {
		t.Errorf("writeBodyFile over an existing file = %v, want ErrExist", err)
	}
}

// The in-memory store keeps bodies in memory and lets them go on Remove.
func TestOutboxMemoryBodies(t *testing.T) {
	s := openT(t, Memory, Options{})
	defer closeT(t, s)
	o := s.Outbox()
	restoreT(t, o)
	body := []byte(big("caller's buffer"))
	insertT(t, o, "m", 1, string(body))
	if got, err := o.Body("m"); err != nil || string(got) != string(body) {
		t.Errorf("Body(m) = %q, %v", got, err)
	}
	if err := o.Remove("m"); err != nil {
		t.Fatal(err)
	}
	if n := len(o.sp.mem); n != 0 {
		t.Errorf("%d bodies kept in memory after Remove, want 0", n)
	}
	if _, err := os.Stat(Memory + spoolSuffix); err == nil {
		t.Errorf("a directory %s%s was created", Memory, spoolSuffix)
	}
}

// A corrupt store file is moved aside with its outbox bodies.
func TestOpenCorruptMovesSpoolAside(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.db")
	if err := os.WriteFile(path, []byte(resp("set", "wh:a", "1")+"garbage\r\n"+resp("set", "wh:b", "1")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(path+spoolSuffix, 0o700); err != nil {
		t.Fatal(err)
	}
	body := filepath.Join(path+spoolSuffix, spoolName(1))
	if err := os.WriteFile(body, []byte("b"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := openT(t, path, Options{})
	defer closeT(t, s)
	aside, _ := filepath.Glob(path + ".corrupt-*" + spoolSuffix)
	if len(aside) != 1 {
		t.Fatalf("moved-aside outbox dirs = %v, want one", aside)
	}
	if got, err := os.ReadFile(filepath.Join(aside[0], spoolName(1))); err != nil || string(got) != "b" {
		t.Errorf("moved-aside body = %q, %v", got, err)
	}
	restoreT(t, s.Outbox())
	if names := spoolFiles(t, s); len(names) != 0 {
		t.Errorf("new spool = %v, want empty", names)
	}
}

// Insert refuses a duplicate before writing its body.
func TestOutboxDuplicateWritesNoBody(t *testing.T) {
	s := openT(t, filepath.Join(t.TempDir(), "node.db"), Options{})
	defer closeT(t, s)
	o := s.Outbox()
	restoreT(t, o)
	insertT(t, o, "d", 1, big("first"))
	writes := 0
	o.sp.write = func(name string, body []byte, sync bool) error {
		writes++
		return writeBodyFile(name, body, sync)
	}
	if err := o.Insert(OutboxRecord{ID: "d", Due: 2}, []byte(big("second"))); !errors.Is(err, ErrExists) {
		t.Errorf("Insert(d) again = %v, want ErrExists", err)
	}
	if writes != 0 || len(spoolFiles(t, s)) != 1 {
		t.Errorf("a duplicate wrote %d bodies; spool %v", writes, spoolFiles(t, s))
	}
	if got, _ := o.Body("d"); string(got) != big("first") {
		t.Errorf("Body(d) = %q, want the first body kept", got)
	}
}
