package store

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tidwall/buntdb"
)

var (
	t1 = time.UnixMilli(1764590000000)
	t2 = t1.Add(2 * time.Second)
	t3 = t1.Add(3 * time.Second)
)

func applyT(t testing.TB, s *Store, changes ...SessionChange) {
	t.Helper()
	if err := s.ApplySessions(changes); err != nil {
		t.Fatalf("ApplySessions = %v", err)
	}
}

func sessionsT(t testing.TB, s *Store) []Session {
	t.Helper()
	got, err := s.Sessions()
	if err != nil {
		t.Fatalf("Sessions() = %v", err)
	}
	return got
}

func usersT(t testing.TB, s *Store, users ...string) map[string]UserRecord {
	t.Helper()
	got, err := s.Users(users)
	if err != nil {
		t.Fatalf("Users(%q) = %v", users, err)
	}
	return got
}

func online(user string, at time.Time) SessionChange {
	return SessionChange{User: user, Online: true, At: at}
}

func offline(user string, at time.Time) SessionChange {
	return SessionChange{User: user, At: at}
}

// equalSessions compares sessions, times by instant and claims by bytes
// (nil and empty alike).
func equalSessions(a, b []Session) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].User != b[i].User || !bytes.Equal(a[i].Claims, b[i].Claims) || !a[i].Ended.Equal(b[i].Ended) {
			return false
		}
	}
	return true
}

func equalUsers(a, b map[string]UserRecord) bool {
	if len(a) != len(b) {
		return false
	}
	for k, ra := range a {
		rb, ok := b[k]
		if !ok || ra.Status != rb.Status || !ra.LastSeen.Equal(rb.LastSeen) {
			return false
		}
	}
	return true
}

