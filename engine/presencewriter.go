package engine

import (
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sidecar/sidecar/engine/auth"
	"github.com/sidecar/sidecar/engine/store"
)

// The presence writer: one goroutine that keeps the node's sessions in the
// store, in batches and in order, then runs the transitions through the
// rules one at a time (see presence.go for who owns what).

// presenceChange is one user's transition, on its way to the store and
// the rules; or, with fn, work that must be ordered with the transitions
// (a watch's answer, a status update), run by the writer in its place.
type presenceChange struct {
	user   string
	online bool
	quiet  bool // keep the session, tell no rule (a previous life's user came back)
	// decided: the cluster decided it (TellPresence): tell the rules, but it
	// is no session change of this node's.
	decided bool
	claims  *[]byte
	at      time.Time
	fn      func()
}

// presenceWriter keeps the sessions in the store and hands transitions to
// the rules, in the order the partitions made them. Partitions push
// without blocking; the queue holds at most a few changes per user.
// maxUnsaved bounds the session changes kept while the store refuses
// them.
const maxUnsaved = 100_000

type presenceWriter struct {
	e    *Engine
	mu   sync.Mutex
	q    []presenceChange // guarded by mu
	stop bool             // guarded by mu
	// deadline, set by close, is when what is still queued is kept in the
	// store but no longer run through the rules (unix nanos; 0: none).
	deadline atomic.Int64
	dropped  int // transitions not run for the deadline; written by run
	// unsaved are sessions changes the store refused (a full disk), kept,
	// in order, for the next batch: a user told online whose session was
	// not kept would be a ghost after a crash. Written by run; at most
	// maxUnsaved, the oldest dropped past it (logged).
	unsaved []store.SessionChange
	wake    chan struct{}
	done    chan struct{}
}

func (w *presenceWriter) init(e *Engine) {
	w.e = e
	w.wake = make(chan struct{}, 1)
	w.done = make(chan struct{})
}

// push queues ch. It reports false once the writer is closing, when ch
// will never run.
func (w *presenceWriter) push(ch presenceChange) bool {
	w.mu.Lock()
	if w.stop {
		w.mu.Unlock()
		return false
	}
	w.q = append(w.q, ch)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return true
}

// do runs fn on the writer, in order with the transitions queued before
// it, and waits for it. It reports false if the writer is closing.
func (w *presenceWriter) do(fn func()) bool {
	done := make(chan struct{})
	if !w.push(presenceChange{fn: func() { defer close(done); fn() }}) {
		return false
	}
	<-done
	return true
}

// presenceBatchWindow is the shortest time between two batches of the
// presence writer: a store commit per window, not per change.
const presenceBatchWindow = 2 * time.Millisecond

// run handles batches until close, after which it handles what is left and
// returns.
func (w *presenceWriter) run() {
	defer close(w.done)
	var batch []presenceChange
	var last time.Time
	for {
		<-w.wake
		// Under churn, gather a window's changes into one store write:
		// each commit is a write to the file. A change after a quiet spell
		// goes at once.
		if d := presenceBatchWindow - time.Since(last); d > 0 {
			time.Sleep(d)
		}
		last = time.Now()
		w.mu.Lock()
		batch, w.q = w.q, batch[:0]
		stop := w.stop
		w.mu.Unlock()
		if len(batch) > 0 {
			w.write(batch)
			clear(batch)
		}
		if cap(batch) > 256 {
			batch = nil // a connect storm's batch is not kept for the idle hours after
		}
		if stop {
			return
		}
	}
}

// close makes run handle what is queued and return, and waits for it:
// the rules run for what is queued until deadline, after which the sessions
// are still kept (the next start ends them) and the count is logged.
func (w *presenceWriter) close(deadline time.Time) {
	w.deadline.Store(deadline.UnixNano())
	defer func() {
		if w.dropped > 0 {
			w.e.log.Error("presence changes not run through the rules before the drain deadline", "changes", w.dropped)
		}
	}()
	w.mu.Lock()
	w.stop = true
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	<-w.done
}

