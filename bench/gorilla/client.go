package main

import (
	"time"

	"github.com/gorilla/websocket"
)

// The chat example's timings, except the read limit, which is the sidecar's
// default limits.max_message_bytes.
const (
	writeWait      = 10 * time.Second    // time allowed to write a message to the peer
	pongWait       = 60 * time.Second    // time allowed to read the next pong
	pingPeriod     = (pongWait * 9) / 10 // must be less than pongWait
	maxMessageSize = 65536
	sendSlots      = 256 // buffered messages per connection
)

// client is one WebSocket connection: a read goroutine and a write goroutine
// joined by the send channel, which only the hub closes.
type client struct {
	hub  *hub
	conn *websocket.Conn
	user string
	send chan []byte
}

// readPump reads and discards client messages (the baseline has no client
// events); its real jobs are pong handling and noticing the close. It ends
// when the connection fails, and unregisters the client.
func (c *client) readPump() {
	defer func() {
		c.hub.unregister <- c
		c.conn.Close()
	}()
	c.conn.SetReadLimit(maxMessageSize)
	c.conn.SetReadDeadline(time.Now().Add(pongWait))
	c.conn.SetPongHandler(func(string) error { c.conn.SetReadDeadline(time.Now().Add(pongWait)); return nil })
	for {
		if _, _, err := c.conn.ReadMessage(); err != nil {
			return
		}
	}
}

// writePump writes queued messages, one frame each, and pings every
// pingPeriod. It ends when the hub closes send or a write fails.
func (c *client) writePump() {
	ticker := time.NewTicker(pingPeriod)
	defer func() {
		ticker.Stop()
		c.conn.Close()
	}()
	for {
		select {
		case msg, ok := <-c.send:
			c.conn.SetWriteDeadline(time.Now().Add(writeWait))
			if !ok {
				c.conn.WriteMessage(websocket.CloseMessage, []byte{})
				return
			}
			if err := c.conn.WriteMessage(websocket.TextMessage, msg); err != nil {
				return
			}
		case <-ticker.C:
			c.conn.SetWriteDeadline(time.Now().Add(writeWait))
			if err := c.conn.WriteMessage(websocket.PingMessage, nil); err != nil {
				return
			}
		}
	}
}
