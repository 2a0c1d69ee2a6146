package store

import (
	"bytes"
	"errors"
	"log/slog"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tidwall/buntdb"
)

// base is the millisecond part of the tests' ids: now, so that they are
// within any ttl the tests use.
var base = uint64(time.Now().UnixMilli())

// sid is the id base+dms, seq.
func sid(dms, seq uint64) string { return StreamID{base + dms, seq}.String() }

func sev(id, name string, except ...string) StreamEvent {
	return StreamEvent{ID: id, Event: name, Data: []byte(`{"id":"` + id + `"}`), Except: except}
}

func appendT(t testing.TB, st *Streams, streams []string, ev StreamEvent) {
	t.Helper()
	if err := st.Append(streams, ev); err != nil {
		t.Fatalf("Append(%q, %s) = %v", streams, ev.ID, err)
	}
}

// sinceT calls Since and checks every event's data and name against its id
// (as sev makes them); it returns the ids.
func sinceT(t testing.TB, st *Streams, streams []string, since, user string, limit int) ([]string, bool) {
	t.Helper()
	evs, complete, err := st.Since(streams, since, user, limit)
	if err != nil {
		t.Fatalf("Since(%q, %q) = %v", streams, since, err)
	}
	ids := []string{}
	for _, ev := range evs {
		if want := `{"id":"` + ev.ID + `"}`; string(ev.Data) != want || ev.Event != "ev" {
			t.Errorf("Since(%q, %q): event %q has name %q, data %s; want ev, %s", streams, since, ev.ID, ev.Event, ev.Data, want)
		}
		ids = append(ids, ev.ID)
	}
	return ids, complete
}

// Three streams with interleaved ids, some events in several of them.
func TestStreamsSince(t *testing.T) {
	s := openT(t, Memory, Options{})
	defer closeT(t, s)
	st := s.Streams(100, time.Hour)
	for _, a := range []struct {
		id      string
		streams []string
	}{
		{sid(0, 1), []string{"x"}}, // the epoch
		{sid(1, 1), []string{"u:1"}},
		{sid(2, 1), []string{"a"}},
		{sid(3, 1), []string{"u:1", "u:2"}},
		{sid(4, 1), []string{"u:2"}},
		{sid(5, 1), []string{"a", "u:1", "u:2"}},
		{sid(5, 2), []string{"u:2"}},
		{sid(5, 10), []string{"a"}}, // sorts after 5-2 as an id, before it as a string
		{sid(6, 1), []string{"u:1", "u:1"}},
	} {
		appendT(t, st, a.streams, sev(a.id, "ev"))
	}
	all := []string{"u:1", "u:2", "a"}
	tests := []struct {
		name         string
		streams      []string
		since        string
		limit        int
		want         []string
		wantComplete bool
	}{
		{"all since the epoch", all, sid(0, 1), 0,
			[]string{sid(1, 1), sid(2, 1), sid(3, 1), sid(4, 1), sid(5, 1), sid(5, 2), sid(5, 10), sid(6, 1)}, true},
		{"since is exclusive", all, sid(3, 1), 0, []string{sid(4, 1), sid(5, 1), sid(5, 2), sid(5, 10), sid(6, 1)}, true},
		{"since between ids", all, sid(5, 5), 0, []string{sid(5, 10), sid(6, 1)}, true},
		{"one stream", []string{"u:2"}, sid(0, 1), 0, []string{sid(3, 1), sid(4, 1), sid(5, 1), sid(5, 2)}, true},
		{"a stream named twice", []string{"a", "a"}, sid(0, 1), 0, []string{sid(2, 1), sid(5, 1), sid(5, 10)}, true},
		{"since the last", all, sid(6, 1), 0, []string{}, true},
		{"a stream never written", []string{"u:9"}, sid(0, 1), 0, []string{}, true},
		{"before the epoch: what is kept, incomplete", []string{"x", "a"}, sid(0, 0), 0,
			[]string{sid(0, 1), sid(2, 1), sid(5, 1), sid(5, 10)}, false},
		{"limit cuts", all, sid(0, 1), 3, []string{sid(1, 1), sid(2, 1), sid(3, 1)}, false},
		{"limit cuts after duplicates", all, sid(2, 1), 2, []string{sid(3, 1), sid(4, 1)}, false},
		{"limit exactly the count", all, sid(5, 1), 3, []string{sid(5, 2), sid(5, 10), sid(6, 1)}, true},
		{"limit over the count", all, sid(5, 1), 4, []string{sid(5, 2), sid(5, 10), sid(6, 1)}, true},
		{"no streams", nil, sid(0, 1), 0, []string{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, complete := sinceT(t, st, tc.streams, tc.since, "u:1", tc.limit)
			if !slices.Equal(got, tc.want) || complete != tc.wantComplete {
				t.Errorf("Since(%q, %s, limit %d) = %v, %v; want %v, %v",
					tc.streams, tc.since, tc.limit, got, complete, tc.want, tc.wantComplete)
			}
		})
	}
}

