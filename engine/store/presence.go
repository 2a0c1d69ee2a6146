package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/tidwall/buntdb"
)

// Presence keeps two kinds of keys, neither with a TTL:
//
//	pr:u:<user>  {"s":"busy","l":1764590000000}   the user's record: status, last seen offline (ms)
//	pr:s:<user>  {"o":<ms>,"e":<ms>,"c":<claims>}  a session of this node: online since, ended (0: live), claims
//
// A session key exists while the user is online on this node, and after a
// graceful shutdown (ended set), until the next start ends it through the
// rules (ApplySessions with Online false). One left with ended 0 means the
// process died with the user online: the next start must end it too, or
// the user stays a ghost. Both values are small JSON; empty fields are
// left out. The claims are kept as the bytes given, not re-encoded.

// UserRecord is what the store keeps about a user across restarts.
type UserRecord struct {
	Status   string    // "" when never set
	LastSeen time.Time // zero when never seen offline
}

// storedUser is UserRecord as JSON.
type storedUser struct {
	Status   string `json:"s,omitempty"`
	LastSeen int64  `json:"l,omitempty"` // unix millis
}

func (u storedUser) record() UserRecord {
	return UserRecord{Status: u.Status, LastSeen: fromMillis(u.LastSeen)}
}

// SessionChange is one presence transition of a user on this node.
type SessionChange struct {
	User   string
	Online bool   // true: the session starts (Claims kept); false: it ends (session removed, LastSeen = At)
	Claims []byte // the token's claims as JSON, for Online
	At     time.Time
}

// Session is a session of this node found in the store: left by a previous
// life of the process.
type Session struct {
	User   string
	Claims []byte
	Since  time.Time // when it came online
	Ended  time.Time // zero: the process died with it live (crash); else the graceful shutdown that ended it
}

// storedSession is a session's value. It is encoded by hand (see
// appendSession) so the claims stay byte for byte as given.
type storedSession struct {
	Since  int64           `json:"o"`
	Ended  int64           `json:"e"`
	Claims json.RawMessage `json:"c,omitempty"`
}

func userKey(user string) string    { return prefixPresenceUser + user }
func sessionKey(user string) string { return prefixPresenceSession + user }

