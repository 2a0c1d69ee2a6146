package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tidwall/buntdb"
)

// The missed-event streams keep, per stream (a user's, a room's, "a" for
// broadcasts: the engine names them), the last events delivered to it, so
// that a client reconnecting with the id of the last event it got can be
// sent what it missed. Three kinds of keys:
//
//	rp:<stream>\x00<16 hex ms><16 hex seq>  one event; TTL
//	rp_trim:<stream>                        "<ms>-<seq>": the newest id dropped over the count; TTL
//	rp:epoch                                "<ms>-<seq>": the first id this store kept; no TTL
//	rp_lost                                 "<ms>-<seq>": the newest id an Append failed to keep; TTL
//
// Fixed-width hex makes the key order of a stream's events their id order,
// and the NUL (which stream names cannot hold) makes a stream's keys one
// contiguous range that no other stream's keys, nor rp:epoch, fall into.
// An event's value is its name, its except list and its data, each
// length-prefixed (see appendEvent); the id is in the key. An event sent to
// several streams is stored once in each.
//
// Completeness is decided from what is kept, never from counters in
// memory: the epoch (a store file moved aside, or a fresh :memory: one,
// never saw what came before it), the trim watermarks (what the count
// dropped), the age bound (what the TTL dropped), and the newest event an
// Append failed to keep (a full disk): remembered in memory until a later
// Append can write it down with its own event.
const (
	replayEpochKey = "rp:epoch"
	replayLostKey  = "rp_lost"
)

// eventFormat is the first byte of an event's value, so that the format can
// change without reading old values as garbage.
const eventFormat = 1

// futureSlack is how far ahead of this node's clock a since id may be: an
// id from another node whose clock is a little ahead is still served.
const futureSlack = time.Second

// StreamEvent is one stored event.
type StreamEvent struct {
	ID     string   // its stream id
	Event  string   // event name
	Data   []byte   // JSON
	Except []string // user ids the emit left out (except()); a replay to them skips it
}

// Streams is the store's missed-event streams, with a retention by count
// (per stream) and by age. It is safe for concurrent use.
type Streams struct {
	s         *Store
	maxEvents int
	ttl       time.Duration
	opts      *buntdb.SetOptions // the TTL of events and watermarks; nil for none
	now       func() time.Time   // time.Now; tests move it

	mu   sync.Mutex
	lost StreamID // guarded by mu: the newest id not kept, not yet written down; zero: none
}

// Streams returns the streams view, keeping at most maxEvents events per
// stream, each for ttl. maxEvents <= 0 means nothing is kept (Append is a
// no-op, Since reports incomplete); ttl <= 0 means no age limit.
//
// buntdb writes an expiry to the file in whole seconds, rounded down, so a
// key reloaded after a restart could expire up to a second early; keys are
// therefore given ttl plus a second, so that none expires before ttl, on
// which Since's age bound relies.
func (s *Store) Streams(maxEvents int, ttl time.Duration) *Streams {
	st := &Streams{s: s, maxEvents: maxEvents, ttl: ttl, now: time.Now}
	if ttl > 0 {
		st.opts = &buntdb.SetOptions{Expires: true, TTL: ttl + time.Second}
	}
	return st
}