func TestStreamsExcept(t *testing.T) {
	s := openT(t, Memory, Options{})
	defer closeT(t, s)
	st := s.Streams(100, time.Hour)
	appendT(t, st, []string{"r"}, sev(sid(0, 1), "ev"))
	appendT(t, st, []string{"r"}, sev(sid(1, 1), "ev", "u1", "u2"))
	appendT(t, st, []string{"r"}, sev(sid(2, 1), "ev", "u2"))
	appendT(t, st, []string{"r"}, sev(sid(3, 1), "ev", ""))
	tests := []struct {
		user         string
		limit        int
		want         []string
		wantComplete bool
	}{
		{"u1", 0, []string{sid(2, 1), sid(3, 1)}, true},
		{"u2", 0, []string{sid(3, 1)}, true},
		{"u3", 0, []string{sid(1, 1), sid(2, 1), sid(3, 1)}, true},
		{"u2", 1, []string{sid(3, 1)}, true}, // the skipped ones do not count
		{"u1", 1, []string{sid(2, 1)}, false},
	}
	for _, tc := range tests {
		got, complete := sinceT(t, st, []string{"r"}, sid(0, 1), tc.user, tc.limit)
		if !slices.Equal(got, tc.want) || complete != tc.wantComplete {
			t.Errorf("Since for %s, limit %d = %v, %v; want %v, %v", tc.user, tc.limit, got, complete, tc.want, tc.wantComplete)
		}
	}
	evs, _, err := st.Since([]string{"r"}, sid(0, 1), "u3", 1)
	if err != nil || len(evs) != 1 || !slices.Equal(evs[0].Except, []string{"u1", "u2"}) {
		t.Errorf("Since(r) = %+v, %v; want the event with its except list", evs, err)
	}
}

// Counting trims the oldest events and raises the watermark: a since
// older than it is incomplete.
func TestStreamsTrim(t *testing.T) {
	s := openT(t, Memory, Options{})
	defer closeT(t, s)
	st := s.Streams(3, time.Hour)
	for i := uint64(1); i <= 5; i++ {
		appendT(t, st, []string{"s"}, sev(sid(i, 1), "ev"))
	}
	appendT(t, st, []string{"t"}, sev(sid(6, 1), "ev"))
	kept := []string{sid(3, 1), sid(4, 1), sid(5, 1)}
	check := func(t *testing.T) {
		t.Helper()
		tests := []struct {
			streams      []string
			since        string
			want         []string
			wantComplete bool
		}{
			{[]string{"s"}, sid(1, 1), kept, false},               // 2-1 was dropped
			{[]string{"s"}, sid(2, 0), kept, false},               // still before the watermark
			{[]string{"s"}, sid(2, 1), kept, true},                // the watermark itself: the client has it
			{[]string{"s"}, sid(3, 1), kept[1:], true},            //
			{[]string{"t"}, sid(1, 1), []string{sid(6, 1)}, true}, // another stream's watermark does not count
			{[]string{"s", "t"}, sid(1, 1), append(kept, sid(6, 1)), false},
		}
		for _, tc := range tests {
			got, complete := sinceT(t, st, tc.streams, tc.since, "", 0)
			if !slices.Equal(got, tc.want) || complete != tc.wantComplete {
				t.Errorf("Since(%q, %s) = %v, %v; want %v, %v", tc.streams, tc.since, got, complete, tc.want, tc.wantComplete)
			}
		}
	}
	check(t)
	// An older event appended late is dropped at once, and does not lower
	// the watermark.
	appendT(t, st, []string{"s"}, sev(sid(1, 5), "ev"))
	check(t)
}

