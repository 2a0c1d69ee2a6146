package cluster

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/sidecar/sidecar/engine"
	"github.com/sidecar/sidecar/engine/store"
)

// The missed-event streams of the cluster: one Redis stream per target
// (a user's "u:<id>", a room's "r:<name>", everyone's "a"), so that a
// client reconnecting to any node with ?since= (or Socket.IO recovery) gets
// what it missed wherever it was published. A kept message is stamped and
// stored by one script, which gives it the next id of one sequence
// ("<ms>-<seq>", the ms from Redis's clock): ids increase across the
// cluster in the order messages were stored, whichever node stored them.
//
// All their keys share the hash tag {<prefix>:rp}, so a Redis Cluster holds
// them on one shard, where the script can touch them all:
//
//	{<prefix>:rp}:s:<stream>  the stream, at most replay.max_events, expiring replay.ttl after its last event
//	{<prefix>:rp}:last        the newest id given
//	{<prefix>:rp}:epoch       the first id these streams hold everything since (set when a node finds none: a Redis that lost its data)
//	{<prefix>:rp}:lost        the newest id a node kept alone, Redis being unavailable; a replay from before it is not complete
var stampScript = rueidis.NewLuaScript(`
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local seq = 0
local last = redis.call('GET', KEYS[1])
if last then
  local lms, lseq = parse(last)
  if lms and ms <= lms then ms = lms; seq = lseq + 1 end
end
local id = string.format('%.0f-%.0f', ms, seq)
redis.call('SET', KEYS[1], id)
redis.call('SET', KEYS[2], id, 'NX')
if ARGV[6] ~= '' then
  local cur = redis.call('GET', KEYS[3])
  local lms, lseq = parse(ARGV[6])
  local cms, cseq = 0, 0
  if cur then cms, cseq = parse(cur) end
  if lms and (lms > cms or (lms == cms and lseq > cseq)) then
    redis.call('SET', KEYS[3], ARGV[6], 'PX', ARGV[2])
  end
end
for i = 4, #KEYS do
  redis.call('XADD', KEYS[i], 'MAXLEN', ARGV[1], id, 'e', ARGV[3], 'd', ARGV[4], 'x', ARGV[5])
  redis.call('PEXPIRE', KEYS[i], ARGV[2])
end
return id`)

// stampTimeout bounds the stamp, which runs under the hub's publish lock,
// and the replay read, which runs on a partition: past it, the node keeps
// the message alone, or answers recovered: false.
const stampTimeout = 250 * time.Millisecond

// Streams wraps the node's own streams (which keep what is stamped while
// Redis is unavailable, and answer then, incomplete) with the cluster's.
func (n *Node) Streams(local engine.StreamStore, maxEvents int, ttl time.Duration) engine.StreamStore {
	if ttl <= 0 {
		ttl = 365 * 24 * time.Hour
	}
	tag := "{" + n.opt.Prefix + ":rp}:"
	return &streams{n: n, local: local, maxEvents: strconv.Itoa(maxEvents), ttl: ttl,
		last: tag + "last", epoch: tag + "epoch", lostKey: tag + "lost", stream: tag + "s:"}
}

type streams struct {
	n                            *Node
	local                        engine.StreamStore
	maxEvents                    string
	ttl                          time.Duration
	last, epoch, lostKey, stream string

	mu   sync.Mutex
	lost store.StreamID // kept alone and not yet told to Redis; guarded by mu
}

var (
	_ engine.StreamStore   = (*streams)(nil)
	_ engine.StreamStamper = (*streams)(nil)
)

func (s *streams) Stamp(names []string, ev store.StreamEvent) (string, error) {
	c, ok := s.n.usable()
	if !ok {
		return "", errDown
	}
	keys := make([]string, 0, 3+len(names))
	keys = append(keys, s.last, s.epoch, s.lostKey)
	for _, name := range names {
		keys = append(keys, s.stream+name)
	}
	s.mu.Lock()
	lost := s.lost
	s.mu.Unlock()
	lostArg := ""
	if lost != (store.StreamID{}) {
		lostArg = lost.String()
	}
	ctx, cancel := context.WithTimeout(context.Background(), stampTimeout)
	defer cancel()
	id, err := stampScript.Exec(ctx, c, keys, []string{s.maxEvents, strconv.FormatInt(s.ttl.Milliseconds(), 10),
		ev.Event, string(ev.Data), string(appendList(nil, ev.Except)), lostArg}).ToString()
	if err != nil {
		s.n.failed(err)
		return "", err
	}
	if lost != (store.StreamID{}) {
		s.mu.Lock()
		if s.lost == lost {
			s.lost = store.StreamID{}
		}
		s.mu.Unlock()
	}
	return id, nil
}

// Append keeps ev in the node's own streams: Redis could not stamp it. A
// replay from the cluster's streams from before it is not complete.
func (s *streams) Append(names []string, ev store.StreamEvent) error {
	if id, ok := store.ParseStreamID(ev.ID); ok {
		s.mu.Lock()
		if s.lost.Less(id) {
			s.lost = id
		}
		s.mu.Unlock()
	}
	if s.local == nil {
		return errDown
	}
	return s.local.Append(names, ev)
}