// Append stores ev once in each named stream, in one write transaction;
// on error nothing is stored. Each key expires after the ttl. A stream over
// maxEvents drops its oldest events and remembers the newest id it dropped
// (its trim watermark, with the same ttl). The first event a store keeps
// sets the epoch. ev.ID must parse; stream names must be non-empty and
// hold no NUL byte.
func (st *Streams) Append(streams []string, ev StreamEvent) error {
	id, ok := ParseStreamID(ev.ID)
	if !ok {
		return fmt.Errorf("store: streams append: bad stream id %q", ev.ID)
	}
	if err := checkStreamNames(streams); err != nil {
		return fmt.Errorf("store: streams append: %w", err)
	}
	if st.maxEvents <= 0 || len(streams) == 0 {
		return nil
	}
	val := string(appendEvent(nil, ev))
	st.mu.Lock()
	lost := st.lost
	if lost == id {
		lost = StreamID{} // the failed event itself, retried: not lost if this one works
	}
	st.mu.Unlock()
	err := st.s.write(func(tx *buntdb.Tx) (bool, error) {
		if err := ensureEpoch(tx, id); err != nil {
			return false, err
		}
		if lost != (StreamID{}) {
			if err := raiseID(tx, replayLostKey, lost, st.opts); err != nil {
				return false, err
			}
		}
		var key []byte
		for _, name := range streams {
			key = appendStreamPrefix(key[:0], name)
			lo := len(key)
			key = id.appendHex(key)
			if _, _, err := tx.Set(string(key), val, st.opts); err != nil {
				return false, err
			}
			if err := st.trim(tx, name, string(key[:lo])); err != nil {
				return false, err
			}
		}
		return true, nil
	})
	st.mu.Lock()
	switch {
	case err != nil && st.lost.Less(id):
		st.lost = id
	case err == nil && (st.lost == lost || st.lost == id):
		st.lost = StreamID{} // written down, or kept after all
	}
	st.mu.Unlock()
	if err != nil {
		return fmt.Errorf("streams append %s: %w", ev.ID, err)
	}
	return nil
}

// raiseID sets key to id unless it holds a newer one.
func raiseID(tx *buntdb.Tx, key string, id StreamID, opts *buntdb.SetOptions) error {
	if val, err := tx.Get(key); err == nil {
		if old, ok := ParseStreamID(val); ok && !old.Less(id) {
			return nil
		}
	} else if !errors.Is(err, buntdb.ErrNotFound) {
		return err
	}
	_, _, err := tx.Set(key, id.String(), opts)
	return err
}

// trim drops the oldest events of the stream whose keys start with lo (its
// prefix, ending in NUL) beyond maxEvents, and raises its watermark to the
// newest dropped. The stream is counted by walking its keys, newest first:
// about maxEvents steps.
func (st *Streams) trim(tx *buntdb.Tx, name, lo string) error {
	hi := lo[:len(lo)-1] + "\x01"
	n := 0
	var drop []string // newest first
	err := tx.DescendRange("", hi, lo, func(key, _ string) bool {
		if n++; n > st.maxEvents {
			drop = append(drop, key)
		}
		return true
	})
	if err != nil || len(drop) == 0 {
		return err
	}
	for _, key := range drop {
		// An expired key not yet swept is "not found": gone either way.
		if _, err := tx.Delete(key); err != nil && !errors.Is(err, buntdb.ErrNotFound) {
			return err
		}
	}
	newest, ok := parseHexID(drop[0][len(lo):])
	if !ok {
		return fmt.Errorf("store: stream key %q: bad id", drop[0])
	}
	key := prefixReplayTrim + name
	if val, err := tx.Get(key); err == nil {
		if w, ok := ParseStreamID(val); ok && !w.Less(newest) {
			return nil // an older event, appended late, was dropped
		}
	}
	_, _, err = tx.Set(key, newest.String(), st.opts)
	return err
}

// ensureEpoch sets the epoch to id unless there is one. One that does not
// parse is replaced: a later epoch only makes Since more cautious.
func ensureEpoch(tx *buntdb.Tx, id StreamID) error {
	val, err := tx.Get(replayEpochKey)
	switch {
	case err == nil:
		if _, ok := ParseStreamID(val); ok {
			return nil
		}
	case !errors.Is(err, buntdb.ErrNotFound):
		return err
	}
	_, _, err = tx.Set(replayEpochKey, id.String(), nil)
	return err
}

// hit is an event found by Since, before it is copied out.
type hit struct {
	id     StreamID
	name   string
	except []string
	data   string
}

