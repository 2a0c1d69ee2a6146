package engine

import (
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sidecar/sidecar/engine/auth"
	"github.com/sidecar/sidecar/engine/store"
)

// Presence is per user, not per connection: a user is online from their
// first connection on this node until a grace delay after the last one
// closes, so that a reload, a second tab closing or a network blip tells
// nobody anything.
//
// Who owns what:
//   - the partition that owns a user (hub.partFor) owns their presence: it
//     sees the first connection arrive (add) and the last one leave
//     (unindex), and keeps the users in their grace delay with one timer
//     for the whole partition (every delay is the same, so the queue is in
//     deadline order). No lock is added to the delivery path.
//   - a transition goes to the presence writer (presenceWriter, one
//     goroutine), which keeps the node's sessions in the store, in batches
//     and in order, then runs presence.online and presence.offline through
//     the rules (sender: that user's claims), itself, one at a time: a
//     user's offline and their next online are never run out of order, as
//     they could be by two workers of the rule pool. Who hears userOnline
//     is a rule.
//
// The node's sessions (one per online user) are in the store, so that a
// node that died (kill -9, OOM, power loss) ends them on its next start:
// each such user is put in the grace delay as if their last connection had
// just closed, and goes offline through the rules unless they reconnect
// first. A graceful shutdown hands its users over the same way: their
// last-seen is written and their sessions marked ended, and the next start
// ends them (see handOffPresence).
const (
	eventOnline  = "presence.online"
	eventOffline = "presence.offline"
)

// PresenceStore is where presence persists: statuses and last-seen times,
// and this node's sessions. engine/store implements it.
type PresenceStore interface {
	Users(users []string) (map[string]store.UserRecord, error)
	SetStatus(user, status string) error
	ApplySessions(changes []store.SessionChange) error
	Sessions() ([]store.Session, error)
	EndSessions(ends []store.SessionEnd) error
}

// PresenceOptions configure presence and the client events built on it.
type PresenceOptions struct {
	// Grace is how long a user stays online after their last connection
	// closes. 0: offline at once.
	Grace time.Duration
	// MaxWatch is how many users one connection may watch; default 1000.
	MaxWatch int
	// Statuses, when set, are the only statuses updateStatus accepts;
	// empty: free text up to MaxStatusBytes.
	Statuses []string
	// MaxStatusBytes caps a status; default 64.
	MaxStatusBytes int
	// MaxQueryUsers caps the users of one GET /api/presence?users=; default 100.
	MaxQueryUsers int
}

func (o *PresenceOptions) setDefaults() {
	if o.MaxWatch <= 0 {
		o.MaxWatch = 1000
	}
	if o.MaxStatusBytes <= 0 {
		o.MaxStatusBytes = 64
	}
	if o.MaxQueryUsers <= 0 {
		o.MaxQueryUsers = 100
	}
}

// UserPresence is one user's presence as the API and watchers see it.
type UserPresence struct {
	UserID string `json:"userId"`
	// Online is true from the first connection until the offline event:
	// during the grace delay too.
	Online   bool    `json:"online"`
	Status   *string `json:"status"`   // null: never set
	LastSeen *string `json:"lastSeen"` // RFC 3339 UTC; when the user last went offline; null: never
	// Connections is the user's open connections on this node (in a
	// cluster, Online is the cluster's answer; Connections stays this node's).
	Connections int `json:"connections"`
}

// graceEntry is a user whose last connection closed: offline at deadline
// unless a connection opens first.
type graceEntry struct {
	user     string
	claims   *[]byte   // the last connection's claims, for the offline event
	left     time.Time // when the user was last seen: the last close, or the previous life's end
	deadline time.Time // with the monotonic clock: a clock step moves no deadline
	done     bool      // a connection came back, or the offline event went
	prev     bool      // a session of the node's previous life
}

// partPresence is a partition's presence state; only its goroutine
// touches it.
type partPresence struct {
	pending map[string]*graceEntry
	queue   []*graceEntry // deadline order
	head    int
	timer   *time.Timer
	frozen  bool // shutting down: the users in grace are handed over, not sent offline
}

