package engine

import (
	"path"
	"sync"
	"time"

	"github.com/sidecar/sidecar/engine/store"
)

// Missed events. Every message carries a stream id (Engine.newEventID:
// "<unix ms>-<seq>", increasing on a node). A message kept for replay is
// stored once per target, before any partition delivers it: in the stream
// of each user it names ("u:<id>"), of each room ("r:<name>"), or in the
// stream of everyone ("a") for a broadcast, so a broadcast costs one
// record, not one per recipient.
//
// A connection opened with ?since=<id> is replayed by its partition as it
// is indexed, on the partition's goroutine: the events of its user's
// stream, of the rooms it joins at open and of "a", merged in id order,
// after since, then {"event":"resumed","data":{"recovered":...}}, all
// queued before any live event can be, since live events for it are
// delivered by that same goroutine later. A message stored but not yet
// delivered by the partition when it reads the streams would arrive twice;
// the conn remembers the ids it was replayed for a while and skips them
// (replayDedup).

// StreamStore keeps the streams (engine/store implements it).
type StreamStore interface {
	Append(streams []string, ev store.StreamEvent) error
	Since(streams []string, since, user string, limit int) (events []store.StreamEvent, complete bool, err error)
}

// ReplayOptions say which events are kept for replay.
type ReplayOptions struct {
	// Events are the event names kept (path.Match globs); empty: all.
	Events []string
	// Exclude are names never kept, whatever Events says.
	Exclude []string
}

// replayDedup is how long a replayed conn skips live events it was
// replayed, and how recent an id must be to be remembered for it: a
// message is stored just before it is handed to the partitions.
const replayDedup = 10 * time.Second

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

// streamsOf names the streams m is stored in.
func streamsOf(to *Target) []string {
	if to.All {
		return []string{"a"}
	}
	s := make([]string, 0, len(to.Users)+len(to.Rooms))
	for _, u := range to.Users {
		s = append(s, "u:"+u)
	}
	for _, r := range to.Rooms {
		s = append(s, "r:"+r)
	}
	return s
}

// keep stores m for replay if its name is kept. A store that fails (a
// full disk) does not stop the delivery: it is counted and logged, and the
// node reports the store in /readyz.
func (e *Engine) keep(m *Message) {
	if e.streams == nil || m.To.Empty() || !e.keeper.keeps(m.Event) {
		return
	}
	err := e.streams.Append(streamsOf(&m.To), store.StreamEvent{ID: m.ID, Event: m.Event, Data: m.Data, Except: m.To.Except})
	if err != nil {
		// A replay from before this event is not complete, whoever asks:
		// which streams missed it is not worth tracking for a full disk.
		if id, ok := store.ParseStreamID(m.ID); ok {
			e.replayLost.Store(&id)
		}
		e.metrics.replayStoreErrors.Inc()
		e.ruleLog.limited.log("replay:store", func(suppressed int) {
			e.log.Error("event not kept for replay; delivered all the same", "event", m.Event, "err", err, "suppressed", suppressed)
		})
	}
}

// replay queues for c, being indexed, what it missed after since, then the
// resumed frame. What does not fit in half the conn's queue is left out,
// and recovered is false: a replay must not make its client a slow
// consumer.
func (p *partition) replay(c *conn, since string, now time.Time) {
	e := p.e
	cd := e.hub.codecs[c.proto]
	recovered := false
	if e.streams != nil {
		names := make([]string, 0, 2+len(c.rooms))
		names = append(names, "u:"+c.user, "a")
		for _, r := range c.rooms {
			names = append(names, "r:"+r)
		}
		evs, complete, err := e.streams.Since(names, since, c.user, 0)
		if err != nil {
			e.log.Warn("replay not read", "user", c.user, "err", err)
		}
		recovered = complete && err == nil
		if lost := e.replayLost.Load(); lost != nil {
			if s, ok := store.ParseStreamID(since); !ok || s.Less(*lost) {
				recovered = false // an event after since was not kept
			}
		}
		budget := e.limits.OutboundQueueBytes / 2
		recent := uint64(now.Add(-replayDedup).UnixMilli())
		for _, ev := range evs {
			f := cd.encodeEvent(ev.Event, ev.Data, ev.ID)
			if budget -= len(f); budget < 0 {
				recovered = false
				break
			}
			if !p.enqueue(c, f) {
				return // closed
			}
			e.metrics.replayed.Inc()
			if id, ok := store.ParseStreamID(ev.ID); ok && id.Ms >= recent {
				p.rememberReplayed(c, ev.ID, now)
			}
		}
	}
	frame := frameResumedFalse
	if recovered {
		frame = frameResumedTrue
	}
	p.enqueue(c, cd.encodeEvent("resumed", frame, ""))
}

var (
	frameResumedTrue  = []byte(`{"recovered":true}`)
	frameResumedFalse = []byte(`{"recovered":false}`)
)

// replayedIDs are the recent ids a conn was replayed, skipped when they
// come live; forgotten at until.
type replayedIDs struct {
	ids   map[string]struct{}
	until int64 // unix nanos
}

func (p *partition) rememberReplayed(c *conn, id string, now time.Time) {
	if p.replayed == nil {
		p.replayed = make(map[*conn]*replayedIDs)
	}
	r := p.replayed[c]
	if r == nil {
		r = &replayedIDs{ids: make(map[string]struct{}), until: now.Add(replayDedup).UnixNano()}
		p.replayed[c] = r
		c.dedup = true
	}
	r.ids[id] = struct{}{}
}

// wasReplayed reports whether c was replayed id; c.dedup is set.
func (p *partition) wasReplayed(c *conn, id string) bool {
	_, ok := p.replayed[c].ids[id]
	return ok
}

// forgetReplayed drops the replayed ids whose time is up, or c's.
func (p *partition) forgetReplayed(nano int64, gone *conn) {
	if gone != nil {
		if gone.dedup {
			delete(p.replayed, gone)
			gone.dedup = false
		}
		return
	}
	for c, r := range p.replayed {
		if nano > r.until {
			delete(p.replayed, c)
			c.dedup = false
		}
	}
}