// Users returns the records of the given users; users the store knows
// nothing about are absent from the map, as are users whose record does
// not decode (logged at Warn). Read-only.
func (s *Store) Users(users []string) (map[string]UserRecord, error) {
	recs := make(map[string]UserRecord, len(users))
	var bad skipped
	err := s.db.View(func(tx *buntdb.Tx) error {
		for _, user := range users {
			val, err := tx.Get(userKey(user))
			if errors.Is(err, buntdb.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			var u storedUser
			if err := decodeObject(val, &u); err != nil {
				bad.add(userKey(user), err)
				continue
			}
			recs[user] = u.record()
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("presence users: %w", err)
	}
	bad.warn(s, "presence: user records that do not decode skipped")
	return recs, nil
}

// SetStatus stores user's status, keeping LastSeen. A record left with
// neither status nor last-seen is deleted, which Users reports the same
// way as one never written.
func (s *Store) SetStatus(user, status string) error {
	if user == "" {
		return errors.New("store: SetStatus: empty user")
	}
	err := s.write(func(tx *buntdb.Tx) (bool, error) {
		u, err := getUser(tx, user)
		if err != nil || u.Status == status {
			return false, err
		}
		u.Status = status
		return true, putUser(tx, user, u)
	})
	if err != nil {
		return fmt.Errorf("presence set status: %w", err)
	}
	return nil
}

// ApplySessions writes a batch of transitions in one write transaction, in
// order, so a user may appear twice (online then offline). Online stores
// the session (replacing one the user had); offline removes it, whatever
// its value, and sets the user's LastSeen to At, keeping the status. On
// error nothing is written: an empty user or claims that are not JSON are
// refused before anything is.
func (s *Store) ApplySessions(changes []SessionChange) error {
	if len(changes) == 0 {
		return nil
	}
	for _, c := range changes {
		if c.User == "" {
			return errors.New("store: ApplySessions: empty user")
		}
		if c.Online && len(c.Claims) > 0 && !json.Valid(c.Claims) {
			return fmt.Errorf("store: ApplySessions: claims of %q are not JSON", c.User)
		}
	}
	err := s.write(func(tx *buntdb.Tx) (bool, error) {
		for _, c := range changes {
			if c.Online {
				val := appendSession(nil, millis(c.At), 0, c.Claims)
				if _, _, err := tx.Set(sessionKey(c.User), string(val), nil); err != nil {
					return false, err
				}
				continue
			}
			if _, err := tx.Delete(sessionKey(c.User)); err != nil && !errors.Is(err, buntdb.ErrNotFound) {
				return false, err
			}
			if err := setLastSeen(tx, c.User, c.At); err != nil {
				return false, err
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("presence apply sessions: %w", err)
	}
	return nil
}

// Sessions lists every stored session, in user order. Sessions whose value
// does not decode are skipped (logged at Warn); they go when the user's
// next offline transition on this node deletes the key. Read-only.
func (s *Store) Sessions() ([]Session, error) {
	var (
		out []Session
		bad skipped
	)
	err := s.db.View(func(tx *buntdb.Tx) error {
		return tx.AscendRange("", prefixPresenceSession, prefixEnd(prefixPresenceSession), func(key, val string) bool {
			ss, err := decodeSession(val)
			if err != nil {
				bad.add(key, err)
				return true
			}
			out = append(out, Session{
				User:   key[len(prefixPresenceSession):],
				Claims: ss.Claims,
				Since:  fromMillis(ss.Since),
				Ended:  fromMillis(ss.Ended),
			})
			return true
		})
	})
	if err != nil {
		return nil, fmt.Errorf("presence sessions: %w", err)
	}
	bad.warn(s, "presence: sessions that do not decode skipped")
	return out, nil
}

// SessionEnd is when a user was last seen, for EndSessions, and their
// claims to keep with the session (nil: keep what it has).
type SessionEnd struct {
	User   string
	At     time.Time
	Claims []byte
}

// EndSessions marks the given users' sessions ended at their At, for a
// graceful shutdown: the sessions stay, for the next start to end through
// the rules, and each user's LastSeen becomes their At, in one transaction.
// Users without a session are ignored; so are sessions that do not decode
// (logged at Warn), whose LastSeen is still set.
func (s *Store) EndSessions(ends []SessionEnd) error {
	var bad skipped
	err := s.write(func(tx *buntdb.Tx) (bool, error) {
		changed := false
		for _, end := range ends {
			user, at := end.User, end.At
			val, err := tx.Get(sessionKey(user))
			if errors.Is(err, buntdb.ErrNotFound) {
				continue
			}
			if err != nil {
				return false, err
			}
			changed = true
			if err := setLastSeen(tx, user, at); err != nil {
				return false, err
			}
			ss, err := decodeSession(val)
			if err != nil {
				bad.add(sessionKey(user), err)
				continue
			}
			claims := ss.Claims
			if end.Claims != nil && json.Valid(end.Claims) {
				claims = end.Claims
			}
			val = string(appendSession(nil, ss.Since, millis(at), claims))
			if _, _, err := tx.Set(sessionKey(user), val, nil); err != nil {
				return false, err
			}
		}
		return changed, nil
	})
	if err != nil {
		return fmt.Errorf("presence end sessions: %w", err)
	}
	bad.warn(s, "presence: sessions that do not decode left as they are")
	return nil
}

// getUser reads user's record in tx; a missing one is the zero record, and
// so is one that does not decode, which the caller's write replaces.
func getUser(tx *buntdb.Tx, user string) (storedUser, error) {
	var u storedUser
	val, err := tx.Get(userKey(user))
	if errors.Is(err, buntdb.ErrNotFound) {
		return u, nil
	}
	if err != nil {
		return u, err
	}
	if decodeObject(val, &u) != nil {
		return storedUser{}, nil
	}
	return u, nil
}

// putUser stores u, or deletes the record if u is empty.
func putUser(tx *buntdb.Tx, user string, u storedUser) error {
	if u == (storedUser{}) {
		_, err := tx.Delete(userKey(user))
		if errors.Is(err, buntdb.ErrNotFound) {
			return nil
		}
		return err
	}
	val, err := json.Marshal(u)
	if err != nil {
		return err
	}
	_, _, err = tx.Set(userKey(user), string(val), nil)
	return err
}

func setLastSeen(tx *buntdb.Tx, user string, at time.Time) error {
	u, err := getUser(tx, user)
	if err != nil {
		return err
	}
	u.LastSeen = millis(at)
	return putUser(tx, user, u)
}

// appendSession encodes a session's value. claims were checked to be JSON
// (or are empty), so the result is JSON too.
func appendSession(b []byte, since, ended int64, claims []byte) []byte {
	b = append(b, `{"o":`...)
	b = strconv.AppendInt(b, since, 10)
	b = append(b, `,"e":`...)
	b = strconv.AppendInt(b, ended, 10)
	if len(claims) > 0 {
		b = append(b, `,"c":`...)
		b = append(b, claims...)
	}
	return append(b, '}')
}

func decodeSession(val string) (storedSession, error) {
	var ss storedSession
	err := decodeObject(val, &ss)
	return ss, err
}

// decodeObject is json.Unmarshal for a value that must be an object: a bare
// null would otherwise decode, without error, to the zero record.
func decodeObject(val string, v any) error {
	if val == "" || val[0] != '{' {
		return errNotObject
	}
	return json.Unmarshal([]byte(val), v)
}

var errNotObject = errors.New("not a JSON object")

// millis is t in unix milliseconds, 0 for the zero time, so that the zero
// time survives a round trip through fromMillis.
func millis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMillis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// skipped collects the values a reader could not decode, so that one call
// logs them once, not once per value.
type skipped struct {
	n     int
	first string // key of the first
	err   error  // its decode error
}

func (sk *skipped) add(key string, err error) {
	if sk.n == 0 {
		sk.first, sk.err = key, err
	}
	sk.n++
}

func (sk *skipped) warn(s *Store, msg string) {
	if sk.n > 0 {
		s.log.Warn(msg, "path", s.path, "count", sk.n, "first_key", sk.first, "err", sk.err)
	}
}
