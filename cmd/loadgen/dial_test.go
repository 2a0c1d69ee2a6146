//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/gobwas/ws"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/sys/unix"
)

// timeoutError is a net.Error that only says it timed out.
type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout (test)" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return false }

func TestErrorKind(t *testing.T) {
	long := strings.Repeat("x", 100)
	syscallErr := func(errno error) error {
		return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", errno)}
	}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{ws.StatusError(401), "http 401"},
		{fmt.Errorf("handshake: %w", ws.StatusError(503)), "http 503"},
		{context.DeadlineExceeded, "timeout"},
		{fmt.Errorf("dial: %w", context.DeadlineExceeded), "timeout"},
		{syscallErr(unix.ETIMEDOUT), "timeout"},
		{syscallErr(unix.ECONNREFUSED), "refused"},
		{syscallErr(unix.ECONNRESET), "reset"},
		{syscallErr(unix.EADDRNOTAVAIL), "addrnotavail"},
		{syscallErr(unix.EMFILE), "emfile"},
		{&net.OpError{Op: "read", Net: "tcp", Err: timeoutError{}}, "timeout"},
		{errors.New("short"), "short"},
		{errors.New(long), long[:60]},
	} {
		if got := errorKind(tc.err); got != tc.want {
			t.Errorf("errorKind(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

func TestTokens(t *testing.T) {
	ctx := context.Background()

	static := &tokens{static: "tok", cmd: "exit 1", secret: []byte("s")}
	if got, err := static.get(ctx, "u1"); got != "tok" || err != nil {
		t.Errorf("static get = %q, %v; want %q, nil", got, err, "tok")
	}

	cmd := &tokens{cmd: "echo ' tok-{user} '", secret: []byte("s")}
	if got, err := cmd.get(ctx, "u7"); got != "tok-u7" || err != nil {
		t.Errorf("token-cmd get = %q, %v; want %q, nil", got, err, "tok-u7")
	}
	if _, err := (&tokens{cmd: "exit 3"}).get(ctx, "u1"); err == nil || !strings.Contains(err.Error(), "u1") {
		t.Errorf("failing token-cmd: err = %v, want one naming the user", err)
	}

	minted, err := (&tokens{secret: []byte("s3cret")}).get(ctx, "u42")
	if err != nil {
		t.Fatalf("mint: %v", err)
	}
	tok, err := jwt.Parse(minted, func(*jwt.Token) (any, error) { return []byte("s3cret"), nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired(), jwt.WithIssuedAt())
	if err != nil {
		t.Fatalf("minted token does not verify: %v", err)
	}
	if sub, _ := tok.Claims.GetSubject(); sub != "u42" {
		t.Errorf("minted sub = %q, want %q", sub, "u42")
	}
}
