package main

import (
	"crypto/subtle"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
)

const maxBodyBytes = 1 << 20

type server struct {
	hub      *hub
	upgrader websocket.Upgrader
	secret   []byte
	apiKeys  []string
	started  time.Time
	logger   *slog.Logger
	nextID   atomic.Uint64 // id of the last published message
}

func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws", s.serveWS)
	mux.HandleFunc("POST /api/socket-test/broadcast", s.apiAuth(s.broadcast))
	mux.HandleFunc("POST /api/socket-test/send/{userId}", s.apiAuth(s.sendUser))
	mux.HandleFunc("GET /api/socket-test/stats", s.apiAuth(s.stats))
	return mux
}

// serveWS authenticates the token before the upgrade (401 otherwise), then
// starts the connection's two goroutines, as the chat example does.
func (s *server) serveWS(w http.ResponseWriter, r *http.Request) {
	user, err := s.authenticate(r.URL.Query().Get("token"))
	if err != nil {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	conn, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade has answered the client
	}
	c := &client{hub: s.hub, conn: conn, user: user, send: make(chan []byte, sendSlots)}
	s.hub.register <- c
	// writePump stops when the hub closes c.send or a write fails; readPump
	// stops when the connection fails, and unregisters c.
	go c.writePump()
	go c.readPump()
}

func (s *server) authenticate(token string) (string, error) {
	tok, err := jwt.Parse(token, func(*jwt.Token) (any, error) { return s.secret, nil },
		jwt.WithValidMethods([]string{"HS256"}))
	if err != nil {
		return "", err
	}
	sub, err := tok.Claims.GetSubject()
	if err != nil || sub == "" {
		return "", jwt.ErrTokenInvalidClaims
	}
	return sub, nil
}

func (s *server) apiAuth(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		for _, k := range s.apiKeys {
			if subtle.ConstantTimeCompare([]byte(k), []byte(key)) == 1 {
				next(w, r)
				return
			}
		}
		http.Error(w, "forbidden", http.StatusForbidden)
	}
}

// notification is the frame every recipient gets; it is encoded once per
// publish and the same bytes are queued on every send channel.
type notification struct {
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
	ID    string          `json:"id"`
}

func (s *server) broadcast(w http.ResponseWriter, r *http.Request) { s.publish(w, r, "") }

func (s *server) sendUser(w http.ResponseWriter, r *http.Request) {
	s.publish(w, r, r.PathValue("userId"))
}

func (s *server) publish(w http.ResponseWriter, r *http.Request, user string) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
		return
	}
	if !json.Valid(body) {
		http.Error(w, "body is not JSON", http.StatusBadRequest)
		return
	}
	id := strconv.FormatUint(s.nextID.Add(1), 10)
	msg, err := json.Marshal(notification{Event: "newNotification", Data: body, ID: id})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	p := publication{user: user, msg: msg, done: make(chan int, 1)}
	select {
	case s.hub.publish <- p:
	case <-r.Context().Done():
		return
	}
	n := <-p.done
	writeJSON(w, http.StatusAccepted, map[string]any{"id": id, "delivered": n})
}

func (s *server) stats(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"connections":    s.hub.conns.Load(),
		"users":          s.hub.nuser.Load(),
		"uptime_seconds": int64(time.Since(s.started).Seconds()),
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
