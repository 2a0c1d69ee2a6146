package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tidwall/buntdb"
)

// The node's sessions are who is online on this node, kept so that the
// next start can end them: without them, a kill -9 leaves ghosts. Two
// kinds of keys, neither with a TTL:
//
//	pr:j:<seq>   ["+u1","-u2",...]        the journal: a batch of transitions per record, in seq order
//	pr:s:<user>  {"e":<ms>,"c":<claims>}  a session handed over by a graceful shutdown: ended at, claims
//
// A user has a session while the journal's last entry for them is "+", and
// while a pr:s key of theirs exists. The next start ends them through the
// rules; its first transition for a user (online if they came back, else
// offline) deletes the pr:s key. A pr:s key with "e" 0 (or absent) is a
// session found live: the process died with the user online.
//
// Why a journal and not a key per online user: buntdb holds every key and
// value in memory, and a key per user cost about 125 bytes of heap per
// connection (the item, its key and value, its slot in the tree): a fifth
// of the sidecar's idle memory per connection. In the journal a user costs
// their id and four bytes, and a batch one record. It is compacted when it
// holds more than twice as many entries as users online, plus compactSlack:
// replayed, rewritten as the users online in records of compactChunk (a
// snapshot), the old records deleted, after the batch that crossed the
// mark (compact). So it stays within about twice the users online, and a compaction
// replays at most about three entries per entry written since the last
// one: O(1) per transition, amortized. The count of users online is kept
// as the transitions come (exact after a compaction); one repeated by the
// caller (online twice) makes it high, and the compaction later, until the
// next compaction counts again.
//
// A burst of connects makes many small records (one per batch, a few users
// each), and a record costs about a hundred bytes beside its entries. So
// every mergeRecords records since the last merge or compaction are merged
// into one, in order, each entry merged once.
//
// Crash safety: buntdb writes a transaction's commands in no set order,
// and a file cut short keeps a torn tail's whole commands, so a
// transaction may survive a power cut in part. Compaction and merging are
// therefore each two transactions, the new records first and the old ones
// deleted after, and a snapshot's records count only when all of them
// are there; any part of either that survives alone changes no session.
// A compaction that fails (a full disk) is retried when the journal has
// doubled, not on every batch. It holds the store's write lock while it
// replays: about 25 ms at 30,000 users online, 65 ms at 100,000 (an
// outside review's measurement on this machine).
const (
	compactSlack = 1024
	compactChunk = 1024
	mergeRecords = 64
)

// SessionChange is one presence transition of a user on this node.
type SessionChange struct {
	User   string
	Online bool      // true: the session starts; false: it ends and the user's LastSeen becomes At
	At     time.Time // when; used for offline
}

// Session is a session of this node found in the store: left by a previous
// life of the process.
type Session struct {
	User   string
	Claims []byte    // the claims handed over at shutdown; nil after a crash
	Ended  time.Time // zero: the process died with it live (crash); else the graceful shutdown that ended it
}

// SessionEnd is when a user was last seen, for EndSessions, and their
// claims to keep with the session (nil: keep what it has).
type SessionEnd struct {
	User   string
	At     time.Time
	Claims []byte
}

// handedSession is a pr:s value. It is encoded by hand (appendHanded) so
// the claims stay byte for byte as given. A key written by the sidecar of
// before the journal also has "o", ignored.
type handedSession struct {
	Ended  int64           `json:"e"`
	Claims json.RawMessage `json:"c,omitempty"`
}

// journal is what the store knows of its journal records without reading
// them. Guarded by Store.jmu; loaded on first use.
type journal struct {
	loaded  bool
	next    uint64 // seq of the next record
	entries int    // entries in all records
	online  int    // users online: exact after a compaction or the load, counted since (+1, -1)
	tail    uint64 // seq of the first record since the last merge or compaction
	retryAt int    // after a failed compaction: not again before entries reach it
}

func sessionKey(user string) string { return prefixPresenceSession + user }

// journalKey is fixed-width hex, so that key order is seq order.
func journalKey(seq uint64) string {
	const digits = "0123456789abcdef"
	var b [len(prefixPresenceJournal) + 16]byte
	copy(b[:], prefixPresenceJournal)
	for i := len(b) - 1; i >= len(prefixPresenceJournal); i-- {
		b[i] = digits[seq&0xf]
		seq >>= 4
	}
	return string(b[:])
}