func (s *streams) Since(names []string, since, user string, limit int) ([]store.StreamEvent, bool, error) {
	from, ok := store.ParseStreamID(since)
	if !ok {
		return nil, false, nil
	}
	c, up := s.n.usable()
	if !up {
		if s.local == nil {
			return nil, false, nil
		}
		evs, _, err := s.local.Since(names, since, user, limit)
		return evs, false, err // what this node kept alone: not all of it
	}
	ctx, cancel := context.WithTimeout(context.Background(), stampTimeout)
	defer cancel()
	cmds := make(rueidis.Commands, 0, 2+2*len(names))
	cmds = append(cmds, c.B().Get().Key(s.epoch).Build(), c.B().Get().Key(s.lostKey).Build())
	count := int64(limit + 1)
	if limit <= 0 {
		count = 1 << 20
	}
	for _, name := range names {
		key := s.stream + name
		cmds = append(cmds, c.B().Xrange().Key(key).Start("("+from.String()).End("+").Count(count).Build(),
			c.B().XinfoStream().Key(key).Build())
	}
	res := c.DoMulti(ctx, cmds...)
	complete := from.Ms >= uint64(max(time.Now().Add(-s.ttl).UnixMilli(), 0))
	if epoch, err := res[0].ToString(); err != nil {
		if !rueidis.IsRedisNil(err) {
			return s.failed(err)
		}
		complete = false // no epoch: these streams may not hold what came before
	} else if e, ok := store.ParseStreamID(epoch); !ok || from.Less(e) {
		complete = false
	}
	if lost, err := res[1].ToString(); err == nil {
		if l, ok := store.ParseStreamID(lost); ok && from.Less(l) {
			complete = false
		}
	} else if !rueidis.IsRedisNil(err) {
		return s.failed(err)
	}
	type hit struct {
		id store.StreamID
		ev store.StreamEvent
	}
	var hits []hit
	for i := range names {
		entries, err := res[2+2*i].AsXRange()
		if err != nil {
			return s.failed(err)
		}
		if int64(len(entries)) == count {
			complete = false
		}
		for _, e := range entries {
			id, ok := store.ParseStreamID(e.ID)
			if !ok {
				continue
			}
			except, err := decodeList(e.FieldValues["x"])
			if err != nil || slices.Contains(except, user) {
				continue
			}
			hits = append(hits, hit{id, store.StreamEvent{ID: e.ID, Event: e.FieldValues["e"], Data: []byte(e.FieldValues["d"]), Except: except}})
		}
		info, err := res[3+2*i].AsMap()
		if err != nil {
			if isNoSuchKey(err) {
				continue // no stream: nothing kept, nothing trimmed
			}
			return s.failed(err)
		}
		if trimmedAfter(info, from) {
			complete = false
		}
	}
	slices.SortFunc(hits, func(a, b hit) int {
		switch {
		case a.id.Less(b.id):
			return -1
		case b.id.Less(a.id):
			return 1
		}
		return 0
	})
	// One event stored in several streams (a user's and a room's) once.
	hits = slices.CompactFunc(hits, func(a, b hit) bool { return a.id == b.id })
	if limit > 0 && len(hits) > limit {
		hits, complete = hits[:limit], false
	}
	out := make([]store.StreamEvent, len(hits))
	for i, h := range hits {
		out[i] = h.ev
	}
	return out, complete, nil
}

// trimmedAfter reports whether a stream (its XINFO STREAM) may have
// dropped an event newer than from: the count trims the oldest, so what it
// dropped is older than its first entry, or than its last id if it is now
// empty (Redis 7.0's entries-added and recorded-first-entry-id).
func trimmedAfter(info map[string]rueidis.RedisMessage, from store.StreamID) bool {
	get := func(k string) *rueidis.RedisMessage { v := info[k]; return &v }
	length, err1 := get("length").AsInt64()
	added, err2 := get("entries-added").AsInt64()
	if err1 != nil || err2 != nil {
		return true // not a Redis 7 answer: cannot tell
	}
	if added <= length {
		return false // nothing dropped
	}
	field := "recorded-first-entry-id"
	if length == 0 {
		field = "last-generated-id"
	}
	first, err := get(field).ToString()
	fid, ok := store.ParseStreamID(first)
	return err != nil || !ok || from.Less(fid)
}

func (s *streams) failed(err error) ([]store.StreamEvent, bool, error) {
	s.n.failed(err)
	return nil, false, err
}

func isNoSuchKey(err error) bool {
	var re *rueidis.RedisError
	return errors.As(err, &re) && strings.Contains(re.Error(), "no such key")
}

// decodeList reads a list of appendList.
func decodeList(p string) ([]string, error) {
	d := decoder{b: p}
	l := d.list()
	if d.err == nil && len(d.b) != 0 {
		d.err = errEnvelope
	}
	return l, d.err
}

// ensureEpoch sets the epoch if there is none (a new cluster, or a Redis
// that lost its data): the streams hold everything from now on.
func (n *Node) ensureEpoch(c rueidis.Client) error {
	ctx, cancel := n.ctx()
	defer cancel()
	id := strconv.FormatInt(time.Now().UnixMilli(), 10) + "-0"
	err := c.Do(ctx, c.B().Set().Key("{"+n.opt.Prefix+":rp}:epoch").Value(id).Nx().Build()).Error()
	if rueidis.IsRedisNil(err) {
		return nil // there is one
	}
	return err
}
