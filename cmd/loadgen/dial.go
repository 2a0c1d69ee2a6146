//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/sys/unix"
)

// tokens hands out one token per user id.
type tokens struct {
	secret []byte
	static string
	cmd    string
}

func (t *tokens) get(ctx context.Context, user string) (string, error) {
	switch {
	case t.static != "":
		return t.static, nil
	case t.cmd != "":
		out, err := exec.CommandContext(ctx, "sh", "-c", strings.ReplaceAll(t.cmd, "{user}", user)).Output()
		if err != nil {
			return "", fmt.Errorf("token-cmd for %s: %w", user, err)
		}
		return strings.TrimSpace(string(out)), nil
	}
	now := time.Now()
	return jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": user,
		"iat": now.Unix(),
		"exp": now.Add(24 * time.Hour).Unix(),
	}).SignedString(t.secret)
}

// dialer opens one WebSocket connection from a chosen source address and
// returns it as a raw non-blocking file descriptor, detached from Go's
// netpoller, plus any bytes the server sent right after the handshake.
// Connection i goes to bases[i mod len(bases)]: one base per node.
type dialer struct {
	bases   []*url.URL
	timeout time.Duration
	tokens  *tokens
}

// base is the URL connection i (its global index) opens.
func (d *dialer) base(i int) *url.URL { return d.bases[i%len(d.bases)] }

// dialResult is one connection attempt's outcome, success or not.
type dialResult struct {
	index    int // global connection index
	fd       int
	leftover []byte
	tries    int
	err      error
}

func (d *dialer) dial(ctx context.Context, src net.IP, user string, index int) (int, []byte, error) {
	tok, err := d.tokens.get(ctx, user)
	if err != nil {
		return -1, nil, err
	}
	base := d.base(index)
	u := *base
	q := u.Query()
	q.Set("token", tok)
	if socketIO(base) {
		q.Set("EIO", "4")
		q.Set("transport", "websocket")
	}
	u.RawQuery = q.Encode()

	nd := net.Dialer{
		LocalAddr: &net.TCPAddr{IP: src},
		Timeout:   d.timeout,
		// IP_BIND_ADDRESS_NO_PORT lets the kernel pick the source port at
		// connect time, per destination, instead of reserving it at bind.
		Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
			})
			if err != nil {
				return err
			}
			return serr
		},
	}
	wd := ws.Dialer{Timeout: d.timeout, NetDial: nd.DialContext}
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	conn, br, _, err := wd.Dial(ctx, u.String())
	if err != nil {
		return -1, nil, err
	}
	defer conn.Close() // the dup below keeps the socket open
	if socketIO(base) {
		if br, err = connectSocketIO(conn, br, d.timeout); err != nil {
			return -1, nil, err
		}
	}
	var leftover []byte
	if br != nil {
		leftover, _ = br.Peek(br.Buffered())
		leftover = append([]byte(nil), leftover...)
		ws.PutReader(br)
	}
	fd, err := detach(conn)
	if err != nil {
		return -1, nil, err
	}
	return fd, leftover, nil
}

// detach duplicates conn's descriptor. The duplicate shares the open file
// description, so it stays non-blocking; closing conn afterwards removes the
// original from Go's netpoller, leaving the socket to our own epoll loop.
func detach(conn net.Conn) (int, error) {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return -1, errors.New("not a TCP connection (wss is not supported)")
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return -1, err
	}
	nfd := -1
	var derr error
	if err := rc.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, err
	}
	return nfd, derr
}

// errorKind shortens a dial error to a key for counting.
func errorKind(err error) string {
	var se ws.StatusError
	switch {
	case errors.As(err, &se):
		return "http " + strconv.Itoa(int(se))
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, unix.ETIMEDOUT):
		return "timeout"
	case errors.Is(err, unix.ECONNREFUSED):
		return "refused"
	case errors.Is(err, unix.ECONNRESET):
		return "reset"
	case errors.Is(err, unix.EADDRNOTAVAIL):
		return "addrnotavail"
	case errors.Is(err, unix.EMFILE):
		return "emfile"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	s := err.Error()
	if len(s) > 60 {
		s = s[:60]
	}
	return s
}

// socketIO reports whether u is the Socket.IO endpoint: then each
// connection, once its WebSocket is open, sends the Socket.IO CONNECT (the
// token rides in the query, which the sidecar also takes) and waits for
// its answer, and the workers answer the Engine.IO ping "2" with "3".
func socketIO(u *url.URL) bool { return strings.HasPrefix(u.Path, "/socket.io") }

// connectSocketIO reads the Engine.IO open packet, sends "40" and reads
// until the CONNECT answer; a CONNECT_ERROR is an error. It returns the
// reader holding whatever came after.
func connectSocketIO(conn net.Conn, br *bufio.Reader, timeout time.Duration) (*bufio.Reader, error) {
	if br == nil {
		br = bufio.NewReader(conn)
	}
	conn.SetDeadline(time.Now().Add(timeout))
	defer conn.SetDeadline(time.Time{})
	rw := struct {
		io.Reader
		io.Writer
	}{br, conn}
	sent := false
	for {
		msg, op, err := wsutil.ReadServerData(rw)
		if err != nil {
			return br, fmt.Errorf("socket.io connect: %w", err)
		}
		switch {
		case op != ws.OpText:
		case bytes.HasPrefix(msg, []byte("0{")) && !sent:
			if err := wsutil.WriteClientText(conn, []byte("40")); err != nil {
				return br, fmt.Errorf("socket.io connect: %w", err)
			}
			sent = true
		case bytes.HasPrefix(msg, []byte("40")):
			return br, nil
		case bytes.HasPrefix(msg, []byte("44")):
			return br, fmt.Errorf("socket.io connect refused: %s", msg[2:])
		}
	}
}
