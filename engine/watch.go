package engine

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/sidecar/sidecar/rules"
)

// The client events built on presence: watch and unwatch (whose presence a
// connection hears), and updateStatus (the user's own status).
//
// Watching user u is being in the room "presence:u", which the shipped
// rules send userOnline, userOffline and statusUpdated to; watch answers at
// once with a "presence" event holding each watched user's state, then the
// ack.

// watchRoom is the room of user's watchers.
func watchRoom(user string) string { return "presence:" + user }

const watchPrefix = "presence:"

// Ack error codes of the presence events.
const (
	ackLimit        = "limit"
	ackUnknownEvent = "unknown_event"
)

// watch makes c watch users (or stop, with unwatch) and sends their state.
func (e *Engine) watch(c *conn, data any, unwatch bool) (code, msg string) {
	users, err := watchList(data)
	if err != nil {
		return ackBadRequest, err.Error()
	}
	if !unwatch {
		if denied := watchDenied(c, users); denied != "" {
			return ackForbidden, fmt.Sprintf("this token may not watch user %q (its watch claim)", denied)
		}
	}
	rooms := make([]string, len(users))
	for i, u := range users {
		rooms[i] = watchRoom(u)
	}
	over := make(chan int, 1)
	max := e.cfg.Presence.MaxWatch
	if !e.hub.send(c.part, job{kind: jobCall, fn: func() {
		if c.idx < 0 {
			over <- 0
			return
		}
		if unwatch {
			c.part.leave(c, rooms)
			over <- 0
			return
		}
		n := 0
		for _, r := range c.rooms {
			if strings.HasPrefix(r, watchPrefix) {
				n++
			}
		}
		for _, r := range rooms {
			if !containsString(c.rooms, r) {
				n++
			}
		}
		if n > max {
			over <- n
			return
		}
		c.part.join(c, rooms)
		over <- 0
	}}) {
		return ackInternal, "the server is shutting down"
	}
	if n := <-over; n > 0 {
		return ackLimit, fmt.Sprintf("a connection may watch at most %d users (this would make %d)", max, n)
	}
	if unwatch {
		return "", ""
	}
	// The answer is read and queued on the presence writer, in order with
	// the transitions: a change that happened before it was read reached
	// the watcher's room first; one after it comes after it.
	ran := e.presence.do(func() {
		var states map[string]*UserPresence
		if states, err = e.Presence(users); err != nil {
			return
		}
		payload, _ := json.Marshal(map[string]any{"users": states})
		frame := e.hub.codecs[c.proto].encodeEvent("presence", payload, "")
		queued := make(chan struct{})
		if !e.hub.send(c.part, job{kind: jobCall, fn: func() {
			if c.idx >= 0 {
				c.part.enqueue(c, frame)
			}
			close(queued)
		}}) {
			err = ErrStopped
			return
		}
		<-queued
	})
	if !ran || err != nil {
		return ackInternal, "presence could not be read"
	}
	return "", ""
}

// watchList reads {"users": [ids]} (or a bare list of ids) into distinct ids.
func watchList(data any) ([]string, error) {
	list, ok := data.([]any)
	if obj, isObj := data.(map[string]any); isObj {
		list, ok = obj["users"].([]any)
	}
	if !ok || len(list) == 0 {
		return nil, fmt.Errorf(`watch and unwatch need {"users": ["<user id>", ...]}`)
	}
	users := make([]string, 0, len(list))
	for _, v := range list {
		id, err := rules.ID(v)
		if err != nil || id == "" {
			return nil, fmt.Errorf("users: %v is not a user id", v)
		}
		if !slices.Contains(users, id) {
			users = append(users, id)
		}
	}
	return users, nil
}

// watchDenied returns the first of users that c's token does not allow it
// to watch, or "". A token without a watch claim may watch anyone; with
// one (a list of ids, or "*"), only those.
func watchDenied(c *conn, users []string) string {
	claim, ok := c.identity().Claims["watch"]
	if !ok {
		return ""
	}
	allowed := map[string]bool{}
	switch v := claim.(type) {
	case string:
		if v == "*" {
			return ""
		}
		allowed[v] = true
	case []any:
		for _, x := range v {
			if id, err := rules.ID(x); err == nil {
				allowed[id] = true
			}
		}
	}
	for _, u := range users {
		if !allowed[u] {
			return u
		}
	}
	return ""
}

// updateStatus keeps the user's status and hands it to the rules as
// client.updateStatus with data {"status": s}.
func (e *Engine) updateStatus(c *conn, data any) (code, msg string) {
	s, ok := data.(string)
	if obj, isObj := data.(map[string]any); isObj {
		s, ok = obj["status"].(string)
	}
	opt := &e.cfg.Presence
	switch {
	case !ok:
		return ackBadRequest, `updateStatus needs {"status": "<text>"}`
	case s == "":
		return ackBadRequest, "status must not be empty"
	case len(opt.Statuses) > 0 && !slices.Contains(opt.Statuses, s):
		return ackBadRequest, fmt.Sprintf("status must be one of %s", strings.Join(opt.Statuses, ", "))
	case len(s) > opt.MaxStatusBytes:
		return ackBadRequest, fmt.Sprintf("status is %d bytes, longer than %d", len(s), opt.MaxStatusBytes)
	case !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool { return r < ' ' }):
		return ackBadRequest, "status must be printable text"
	}
	// On the presence writer, so that a watch's answer and a status
	// update reach a watcher in the order they were made.
	if !e.presence.do(func() {
		if err := e.pstore.SetStatus(c.user, s); err != nil {
			e.log.Warn("status not stored", "user", c.user, "err", err)
			code, msg = ackInternal, "the status could not be saved; retry later"
			return
		}
		code, msg = e.runClientEvent(c, "updateStatus", map[string]any{"status": s})
	}) {
		return ackInternal, "the server is shutting down"
	}
	return code, msg
}

// servePresenceUser answers GET /api/presence/{userId}.
func (e *Engine) servePresenceUser(w http.ResponseWriter, r *http.Request) {
	u := r.PathValue("userId")
	states, err := e.Presence([]string{u})
	if err != nil {
		presenceError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, states[u])
}

// servePresence answers GET /api/presence?users=a,b.
func (e *Engine) servePresence(w http.ResponseWriter, r *http.Request) {
	var users []string
	for _, v := range r.URL.Query()["users"] {
		for _, u := range strings.Split(v, ",") {
			if u = strings.TrimSpace(u); u != "" && !slices.Contains(users, u) {
				users = append(users, u)
			}
		}
	}
	switch max := e.cfg.Presence.MaxQueryUsers; {
	case len(users) == 0:
		httpError(w, http.StatusBadRequest, "bad_request", "users is required: /api/presence?users=a,b")
		return
	case len(users) > max:
		httpError(w, http.StatusBadRequest, "too_many_users",
			fmt.Sprintf("%d users asked for; at most %d per request (presence.max_query_users)", len(users), max))
		return
	}
	states, err := e.Presence(users)
	if err != nil {
		presenceError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"users": states})
}

func presenceError(w http.ResponseWriter, err error) {
	if err == ErrStopped {
		w.Header().Set("Retry-After", retryAfterSec)
		httpError(w, http.StatusServiceUnavailable, "shutting_down", "the server is shutting down")
		return
	}
	httpError(w, http.StatusServiceUnavailable, "store_unavailable", "presence could not be read: "+err.Error())
}
