package engine

import (
	"path"
	"strings"
	"sync"

	"github.com/sidecar/sidecar/engine/store"
)

// Missed events. Every message carries a stream id ("<unix ms>-<seq>"),
// given by the hub under its publish lock (hub.Deliver), where the message
// is also kept for replay and queued to its partitions: ids increase in the
// order messages are stored, and every partition receives them in that
// order. A kept message is stored once per target: in the stream of each
// user it names ("u:<id>"), of each room ("r:<name>"), or in the stream of
// everyone ("a") for a broadcast, so a broadcast costs one record, not one
// per recipient.
//
// A connection opened with ?since=<id> is replayed by its partition as it
// is indexed, on the partition's goroutine: the events of its user's
// stream, of the rooms it joins at open and of "a", merged in id order,
// after since, then {"event":"resumed","data":{"recovered":...}}, all
// queued before any live event can be, since live events for it are
// delivered by that same goroutine later. A message stored before the read
// but still on its way to the partition would arrive twice: up to the
// newest id it was replayed (upTo), the conn skips live events that reach
// it through a stream it was replayed; the first live event past upTo to
// reach the partition means nothing older is still on its way, and the
// partition stops checking.

// StreamStore keeps the streams (engine/store implements it).
type StreamStore interface {
	Append(streams []string, ev store.StreamEvent) error
	Since(streams []string, since, user string, limit int) (events []store.StreamEvent, complete bool, err error)
}

// A StreamStamper is a StreamStore that gives kept messages their ids
// itself, in an order shared by several nodes (engine/cluster): Stamp
// stores ev (whose ID is empty) in streams and returns the id it gave it.
// On error the engine gives the message a node id and Appends it instead.
type StreamStamper interface {
	Stamp(streams []string, ev store.StreamEvent) (id string, err error)
}

// ReplayOptions say which events are kept for replay.
type ReplayOptions struct {
	// Events are the event names kept (path.Match globs); empty: all.
	Events []string
	// Exclude are names never kept, whatever Events says.
	Exclude []string
}

// maxReplay caps the events of one replay: past it, recovered is false.
const maxReplay = 1000

// keeper decides, and remembers, which event names are kept.
type keeper struct {
	opt  ReplayOptions
	mu   sync.Mutex
	seen map[string]bool // guarded by mu
}

func (k *keeper) keeps(name string) bool {
	k.mu.Lock()
	v, ok := k.seen[name]
	k.mu.Unlock()
	if ok {
		return v
	}
	v = matchAny(k.opt.Events, name, true) && !matchAny(k.opt.Exclude, name, false)
	k.mu.Lock()
	if k.seen == nil || len(k.seen) > 4096 { // names come from rules and the API: few, but not trusted to be
		k.seen = make(map[string]bool)
	}
	k.seen[name] = v
	k.mu.Unlock()
	return v
}

func matchAny(globs []string, name string, empty bool) bool {
	if len(globs) == 0 {
		return empty
	}
	for _, g := range globs {
		if ok, _ := path.Match(g, name); ok {
			return true
		}
	}
	return false
}

// streamsOf names the streams m is stored in. A user or room name with a
// NUL byte (which a rule can make from client data) has no stream: it is
// delivered, never replayed.
func streamsOf(to *Target) []string {
	if to.All {
		return []string{"a"}
	}
	s := make([]string, 0, len(to.Users)+len(to.Rooms))
	for _, u := range to.Users {
		if !strings.Contains(u, "\x00") {
			s = append(s, "u:"+u)
		}
	}
	for _, r := range to.Rooms {
		if !strings.Contains(r, "\x00") {
			s = append(s, "r:"+r)
		}
	}
	return s
}

// stamp gives m its stream id, from ms on, and keeps it. The hub calls it
// under its publish lock. A cluster's streams give a kept message its id
// (Stamped), one that is not kept has a node id.
func (e *Engine) stamp(m *Message, ms int64) {
	names := e.keptIn(m)
	if m.ID == "" && names != nil && e.stamper != nil {
		id, err := e.stamper.Stamp(names, store.StreamEvent{Event: m.Event, Data: m.Data, Except: m.To.Except})
		if err == nil {
			m.ID, m.Stamped = id, true
			e.sawStamp(id)
			return
		}
		// Kept by this node alone (the stamper counts it as not kept
		// by the cluster), with a node id.
	}
	if m.ID == "" {
		m.ID = e.idAt(ms)
	}
	if names != nil {
		e.keep(m, names)
	}
}

// keptIn names the streams m is kept in, or nil if it is not kept.
func (e *Engine) keptIn(m *Message) []string {
	if e.streams == nil || m.To.Empty() || !e.keeper.keeps(m.Event) {
		return nil
	}
	names := streamsOf(&m.To)
	if len(names) == 0 {
		return nil
	}
	return names
}

