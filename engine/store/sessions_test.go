package store

import (
	"bytes"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tidwall/buntdb"
)

// journalSize counts the journal's records and entries as stored.
func journalSize(t testing.TB, s *Store) (records, entries int) {
	t.Helper()
	err := s.db.View(func(tx *buntdb.Tx) error {
		_, st, err := replayJournal(tx, &skipped{})
		records, entries = len(st.keys), st.entries
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return records, entries
}

func sessionUsers(t testing.TB, s *Store) []string {
	t.Helper()
	var users []string
	for _, ss := range sessionsT(t, s) {
		users = append(users, ss.User)
	}
	return users
}

// Random batches of transitions, checked against a set: the journal says
// who is online after every batch and after every reopen, and compaction
// keeps it within about twice the users online.
func TestJournalMatchesModel(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.db")
	s := openT(t, path, Options{})
	defer func() { closeT(t, s) }()
	rng := rand.New(rand.NewPCG(1, 2))
	model := map[string]bool{}
	repeats := 0
	for batch := range 600 {
		var changes []SessionChange
		for range 1 + rng.IntN(40) {
			u := fmt.Sprintf("u%d", rng.IntN(3000))
			// Transitions alternate per user, as the engine makes them;
			// one batch in ten also repeats one (tolerated either way).
			on := !model[u]
			if rng.IntN(10) == 0 {
				on = rng.IntN(2) == 0
				if on == model[u] {
					repeats++
				}
			}
			model[u] = on
			if !on {
				delete(model, u)
			}
			changes = append(changes, SessionChange{User: u, Online: on, At: t1})
		}
		applyT(t, s, changes...)
		if batch%97 == 0 {
			closeT(t, s)
			s = openT(t, path, Options{})
		}
		if batch%50 != 0 {
			continue
		}
		want := make([]string, 0, len(model))
		for u := range model {
			want = append(want, u)
		}
		slices.Sort(want)
		if got := sessionUsers(t, s); !slices.Equal(got, want) {
			t.Fatalf("batch %d: Sessions() has %d users, want %d: %v", batch, len(got), len(want), diff(got, want))
		}
		// A repeated online counts one user too many until a compaction.
		if _, entries := journalSize(t, s); entries > 2*(len(model)+repeats)+compactSlack+40 {
			t.Fatalf("batch %d: %d journal entries for %d users online", batch, entries, len(model))
		}
	}
}

func diff(got, want []string) string {
	var b strings.Builder
	for _, u := range got {
		if !slices.Contains(want, u) {
			fmt.Fprintf(&b, "+%s ", u)
		}
	}
	for _, u := range want {
		if !slices.Contains(got, u) {
			fmt.Fprintf(&b, "-%s ", u)
		}
	}
	return b.String()
}

// Users who all stay online are compacted into records of compactChunk:
// a burst of 10,000 connects leaves few records, not one per batch.
func TestJournalCompactsBatches(t *testing.T) {
	s := openT(t, Memory, Options{})
	defer closeT(t, s)
	for i := range 2500 {
		applyT(t, s, online(fmt.Sprintf("a%d", 2*i), t1), online(fmt.Sprintf("a%d", 2*i+1), t1))
	}
	records, entries := journalSize(t, s)
	if entries != 5000 || records > 2500/mergeRecords+mergeRecords {
		t.Errorf("journal of 5,000 users online: %d records, %d entries", records, entries)
	}
	if got := len(sessionsT(t, s)); got != 5000 {
		t.Errorf("Sessions() = %d users, want 5000", got)
	}
	// Everyone offline: the next compaction leaves nothing.
	for i := range 5000 {
		applyT(t, s, offline(fmt.Sprintf("a%d", i), t2))
	}
	if records, entries := journalSize(t, s); entries > compactSlack {
		t.Errorf("journal with nobody online: %d records, %d entries", records, entries)
	}
	if got := sessionsT(t, s); len(got) != 0 {
		t.Errorf("Sessions() = %d users, want none", len(got))
	}
}

// A journal record that does not decode is skipped (the others still
// count) and logged, and the next compaction drops it. A session key of
// the sidecar before the journal ({"o","e","c"}) reads as a session.
func TestJournalBadRecordsAndOldSessions(t *testing.T) {
	var logs bytes.Buffer
	s := openT(t, Memory, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	defer closeT(t, s)
	applyT(t, s, online("u1", t1))
	err := update(s, func(tx *buntdb.Tx) error {
		for key, val := range map[string]string{
			journalKey(100): "not json", journalKey(101): `["?x","+"]`, journalKey(102): `["+u2"]`,
			sessionKey("old"): `{"o":1764590000000,"e":0,"c":{"sub":"old"}}`,
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
	want := []Session{{User: "old", Claims: []byte(`{"sub":"old"}`)}, {User: "u1"}, {User: "u2"}}
	if got := sessionsT(t, s); !equalSessions(got, want) {
		t.Errorf("Sessions() = %+v, want %+v", got, want)
	}
	if out := logs.String(); !strings.Contains(out, "count=3") {
		t.Errorf("log = %q, want the three bad values counted", out)
	}
	// The next record comes after the highest seq, even one written by
	// hand, so it replays last.
	s.jmu.Lock()
	s.j = journal{}
	s.jmu.Unlock()
	applyT(t, s, offline("u2", t2), online("u3", t2), offline("old", t2))
	want = []Session{{User: "u1"}, {User: "u3"}}
	if got := sessionsT(t, s); !equalSessions(got, want) {
		t.Errorf("Sessions() after more = %+v, want %+v", got, want)
	}
	for i := range compactSlack {
		applyT(t, s, online(fmt.Sprintf("c%d", i), t2), offline(fmt.Sprintf("c%d", i), t2))
	}
	if records, entries := journalSize(t, s); records > compactSlack/4 || entries > compactSlack/2 {
		t.Errorf("after a compaction: %d records, %d entries, want fewer", records, entries)
	}
	logs.Reset()
	if got := sessionsT(t, s); !equalSessions(got, want) || logs.Len() != 0 {
		t.Errorf("Sessions() after a compaction = %+v (log %q), want %+v and no warning", got, logs.String(), want)
	}
}

// A batch of changes costs a few allocations, whatever the users online.
func BenchmarkApplySessions(b *testing.B) {
	s := openT(b, Memory, Options{})
	defer closeT(b, s)
	for i := range 10000 {
		applyT(b, s, online(fmt.Sprintf("idle%d", i), t1))
	}
	batch := make([]SessionChange, 8)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		for k := range batch {
			batch[k] = SessionChange{User: fmt.Sprintf("c%d", i*4+k/2), Online: k%2 == 0, At: t1}
		}
		if err := s.ApplySessions(batch); err != nil {
			b.Fatal(err)
		}
	}
}

// A compaction cut short at any byte (power loss; buntdb writes a
// transaction's commands in no set order, and keeps a torn tail's whole
// commands) leaves the sessions as they were before the batch that
// triggered it, or after: never users lost, never ghosts.
func TestJournalCompactionCutShortAnywhere(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "node.db")
	s := openT(t, path, Options{Sync: "always"})
	model := map[string]bool{}
	apply := func(changes ...SessionChange) {
		applyT(t, s, changes...)
		for _, c := range changes {
			if c.Online {
				model[c.User] = true
			} else {
				delete(model, c.User)
			}
		}
	}
	snapshot := func() []string {
		var out []string
		for u := range model {
			out = append(out, u)
		}
		slices.Sort(out)
		return out
	}
	// Online users, then churn up to just below the compaction mark.
	for i := range 1500 {
		apply(online(fmt.Sprintf("u%d", i), t1))
	}
	for i := 0; s.j.entries+2 < 2*s.j.online+compactSlack; i++ {
		apply(offline(fmt.Sprintf("u%d", i), t1), online(fmt.Sprintf("u%d", i), t1))
	}
	before := snapshot()
	fi, _ := os.Stat(path)
	start := fi.Size()
	records0, _ := journalSize(t, s)
	apply(offline("u7", t2), online("new", t2)) // crosses the mark: compacts
	after := snapshot()
	if records, _ := journalSize(t, s); records >= records0 {
		t.Fatalf("no compaction: %d records, from %d", records, records0)
	}
	closeT(t, s)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	end := int64(len(data))
	for k := range 40 {
		cut := start + (end-start)*int64(k)/40
		p := filepath.Join(dir, fmt.Sprintf("cut-%d.db", k))
		if err := os.WriteFile(p, data[:cut], 0o600); err != nil {
			t.Fatal(err)
		}
		c := openT(t, p, Options{})
		got := sessionUsers(t, c)
		closeT(t, c)
		if !slices.Equal(got, before) && !slices.Equal(got, after) {
			t.Fatalf("cut at %d of %d..%d: %d users, want the %d before or the %d after; %s",
				cut, start, end, len(got), len(before), len(after), diff(got, after))
		}
	}
}