// Since returns the events of the named streams with an id strictly after
// since, in id order, an event found in several streams once, leaving out
// those whose Except lists user; at most limit of them (limit <= 0: no cap).
//
// complete reports whether nothing after since can be missing from the
// answer. It is false when since does not parse or is more than a second
// ahead of this node's clock (and then no events are returned); when
// since's time is older than the ttl; when since is older than the epoch
// (the first event this store kept) or than a named stream's trim
// watermark; when a stored event could not be read; and when more than
// limit events matched (the first limit are returned).
//
// An event may be returned for up to about two seconds past its ttl: its
// key is given a second more (see Store.Streams), and buntdb's scans do not
// skip expired keys, which its once-a-second sweep removes.
func (st *Streams) Since(streams []string, since string, user string, limit int) (events []StreamEvent, complete bool, err error) {
	if err := checkStreamNames(streams); err != nil {
		return nil, false, fmt.Errorf("store: streams since: %w", err)
	}
	from, ok := ParseStreamID(since)
	now := st.now()
	if !ok || from.Ms > uint64(max(now.Add(futureSlack).UnixMilli(), 0)) || st.maxEvents <= 0 {
		return nil, false, nil
	}
	complete = st.ttl <= 0 || from.Ms >= uint64(max(now.Add(-st.ttl).UnixMilli(), 0))

	perStream := -1 // events to collect per stream; -1: all
	if limit > 0 {
		// The first limit+1 of the merge are among each stream's first limit+1.
		perStream = limit + 1
	}
	var (
		hits []hit
		bad  skipped
	)
	st.mu.Lock()
	if from.Less(st.lost) {
		complete = false
	}
	st.mu.Unlock()
	err = st.s.db.View(func(tx *buntdb.Tx) error {
		if !coveredSince(tx, from, streams) {
			complete = false
		}
		var key []byte
		for _, name := range streams {
			key = appendStreamPrefix(key[:0], name)
			lo := len(key)
			hi := string(key[:lo-1]) + "\x01"
			start := string(from.appendHex(key))
			n := 0
			err := tx.AscendRange("", start, hi, func(k, val string) bool {
				if k == start {
					return true // since is exclusive
				}
				h, ok := decodeEvent(k[lo:], val)
				if !ok {
					bad.add(k, errors.New("undecodable event"))
					return true
				}
				if slices.Contains(h.except, user) {
					return true
				}
				hits = append(hits, h)
				n++
				return n != perStream
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("streams since %s: %w", since, err)
	}
	if bad.n > 0 {
		complete = false
		bad.warn(st.s, "streams: events that do not decode skipped")
	}
	if len(streams) > 1 {
		slices.SortFunc(hits, func(a, b hit) int { return compareIDs(a.id, b.id) })
		hits = slices.CompactFunc(hits, func(a, b hit) bool { return a.id == b.id })
	}
	if limit > 0 && len(hits) > limit {
		hits, complete = hits[:limit], false
	}
	if len(hits) == 0 {
		return nil, complete, nil
	}
	return copyOut(hits), complete, nil
}

// copyOut makes the events of hits. Their ids and data are copied into one
// string and one buffer shared by all, rather than two allocations per
// event: a replay of a thousand events would otherwise make two thousand.
// Each Data is capped at its own length, so that appending to one cannot
// overwrite the next.
func copyOut(hits []hit) []StreamEvent {
	size := 0
	for _, h := range hits {
		size += len(h.data)
	}
	var (
		events = make([]StreamEvent, len(hits))
		data   = make([]byte, 0, size)
		idText = make([]byte, 0, len(hits)*len("1764590000000-1000"))
		idEnds = make([]int, len(hits))
	)
	for i, h := range hits {
		idText = strconv.AppendUint(idText, h.id.Ms, 10)
		idText = append(idText, '-')
		idText = strconv.AppendUint(idText, h.id.Seq, 10)
		idEnds[i] = len(idText)
		start := len(data)
		data = append(data, h.data...) // within capacity: never moves
		events[i] = StreamEvent{Event: h.name, Data: data[start:len(data):len(data)], Except: h.except}
	}
	ids, start := string(idText), 0
	for i, end := range idEnds {
		events[i].ID, start = ids[start:end], end
	}
	return events
}

// coveredSince reports whether the store kept every event after from in
// the named streams, as far as count and history go: from is no older than
// the epoch nor than any stream's trim watermark. A value that does not
// parse counts as not covered.
func coveredSince(tx *buntdb.Tx, from StreamID, streams []string) bool {
	val, err := tx.Get(replayEpochKey)
	if err != nil {
		return false // no epoch: nothing was ever kept
	}
	if epoch, ok := ParseStreamID(val); !ok || from.Less(epoch) {
		return false
	}
	if val, err := tx.Get(replayLostKey); err == nil {
		if lost, ok := ParseStreamID(val); !ok || from.Less(lost) {
			return false
		}
	}
	for _, name := range streams {
		val, err := tx.Get(prefixReplayTrim + name)
		if errors.Is(err, buntdb.ErrNotFound) {
			continue
		}
		if w, ok := ParseStreamID(val); err != nil || !ok || from.Less(w) {
			return false
		}
	}
	return true
}

func compareIDs(a, b StreamID) int {
	switch {
	case a.Less(b):
		return -1
	case b.Less(a):
		return 1
	}
	return 0
}

// checkStreamNames refuses names that would break the key layout.
func checkStreamNames(streams []string) error {
	for _, name := range streams {
		if name == "" {
			return errors.New("empty stream name")
		}
		if strings.IndexByte(name, 0) >= 0 {
			return fmt.Errorf("stream name %q holds a NUL byte", name)
		}
	}
	return nil
}

// appendStreamPrefix appends the prefix of the stream's event keys:
// "rp:<name>\x00".
func appendStreamPrefix(b []byte, name string) []byte {
	b = append(b, prefixReplay...)
	b = append(b, name...)
	return append(b, 0)
}

// appendEvent encodes ev's value: the format byte, then the name and each
// except id as a uvarint length and bytes (preceded by the count of
// except ids), then the data to the end.
func appendEvent(b []byte, ev StreamEvent) []byte {
	b = append(b, eventFormat)
	b = binary.AppendUvarint(b, uint64(len(ev.Event)))
	b = append(b, ev.Event...)
	b = binary.AppendUvarint(b, uint64(len(ev.Except)))
	for _, u := range ev.Except {
		b = binary.AppendUvarint(b, uint64(len(u)))
		b = append(b, u...)
	}
	return append(b, ev.Data...)
}

// decodeEvent reads an event from the hex id in its key and its value.
// The strings it returns share val's memory.
func decodeEvent(hexID, val string) (h hit, ok bool) {
	if h.id, ok = parseHexID(hexID); !ok {
		return h, false
	}
	if val == "" || val[0] != eventFormat {
		return h, false
	}
	rest := val[1:]
	if h.name, rest, ok = cutLenPrefixed(rest); !ok {
		return h, false
	}
	n, w := uvarint(rest)
	if w <= 0 {
		return h, false
	}
	if rest = rest[w:]; n > uint64(len(rest)) { // each id takes a byte at least
		return h, false
	}
	if n > 0 {
		h.except = make([]string, n)
		for i := range h.except {
			if h.except[i], rest, ok = cutLenPrefixed(rest); !ok {
				return h, false
			}
		}
	}
	h.data = rest
	return h, true
}

// cutLenPrefixed splits a uvarint-length-prefixed string off s.
func cutLenPrefixed(s string) (field, rest string, ok bool) {
	n, w := uvarint(s)
	if w <= 0 || n > uint64(len(s)-w) {
		return "", "", false
	}
	return s[w : w+int(n)], s[w+int(n):], true
}

// uvarint is binary.Uvarint for a string, without copying it.
func uvarint(s string) (uint64, int) {
	var x uint64
	var shift uint
	for i := 0; i < len(s) && i < binary.MaxVarintLen64; i++ {
		c := s[i]
		if c < 0x80 {
			if i == binary.MaxVarintLen64-1 && c > 1 {
				return 0, -1 // overflow
			}
			return x | uint64(c)<<shift, i + 1
		}
		x |= uint64(c&0x7f) << shift
		shift += 7
	}
	return 0, 0
}