func TestStreamsBadArgs(t *testing.T) {
	s := openT(t, Memory, Options{})
	defer closeT(t, s)
	st := s.Streams(10, time.Hour)
	appendT(t, st, []string{"s"}, sev(sid(0, 1), "ev"))
	now := uint64(time.Now().UnixMilli())
	for _, since := range []string{
		"", "abc", "1-", "-1", "+1-1", " 1-1", "1-1 ", strconv.FormatUint(base, 10),
		StreamID{now + 5000, 1}.String(), // the future
		"18446744073709551615-1",
	} {
		evs, complete, err := st.Since([]string{"s"}, since, "", 0)
		if err != nil || complete || evs != nil {
			t.Errorf("Since(%q) = %v, %v, %v; want no events, incomplete, no error", since, evs, complete, err)
		}
	}
	// Slightly ahead of this node's clock (another node's): served.
	if got, complete := sinceT(t, st, []string{"s"}, StreamID{now + 500, 1}.String(), "", 0); len(got) != 0 || !complete {
		t.Errorf("Since(500 ms ahead) = %v, %v; want none, complete", got, complete)
	}

	for _, streams := range [][]string{{""}, {"s", "a\x00b"}} {
		if err := st.Append(streams, sev(sid(1, 1), "ev")); err == nil {
			t.Errorf("Append(%q) = nil error, want one", streams)
		}
		if _, _, err := st.Since(streams, sid(0, 1), "", 0); err == nil {
			t.Errorf("Since(%q) = nil error, want one", streams)
		}
	}
	for _, id := range []string{"", "1", "x-1", "-1-1"} {
		if err := st.Append([]string{"s"}, sev(id, "ev")); err == nil {
			t.Errorf("Append(id %q) = nil error, want one", id)
		}
	}
	if got, _ := sinceT(t, st, []string{"s"}, sid(0, 0), "", 0); !slices.Equal(got, []string{sid(0, 1)}) {
		t.Errorf("after the refused appends, s holds %v, want only %s", got, sid(0, 1))
	}
}

// With maxEvents <= 0 nothing is kept and nothing is complete.
func TestStreamsRetentionOff(t *testing.T) {
	s := openT(t, Memory, Options{})
	defer closeT(t, s)
	for _, max := range []int{0, -1} {
		st := s.Streams(max, time.Hour)
		appendT(t, st, []string{"s"}, sev(sid(1, 1), "ev"))
		if evs, complete, err := st.Since([]string{"s"}, sid(0, 1), "", 0); evs != nil || complete || err != nil {
			t.Errorf("max %d: Since = %v, %v, %v; want nothing, incomplete", max, evs, complete, err)
		}
	}
	if got, complete := sinceT(t, s.Streams(10, time.Hour), []string{"s"}, "0-0", "", 0); len(got) != 0 || complete {
		t.Errorf("Since with retention on = %v, %v; want nothing kept, no epoch", got, complete)
	}
}

// A fresh store (a :memory: one, or a file moved aside) never saw what came
// before its first event.
func TestStreamsEpoch(t *testing.T) {
	s := openT(t, Memory, Options{})
	defer closeT(t, s)
	st := s.Streams(10, time.Hour)
	if got, complete := sinceT(t, st, []string{"s"}, sid(0, 1), "", 0); len(got) != 0 || complete {
		t.Errorf("Since on a fresh store = %v, %v; want none, incomplete", got, complete)
	}
	appendT(t, st, []string{"other"}, sev(sid(5, 1), "ev"))
	appendT(t, st, []string{"s"}, sev(sid(6, 1), "ev"))
	tests := []struct {
		since        string
		wantComplete bool
	}{
		{sid(0, 1), false},
		{sid(5, 0), false},
		{sid(5, 1), true}, // the epoch
		{sid(5, 2), true},
	}
	for _, tc := range tests {
		got, complete := sinceT(t, st, []string{"s"}, tc.since, "", 0)
		if !slices.Equal(got, []string{sid(6, 1)}) || complete != tc.wantComplete {
			t.Errorf("Since(s, %s) = %v, %v; want [%s], %v", tc.since, got, complete, sid(6, 1), tc.wantComplete)
		}
	}
}