// write keeps batch's sessions, then runs its transitions through the
// rules, in order. A store that fails (a full disk) loses the sessions, not the
// transitions: presence stays right in memory, /readyz reports the store.
func (w *presenceWriter) write(batch []presenceChange) {
	e := w.e
	changes := make([]store.SessionChange, 0, len(batch))
	for _, ch := range batch {
		if ch.fn != nil || ch.decided {
			continue
		}
		// No claims while the node runs: a session is a few bytes held in
		// memory by buntdb for each online user. The hand-off at shutdown
		// writes them; after a crash the offline event has the user id alone.
		changes = append(changes, store.SessionChange{User: ch.user, Online: ch.online, At: ch.at})
	}
	tell := w.tell(batch, changes)
	var told []string
	for i, ch := range batch {
		if tell[i] {
			told = append(told, ch.user)
		}
	}
	if len(w.unsaved) > 0 && len(changes) > 0 {
		changes = append(w.unsaved, changes...)
	}
	if len(changes) == 0 {
		// Only work to run in order.
	} else if err := e.pstore.ApplySessions(changes); err != nil {
		e.metrics.presenceStoreErrors.Inc()
		if n := len(changes) - maxUnsaved; n > 0 {
			changes = changes[n:] // the oldest go: their users' later changes are kept
		}
		w.unsaved = append(w.unsaved[:0:0], changes...)
		e.ruleLog.limited.log("presence:store", func(suppressed int) {
			e.log.Error("presence sessions not stored; kept for the next batch", "changes", len(changes), "err", err, "suppressed", suppressed)
		})
	} else {
		w.unsaved = nil
	}
	var recs map[string]store.UserRecord
	if len(told) > 0 {
		recs, _ = e.pstore.Users(told) // statuses, for the rules; none on error
	}
	now := time.Now()
	for i, ch := range batch {
		if ch.fn != nil {
			ch.fn()
			continue
		}
		if !tell[i] {
			continue
		}
		if d := w.deadline.Load(); d != 0 && time.Now().UnixNano() > d {
			w.dropped++
			continue
		}
		typ, state := eventOffline, "offline"
		data := map[string]any{"userId": ch.user, "online": ch.online, "status": nil}
		if s := recs[ch.user].Status; s != "" {
			data["status"] = s
		}
		if ch.online {
			typ, state = eventOnline, "online"
		} else {
			data["lastSeen"] = ch.at.UTC().Format(time.RFC3339Nano)
		}
		e.metrics.presence.WithLabelValues(state).Inc()
		ev := &Event{
			ID:     e.newEventID(),
			Type:   typ,
			Source: SourceLifecycle,
			Time:   now,
			Sender: &auth.Identity{UserID: ch.user},
			Data:   data,
		}
		if e.needsClaims(typ) {
			ev.Sender = identityOf(ch.user, ch.claims)
		}
		if _, err := e.process(e.runCtx, ev); err != nil {
			e.lifecycleFailed(ev, err)
		}
	}
}

// tell decides which of batch's transitions the rules hear: alone, all
// but the quiet ones; in a cluster, those that changed the user's presence
// in the cluster (changes are batch's session changes, in order), and those
// the cluster decided. A cluster that cannot answer leaves the node to
// decide alone, as if it were the only one: it tells the cluster again when
// it is back (engine/cluster).
func (w *presenceWriter) tell(batch []presenceChange, changes []store.SessionChange) []bool {
	tell := make([]bool, len(batch))
	var changed []bool
	if cp := w.e.cfg.ClusterPresence; cp != nil && len(changes) > 0 {
		var err error
		if changed, err = cp.Apply(changes); err != nil || len(changed) != len(changes) {
			changed = nil
			w.e.ruleLog.limited.log("presence:cluster", func(suppressed int) {
				w.e.log.Warn("cluster presence unavailable: this node decides its users' presence alone", "err", err, "suppressed", suppressed)
			})
		}
	}
	j := 0
	for i, ch := range batch {
		switch {
		case ch.fn != nil:
		case ch.decided:
			tell[i] = true
		default:
			tell[i] = !ch.quiet
			if changed != nil {
				tell[i] = changed[j]
			}
			j++
		}
	}
	return tell
}

// identityOf is user's identity from claims kept as JSON.
func identityOf(user string, claims *[]byte) *auth.Identity {
	var m map[string]any
	if claims != nil {
		json.Unmarshal(*claims, &m)
	}
	return &auth.Identity{UserID: user, Claims: m}
}
