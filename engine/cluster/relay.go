package cluster

import (
	"crypto/rand"
	"encoding/base64"
	"strings"
	"sync"
	"time"

	"github.com/sidecar/sidecar/engine"
)

// Polling sessions without sticky sessions (engine/relay.go): a session id
// starts with this node's token, a short random word made at start, and
// <prefix>:tok:<token> holds the node's advertised address for as long as
// its heartbeat lives. Another node that receives a request for the session
// reads the token, finds the address (cached for a few seconds) and relays
// the request there.
const tokenLen = 6 // base64url characters: 36 random bits

var _ engine.SessionRelay = (*Node)(nil)

// relay is the node's side of it.
type relay struct {
	token string
	mu    sync.Mutex
	cache map[string]owner // by token; guarded by mu
}

type owner struct {
	base    string // "" when no node has the token
	expires time.Time
}

// ownerTTL is how long an owner's address is cached.
const ownerTTL = 3 * time.Second

func newToken() string {
	var b [tokenLen * 6 / 8]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// NewSID returns a polling session id that names this node.
func (n *Node) NewSID() string {
	var b [15]byte
	rand.Read(b[:])
	return n.relay.token + base64.RawURLEncoding.EncodeToString(b[:])
}

// Owner returns the address of the node whose token starts sid.
func (n *Node) Owner(sid string) (string, bool) {
	if len(sid) <= tokenLen || n.opt.Advertise == "" {
		return "", true
	}
	tok := sid[:tokenLen]
	if tok == n.relay.token {
		return "", true
	}
	now := time.Now()
	r := &n.relay
	r.mu.Lock()
	o, ok := r.cache[tok]
	r.mu.Unlock()
	if ok && now.Before(o.expires) {
		return o.base, o.base == ""
	}
	c, up := n.usable()
	if !up {
		return "", true
	}
	ctx, cancel := n.ctx()
	defer cancel()
	base, err := c.Do(ctx, c.B().Get().Key(n.key("tok", tok)).Build()).ToString()
	if err != nil {
		base = "" // no such node (gone, or the sid is made up); served here as unknown
	}
	if !strings.HasPrefix(base, "http://") && !strings.HasPrefix(base, "https://") {
		base = ""
	}
	r.mu.Lock()
	if r.cache == nil || len(r.cache) > 1024 {
		r.cache = make(map[string]owner)
	}
	r.cache[tok] = owner{base: base, expires: now.Add(ownerTTL)}
	r.mu.Unlock()
	return base, base == ""
}