func (pp *partPresence) init() {
	pp.pending = make(map[string]*graceEntry)
	pp.timer = time.NewTimer(time.Hour)
	pp.timer.Stop()
}

// userOnline runs when user's first connection here is indexed.
func (p *partition) userOnline(c *conn, now time.Time) {
	if r := p.e.userRouter; r != nil {
		r.Here(c.user, true)
	}
	pp := &p.pres
	if g := pp.pending[c.user]; g != nil {
		// Back within the grace delay: nobody was told offline, so nobody
		// is told online. A session of the previous life is live again.
		g.done = true
		delete(pp.pending, c.user)
		if g.prev {
			p.e.presence.push(presenceChange{user: c.user, online: true, quiet: true, claims: c.claims.Load(), at: now})
		}
		return
	}
	p.e.presence.push(presenceChange{user: c.user, online: true, claims: c.claims.Load(), at: now})
}

// userLeft runs when user's last connection here leaves the index.
func (p *partition) userLeft(user string, claims *[]byte, now time.Time) {
	if r := p.e.userRouter; r != nil {
		r.Here(user, false)
	}
	p.startGrace(&graceEntry{user: user, claims: claims, left: now}, now)
}

// startGrace puts g in the grace delay, from now.
func (p *partition) startGrace(g *graceEntry, now time.Time) {
	pp := &p.pres
	if old := pp.pending[g.user]; old != nil {
		old.done = true
	}
	g.deadline = now.Add(p.e.cfg.Presence.Grace)
	if n := len(pp.queue); n > pp.head && pp.queue[n-1].deadline.After(g.deadline) {
		g.deadline = pp.queue[n-1].deadline // keep the queue in order
	}
	pp.pending[g.user] = g
	pp.queue = append(pp.queue, g)
	if len(pp.queue)-pp.head == 1 {
		p.graceDue(now)
	}
}

// graceDue sends offline every user whose grace delay is over, and sets
// the timer for the next one.
func (p *partition) graceDue(now time.Time) {
	pp := &p.pres
	if pp.frozen {
		return
	}
	for pp.head < len(pp.queue) {
		g := pp.queue[pp.head]
		if !g.done && g.deadline.After(now) {
			pp.timer.Reset(g.deadline.Sub(now))
			break
		}
		pp.queue[pp.head] = nil
		pp.head++
		if g.done {
			continue
		}
		g.done = true
		delete(pp.pending, g.user)
		p.e.presence.push(presenceChange{user: g.user, claims: g.claims, at: g.left})
	}
	if pp.head == len(pp.queue) {
		pp.queue, pp.head = pp.queue[:0], 0
		if cap(pp.queue) > 1024 {
			pp.queue = nil // a burst of disconnects is not kept
		}
	} else if pp.head > 1024 && pp.head > len(pp.queue)/2 {
		pp.queue = append(pp.queue[:0], pp.queue[pp.head:]...)
		pp.head = 0
	}
}

// presenceOf fills in what this partition knows of users: online and
// connections. Run on the partition.
func (p *partition) presenceOf(out map[string]*UserPresence, users []string) {
	for _, u := range users {
		st := out[u]
		st.Connections = len(p.users[u])
		st.Online = st.Connections > 0 || p.pres.pending[u] != nil
	}
}

// Presence returns the presence of users on this node.
func (e *Engine) Presence(users []string) (map[string]*UserPresence, error) {
	out := make(map[string]*UserPresence, len(users))
	byPart := make(map[*partition][]string)
	for _, u := range users {
		if out[u] != nil {
			continue
		}
		out[u] = &UserPresence{UserID: u}
		p := e.hub.partFor(u)
		byPart[p] = append(byPart[p], u)
	}
	done := make(chan struct{}, len(byPart))
	for p, us := range byPart {
		if !e.hub.send(p, job{kind: jobCall, fn: func() { p.presenceOf(out, us); done <- struct{}{} }}) {
			return nil, ErrStopped
		}
	}
	for range byPart {
		select {
		case <-done:
		case <-e.hub.stopped:
			return nil, ErrStopped
		}
	}
	if cp := e.cfg.ClusterPresence; cp != nil {
		var elsewhere []string
		for u, st := range out {
			if !st.Online {
				elsewhere = append(elsewhere, u)
			}
		}
		if len(elsewhere) > 0 {
			online, err := cp.Online(elsewhere)
			if err != nil {
				return nil, err
			}
			for u := range online {
				out[u].Online = online[u]
			}
		}
	}
	recs, err := e.pstore.Users(users)
	if err != nil {
		return nil, err
	}
	for u, r := range recs {
		st := out[u]
		if st == nil {
			continue
		}
		if r.Status != "" {
			s := r.Status
			st.Status = &s
		}
		if !r.LastSeen.IsZero() {
			t := r.LastSeen.UTC().Format(time.RFC3339Nano)
			st.LastSeen = &t
		}
	}
	return out, nil
}

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