// sawStamp raises the newest cluster id this node has seen (position).
func (e *Engine) sawStamp(id string) {
	sid, ok := store.ParseStreamID(id)
	if !ok {
		return
	}
	e.stampMu.Lock()
	if e.lastStamp.Less(sid) {
		e.lastStamp = sid
	}
	e.stampMu.Unlock()
	e.hub.raiseMs(int64(sid.Ms))
}

// keep stores m in the streams names. A store that fails (a full disk)
// does not stop the delivery: it is counted and logged, and the node
// reports the store in /readyz.
func (e *Engine) keep(m *Message, names []string) {
	err := e.streams.Append(names, store.StreamEvent{ID: m.ID, Event: m.Event, Data: m.Data, Except: m.To.Except})
	if err != nil {
		// The store remembers it: a replay from before it is not complete.
		e.metrics.replayStoreErrors.Inc()
		e.ruleLog.limited.log("replay:store", func(suppressed int) {
			e.log.Error("event not kept for replay; delivered all the same", "event", m.Event, "err", err, "suppressed", suppressed)
		})
	}
}

// replay queues for c, being indexed, what it missed after since, then the
// resumed frame.
func (p *partition) replay(c *conn, since string) {
	frames, recovered := p.missed(c, since)
	for _, f := range frames {
		if !p.enqueue(c, f) {
			return // closed
		}
	}
	frame := frameResumedFalse
	if recovered {
		frame = frameResumedTrue
	}
	p.enqueue(c, p.e.hub.codecs[c.proto].encodeEvent("resumed", frame, ""))
}

// missed returns the frames of what c, being indexed, missed after since,
// and whether they are all of it. What does not fit in half the conn's
// queue, or past maxReplay events, is left out, and recovered is false: a
// replay must not make its client a slow consumer.
func (p *partition) missed(c *conn, since string) (frames [][]byte, recovered bool) {
	e := p.e
	if e.streams == nil {
		return nil, false
	}
	cd := e.hub.codecs[c.proto]
	names := make([]string, 0, 2+len(c.rooms))
	names = append(names, "u:"+c.user, "a")
	for _, r := range c.rooms {
		names = append(names, "r:"+r)
	}
	evs, complete, err := e.streams.Since(names, since, c.user, maxReplay)
	if err != nil {
		e.log.Warn("replay not read", "user", c.user, "err", err)
	}
	recovered = complete && err == nil
	budget := e.limits.OutboundQueueBytes / 2
	var upTo store.StreamID
	for _, ev := range evs {
		f := cd.encodeEvent(ev.Event, ev.Data, ev.ID)
		if budget -= len(f); budget < 0 {
			recovered = false
			break
		}
		frames = append(frames, f)
		e.metrics.replayed.Inc()
		if id, ok := store.ParseStreamID(ev.ID); ok {
			upTo = id
		}
	}
	if upTo != (store.StreamID{}) {
		p.rememberReplayed(c, upTo)
	}
	return frames, recovered
}

var (
	frameResumedTrue  = []byte(`{"recovered":true}`)
	frameResumedFalse = []byte(`{"recovered":false}`)
)

// replayed is what a recently replayed conn was sent: the newest id, and
// the rooms whose streams it was replayed (its user's and everyone's always).
type replayed struct {
	upTo  store.StreamID
	rooms []string
}

func (p *partition) rememberReplayed(c *conn, upTo store.StreamID) {
	if p.replayed == nil {
		p.replayed = make(map[*conn]*replayed)
	}
	p.replayed[c] = &replayed{upTo: upTo, rooms: append([]string(nil), c.rooms...)}
	c.dedup = true
	if p.replayHorizon.Less(upTo) {
		p.replayHorizon = upTo
	}
}

// wasReplayed reports whether the live message id, reaching c (c.dedup
// set) through room (or through its user or everyone when room is ""), is
// one c was replayed.
func (p *partition) wasReplayed(c *conn, id store.StreamID, room string) bool {
	r := p.replayed[c]
	if r.upTo.Less(id) {
		return false
	}
	return room == "" || containsString(r.rooms, room)
}

// forgetReplayed forgets gone's replay, or, with gone nil, every replay
// older than id: a live message newer than all of them has reached the
// partition, so no older one is still on its way.
func (p *partition) forgetReplayed(id store.StreamID, gone *conn) {
	if gone != nil {
		if gone.dedup {
			delete(p.replayed, gone)
			gone.dedup = false
		}
		return
	}
	if !p.replayHorizon.Less(id) {
		return
	}
	for c := range p.replayed {
		c.dedup = false
	}
	clear(p.replayed)
}
