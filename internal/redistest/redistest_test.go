package redistest_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sidecar/sidecar/internal/redistest"
)

// ping sends a raw PING over a fresh connection and waits timeout for +PONG.
func ping(addr string, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(c, "PING\r\n"); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING: %q", line)
	}
	return nil
}

func do(t *testing.T, s *redistest.Server, args ...string) string {
	t.Helper()
	out, err := s.Do(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestServerFaults(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	if !strings.HasPrefix(s.Addr(), "127.0.0.1:") || strings.HasSuffix(s.Addr(), ":6379") {
		t.Fatalf("Addr = %q", s.Addr())
	}
	if s.URL() != "redis://"+s.Addr() {
		t.Fatalf("URL = %q", s.URL())
	}
	if got := do(t, s, "SET", "k", "v"); got != "OK" {
		t.Fatalf("SET: %q", got)
	}
	if got := do(t, s, "GET", "k"); got != "v" {
		t.Fatalf("GET: %q", got)
	}
	if _, err := s.Do("NOSUCHCOMMAND"); err == nil {
		t.Fatal("an error reply is not an error")
	}

	s.Kill()
	if out, err := s.Do("PING"); err == nil {
		t.Fatalf("PING after Kill: %q, no error", out)
	}

	s.Restart()
	if got := do(t, s, "PING"); got != "PONG" {
		t.Fatalf("PING after Restart: %q", got)
	}
	if got := do(t, s, "GET", "k"); got != "" {
		t.Fatalf("GET after Restart: %q, want nothing (no persistence)", got)
	}

	s.Pause()
	start := time.Now()
	if err := ping(s.Addr(), 300*time.Millisecond); err == nil {
		t.Fatal("PING answered while paused")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("PING while paused took %v", d)
	}
	s.Resume()
	if err := ping(s.Addr(), 2*time.Second); err != nil {
		t.Fatalf("PING after Resume: %v", err)
	}
}

// TestPausedCleanup leaves a server paused: its cleanup must still end it.
func TestPausedCleanup(t *testing.T) {
	t.Parallel()
	var addr string
	t.Run("paused", func(t *testing.T) {
		s := redistest.Start(t, "--maxmemory", "10mb")
		if got := do(t, s, "CONFIG", "GET", "maxmemory"); got != "maxmemory\n10485760" {
			t.Fatalf("extra argument not passed: %q", got)
		}
		addr = s.Addr()
		s.Pause()
	})
	if addr == "" {
		t.Skip("the server did not start")
	}
	if err := ping(addr, 500*time.Millisecond); err == nil {
		t.Fatal("server still answers after its test's cleanup")
	}
	if c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond); err == nil {
		c.Close()
		t.Fatal("port still open after its test's cleanup")
	}
}
