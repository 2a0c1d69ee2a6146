package main

import (
	"context"
	"sync/atomic"
)

// hub is gorilla's chat hub with a user index added for send/{userId}. Only the
// run goroutine touches the maps; everyone else talks to it over channels.
type hub struct {
	clients map[*client]struct{}            // owned by run
	users   map[string]map[*client]struct{} // owned by run

	register   chan *client
	unregister chan *client
	publish    chan publication

	conns atomic.Int64 // len(clients), for stats
	nuser atomic.Int64 // len(users), for stats
}

// publication is one encoded message for everybody (user == "") or for one
// user's connections. run answers on done with the number of send channels
// the message was queued on.
type publication struct {
	user string
	msg  []byte
	done chan int
}

func newHub() *hub {
	return &hub{
		clients:    make(map[*client]struct{}),
		users:      make(map[string]map[*client]struct{}),
		register:   make(chan *client),
		unregister: make(chan *client),
		publish:    make(chan publication),
	}
}

func (h *hub) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case c := <-h.register:
			h.clients[c] = struct{}{}
			set := h.users[c.user]
			if set == nil {
				set = make(map[*client]struct{})
				h.users[c.user] = set
			}
			set[c] = struct{}{}
			h.count()
		case c := <-h.unregister:
			h.remove(c)
		case p := <-h.publish:
			targets := h.clients
			if p.user != "" {
				targets = h.users[p.user]
			}
			n := 0
			for c := range targets {
				select {
				case c.send <- p.msg:
					n++
				default:
					// Send channel full: the client is too slow. Drop it, as the
					// chat example does; its write goroutine sends a close frame.
					h.remove(c)
				}
			}
			p.done <- n
		}
	}
}

// remove forgets c and closes its send channel; it is safe to call twice.
func (h *hub) remove(c *client) {
	if _, ok := h.clients[c]; !ok {
		return
	}
	delete(h.clients, c)
	if set := h.users[c.user]; set != nil {
		delete(set, c)
		if len(set) == 0 {
			delete(h.users, c.user)
		}
	}
	close(c.send)
	h.count()
}

func (h *hub) count() {
	h.conns.Store(int64(len(h.clients)))
	h.nuser.Store(int64(len(h.users)))
}
