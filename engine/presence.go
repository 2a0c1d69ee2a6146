package engine

import (
	"sync"
	"time"

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