// restoreSessions ends the sessions the node's previous life left in the
// store: each user enters the grace delay now, and goes offline through the
// rules unless a connection of theirs opens first. Run once, before the
// listener serves.
func (e *Engine) restoreSessions(now time.Time) {
	sessions, err := e.pstore.Sessions()
	if err != nil {
		e.log.Error("previous sessions not read: their users are not sent offline", "err", err)
		return
	}
	if len(sessions) == 0 {
		return
	}
	crashed := 0
	for _, s := range sessions {
		g := &graceEntry{user: s.User, left: s.Ended, prev: true}
		if g.left.IsZero() {
			g.left = now // the node died with them online: last seen now
			crashed++
		}
		if len(s.Claims) > 0 {
			claims := s.Claims
			g.claims = &claims
		}
		p := e.hub.partFor(s.User)
		e.hub.send(p, job{kind: jobCall, fn: func() { p.startGrace(g, now) }})
	}
	e.log.Info("ending the sessions of the previous run after the grace delay",
		"sessions", len(sessions), "left_by_a_crash", crashed, "grace", e.cfg.Presence.Grace)
}

// handOffPresence runs at shutdown, once every connection is closed: the
// users still in their grace delay (all of this node's online users) are
// not sent offline now. Their last-seen is written and their sessions
// marked ended, and the next start ends them through the rules unless
// they reconnect within its grace delay: a restart does not flap every user
// offline and online. The transitions made before are stored and run first.
func (e *Engine) handOffPresence(deadline time.Time) {
	var mu sync.Mutex
	var ends []store.SessionEnd
	done := make(chan struct{}, len(e.hub.parts))
	for _, p := range e.hub.parts {
		p.jobs <- job{kind: jobCall, fn: func() {
			p.pres.frozen = true // already, since jobDrain
			mu.Lock()
			for u, g := range p.pres.pending {
				// Last seen when the last connection closed; a user of the
				// previous life not seen since keeps the time it had.
				end := store.SessionEnd{User: u, At: g.left}
				if g.claims != nil {
					end.Claims = *g.claims
				}
				ends = append(ends, end)
			}
			mu.Unlock()
			done <- struct{}{}
		}}
	}
	for range e.hub.parts {
		<-done
	}
	e.presence.close(deadline)
	if u := e.presence.unsaved; len(u) > 0 { // the writer has stopped: its last refused changes, once more
		if err := e.pstore.ApplySessions(u); err != nil {
			e.log.Error("presence sessions not stored at shutdown", "changes", len(u), "err", err)
		}
	}
	if len(ends) == 0 {
		return
	}
	users := len(ends)
	if err := e.pstore.EndSessions(ends); err != nil {
		e.log.Error("sessions not marked ended: the next start ends them with a later last-seen", "users", users, "err", err)
		return
	}
	e.log.Info("sessions handed over to the next start", "users", users)
}

// noPresenceStore keeps nothing: presence works in memory alone.
type noPresenceStore struct{}

func (noPresenceStore) Users([]string) (map[string]store.UserRecord, error) { return nil, nil }
func (noPresenceStore) SetStatus(string, string) error                      { return nil }
func (noPresenceStore) ApplySessions([]store.SessionChange) error           { return nil }
func (noPresenceStore) Sessions() ([]store.Session, error)                  { return nil, nil }
func (noPresenceStore) EndSessions([]store.SessionEnd) error                { return nil }