// Streams, watermarks and the epoch survive a restart.
func TestStreamsReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.db")
	s := openT(t, path, Options{})
	st := s.Streams(2, time.Hour)
	for i := uint64(1); i <= 4; i++ {
		appendT(t, st, []string{"s", "u"}, sev(sid(i, 1), "ev", "skip"))
	}
	appendT(t, st, []string{"u"}, sev(sid(5, 1), "ev"))
	closeT(t, s)

	s = openT(t, path, Options{})
	defer closeT(t, s)
	st = s.Streams(2, time.Hour)
	tests := []struct {
		streams      []string
		since        string
		want         []string
		wantComplete bool
	}{
		{[]string{"s"}, sid(0, 0), []string{sid(3, 1), sid(4, 1)}, false}, // epoch
		{[]string{"s"}, sid(1, 1), []string{sid(3, 1), sid(4, 1)}, false}, // watermark 2-1
		{[]string{"s"}, sid(2, 1), []string{sid(3, 1), sid(4, 1)}, true},
		{[]string{"u"}, sid(2, 1), []string{sid(4, 1), sid(5, 1)}, false}, // watermark 3-1
		{[]string{"s", "u"}, sid(3, 1), []string{sid(4, 1), sid(5, 1)}, true},
	}
	for _, tc := range tests {
		got, complete := sinceT(t, st, tc.streams, tc.since, "", 0)
		if !slices.Equal(got, tc.want) || complete != tc.wantComplete {
			t.Errorf("after reopen, Since(%q, %s) = %v, %v; want %v, %v", tc.streams, tc.since, got, complete, tc.want, tc.wantComplete)
		}
	}
	if got, _ := sinceT(t, st, []string{"s"}, sid(0, 0), "skip", 0); len(got) != 0 {
		t.Errorf("after reopen, the except lists were lost: %v", got)
	}
}

// The age bound: a since older than the ttl is incomplete. The clock is
// moved, not waited for.
func TestStreamsAge(t *testing.T) {
	s := openT(t, Memory, Options{})
	defer closeT(t, s)
	st := s.Streams(10, time.Hour)
	appendT(t, st, []string{"s"}, sev(sid(0, 1), "ev"))
	appendT(t, st, []string{"s"}, sev(sid(1, 1), "ev"))
	start := time.UnixMilli(int64(base))
	tests := []struct {
		now          time.Time
		wantComplete bool
	}{
		{start, true},
		{start.Add(time.Hour), true},
		{start.Add(time.Hour + time.Millisecond), false},
		{start.Add(48 * time.Hour), false},
	}
	for _, tc := range tests {
		st.now = func() time.Time { return tc.now }
		got, complete := sinceT(t, st, []string{"s"}, sid(0, 1), "", 0)
		if !slices.Equal(got, []string{sid(1, 1)}) || complete != tc.wantComplete {
			t.Errorf("at start+%v: Since = %v, %v; want [%s], %v", tc.now.Sub(start), got, complete, sid(1, 1), tc.wantComplete)
		}
	}
	// ttl <= 0: no age bound.
	st = s.Streams(10, 0)
	st.now = func() time.Time { return start.Add(1000 * time.Hour) }
	if _, complete := sinceT(t, st, []string{"s"}, sid(0, 1), "", 0); !complete {
		t.Error("with no ttl, an old since is incomplete")
	}
}