func TestApplySessions(t *testing.T) {
	tests := []struct {
		name      string
		batches   [][]SessionChange
		wantSess  []Session
		wantUsers map[string]UserRecord
	}{
		{
			name:     "online",
			batches:  [][]SessionChange{{online("u1", t1), online("u2", t1)}},
			wantSess: []Session{{User: "u1"}, {User: "u2"}},
		},
		{
			name:      "online then offline in one batch",
			batches:   [][]SessionChange{{online("u1", t1), offline("u1", t2)}},
			wantUsers: map[string]UserRecord{"u1": {LastSeen: t2}},
		},
		{
			name:      "offline then online in one batch",
			batches:   [][]SessionChange{{offline("u1", t1), online("u1", t2)}},
			wantSess:  []Session{{User: "u1"}},
			wantUsers: map[string]UserRecord{"u1": {LastSeen: t1}},
		},
		{
			name:      "offline in a later batch",
			batches:   [][]SessionChange{{online("u1", t1), online("u2", t1)}, {offline("u2", t3)}},
			wantSess:  []Session{{User: "u1"}},
			wantUsers: map[string]UserRecord{"u2": {LastSeen: t3}},
		},
		{
			name:      "offline without a session still sets last seen",
			batches:   [][]SessionChange{{offline("u9", t2)}},
			wantUsers: map[string]UserRecord{"u9": {LastSeen: t2}},
		},
		{
			name:     "a second online replaces the session",
			batches:  [][]SessionChange{{online("u1", t1)}, {online("u1", t2)}},
			wantSess: []Session{{User: "u1"}},
		},
		{
			name:     "claims kept as given, odd user ids",
			batches:  [][]SessionChange{{online("a:b\x00c", t1)}},
			wantSess: []Session{{User: "a:b\x00c"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openT(t, Memory, Options{})
			defer closeT(t, s)
			for _, b := range tc.batches {
				applyT(t, s, b...)
			}
			if got := sessionsT(t, s); !equalSessions(got, tc.wantSess) {
				t.Errorf("Sessions() = %+v, want %+v", got, tc.wantSess)
			}
			got := usersT(t, s, "u1", "u2", "u9", "nobody")
			if !equalUsers(got, tc.wantUsers) {
				t.Errorf("Users() = %+v, want %+v", got, tc.wantUsers)
			}
		})
	}
}

// A batch with a bad change is refused whole: the good changes before it
// are not written either.
func TestApplySessionsRefusesBadBatch(t *testing.T) {
	s := openT(t, Memory, Options{})
	defer closeT(t, s)
	tests := []struct {
		name  string
		batch []SessionChange
	}{
		{"empty user", []SessionChange{online("u1", t1), online("", t1)}},
		{"empty user after an offline", []SessionChange{offline("u2", t1), online("", t1)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := s.ApplySessions(tc.batch); err == nil {
				t.Fatal("ApplySessions = nil error, want one")
			}
			if got := sessionsT(t, s); len(got) != 0 {
				t.Errorf("Sessions() = %+v, want none", got)
			}
			if got := usersT(t, s, "u1", "u2"); len(got) != 0 {
				t.Errorf("Users() = %+v, want none", got)
			}
		})
	}
}

// A crash is a reopen without EndSessions: the sessions are found live.
// A graceful shutdown (EndSessions) leaves them ended, and sets LastSeen.
func TestSessionsAfterRestart(t *testing.T) {
	for _, graceful := range []bool{false, true} {
		name := map[bool]string{false: "crash", true: "graceful"}[graceful]
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "node.db")
			s := openT(t, path, Options{})
			applyT(t, s, online("u1", t1), online("u2", t2),
				online("u3", t1), offline("u3", t2))
			var ended time.Time
			if graceful {
				ended = t3
				// u3 and u4 have no session: ignored.
				e := ends(t3, "u1", "u2", "u3", "u4")
				e[0].Claims = []byte(`{"sub":"u1","role":"x"}`)
				if err := s.EndSessions(e); err != nil {
					t.Fatal(err)
				}
			}
			closeT(t, s)

			s = openT(t, path, Options{})
			defer closeT(t, s)
			want := []Session{
				{User: "u1", Ended: ended},
				{User: "u2", Ended: ended},
			}
			if graceful {
				want[0].Claims = []byte(`{"sub":"u1","role":"x"}`)
			}
			if got := sessionsT(t, s); !equalSessions(got, want) {
				t.Errorf("Sessions() after reopen = %+v, want %+v", got, want)
			}
			wantUsers := map[string]UserRecord{"u3": {LastSeen: t2}}
			if graceful {
				wantUsers["u1"] = UserRecord{LastSeen: t3}
				wantUsers["u2"] = UserRecord{LastSeen: t3}
			}
			if got := usersT(t, s, "u1", "u2", "u3", "u4"); !equalUsers(got, wantUsers) {
				t.Errorf("Users() after reopen = %+v, want %+v", got, wantUsers)
			}
			// The next start ends them through the rules.
			applyT(t, s, offline("u1", t3.Add(time.Second)), offline("u2", t3.Add(time.Second)))
			if got := sessionsT(t, s); len(got) != 0 {
				t.Errorf("Sessions() after ending them = %+v, want none", got)
			}
		})
	}
}

func TestEndSessionsKeepsOthers(t *testing.T) {
	s := openT(t, Memory, Options{})
	defer closeT(t, s)
	applyT(t, s, online("u1", t1), online("u2", t1))
	if err := s.SetStatus("u1", "busy"); err != nil {
		t.Fatal(err)
	}
	if err := s.EndSessions(ends(t2, "u1")); err != nil {
		t.Fatal(err)
	}
	want := []Session{{User: "u1", Ended: t2}, {User: "u2"}}
	if got := sessionsT(t, s); !equalSessions(got, want) {
		t.Errorf("Sessions() = %+v, want %+v", got, want)
	}
	wantUsers := map[string]UserRecord{"u1": {Status: "busy", LastSeen: t2}}
	if got := usersT(t, s, "u1", "u2"); !equalUsers(got, wantUsers) {
		t.Errorf("Users() = %+v, want %+v", got, wantUsers)
	}
	if err := s.EndSessions(nil); err != nil {
		t.Errorf("EndSessions(nil) = %v", err)
	}
}

