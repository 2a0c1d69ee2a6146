// Package store is the node's one embedded database: a buntdb file holding
// webhook idempotency keys, the forward outbox, presence and the
// missed-event streams kept for replay.
//
// Every concern owns a key prefix, so they can share the file without
// colliding and a scan stays within its concern:
//
//	wh:<webhook-id>           idempotency keys (MarkSeen)
//	ob:<item-id>              outbox records (Outbox)
//	ob_due:<nanos>:<item-id>  outbox due-time index (Outbox)
//	pr:u:<user>               a user's status and last-seen (Users, SetStatus)
//	pr:j:<seq>                the journal of this node's sessions (ApplySessions, Sessions)
//	pr:s:<user>               a session handed over by a graceful shutdown (EndSessions, Sessions)
//	rp:<stream>\x00<ms><seq>  a stream's events, ids in fixed-width hex (Streams)
//	rp:epoch                  the first event id the streams kept (Streams)
//	rp_trim:<stream>          the newest id a stream dropped over its count (Streams)
//	rp_lost                   the newest id an Append failed to keep (Streams)
//
// Outbox bodies are not in buntdb, which keeps every value in memory: they
// are files in <path>.outbox/ (see Outbox).
//
// buntdb, the keys and the prefixes stay inside this package: its users see
// methods named for what they do (MarkSeen, Outbox().Insert) and declare
// the small interfaces they need themselves.
//
// buntdb keeps everything in memory and appends every commit to the file.
// What this package adds around it (see docs/RELIABILITY.md section 3):
//   - a file with garbage in the middle (buntdb.ErrInvalid, or a parse
//     panic) is moved aside to <path>.corrupt-<unix> and the store starts
//     empty, logged at Error; a torn tail is dropped by buntdb itself;
//   - a failed write (ENOSPC, EFBIG) is rolled back by buntdb and reported by
//     Healthy until a later write succeeds;
//   - buntdb panics, holding its write lock, when it cannot truncate a
//     partial write away. Commit is guarded: the panic is recovered, the
//     transaction rolled back (which releases the lock) and the store marked
//     broken (ErrBroken): no more writes, reads still served, until restart.
//
// Not covered, because buntdb gives no hook: fsync errors (ignored by buntdb
// even under "always"), and failures inside buntdb's own background
// goroutine (TTL eviction, auto-shrink, whose rename failure panics).
package store

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/tidwall/buntdb"
)

// Key prefixes, one per concern (see the package comment).
const (
	prefixWebhook         = "wh:"
	prefixOutbox          = "ob:"
	prefixOutboxDue       = "ob_due:"
	prefixPresenceUser    = "pr:u:"
	prefixPresenceSession = "pr:s:"
	prefixPresenceJournal = "pr:j:"
	prefixReplay          = "rp:"
	prefixReplayTrim      = "rp_trim:"
)

// Memory is the path of a store that keeps nothing on disk.
const Memory = ":memory:"

// ErrBroken is returned by writes after buntdb failed to undo a partial
// write: the file may end in garbage, so nothing more is appended to it.
// Reads still work. Restarting reopens the file (dropping or moving aside the
// damaged tail).
var ErrBroken = errors.New("store: broken by a write that could not be undone; restart required")

// Options configures Open.
type Options struct {
	// Sync is the fsync policy: "always" (every commit), "everysecond" (the
	// default when empty; up to a second of commits lost on power failure)
	// or "never" (left to the OS).
	Sync string
	// Logger receives corruption and write-failure reports. nil discards.
	Logger *slog.Logger
}

// Store is an open buntdb database with health tracking. It is safe for
// concurrent use.
type Store struct {
	db     *buntdb.DB
	path   string
	log    *slog.Logger
	outbox *Outbox
	// commit is (*buntdb.Tx).Commit; a field so tests can make it panic
	// the way buntdb does when a truncate fails.
	commit func(*buntdb.Tx) error

	mu       sync.Mutex
	writeErr error // guarded by mu; the last write error, nil after a successful write
	broken   error // guarded by mu; non-nil (wrapping ErrBroken) forever once set

	jmu sync.Mutex // held across a journal write (sessions.go)
	j   journal    // guarded by jmu
}

// Close flushes and closes the file. Transactions must be finished first.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close store %s: %w", s.path, err)
	}
	return nil
}

// Healthy returns nil, or the reason writes are failing: the last write
// error (e.g. disk full) until a later write succeeds, or ErrBroken.
func (s *Store) Healthy() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broken != nil {
		return s.broken
	}
	return s.writeErr
}

// write runs fn in a write transaction and commits it; every write in
// this package goes through here. A commit error (the write reached the disk
// only in part, or not at all) rolls everything back, is returned, and makes
// Healthy report it; a successful write clears that report. If fn returns an
// error, nothing is written and health is unchanged. fn reports whether it
// changed anything, so that a no-op commit does not count as a write that
// proves the disk works again.
func (s *Store) write(fn func(tx *buntdb.Tx) (changed bool, err error)) error {
	tx, err := s.db.Begin(true)
	if err != nil {
		return err
	}
	// Checked under buntdb's write lock: a writer that was waiting while
	// another one broke the store sees the flag here.
	if err := s.brokenErr(); err != nil {
		_ = tx.Rollback()
		return err
	}
	changed, err := runTx(tx, fn)
	if err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := s.guardedCommit(tx); err != nil {
		s.setWriteErr(err)
		return err
	}
	if changed {
		s.setWriteErr(nil)
	}
	return nil
}

// runTx calls fn; if fn panics (a programming error), the transaction is
// rolled back so the write lock is not left held, and the panic goes on.
func runTx(tx *buntdb.Tx, fn func(tx *buntdb.Tx) (bool, error)) (bool, error) {
	defer func() {
		if r := recover(); r != nil {
			_ = tx.Rollback()
			panic(r)
		}
	}()
	return fn(tx)
}

// guardedCommit commits tx. buntdb's Commit panics, with its write lock held
// and the transaction's changes still in memory, if it cannot seek back and
// truncate a partial write. Recovering and calling Rollback undoes the
// in-memory changes and releases the lock (Rollback works because Commit
// panicked before clearing the transaction). The file may now end in
// garbage, so the store refuses further writes.
func (s *Store) guardedCommit(tx *buntdb.Tx) (err error) {
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		_ = tx.Rollback()
		err = fmt.Errorf("%w: %v", ErrBroken, r)
		s.mu.Lock()
		s.broken = err
		s.mu.Unlock()
		s.log.Error("store write could not be undone; refusing further writes until restart",
			"path", s.path, "err", err)
	}()
	return s.commit(tx)
}

func (s *Store) brokenErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.broken
}

func (s *Store) setWriteErr(err error) {
	s.mu.Lock()
	prev := s.writeErr
	s.writeErr = err
	s.mu.Unlock()
	// Log transitions only: a full disk must not log once per webhook.
	switch {
	case err != nil && prev == nil && !errors.Is(err, ErrBroken):
		s.log.Error("store write failed; rolled back", "path", s.path, "err", err)
	case err == nil && prev != nil:
		s.log.Info("store writes succeed again", "path", s.path)
	}
}
