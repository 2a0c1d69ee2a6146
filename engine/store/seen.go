package store

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/tidwall/buntdb"
)

// MarkSeen records a webhook id for ttl and reports whether this is its first
// sighting. The check and the set run in one write transaction, so of any
// number of concurrent calls with the same id exactly one gets first=true.
// An id seen before and not yet expired gives first=false. The stored value
// is the Unix time of the first sighting. When err is non-nil nothing was
// recorded.
//
// The TTL survives a restart as an absolute time (buntdb stores whole
// seconds, so a reloaded key may expire up to a second early).
func (s *Store) MarkSeen(id string, ttl time.Duration) (first bool, err error) {
	if id == "" {
		return false, errors.New("store: MarkSeen: empty id")
	}
	if ttl <= 0 {
		return false, fmt.Errorf("store: MarkSeen: ttl %v, want > 0", ttl)
	}
	key := prefixWebhook + id
	err = s.write(func(tx *buntdb.Tx) (bool, error) {
		switch _, err := tx.Get(key); {
		case err == nil:
			return false, nil
		case !errors.Is(err, buntdb.ErrNotFound):
			return false, err
		}
		val := strconv.FormatInt(time.Now().Unix(), 10)
		if _, _, err := tx.Set(key, val, &buntdb.SetOptions{Expires: true, TTL: ttl}); err != nil {
			return false, err
		}
		first = true
		return true, nil
	})
	if err != nil {
		return false, fmt.Errorf("mark seen: %w", err)
	}
	return first, nil
}

// Unmark forgets a webhook id, so that the sender's retry is processed: call
// it when handling failed after MarkSeen returned first=true. Unmarking an
// unknown id is not an error.
func (s *Store) Unmark(id string) error {
	key := prefixWebhook + id
	err := s.write(func(tx *buntdb.Tx) (bool, error) {
		_, err := tx.Delete(key)
		if errors.Is(err, buntdb.ErrNotFound) {
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		return fmt.Errorf("unmark: %w", err)
	}
	return nil
}
