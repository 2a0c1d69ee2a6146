package forward

import "sync"

// itemOverhead is charged for every queued item on top of its body: a
// little more than what its record and due entry take in the store's memory
// (about 600 bytes, or 1,100 with a body of 256 bytes, which the store keeps
// inline), so that the byte cap bounds memory as well as disk, and items
// with small or empty bodies count too.
const itemOverhead = 1024

// charge is what an item with a body of n bytes counts against the byte
// caps.
func charge(n int64) int64 { return n + itemOverhead }

// budget counts the outbox against its caps: items, bytes, and bytes per
// user. A slot is reserved before the item is written and released if the
// write fails or once the item leaves the outbox, so the counts never pass
// a cap, however many Enqueues run at once.
type budget struct {
	maxItems, maxBytes, maxPerUser int64

	mu      sync.Mutex
	items   int64            // guarded by mu
	bytes   int64            // guarded by mu
	perUser map[string]int64 // guarded by mu; users with something queued
}

func newBudget(maxItems, maxBytes, maxPerUser int64) *budget {
	return &budget{maxItems: maxItems, maxBytes: maxBytes, maxPerUser: maxPerUser, perUser: map[string]int64{}}
}

// reserve takes room for one item of n bytes for user ("" is counted in
// the totals only), or returns ErrFull or ErrUserFull and takes nothing.
func (b *budget) reserve(user string, n int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.items >= b.maxItems || n > b.maxBytes-b.bytes {
		return ErrFull
	}
	if user != "" && n > b.maxPerUser-b.perUser[user] {
		return ErrUserFull
	}
	b.addLocked(user, n)
	return nil
}

// restore counts an item queued by an earlier run, whatever the caps: they
// may have been lowered since.
func (b *budget) restore(user string, n int64) {
	b.mu.Lock()
	b.addLocked(user, n)
	b.mu.Unlock()
}

func (b *budget) addLocked(user string, n int64) {
	b.items++
	b.bytes += n
	if user != "" {
		b.perUser[user] += n
	}
}

// release gives back what reserve or restore took for one item.
func (b *budget) release(user string, n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.items--
	b.bytes -= n
	if user != "" {
		if left := b.perUser[user] - n; left > 0 {
			b.perUser[user] = left
		} else {
			delete(b.perUser, user)
		}
	}
}

// counts returns the items and bytes queued now.
func (b *budget) counts() (items, bytes int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.items, b.bytes
}