// ApplySessions writes a batch of transitions in one write transaction, in
// order, so a user may appear twice (online then offline): one journal
// record. Offline also sets the user's LastSeen to At, keeping the status.
// Either removes a session handed over by the previous life. On error
// nothing is written; an empty user is refused before anything is.
func (s *Store) ApplySessions(changes []SessionChange) error {
	if len(changes) == 0 {
		return nil
	}
	entries := make([]string, len(changes))
	for i, c := range changes {
		if c.User == "" {
			return errors.New("store: ApplySessions: empty user")
		}
		op := "-"
		if c.Online {
			op = "+"
		}
		entries[i] = op + c.User
	}
	val, err := json.Marshal(entries)
	if err != nil {
		return fmt.Errorf("presence apply sessions: %w", err)
	}
	s.jmu.Lock()
	defer s.jmu.Unlock()
	if err := s.loadJournal(); err != nil {
		return fmt.Errorf("presence apply sessions: %w", err)
	}
	j := s.j
	var bad skipped
	err = s.write(func(tx *buntdb.Tx) (bool, error) {
		if _, _, err := tx.Set(journalKey(j.next), string(val), nil); err != nil {
			return false, err
		}
		j.next++
		j.entries += len(changes)
		for _, c := range changes {
			if c.Online {
				j.online++
			} else if j.online > 0 {
				j.online--
			}
			if _, err := tx.Delete(sessionKey(c.User)); err != nil && !errors.Is(err, buntdb.ErrNotFound) {
				return false, err
			}
			if !c.Online {
				if err := setLastSeen(tx, c.User, c.At); err != nil {
					return false, err
				}
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("presence apply sessions: %w", err)
	}
	s.j = j
	// The batch is kept. Compaction and merging run in transactions of
	// their own, each safe to cut short at any byte (buntdb writes a
	// transaction's commands in no set order, and a torn tail keeps some
	// of them): a failure there loses nothing, and is retried later.
	switch {
	case s.j.entries >= 2*s.j.online+compactSlack && s.j.entries >= s.j.retryAt:
		if err := s.compact(&bad); err != nil {
			s.j.retryAt = 2*s.j.entries + compactSlack // not on every batch while the disk is full
			s.log.Warn("presence: journal compaction failed; retried later", "path", s.path, "err", err)
		}
	case s.j.next-s.j.tail >= mergeRecords:
		if err := s.mergeTail(&bad); err != nil {
			s.log.Warn("presence: journal merge failed; retried later", "path", s.path, "err", err)
		}
	}
	bad.warn(s, "presence: journal records that do not decode dropped by compaction")
	return nil
}

// Sessions lists every session the store holds, in user order: the users
// the journal has online, and the sessions handed over. Values that do not
// decode are skipped (logged at Warn). Read-only.
func (s *Store) Sessions() ([]Session, error) {
	var (
		out []Session
		bad skipped
	)
	err := s.db.View(func(tx *buntdb.Tx) error {
		online, _, err := replayJournal(tx, &bad)
		if err != nil {
			return err
		}
		handed := make(map[string]handedSession)
		err = ascendPrefix(tx, prefixPresenceSession, func(key, val string) {
			var h handedSession
			if err := decodeObject(val, &h); err != nil {
				bad.add(key, err)
				return
			}
			handed[key[len(prefixPresenceSession):]] = h
		})
		if err != nil {
			return err
		}
		for u := range handed {
			online[u] = struct{}{}
		}
		users := make([]string, 0, len(online))
		for u := range online {
			users = append(users, u)
		}
		slices.Sort(users)
		out = make([]Session, len(users))
		for i, u := range users {
			h := handed[u]
			out[i] = Session{User: u, Claims: h.Claims, Ended: fromMillis(h.Ended)}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("presence sessions: %w", err)
	}
	bad.warn(s, "presence: sessions that do not decode skipped")
	return out, nil
}

// EndSessions hands the given users' sessions over to the next start, for
// a graceful shutdown: each is marked ended at its At, with its claims, and
// the user's LastSeen becomes At, in one transaction. Users without a
// session are ignored. A handed-over session that does not decode is
// replaced (logged at Warn).
func (s *Store) EndSessions(ends []SessionEnd) error {
	if len(ends) == 0 {
		return nil
	}
	var bad skipped
	err := s.write(func(tx *buntdb.Tx) (bool, error) {
		online, _, err := replayJournal(tx, &bad)
		if err != nil {
			return false, err
		}
		changed := false
		for _, end := range ends {
			var h handedSession
			val, err := tx.Get(sessionKey(end.User))
			switch {
			case err == nil:
				if err := decodeObject(val, &h); err != nil {
					bad.add(sessionKey(end.User), err)
				}
			case !errors.Is(err, buntdb.ErrNotFound):
				return false, err
			default:
				if _, ok := online[end.User]; !ok {
					continue // no session
				}
			}
			changed = true
			if err := setLastSeen(tx, end.User, end.At); err != nil {
				return false, err
			}
			claims := h.Claims
			if end.Claims != nil && json.Valid(end.Claims) {
				claims = end.Claims
			}
			val = string(appendHanded(nil, millis(end.At), claims))
			if _, _, err := tx.Set(sessionKey(end.User), val, nil); err != nil {
				return false, err
			}
		}
		return changed, nil
	})
	if err != nil {
		return fmt.Errorf("presence end sessions: %w", err)
	}
	bad.warn(s, "presence: sessions that do not decode replaced")
	return nil
}

// loadJournal reads what s.j needs from the records, once. Called with
// s.jmu held.
func (s *Store) loadJournal() error {
	if s.j.loaded {
		return nil
	}
	var bad skipped
	err := s.db.View(func(tx *buntdb.Tx) error {
		online, st, err := replayJournal(tx, &bad)
		s.j = journal{loaded: true, next: st.next, entries: st.entries, online: len(online), tail: st.next}
		return err
	})
	bad.warn(s, "presence: journal records that do not decode skipped")
	return err
}

// journalStats is what a replay counted.
type journalStats struct {
	keys    []string // every record's key, in order
	next    uint64   // one past the highest seq
	entries int      // entries in the records that decode
}

// replayJournal returns the users the journal has online. Records that do
// not decode, and entries that are neither "+user" nor "-user", are
// skipped and counted in bad.
func replayJournal(tx *buntdb.Tx, bad *skipped) (map[string]struct{}, journalStats, error) {
	type record struct {
		key     string
		entries []string
		snap    string // the snapshot it is a chunk of; "" for a batch
	}
	var (
		st      journalStats
		records []record
		chunks  = map[string]int{} // snapshot → chunks found
		sizes   = map[string]int{} // snapshot → chunks it has
	)
	err := ascendPrefix(tx, prefixPresenceJournal, func(key, val string) {
		st.keys = append(st.keys, key)
		hexSeq := key[len(prefixPresenceJournal):]
		seq, err := strconv.ParseUint(hexSeq, 16, 64)
		if err != nil || len(hexSeq) != 16 {
			bad.add(key, errors.New("not a journal key")) // out of order: replaying it would misplace it
			return
		}
		st.next = max(st.next, seq+1)
		var entries []string
		if err := json.Unmarshal([]byte(val), &entries); err != nil {
			bad.add(key, err)
			return
		}
		r := record{key: key, entries: entries}
		if len(entries) > 0 && strings.HasPrefix(entries[0], "=") {
			var first uint64
			var i, n int
			if _, err := fmt.Sscanf(entries[0], "=%x/%d/%d", &first, &i, &n); err != nil || n < 1 || i >= n {
				bad.add(key, fmt.Errorf("snapshot mark %q", entries[0]))
				return
			}
			r.snap, r.entries = fmt.Sprintf("%x", first), entries[1:]
			chunks[r.snap]++
			sizes[r.snap] = n
		}
		st.entries += len(r.entries)
		records = append(records, r)
	})
	online := make(map[string]struct{})
	started := map[string]bool{}
	for _, r := range records {
		if r.snap != "" {
			if chunks[r.snap] != sizes[r.snap] {
				continue // a snapshot cut short: the records before it still say it all
			}
			if !started[r.snap] {
				started[r.snap] = true
				clear(online) // a whole snapshot: the users online, from here on
			}
		}
		for _, e := range r.entries {
			switch {
			case len(e) < 2:
				bad.add(r.key, fmt.Errorf("entry %q", e))
			case e[0] == '+':
				online[e[1:]] = struct{}{}
			case e[0] == '-':
				delete(online, e[1:])
			default:
				bad.add(r.key, fmt.Errorf("entry %q", e))
			}
		}
	}
	return online, st, err
}

// compact rewrites the journal as the users it has online, in two
// transactions, each safe to cut short anywhere. First the snapshot, in
// records after every other, each chunk marked with the snapshot's first
// seq, its index and their count ("=<seq>/<i>/<n>"): replay takes a
// snapshot only when all its chunks are there, and then starts from it.
// Then the records before it are deleted: any of them left behind is
// overridden by the snapshot. Called with s.jmu held; updates s.j.
func (s *Store) compact(bad *skipped) error {
	j := s.j
	first := j.next
	var users []string
	err := s.write(func(tx *buntdb.Tx) (bool, error) {
		online, _, err := replayJournal(tx, bad)
		if err != nil {
			return false, err
		}
		users = make([]string, 0, len(online))
		for u := range online {
			users = append(users, "+"+u)
		}
		slices.Sort(users)
		n := max((len(users)+compactChunk-1)/compactChunk, 1)
		next := first
		for i := range n {
			chunk := users[min(i*compactChunk, len(users)):min((i+1)*compactChunk, len(users))]
			rec := append([]string{fmt.Sprintf("=%x/%d/%d", first, i, n)}, chunk...)
			val, err := json.Marshal(rec)
			if err != nil {
				return false, err
			}
			if _, _, err := tx.Set(journalKey(next), string(val), nil); err != nil {
				return false, err
			}
			next++
		}
		j.next = next
		return true, nil
	})
	if err != nil {
		return err
	}
	j.entries += len(users)
	j.online, j.tail, j.retryAt = len(users), j.next, 0
	s.j = j
	if err := s.deleteBefore(first); err != nil {
		return err
	}
	s.j.entries = len(users)
	return nil
}

// deleteBefore deletes the journal records before seq, in one
// transaction.
func (s *Store) deleteBefore(seq uint64) error {
	return s.write(func(tx *buntdb.Tx) (bool, error) {
		var keys []string
		err := tx.AscendRange("", prefixPresenceJournal, journalKey(seq), func(key, _ string) bool {
			keys = append(keys, key)
			return true
		})
		if err != nil {
			return false, err
		}
		for _, key := range keys {
			if _, err := tx.Delete(key); err != nil {
				return false, err
			}
		}
		return len(keys) > 0, nil
	})
}

// mergeTail merges the records from s.j.tail on into one, in two
// transactions: the merged record first, after them (replaying the same
// changes twice in a row gives the same users online), then the old ones
// deleted. A record that does not decode is dropped (counted in bad).
// Called with s.jmu held; updates s.j.
func (s *Store) mergeTail(bad *skipped) error {
	j := s.j
	from := j.tail
	err := s.write(func(tx *buntdb.Tx) (bool, error) {
		var merged, entries []string
		err := tx.AscendRange("", journalKey(from), prefixEnd(prefixPresenceJournal), func(key, val string) bool {
			entries = entries[:0]
			if err := json.Unmarshal([]byte(val), &entries); err != nil {
				bad.add(key, err)
				return true
			}
			merged = append(merged, entries...)
			return true
		})
		if err != nil {
			return false, err
		}
		val, err := json.Marshal(merged)
		if err != nil {
			return false, err
		}
		if _, _, err := tx.Set(journalKey(j.next), string(val), nil); err != nil {
			return false, err
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	merged := j.next
	s.j.next++
	s.j.tail = s.j.next
	return s.write(func(tx *buntdb.Tx) (bool, error) {
		var keys []string
		err := tx.AscendRange("", journalKey(from), journalKey(merged), func(key, _ string) bool {
			keys = append(keys, key)
			return true
		})
		if err != nil {
			return false, err
		}
		for _, key := range keys {
			if _, err := tx.Delete(key); err != nil {
				return false, err
			}
		}
		return len(keys) > 0, nil
	})
}

// ascendPrefix calls fn for every key with prefix, in key order.
func ascendPrefix(tx *buntdb.Tx, prefix string, fn func(key, val string)) error {
	return tx.AscendRange("", prefix, prefixEnd(prefix), func(key, val string) bool {
		fn(key, val)
		return true
	})
}

// appendHanded encodes a handed-over session. claims were checked to be
// JSON (or are empty), so the result is JSON too.
func appendHanded(b []byte, ended int64, claims []byte) []byte {
	b = append(b, `{"e":`...)
	b = strconv.AppendInt(b, ended, 10)
	if len(claims) > 0 {
		b = append(b, `,"c":`...)
		b = append(b, claims...)
	}
	return append(b, '}')
}
