package cluster

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"github.com/sidecar/sidecar/engine"
	"github.com/sidecar/sidecar/engine/store"
)

// Store wraps this node's store: a webhook id is remembered in Redis, so
// that a retry to another node is a duplicate too, and in the node's store,
// which answers alone while Redis is unavailable (a retry to this node is
// still a duplicate then; to another node, it is delivered again).
func (n *Node) Store(local engine.Store) engine.Store { return dedupStore{n: n, Store: local} }

type dedupStore struct {
	n *Node
	engine.Store
}

func (s dedupStore) MarkSeen(id string, ttl time.Duration) (bool, error) {
	first, err := s.Store.MarkSeen(id, ttl)
	c, ok := s.n.usable()
	if !ok {
		return first, err
	}
	ctx, cancel := s.n.ctx()
	defer cancel()
	r, rerr := c.Do(ctx, c.B().Set().Key(s.n.key("seen", id)).Value("1").Nx().Px(ttl).Build()).ToString()
	switch {
	case rueidis.IsRedisNil(rerr):
		// Another node, or this one, had it. The node's own mark is undone:
		// it keeps only the ids it accepted, so that one forgotten again
		// (Unmark, after a failure) is new here too.
		if first && err == nil {
			s.Store.Unmark(id)
		}
		return false, nil
	case rerr != nil:
		s.n.failed(rerr)
		return first, err
	}
	// A duplicate for either is one: Redis may have forgotten (a restart)
	// what this node remembers.
	return first && err == nil && r == "OK", nil
}

func (s dedupStore) Unmark(id string) error {
	err := s.Store.Unmark(id)
	if c, ok := s.n.usable(); ok {
		ctx, cancel := s.n.ctx()
		defer cancel()
		if rerr := c.Do(ctx, c.B().Del().Key(s.n.key("seen", id)).Build()).Error(); rerr != nil {
			s.n.failed(rerr)
			if err == nil {
				err = rerr
			}
		}
	}
	return err
}

// PresenceStore wraps this node's presence store: statuses and last-seen
// times are the cluster's, in Redis, read over the node's own (which keeps
// them too, and answers alone while Redis is unavailable). Sessions stay the
// node's.
func (n *Node) PresenceStore(local engine.PresenceStore) engine.PresenceStore {
	return presenceStore{n: n, PresenceStore: local}
}

type presenceStore struct {
	n *Node
	engine.PresenceStore
}

func (s presenceStore) Users(users []string) (map[string]store.UserRecord, error) {
	out, err := s.PresenceStore.Users(users)
	c, ok := s.n.usable()
	if !ok || len(users) == 0 {
		return out, err
	}
	if out == nil {
		out = make(map[string]store.UserRecord, len(users))
	}
	ctx, cancel := s.n.ctx()
	defer cancel()
	cmds := make(rueidis.Commands, len(users))
	for i, u := range users {
		cmds[i] = c.B().Hmget().Key(s.n.key("us", u)).Field("s", "l").Build()
	}
	for i, r := range c.DoMulti(ctx, cmds...) {
		vals, rerr := r.ToArray()
		if rerr != nil || len(vals) != 2 {
			s.n.failed(rerr)
			return out, err // the node's own answer
		}
		rec := out[users[i]]
		if st, e := vals[0].ToString(); e == nil {
			rec.Status = st
		}
		if l, e := vals[1].ToString(); e == nil {
			if ms, e := strconv.ParseInt(l, 10, 64); e == nil {
				if t := time.UnixMilli(ms); t.After(rec.LastSeen) {
					rec.LastSeen = t
				}
			}
		}
		if rec != (store.UserRecord{}) {
			out[users[i]] = rec
		}
	}
	return out, nil
}

func (s presenceStore) SetStatus(user, status string) error {
	if err := s.PresenceStore.SetStatus(user, status); err != nil {
		return err
	}
	c, ok := s.n.usable()
	if ok {
		ctx, cancel := s.n.ctx()
		defer cancel()
		err := c.Do(ctx, c.B().Hset().Key(s.n.key("us", user)).FieldValue().FieldValue("s", status).Build()).Error()
		if err == nil {
			return nil
		}
		s.n.failed(err)
	}
	// Told Redis when it is back (reestablish); the node's own store
	// answers meanwhile.
	s.n.stMu.Lock()
	if s.n.statuses == nil {
		s.n.statuses = make(map[string]string)
	}
	if len(s.n.statuses) < maxPendingStatuses {
		s.n.statuses[user] = status
	}
	s.n.stMu.Unlock()
	s.n.resync.Store(true)
	return nil
}

// maxPendingStatuses bounds the statuses kept for a Redis that is away.
const maxPendingStatuses = 100_000

// flushStatuses tells Redis the statuses set while it was away.
func (n *Node) flushStatuses(c rueidis.Client) {
	n.stMu.Lock()
	st := n.statuses
	n.statuses = nil
	n.stMu.Unlock()
	if len(st) == 0 {
		return
	}
	cmds := make(rueidis.Commands, 0, len(st))
	for u, s := range st {
		cmds = append(cmds, c.B().Hset().Key(n.key("us", u)).FieldValue().FieldValue("s", s).Build())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*n.opt.Timeout)
	defer cancel()
	for _, r := range c.DoMulti(ctx, cmds...) {
		if err := r.Error(); err != nil {
			n.failed(err)
			return // the node's store still has them
		}
	}
}
