package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/tidwall/buntdb"
)

// Presence keeps a record per user, with no TTL:
//
//	pr:u:<user>  {"s":"busy","l":1764590000000}   the user's record: status, last seen offline (ms)
//
// and the node's sessions (sessions.go). The value is small JSON; empty
// fields are left out.

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

func userKey(user string) string { return prefixPresenceUser + user }

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
