//go:build linux

package main

// One churn cycle on the wire: a raw TCP connect from a chosen source
// address, a hand-written upgrade request with a freshly minted token, the
// 101 checked, a close frame, and the socket closed. No WebSocket library,
// so that the client costs little next to the server it measures.

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"hash"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// churnClient is one goroutine's reusable state.
type churnClient struct {
	ch     *churner
	mint   *minter // nil: ch.tokens mints
	nd     net.Dialer
	addr   string
	req    []byte
	buf    []byte
	key    string
	accept string
}

func (ch *churner) newClient() *churnClient {
	c := &churnClient{ch: ch, buf: make([]byte, 4096), addr: ch.base.Host}
	if ch.tokens.static == "" && ch.tokens.cmd == "" {
		c.mint = newMinter(ch.tokens.secret)
	}
	if ch.base.Port() == "" {
		c.addr = net.JoinHostPort(ch.base.Hostname(), "80")
	}
	var k [16]byte
	rand.Read(k[:])
	c.key = base64.StdEncoding.EncodeToString(k[:])
	c.accept = wsAccept(c.key)
	c.nd = net.Dialer{Timeout: ch.timeout, Control: bindNoPort}
	return c
}

// bindNoPort sets IP_BIND_ADDRESS_NO_PORT: the kernel picks the source port
// at connect time, per destination, instead of reserving it at bind.
func bindNoPort(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	}); err != nil {
		return err
	}
	return serr
}

// wsAccept is the Sec-WebSocket-Accept a server must answer to key.
func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// kindError is a failure already named for counting.
type kindError string

func (e kindError) Error() string { return string(e) }

func churnKind(err error) string {
	var k kindError
	if errors.As(err, &k) {
		return string(k)
	}
	return errorKind(err)
}

// cycle runs one connect, upgrade, read 101, close for user index u.
func (c *churnClient) cycle(ctx context.Context, st *churnStats, u int64, src net.IP) {
	t0 := time.Now()
	err := c.do(ctx, st, u, src, t0)
	end := time.Now()
	if err != nil {
		st.failed++
		kind := churnKind(err)
		st.errs[kind]++
		if st.firstErr == "" {
			st.firstErr = err.Error()
		}
		return
	}
	st.completed++
	st.cycle.add(end.Sub(t0))
	st.lastEnd = end
	if s := int(end.Sub(c.ch.t0) / time.Second); s < len(c.ch.perSecond) {
		c.ch.perSecond[s].Add(1)
	}
}

func (c *churnClient) do(ctx context.Context, st *churnStats, u int64, src net.IP, t0 time.Time) error {
	user := c.ch.prefix + strconv.FormatInt(u, 10)
	var tok string
	if c.mint != nil {
		tok = c.mint.token(user, t0)
	} else {
		var err error
		if tok, err = c.ch.tokens.get(ctx, user); err != nil {
			return err
		}
	}
	c.nd.LocalAddr = &net.TCPAddr{IP: src}
	conn, err := c.nd.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	t1 := time.Now()
	st.conn.add(t1.Sub(t0))
	conn.SetDeadline(t0.Add(c.ch.timeout))
	c.req = upgradeRequest(c.req[:0], c.ch.base, tok, c.key)
	if _, err := conn.Write(c.req); err != nil {
		return err
	}
	n, err := readHead(conn, c.buf)
	if err != nil {
		return err
	}
	if err := checkUpgrade(c.buf[:n], c.accept); err != nil {
		return err
	}
	st.upg.add(time.Since(t1))
	switch c.ch.close {
	case "frame", "wait":
		if _, err := conn.Write(clientControl(c.buf[:0], opClose, []byte{0x03, 0xe8})); err != nil {
			return err
		}
		if c.ch.close == "wait" {
			// Until the server's close frame, or its FIN.
			for {
				if _, err := conn.Read(c.buf); err != nil {
					if errors.Is(err, io.EOF) {
						break
					}
					return err
				}
			}
		}
	}
	return nil
}

// upgradeRequest appends the WebSocket handshake for base with ?token=tok.
func upgradeRequest(b []byte, base *url.URL, tok, key string) []byte {
	b = append(b, "GET "...)
	path := base.EscapedPath()
	if path == "" {
		path = "/"
	}
	b = append(b, path...)
	b = append(b, '?')
	if base.RawQuery != "" {
		b = append(b, base.RawQuery...)
		b = append(b, '&')
	}
	b = append(b, "token="...)
	b = append(b, url.QueryEscape(tok)...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, base.Host...)
	b = append(b, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "...)
	b = append(b, key...)
	b = append(b, "\r\n\r\n"...)
	return b
}

// readHead reads into buf until it holds a whole HTTP response head.
func readHead(conn net.Conn, buf []byte) (int, error) {
	n := 0
	for {
		m, err := conn.Read(buf[n:])
		n += m
		if bytes.Contains(buf[:n], []byte("\r\n\r\n")) {
			return n, nil
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				if n == 0 {
					return n, kindError("eof before response")
				}
				return n, kindError("short response")
			}
			return n, err
		}
		if n == len(buf) {
			return n, kindError("response head too long")
		}
	}
}

// checkUpgrade checks a response head: status 101 and the right
// Sec-WebSocket-Accept. Other statuses are "http <code>".
func checkUpgrade(head []byte, accept string) error {
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	f := bytes.Fields(line)
	if len(f) < 2 || !bytes.HasPrefix(f[0], []byte("HTTP/1.")) {
		return kindError("bad status line")
	}
	code, err := strconv.Atoi(string(f[1]))
	if err != nil {
		return kindError("bad status line")
	}
	if code != http.StatusSwitchingProtocols {
		return kindError("http " + strconv.Itoa(code))
	}
	for len(rest) > 0 {
		var l []byte
		l, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, val, ok := bytes.Cut(l, []byte(":"))
		if ok && bytes.EqualFold(bytes.TrimSpace(name), []byte("Sec-WebSocket-Accept")) {
			if string(bytes.TrimSpace(val)) != accept {
				return kindError("bad accept")
			}
			return nil
		}
	}
	return kindError("no accept header")
}

// minter signs HS256 tokens by hand, about a microsecond each: the churn
// client mints one per cycle, and golang-jwt's maps and reflection would
// cost more than the cycle's system calls.
type minter struct {
	mac    hash.Hash
	header string
	b, sig []byte
}

func newMinter(secret []byte) *minter {
	return &minter{
		mac:    hmac.New(sha256.New, secret),
		header: base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)),
	}
}

// token is a JWT for user (as sub), issued at now, valid 24 h. user must
// need no JSON escaping (loadgen's ids are a prefix and a number).
func (m *minter) token(user string, now time.Time) string {
	var p [128]byte
	claims := append(p[:0], `{"sub":"`...)
	claims = append(claims, user...)
	claims = append(claims, `","iat":`...)
	claims = strconv.AppendInt(claims, now.Unix(), 10)
	claims = append(claims, `,"exp":`...)
	claims = strconv.AppendInt(claims, now.Add(24*time.Hour).Unix(), 10)
	claims = append(claims, '}')
	b := append(m.b[:0], m.header...)
	b = append(b, '.')
	b = base64.RawURLEncoding.AppendEncode(b, claims)
	m.mac.Reset()
	m.mac.Write(b)
	m.sig = m.mac.Sum(m.sig[:0])
	b = append(b, '.')
	b = base64.RawURLEncoding.AppendEncode(b, m.sig)
	m.b = b
	return string(b)
}
