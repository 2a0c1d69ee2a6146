package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
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
// replayed, rewritten as the users online in records of compactChunk, the
// old records deleted, all in the transaction of the batch that crossed the
// mark. So it stays within about twice the users online, and a compaction
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
		switch {
		case j.entries >= 2*j.online+compactSlack:
			return true, s.compact(tx, &j, &bad)
		case j.next-j.tail >= mergeRecords:
			return true, mergeTail(tx, &j, &bad)
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("presence apply sessions: %w", err)
	}
	s.j = j
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
	online := make(map[string]struct{})
	var st journalStats
	var entries []string
	err := ascendPrefix(tx, prefixPresenceJournal, func(key, val string) {
		st.keys = append(st.keys, key)
		if seq, err := strconv.ParseUint(key[len(prefixPresenceJournal):], 16, 64); err == nil && seq >= st.next {
			st.next = seq + 1
		}
		entries = entries[:0]
		if err := json.Unmarshal([]byte(val), &entries); err != nil {
			bad.add(key, err)
			return
		}
		st.entries += len(entries)
		for _, e := range entries {
			switch {
			case len(e) < 2:
				bad.add(key, fmt.Errorf("entry %q", e))
			case e[0] == '+':
				online[e[1:]] = struct{}{}
			case e[0] == '-':
				delete(online, e[1:])
			default:
				bad.add(key, fmt.Errorf("entry %q", e))
			}
		}
	})
	return online, st, err
}

// compact rewrites the journal as the users it has online, in tx, and
// updates j.
func (s *Store) compact(tx *buntdb.Tx, j *journal, bad *skipped) error {
	online, st, err := replayJournal(tx, bad)
	if err != nil {
		return err
	}
	for _, key := range st.keys {
		if _, err := tx.Delete(key); err != nil {
			return err
		}
	}
	users := make([]string, 0, len(online))
	for u := range online {
		users = append(users, "+"+u)
	}
	slices.Sort(users)
	for chunk := range slices.Chunk(users, compactChunk) {
		val, err := json.Marshal(chunk)
		if err != nil {
			return err
		}
		if _, _, err := tx.Set(journalKey(j.next), string(val), nil); err != nil {
			return err
		}
		j.next++
	}
	j.entries, j.online, j.tail = len(users), len(users), j.next
	return nil
}

// mergeTail merges the records from j.tail on into one, in tx. A record
// that does not decode is dropped (counted in bad).
func mergeTail(tx *buntdb.Tx, j *journal, bad *skipped) error {
	var (
		keys, merged, entries []string
	)
	err := tx.AscendRange("", journalKey(j.tail), prefixEnd(prefixPresenceJournal), func(key, val string) bool {
		keys = append(keys, key)
		entries = entries[:0]
		if err := json.Unmarshal([]byte(val), &entries); err != nil {
			bad.add(key, err)
			return true
		}
		merged = append(merged, entries...)
		return true
	})
	if err != nil {
		return err
	}
	for _, key := range keys {
		if _, err := tx.Delete(key); err != nil {
			return err
		}
	}
	val, err := json.Marshal(merged)
	if err != nil {
		return err
	}
	if _, _, err := tx.Set(journalKey(j.next), string(val), nil); err != nil {
		return err
	}
	j.next++
	j.tail = j.next
	return nil
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
