package engine

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// docs/RELIABILITY.md case 17: request headers over 16 KiB get 431. net/http lets
// MaxHeaderBytes + 4096 through, so 17 KiB of headers used to be upgraded.
func TestHeadersOver16KiBAre431(t *testing.T) {
	n := startNode(t)
	for _, size := range []int{17 << 10, 19 << 10} {
		conn, err := net.Dial("tcp", n.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		req := "GET /ws?token=" + userToken(t, "u") + " HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", size) +
			"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
		if _, err := conn.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("%d bytes of headers: status %d, want 431", size, resp.StatusCode)
		}
	}
}

// Every socket's send buffer is limits.send_buffer_bytes (the kernel
// doubles what it is given), so a slow consumer holds little in the kernel.
func TestSendBufferIsBounded(t *testing.T) {
	n := startNode(t, func(c *Config) { c.Limits.SendBufferBytes = 64 << 10 })
	n.dial("u")
	waitFor(t, 2*time.Second, "connection", func() bool { return n.e.Stats().Connections == 1 })
	var fd int
	n.e.fds.mu.RLock()
	for i, c := range n.e.fds.conns {
		if c != nil {
			fd = i
		}
	}
	n.e.fds.mu.RUnlock()
	got, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF)
	if err != nil {
		t.Fatal(err)
	}
	if got != 2*(64<<10) {
		t.Fatalf("SO_SNDBUF = %d, want %d (64 KiB, doubled by Linux)", got, 2*(64<<10))
	}
}
