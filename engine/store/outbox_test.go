package store

import (
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/buntdb"
)

func insertT(t testing.TB, o *Outbox, id string, due int64, body string) {
	t.Helper()
	rec := OutboxRecord{ID: id, EventID: "evt_" + id, URL: "http://app/x", User: "u1", Created: time.Unix(1_700_000_000, 0).UTC(), Due: due}
	if err := o.Insert(rec, []byte(body)); err != nil {
		t.Fatalf("Insert(%s) = %v", id, err)
	}
}

func loadOutboxT(t testing.TB, o *Outbox, id string) (OutboxRecord, bool) {
	t.Helper()
	rec, ok, err := o.Load(id)
	if err != nil {
		t.Fatalf("Load(%s) = %v", id, err)
	}
	return rec, ok
}

// scanT lists the queued ids in due order.
func scanT(t testing.TB, o *Outbox) []string {
	t.Helper()
	var ids []string
	if err := o.Scan(func(id string, _ int64) bool { ids = append(ids, id); return true }); err != nil {
		t.Fatalf("Scan() = %v", err)
	}
	return ids
}

func restoreT(t testing.TB, o *Outbox) (map[string]OutboxRecord, int) {
	t.Helper()
	recs := map[string]OutboxRecord{}
	dropped, err := o.Restore(func(r OutboxRecord) { recs[r.ID] = r })
	if err != nil {
		t.Fatalf("Restore() = %v", err)
	}
	return recs, dropped
}

func TestOutboxLifecycle(t *testing.T) {
	s := openT(t, Memory, Options{})
	defer closeT(t, s)
	o := s.Outbox()
	restoreT(t, o)
	insertT(t, o, "c", 30, `{"c":3}`)
	insertT(t, o, "a", 10, `{"a":1}`)
	insertT(t, o, "b", 20, `{"b":2}`)
	if err := o.Insert(OutboxRecord{ID: "a", Due: 99}, []byte("other")); !errors.Is(err, ErrExists) {
		t.Errorf("Insert(a) again = %v, want ErrExists", err)
	}
	if got, want := scanT(t, o), []string{"a", "b", "c"}; !slices.Equal(got, want) {
		t.Errorf("Scan order = %v, want %v", got, want)
	}
	rec, ok := loadOutboxT(t, o, "a")
	want := OutboxRecord{ID: "a", EventID: "evt_a", URL: "http://app/x", User: "u1", Created: time.Unix(1_700_000_000, 0).UTC(), Size: 7, Due: 10}
	if !ok || rec != want {
		t.Errorf("Load(a) = %+v, %v; want %+v", rec, ok, want)
	}
	if body, err := o.Body("a"); err != nil || string(body) != `{"a":1}` {
		t.Errorf("Body(a) = %q, %v; want the first body", body, err)
	}

	if err := o.Reschedule("a", 40, 1, "500 Internal Server Error"); err != nil {
		t.Fatalf("Reschedule(a) = %v", err)
	}
	if got, want := scanT(t, o), []string{"b", "c", "a"}; !slices.Equal(got, want) {
		t.Errorf("Scan order after Reschedule = %v, want %v", got, want)
	}
	rec, _ = loadOutboxT(t, o, "a")
	if rec.Due != 40 || rec.Attempts != 1 || rec.LastErr != "500 Internal Server Error" || rec.Size != 7 {
		t.Errorf("Load(a) after Reschedule = %+v", rec)
	}
	if err := o.Reschedule("nope", 1, 1, ""); !errors.Is(err, ErrNotQueued) {
		t.Errorf("Reschedule(unknown) = %v, want ErrNotQueued", err)
	}

	for _, id := range []string{"b", "b", "never"} {
		if err := o.Remove(id); err != nil {
			t.Errorf("Remove(%s) = %v", id, err)
		}
	}
	if _, ok := loadOutboxT(t, o, "b"); ok {
		t.Error("Load(b) after Remove: still queued")
	}
	if _, err := o.Body("b"); !errors.Is(err, ErrNotQueued) {
		t.Errorf("Body(b) after Remove = %v, want ErrNotQueued", err)
	}
	if got, want := scanT(t, o), []string{"c", "a"}; !slices.Equal(got, want) {
		t.Errorf("Scan after Remove = %v, want %v", got, want)
	}
	if n, err := o.Count(); err != nil || n != 2 {
		t.Errorf("Count() = %d, %v; want 2", n, err)
	}
	// Scan stops when told to.
	var first []string
	_ = o.Scan(func(id string, _ int64) bool { first = append(first, id); return false })
	if !slices.Equal(first, []string{"c"}) {
		t.Errorf("Scan stopping after one = %v, want [c]", first)
	}
}

func TestOutboxSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.db")
	s := openT(t, path, Options{Sync: "always"})
	o := s.Outbox()
	restoreT(t, o)
	insertT(t, o, "a", 10, "body-a")
	insertT(t, o, "b", 20, "body-b")
	if err := o.Reschedule("a", 30, 2, "timeout"); err != nil {
		t.Fatal(err)
	}
	closeT(t, s)

	s = openT(t, path, Options{})
	defer closeT(t, s)
	o = s.Outbox()
	recs, dropped := restoreT(t, o)
	if dropped != 0 || len(recs) != 2 {
		t.Fatalf("Restore() = %v, dropped %d; want a and b, none dropped", recs, dropped)
	}
	if r := recs["a"]; r.Due != 30 || r.Attempts != 2 || r.User != "u1" || r.Size != 6 {
		t.Errorf("restored a = %+v", r)
	}
	if body, err := o.Body("b"); err != nil || string(body) != "body-b" {
		t.Errorf("Body(b) after restart = %q, %v", body, err)
	}
	if got, want := scanT(t, o), []string{"b", "a"}; !slices.Equal(got, want) {
		t.Errorf("Scan after restart = %v, want %v", got, want)
	}
}

// Restore drops records that do not decode and repairs a due index a torn
// write left out of step with the records.
func TestOutboxRestoreRepairs(t *testing.T) {
	s := openT(t, Memory, Options{})
	defer closeT(t, s)
	o := s.Outbox()
	insertT(t, o, "ok", 10, "x")
	insertT(t, o, "noindex", 20, "x")
	insertT(t, o, "moved", 30, "x")
	err := update(s, func(tx *buntdb.Tx) error {
		for _, kv := range [][2]string{
			{recordKey("broken"), "{not json"},
			{dueKey(5, "broken"), ""},
			{recordKey("wrongid"), `{"id":"other","url":"http://app/x"}`},
			{dueKey(7, "ghost"), ""},       // no record
			{dueKey(99, "moved"), ""},      // a second entry
			{prefixOutboxDue + "junk", ""}, // not an index key
		} {
			if _, _, err := tx.Set(kv[0], kv[1], nil); err != nil {
				return err
			}
		}
		_, err := tx.Delete(dueKey(20, "noindex"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	recs, dropped := restoreT(t, o)
	if dropped != 2 {
		t.Errorf("Restore dropped %d, want 2 (broken, wrongid)", dropped)
	}
	var ids []string
	for id := range recs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	if want := []string{"moved", "noindex", "ok"}; !slices.Equal(ids, want) {
		t.Errorf("restored %v, want %v", ids, want)
	}
	if got, want := scanT(t, o), []string{"ok", "noindex", "moved"}; !slices.Equal(got, want) {
		t.Errorf("Scan after Restore = %v, want %v", got, want)
	}
	var keys []string
	_ = s.db.View(func(tx *buntdb.Tx) error {
		return tx.Ascend("", func(k, _ string) bool { keys = append(keys, k); return true })
	})
	want := []string{recordKey("moved"), recordKey("noindex"), recordKey("ok"),
		dueKey(10, "ok"), dueKey(20, "noindex"), dueKey(30, "moved")}
	slices.Sort(want)
	if !slices.Equal(keys, want) {
		t.Errorf("keys after Restore = %q\nwant %q", keys, want)
	}
}

// A record that does not decode after Restore (it cannot happen through
// the API) is reported unreadable and can still be removed with its entry.
func TestOutboxUnreadableRecord(t *testing.T) {
	s := openT(t, Memory, Options{})
	defer closeT(t, s)
	o := s.Outbox()
	err := update(s, func(tx *buntdb.Tx) error {
		if _, _, err := tx.Set(recordKey("broken"), "{not json", nil); err != nil {
			return err
		}
		_, _, err := tx.Set(dueKey(5, "broken"), "", nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := o.Load("broken"); !errors.Is(err, ErrUnreadable) {
		t.Errorf("Load(broken) = %v, want ErrUnreadable", err)
	}
	if _, err := o.Body("broken"); !errors.Is(err, ErrUnreadable) {
		t.Errorf("Body(broken) = %v, want ErrUnreadable", err)
	}
	if err := o.Reschedule("broken", 9, 1, ""); !errors.Is(err, ErrUnreadable) {
		t.Errorf("Reschedule(broken) = %v, want ErrUnreadable", err)
	}
	if err := o.Remove("broken"); err != nil {
		t.Fatalf("Remove(broken) = %v", err)
	}
	if ids := scanT(t, o); len(ids) != 0 {
		t.Errorf("Scan after Remove(broken) = %v, want nothing", ids)
	}
}

// Every outbox write goes through the commit-panic guard and health.
func TestOutboxWritesGuarded(t *testing.T) {
	s := openT(t, filepath.Join(t.TempDir(), "node.db"), Options{})
	defer closeT(t, s)
	o := s.Outbox()
	insertT(t, o, "a", 1, "x")
	s.commit = func(*buntdb.Tx) error {
		panic(fmt.Errorf("buntdb: %w", errors.New("truncate node.db: input/output error")))
	}
	writes := []struct {
		name string
		do   func() error
	}{
		{"Insert", func() error { return o.Insert(OutboxRecord{ID: "b"}, nil) }},
		{"Reschedule", func() error { return o.Reschedule("a", 2, 1, "") }},
		{"Remove", func() error { return o.Remove("a") }},
	}
	for _, w := range writes {
		if err := w.do(); !errors.Is(err, ErrBroken) {
			t.Errorf("%s when commit panics = %v, want ErrBroken", w.name, err)
		}
	}
	if err := s.Healthy(); !errors.Is(err, ErrBroken) {
		t.Errorf("Healthy() = %v, want ErrBroken", err)
	}
	if rec, ok := loadOutboxT(t, o, "a"); !ok || rec.Due != 1 {
		t.Errorf("Load(a) = %+v, %v; want it unchanged", rec, ok)
	}
}

func TestDueKey(t *testing.T) {
	tests := []struct {
		nanos  int64
		id     string
		wantAt int64
	}{
		{0, "a", 0},
		{1, "fwd:with:colons", 1},
		{1_700_000_000_123_456_789, "x", 1_700_000_000_123_456_789},
		{math.MaxInt64, "max", math.MaxInt64},
		{-5, "negative", 0},
	}
	for _, tc := range tests {
		key := dueKey(tc.nanos, tc.id)
		if !strings.HasPrefix(key, prefixOutboxDue) || len(key) != dueIDAt+len(tc.id) {
			t.Errorf("dueKey(%d, %q) = %q: wrong layout", tc.nanos, tc.id, key)
		}
		at, id, ok := parseDueKey(key)
		if !ok || at != tc.wantAt || id != tc.id {
			t.Errorf("parseDueKey(dueKey(%d, %q)) = %d, %q, %v; want %d, %q, true", tc.nanos, tc.id, at, id, ok, tc.wantAt, tc.id)
		}
	}
	// Lexical order of keys is time order, whatever the ids.
	times := []int64{9, 10, 100, 1_000_000_000, 1_700_000_000_000_000_000, math.MaxInt64}
	var keys []string
	for i := len(times) - 1; i >= 0; i-- {
		keys = append(keys, dueKey(times[i], "z"+strings.Repeat("z", i)))
	}
	slices.Sort(keys)
	for i, k := range keys {
		if at, _, _ := parseDueKey(k); at != times[i] {
			t.Errorf("sorted key %d is due at %d, want %d", i, at, times[i])
		}
	}
	for _, bad := range []string{"", "ob_due:", "ob_due:123:x", "ob:0000000000000000001:x", "ob_due:000000000000000000x:id", "ob_due:0000000000000000001-id"} {
		if _, _, ok := parseDueKey(bad); ok {
			t.Errorf("parseDueKey(%q) ok, want rejected", bad)
		}
	}
}

func FuzzDueKey(f *testing.F) {
	f.Add(int64(0), "a", "ob_due:0000000000000000001:x")
	f.Add(int64(math.MaxInt64), "fwd:1", "ob_due:")
	f.Add(int64(-1), "", "ob_due:-000000000000000001:x")
	f.Fuzz(func(t *testing.T, nanos int64, id, raw string) {
		parseDueKey(raw) // must not panic
		if id == "" {
			return
		}
		at, got, ok := parseDueKey(dueKey(nanos, id))
		if !ok || got != id || at != max(nanos, 0) {
			t.Fatalf("round trip of (%d, %q) = %d, %q, %v", nanos, id, at, got, ok)
		}
	})
}

func TestPrefixEnd(t *testing.T) {
	for _, p := range []string{prefixOutbox, prefixOutboxDue} {
		end := prefixEnd(p)
		if !(p < end) || strings.HasPrefix(end, p) || !(p+"\xff\xff" < end) {
			t.Errorf("prefixEnd(%q) = %q does not bound the prefix", p, end)
		}
	}
	// The two outbox prefixes do not overlap.
	if strings.HasPrefix(prefixOutboxDue, prefixOutbox) {
		t.Errorf("%q is inside %q: count() would include index keys", prefixOutboxDue, prefixOutbox)
	}
}
