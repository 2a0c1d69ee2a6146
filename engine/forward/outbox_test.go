package forward

import (
	"cmp"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sidecar/sidecar/engine/store"
)

// fakeOutbox is an Outbox in a map, with hooks to make it fail.
type fakeOutbox struct {
	mu         sync.Mutex
	recs       map[string]store.OutboxRecord // guarded by mu
	bodies     map[string][]byte             // guarded by mu
	unreadable map[string]bool               // guarded by mu; Body fails with ErrUnreadable
	// insert, if set, runs before an Insert is applied; an error refuses it.
	insert func(rec store.OutboxRecord) error
}

var _ Outbox = (*fakeOutbox)(nil)

func newFakeOutbox() *fakeOutbox {
	return &fakeOutbox{recs: map[string]store.OutboxRecord{}, bodies: map[string][]byte{}, unreadable: map[string]bool{}}
}

func (o *fakeOutbox) Restore(fn func(store.OutboxRecord)) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, r := range o.recs {
		fn(r)
	}
	return 0, nil
}

func (o *fakeOutbox) Insert(rec store.OutboxRecord, body []byte) error {
	if o.insert != nil {
		if err := o.insert(rec); err != nil {
			return err
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.recs[rec.ID]; ok {
		return store.ErrExists
	}
	rec.Size = int64(len(body))
	o.recs[rec.ID] = rec
	o.bodies[rec.ID] = append([]byte(nil), body...)
	return nil
}

func (o *fakeOutbox) Load(id string) (store.OutboxRecord, bool, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	r, ok := o.recs[id]
	return r, ok, nil
}

func (o *fakeOutbox) Body(id string) ([]byte, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.unreadable[id] {
		return nil, fmt.Errorf("%w: fake", store.ErrUnreadable)
	}
	b, ok := o.bodies[id]
	if !ok {
		return nil, store.ErrNotQueued
	}
	return b, nil
}

func (o *fakeOutbox) Reschedule(id string, due int64, attempts int, lastErr string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	r, ok := o.recs[id]
	if !ok {
		return store.ErrNotQueued
	}
	r.Due, r.Attempts, r.LastErr = due, attempts, lastErr
	o.recs[id] = r
	return nil
}

func (o *fakeOutbox) Remove(id string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.recs, id)
	delete(o.bodies, id)
	return nil
}

func (o *fakeOutbox) Scan(fn func(id string, due int64) bool) error {
	o.mu.Lock()
	recs := make([]store.OutboxRecord, 0, len(o.recs))
	for _, r := range o.recs {
		recs = append(recs, r)
	}
	o.mu.Unlock()
	slices.SortFunc(recs, func(a, b store.OutboxRecord) int {
		return cmp.Or(cmp.Compare(a.Due, b.Due), cmp.Compare(a.ID, b.ID))
	})
	for _, r := range recs {
		if !fn(r.ID, r.Due) {
			return nil
		}
	}
	return nil
}

func (o *fakeOutbox) len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.recs)
}

// An item whose body cannot be read back (a damaged spool) can never be
// sent: it is dropped, counted Failed, and does not stop the others.
func TestUnreadableItemDropped(t *testing.T) {
	checkLeaks(t)
	a := newApp(t, time.Now, nil)
	ob := newFakeOutbox()
	f := newForwarder(t, Config{Outbox: ob, Signer: signer(t)})
	enqueue(t, f, Item{ID: "broken", URL: a.URL})
	enqueue(t, f, Item{ID: "fine", URL: a.URL})
	ob.mu.Lock()
	ob.unreadable["broken"] = true
	ob.mu.Unlock()
	stop := startRun(t, f)
	waitFor(t, "both handled", func() bool { s := f.Stats(); return s.Failed == 1 && s.Delivered == 1 })
	stop()
	if n := ob.len(); n != 0 {
		t.Errorf("outbox holds %d items, want 0", n)
	}
	if got := f.Stats().Pending; got != 0 {
		t.Errorf("Stats().Pending = %d, want 0", got)
	}
	if n := a.count(); n != 1 {
		t.Errorf("app got %d requests, want 1 (the readable item)", n)
	}
}