func TestSetStatus(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.db")
	s := openT(t, path, Options{})
	steps := []struct {
		op     string // "status", "offline" or "reopen"
		status string
		at     time.Time
		want   map[string]UserRecord
	}{
		{op: "status", status: "busy", want: map[string]UserRecord{"u1": {Status: "busy"}}},
		{op: "offline", at: t1, want: map[string]UserRecord{"u1": {Status: "busy", LastSeen: t1}}},
		{op: "status", status: "available", want: map[string]UserRecord{"u1": {Status: "available", LastSeen: t1}}},
		{op: "reopen", want: map[string]UserRecord{"u1": {Status: "available", LastSeen: t1}}},
		{op: "status", status: "", want: map[string]UserRecord{"u1": {LastSeen: t1}}},
		{op: "status", status: "x", want: map[string]UserRecord{"u1": {Status: "x", LastSeen: t1}}},
	}
	for i, st := range steps {
		switch st.op {
		case "status":
			if err := s.SetStatus("u1", st.status); err != nil {
				t.Fatalf("step %d: SetStatus = %v", i, err)
			}
		case "offline":
			applyT(t, s, offline("u1", st.at))
		case "reopen":
			closeT(t, s)
			s = openT(t, path, Options{})
		}
		if got := usersT(t, s, "u1"); !equalUsers(got, st.want) {
			t.Errorf("step %d (%s %q): Users() = %+v, want %+v", i, st.op, st.status, got, st.want)
		}
	}
	// Emptying a record deletes it.
	if err := s.SetStatus("u2", "busy"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetStatus("u2", ""); err != nil {
		t.Fatal(err)
	}
	if got := usersT(t, s, "u2"); len(got) != 0 {
		t.Errorf("Users(u2) after clearing its status = %+v, want absent", got)
	}
	if err := s.SetStatus("", "busy"); err == nil {
		t.Error("SetStatus(\"\") = nil error, want one")
	}
	closeT(t, s)
}

// Values that do not decode are skipped by readers, logged once per call,
// and replaced or removed by the writes that own them.
func TestPresenceCorruptValues(t *testing.T) {
	var logs bytes.Buffer
	s := openT(t, Memory, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	defer closeT(t, s)
	applyT(t, s, online("good", t1), offline("good", t1), online("good", t2))
	err := update(s, func(tx *buntdb.Tx) error {
		for key, val := range map[string]string{
			userKey("bad1"): "not json", userKey("bad2"): "null", userKey("bad3"): `{"l":"x"}`,
			sessionKey("bad1"): `{"o":`, sessionKey("bad2"): "null", sessionKey("bad3"): `[1]`,
		} {
			if _, _, err := tx.Set(key, val, nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	users := usersT(t, s, "good", "bad1", "bad2", "bad3")
	if want := (map[string]UserRecord{"good": {LastSeen: t1}}); !equalUsers(users, want) {
		t.Errorf("Users() = %+v, want %+v", users, want)
	}
	want := []Session{{User: "good"}}
	if got := sessionsT(t, s); !equalSessions(got, want) {
		t.Errorf("Sessions() = %+v, want %+v", got, want)
	}
	out := logs.String()
	if n := strings.Count(out, "level=WARN"); n != 2 || !strings.Contains(out, "count=3") {
		t.Errorf("log = %q, want one WARN per reader call, each counting 3 values", out)
	}

	// EndSessions sets LastSeen over a bad record and replaces a bad session.
	if err := s.EndSessions(ends(t3, "bad1")); err != nil {
		t.Fatal(err)
	}
	if got := usersT(t, s, "bad1"); !equalUsers(got, map[string]UserRecord{"bad1": {LastSeen: t3}}) {
		t.Errorf("Users(bad1) after EndSessions = %+v, want LastSeen %v", got, t3)
	}
	if got, w := sessionsT(t, s), append([]Session{{User: "bad1", Ended: t3}}, want...); !equalSessions(got, w) {
		t.Errorf("Sessions() after EndSessions = %+v, want %+v", got, w)
	}
	// An offline transition removes a bad session; SetStatus replaces a bad record.
	applyT(t, s, offline("bad1", t3), offline("bad2", t3), offline("bad3", t3))
	if err := s.SetStatus("bad2", "busy"); err != nil {
		t.Fatal(err)
	}
	if got := sessionsT(t, s); !equalSessions(got, want) {
		t.Errorf("Sessions() after the offlines = %+v, want %+v", got, want)
	}
	wantUsers := map[string]UserRecord{"bad1": {LastSeen: t3}, "bad2": {Status: "busy", LastSeen: t3}, "bad3": {LastSeen: t3}}
	if got := usersT(t, s, "bad1", "bad2", "bad3"); !equalUsers(got, wantUsers) {
		t.Errorf("Users() after the rewrites = %+v, want %+v", got, wantUsers)
	}
}

// fillDisk makes the disk full for the store file at path, the way
// TestWriteFailureAndRecovery does (RLIMIT_FSIZE: a write crossing it fails
// with EFBIG, buntdb's ENOSPC path), leaving room for 8 more bytes. The
// returned func frees the space; it also runs at cleanup. Not for parallel
// tests: the limit is process-wide.
func fillDisk(t *testing.T, path string) (free func()) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	free = func() {
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
			t.Fatalf("restore RLIMIT_FSIZE: %v", err)
		}
	}
	t.Cleanup(free)
	full := old
	full.Cur = uint64(fi.Size()) + 8
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &full); err != nil {
		t.Fatal(err)
	}
	return free
}

// A failed batch leaves nothing of itself, is reported by Healthy, and a
// later write clears the report.
func TestPresenceWriteFailure(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.db")
	s := openT(t, path, Options{Sync: "always"})
	applyT(t, s, online("u1", t1))
	before := sessionsT(t, s)
	free := fillDisk(t, path)

	writes := []struct {
		name string
		fn   func() error
	}{
		{"ApplySessions", func() error {
			return s.ApplySessions([]SessionChange{online("u2", t2), offline("u1", t2), online("u3", t2)})
		}},
		{"EndSessions", func() error { return s.EndSessions(ends(t2, "u1")) }},
		{"SetStatus", func() error { return s.SetStatus("u1", "busy") }},
	}
	for _, w := range writes {
		if err := w.fn(); !errors.Is(err, syscall.EFBIG) {
			t.Fatalf("%s with the disk full = %v, want EFBIG", w.name, err)
		}
		if err := s.Healthy(); !errors.Is(err, syscall.EFBIG) {
			t.Fatalf("Healthy() after %s = %v, want EFBIG", w.name, err)
		}
		if got := sessionsT(t, s); !reflect.DeepEqual(got, before) {
			t.Fatalf("Sessions() after a failed %s = %+v, want %+v", w.name, got, before)
		}
		if got := usersT(t, s, "u1", "u2", "u3"); len(got) != 0 {
			t.Fatalf("Users() after a failed %s = %+v, want none", w.name, got)
		}
	}

	free()
	applyT(t, s, online("u2", t2), offline("u1", t2))
	if err := s.Healthy(); err != nil {
		t.Errorf("Healthy() after a successful write = %v, want nil", err)
	}
	closeT(t, s)
	s = openT(t, path, Options{})
	defer closeT(t, s)
	want := []Session{{User: "u2"}}
	if got := sessionsT(t, s); !equalSessions(got, want) {
		t.Errorf("Sessions() after reopen = %+v, want %+v", got, want)
	}
	if m, _ := filepath.Glob(path + ".corrupt-*"); len(m) != 0 {
		t.Errorf("file corrupt after failed writes: %v", m)
	}
}

// ends is users all last seen at at.
func ends(at time.Time, users ...string) []SessionEnd {
	out := make([]SessionEnd, len(users))
	for i, u := range users {
		out[i] = SessionEnd{User: u, At: at}
	}
	return out
}