// Events and watermarks carry the ttl (plus the second that buntdb's
// rounding takes), the epoch none.
func TestStreamsKeyTTLs(t *testing.T) {
	s := openT(t, Memory, Options{})
	defer closeT(t, s)
	st := s.Streams(1, time.Minute)
	appendT(t, st, []string{"s"}, sev(sid(0, 1), "ev"))
	appendT(t, st, []string{"s"}, sev(sid(1, 1), "ev"))
	err := s.db.View(func(tx *buntdb.Tx) error {
		return tx.Ascend("", func(key, _ string) bool {
			ttl, err := tx.TTL(key)
			switch {
			case err != nil:
				t.Errorf("TTL(%q) = %v", key, err)
			case key == replayEpochKey:
				if ttl >= 0 {
					t.Errorf("the epoch has a TTL, %v", ttl)
				}
			case ttl <= time.Minute || ttl > time.Minute+time.Second:
				t.Errorf("TTL(%q) = %v, want within (1m, 1m1s]", key, ttl)
			}
			return true
		})
	})
	if err != nil {
		t.Fatal(err)
	}
}

// buntdb expires the keys in real time: the test waits for it (about 3 s,
// run in parallel with the other waiting tests).
func TestStreamsExpiry(t *testing.T) {
	t.Parallel()
	s := openT(t, Memory, Options{})
	defer closeT(t, s)
	st := s.Streams(10, time.Second)
	first := StreamID{uint64(time.Now().UnixMilli()), 1}
	appendT(t, st, []string{"s"}, sev(first.String(), "ev"))
	appendT(t, st, []string{"s"}, sev(StreamID{first.Ms, 2}.String(), "ev"))
	if got, complete := sinceT(t, st, []string{"s"}, first.String(), "", 0); len(got) != 1 || !complete {
		t.Fatalf("Since before the ttl = %v, %v; want one event, complete", got, complete)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, complete := sinceT(t, st, []string{"s"}, first.String(), "", 0)
		if len(got) == 0 {
			if complete {
				t.Error("Since after the ttl: complete, want incomplete")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("events still there 10 s after a 1 s ttl: %v", got)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// An event value that does not decode is skipped, logged, and makes the
// answer incomplete.
func TestStreamsCorruptEvent(t *testing.T) {
	var logs bytes.Buffer
	s := openT(t, Memory, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	defer closeT(t, s)
	st := s.Streams(10, time.Hour)
	appendT(t, st, []string{"s"}, sev(sid(0, 1), "ev")) // the epoch
	appendT(t, st, []string{"s"}, sev(sid(1, 1), "ev"))
	appendT(t, st, []string{"s"}, sev(sid(2, 1), "ev"))
	bad := map[string]string{
		sid(2, 1): "",
		sid(3, 1): "\x02new format",
		sid(4, 1): "\x01\x05ev",     // name longer than the value
		sid(5, 1): "\x01\x02ev\x09", // more except ids than bytes
	}
	err := update(s, func(tx *buntdb.Tx) error {
		for id, val := range bad {
			sidv, _ := ParseStreamID(id)
			if _, _, err := tx.Set(string(sidv.appendHex(appendStreamPrefix(nil, "s"))), val, nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got, complete := sinceT(t, st, []string{"s"}, sid(0, 1), "", 0)
	if !slices.Equal(got, []string{sid(1, 1)}) || complete {
		t.Errorf("Since = %v, %v; want [%s], incomplete", got, complete, sid(1, 1))
	}
	if out := logs.String(); strings.Count(out, "level=WARN") != 1 || !strings.Contains(out, "count=4") {
		t.Errorf("log = %q, want one WARN counting 4 events", out)
	}
}

// A failed append stores nothing, not even the epoch or a watermark;
// Healthy reports it until a later write succeeds.
func TestStreamsWriteFailure(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.db")
	s := openT(t, path, Options{Sync: "always"})
	st := s.Streams(1, time.Hour)
	all := []string{"a", "u1", "u2"}

	free := fillDisk(t, path)
	if err := st.Append(all, sev(sid(1, 1), "ev")); !errors.Is(err, syscall.EFBIG) {
		t.Fatalf("first Append with the disk full = %v, want EFBIG", err)
	}
	if err := s.Healthy(); !errors.Is(err, syscall.EFBIG) {
		t.Fatalf("Healthy() = %v, want EFBIG", err)
	}
	if err := s.db.View(func(tx *buntdb.Tx) error {
		_, err := tx.Get(replayEpochKey)
		return err
	}); !errors.Is(err, buntdb.ErrNotFound) {
		t.Errorf("the epoch after a failed first append: Get = %v, want ErrNotFound", err)
	}
	free()

	appendT(t, st, all, sev(sid(1, 1), "ev"))
	if err := s.Healthy(); err != nil {
		t.Fatalf("Healthy() after a successful append = %v", err)
	}
	free = fillDisk(t, path)
	// This one would drop 1-1 from each stream and set the watermarks.
	if err := st.Append(all, sev(sid(2, 1), "ev")); !errors.Is(err, syscall.EFBIG) {
		t.Fatalf("Append with the disk full = %v, want EFBIG", err)
	}
	if err := s.Healthy(); !errors.Is(err, syscall.EFBIG) {
		t.Fatalf("Healthy() = %v, want EFBIG", err)
	}
	for _, name := range all {
		// The event the disk could not take is missing: not complete.
		if got, complete := sinceT(t, st, []string{name}, sid(1, 1), "", 0); len(got) != 0 || complete {
			t.Errorf("after the failed append, Since(%s, 1-1) = %v, %v; want none, incomplete", name, got, complete)
		}
		if got, _ := sinceT(t, st, []string{name}, sid(0, 0), "", 0); !slices.Equal(got, []string{sid(1, 1)}) {
			t.Errorf("after the failed append, %s holds %v; want [%s]", name, got, sid(1, 1))
		}
	}

	free()
	appendT(t, st, all, sev(sid(2, 1), "ev"))
	if err := s.Healthy(); err != nil {
		t.Errorf("Healthy() after a successful append = %v", err)
	}
	closeT(t, s)
	s = openT(t, path, Options{})
	defer closeT(t, s)
	st = s.Streams(1, time.Hour)
	for _, name := range all {
		if got, complete := sinceT(t, st, []string{name}, sid(1, 1), "", 0); !slices.Equal(got, []string{sid(2, 1)}) || !complete {
			t.Errorf("after reopen, Since(%s, 1-1) = %v, %v; want [%s], complete", name, got, complete, sid(2, 1))
		}
		if _, complete := sinceT(t, st, []string{name}, sid(0, 0), "", 0); complete {
			t.Errorf("after reopen, Since(%s, before the epoch) is complete", name)
		}
	}
}

// An event that could not be kept (a full disk) makes a replay from before
// it incomplete, in this life and, once a later Append wrote it down, in
// the next.
func TestStreamsLostEventSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.db")
	s := openT(t, path, Options{Sync: "always"})
	st := s.Streams(100, time.Hour)
	id := func(seq uint64) string { return sid(0, seq) }
	appendT(t, st, []string{"u:a"}, sev(id(1), "ev"))

	free := fillDisk(t, path)
	if err := st.Append([]string{"u:b"}, sev(id(2), "ev")); err == nil {
		t.Fatal("Append with the disk full succeeded")
	}
	if _, complete := sinceT(t, st, []string{"u:a"}, id(1), "a", 0); complete {
		t.Fatal("since before the lost event: complete, in memory")
	}
	free()
	appendT(t, st, []string{"u:a"}, sev(id(3), "ev"))
	closeT(t, s)

	s = openT(t, path, Options{})
	defer closeT(t, s)
	st = s.Streams(100, time.Hour)
	if ids, complete := sinceT(t, st, []string{"u:a"}, id(1), "a", 0); complete || len(ids) != 1 {
		t.Fatalf("since before the lost event after a restart: %v complete=%v, want [3], incomplete", ids, complete)
	}
	if _, complete := sinceT(t, st, []string{"u:a"}, id(2), "a", 0); !complete {
		t.Fatal("since the lost event itself: incomplete, want complete")
	}
}
