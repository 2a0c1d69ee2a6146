package engine

import (
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"
)

// No sticky sessions for Socket.IO: a long-polling session lives on the
// node that opened it, and a request for it (a GET, a POST, the WebSocket
// upgrade) that a load balancer sends to another node is relayed there,
// through the owner's address, which its session id names (a
// SessionRelay, engine/cluster). The relayed request carries relayHeader,
// and a node never relays a request that has it: at most one hop.
const relayHeader = "X-Sidecar-Relayed-By"

// A SessionRelay names the owner of a polling session.
type SessionRelay interface {
	// NewSID returns a new session id that names this node.
	NewSID() string
	// Owner returns the base URL ("http://host:port") of the node that
	// owns sid, or local when it is this node or none can be found (the
	// request is then served here: an unknown sid is answered as such).
	Owner(sid string) (base string, local bool)
}

// relayTransport is the client of relayed requests: a long-polling GET
// is held by the owner up to a ping interval, so no response timeout
// shorter than that; the dial is short.
var relayTransport = &http.Transport{
	DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
	MaxIdleConnsPerHost: 64,
	IdleConnTimeout:     90 * time.Second,
}

// relayed serves r by relaying it to the owner of its sid, if that is
// another node. It reports whether it did.
func (e *Engine) relayed(w http.ResponseWriter, r *http.Request, sid string) bool {
	if e.cfg.Relay == nil || sid == "" || r.Header.Get(relayHeader) != "" {
		return false
	}
	base, local := e.cfg.Relay.Owner(sid)
	if local {
		return false
	}
	target, err := url.Parse(base)
	if err != nil {
		return false
	}
	e.metrics.relayed.Inc()
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host // the owner checks the Origin against it, as here
			pr.Out.Header.Set(relayHeader, "1")
			pr.SetXForwarded()
		},
		Transport:     relayTransport,
		FlushInterval: -1, // a polling answer goes as soon as it is written
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			e.metrics.relayErrors.Inc()
			e.ruleLog.limited.log("relay", func(suppressed int) {
				e.log.Warn("a Socket.IO request could not be relayed to the node that owns its session", "owner", base, "err", err, "suppressed", suppressed)
			})
			eioError(w, eioUnknownSID) // the client opens a new session, on whichever node
		},
	}
	proxy.ServeHTTP(w, r)
	return true
}

// newPollSID is the id of a new polling session: one that names this node
// in a cluster.
func (e *Engine) newPollSID() string {
	if e.cfg.Relay != nil {
		return e.cfg.Relay.NewSID()
	}
	return newSID()
}
