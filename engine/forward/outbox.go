package forward

import (
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/tidwall/buntdb"

	"github.com/sidecar/sidecar/engine/store"
)

// The outbox lives in the node's store under two prefixes, written together
// in one transaction:
//
//	ob:<id>                        the record (JSON)
//	ob_due:<19-digit nanos>:<id>   empty value; keys sort by next-attempt time
//
// The second is the due index: finding due items is one ordered range scan
// over keys, with no per-comparison JSON parsing and nothing to rebuild
// at Open (buntdb's own indexes live in memory only).
const (
	keyPrefix = store.PrefixOutbox
	duePrefix = store.PrefixOutboxDue
	dueDigits = 19 // math.MaxInt64 has 19 decimal digits
	dueIDAt   = len(duePrefix) + dueDigits + 1
)

// record is what the outbox stores for one Item.
type record struct {
	ID       string    `json:"id"`
	EventID  string    `json:"event_id,omitempty"`
	URL      string    `json:"url"`
	Body     []byte    `json:"body"`
	Created  time.Time `json:"created"`
	Due      int64     `json:"due"` // next attempt, Unix nanoseconds; mirrors the ob_due key
	Attempts int       `json:"attempts"`
	LastErr  string    `json:"last_error,omitempty"` // last failure, for whoever reads the file
}

func recordKey(id string) string { return keyPrefix + id }

// dueKey is the index key for an item due at nanos. Fixed-width digits make
// lexical order equal time order.
func dueKey(nanos int64, id string) string {
	if nanos < 0 {
		nanos = 0
	}
	b := make([]byte, 0, dueIDAt+len(id))
	b = append(b, duePrefix...)
	digits := strconv.AppendInt(make([]byte, 0, dueDigits), nanos, 10)
	for range dueDigits - len(digits) {
		b = append(b, '0')
	}
	b = append(b, digits...)
	b = append(b, ':')
	b = append(b, id...)
	return string(b)
}

// parseDueKey splits a due-index key; ok is false for a key it did not write.
func parseDueKey(key string) (nanos int64, id string, ok bool) {
	if len(key) <= dueIDAt || key[dueIDAt-1] != ':' || key[:len(duePrefix)] != duePrefix {
		return 0, "", false
	}
	nanos, err := strconv.ParseInt(key[len(duePrefix):dueIDAt-1], 10, 64)
	if err != nil {
		return 0, "", false
	}
	return nanos, key[dueIDAt:], true
}

// errExists reports that insert found the id already queued.
var errExists = errors.New("forward: id already queued")

// insert stores rec and its due entry unless the id is already queued
// (errExists) or the outbox is full (ErrFull).
func insert(s *store.Store, rec *record, full func() bool) error {
	val, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return s.Update(func(tx *buntdb.Tx) error {
		switch _, err := tx.Get(recordKey(rec.ID)); {
		case err == nil:
			return errExists
		case !errors.Is(err, buntdb.ErrNotFound):
			return err
		}
		if full() {
			return ErrFull
		}
		if _, _, err := tx.Set(recordKey(rec.ID), string(val), nil); err != nil {
			return err
		}
		_, _, err := tx.Set(dueKey(rec.Due, rec.ID), "", nil)
		return err
	})
}

// load reads one record; ok is false if it is no longer queued.
func load(s *store.Store, id string) (rec record, ok bool, err error) {
	var val string
	err = s.View(func(tx *buntdb.Tx) error {
		var err error
		val, err = tx.Get(recordKey(id))
		return err
	})
	if errors.Is(err, buntdb.ErrNotFound) {
		return rec, false, nil
	}
	if err != nil {
		return rec, false, err
	}
	if err := json.Unmarshal([]byte(val), &rec); err != nil {
		return rec, true, &decodeError{id: id, err: err}
	}
	return rec, true, nil
}

type decodeError struct {
	id  string
	err error
}

func (e *decodeError) Error() string {
	return "forward: decode outbox record " + e.id + ": " + e.err.Error()
}
func (e *decodeError) Unwrap() error { return e.err }

// remove deletes a record and its due entry (due is the record's Due).
func remove(s *store.Store, id string, due int64) error {
	return s.Update(func(tx *buntdb.Tx) error {
		if _, err := tx.Delete(recordKey(id)); err != nil && !errors.Is(err, buntdb.ErrNotFound) {
			return err
		}
		if _, err := tx.Delete(dueKey(due, id)); err != nil && !errors.Is(err, buntdb.ErrNotFound) {
			return err
		}
		return nil
	})
}

// reschedule stores rec (with its new Due and Attempts) and moves its due
// entry from oldDue.
func reschedule(s *store.Store, rec *record, oldDue int64) error {
	val, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return s.Update(func(tx *buntdb.Tx) error {
		if _, err := tx.Delete(dueKey(oldDue, rec.ID)); err != nil && !errors.Is(err, buntdb.ErrNotFound) {
			return err
		}
		if _, _, err := tx.Set(recordKey(rec.ID), string(val), nil); err != nil {
			return err
		}
		_, _, err := tx.Set(dueKey(rec.Due, rec.ID), "", nil)
		return err
	})
}

// count returns the number of queued records.
func count(s *store.Store) (int64, error) {
	var n int64
	err := s.View(func(tx *buntdb.Tx) error {
		return tx.AscendRange("", keyPrefix, prefixEnd(keyPrefix), func(string, string) bool {
			n++
			return true
		})
	})
	return n, err
}

// prefixEnd is the smallest key greater than every key with prefix p.
func prefixEnd(p string) string {
	return p[:len(p)-1] + string(p[len(p)-1]+1)
}
