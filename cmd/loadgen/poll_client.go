//go:build linux

package main

// One Socket.IO session over Engine.IO v4 long-polling, as socket.io-client
// with transports: ["polling"] keeps it: the open GET, the CONNECT POSTed
// with the token in the query, its answer read with a GET, and from then on
// a GET always outstanding; a ping "2" in a GET's answer is answered with a
// POST of "3" while the next GET is already waiting. Each session has its
// own http.Transport bound to one source address, at most two keep-alive
// connections: one for the outstanding GET, one for the POST.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// eioSeparator joins the packets of one long-polling payload.
const eioSeparator = 0x1e

// splitPayload cuts an Engine.IO v4 polling payload into its packets.
func splitPayload(b []byte) [][]byte {
	if len(b) == 0 {
		return nil
	}
	return bytes.Split(b, []byte{eioSeparator})
}

// eioOpen is the Engine.IO open packet's JSON.
type eioOpen struct {
	SID          string   `json:"sid"`
	Upgrades     []string `json:"upgrades"`
	PingInterval int64    `json:"pingInterval"` // ms
	PingTimeout  int64    `json:"pingTimeout"`  // ms
	MaxPayload   int64    `json:"maxPayload"`
}

// parseOpen reads an open packet: `0{"sid":...}`.
func parseOpen(p []byte) (eioOpen, error) {
	var o eioOpen
	if len(p) == 0 || p[0] != '0' {
		return o, fmt.Errorf("not an open packet: %.40q", p)
	}
	if err := json.Unmarshal(p[1:], &o); err != nil {
		return o, fmt.Errorf("open packet: %w", err)
	}
	if o.SID == "" {
		return o, errors.New("open packet: no sid")
	}
	if o.PingInterval <= 0 || o.PingTimeout <= 0 {
		return o, fmt.Errorf("open packet: pingInterval %d, pingTimeout %d", o.PingInterval, o.PingTimeout)
	}
	return o, nil
}

// connectAnswer tells what a packet is to a client waiting for the answer
// to its CONNECT: "ok" (40), "refused" (44, the error's JSON in msg),
// "ping" (2), "close" (1) or "" for anything else (a noop, an event).
func connectAnswer(p []byte) (kind string, msg []byte) {
	switch {
	case bytes.HasPrefix(p, []byte("40")):
		return "ok", nil
	case bytes.HasPrefix(p, []byte("44")):
		return "refused", p[2:]
	case len(p) == 1 && p[0] == '2':
		return "ping", nil
	case len(p) == 1 && p[0] == '1':
		return "close", nil
	}
	return "", nil
}

// pollURL is base (…/socket.io/) with the polling query: EIO=4,
// transport=polling, then sid and token when they are set.
func pollURL(base *url.URL, sid, token string) string {
	u := *base
	q := url.Values{}
	q.Set("EIO", "4")
	q.Set("transport", "polling")
	if sid != "" {
		q.Set("sid", sid)
	}
	if token != "" {
		q.Set("token", token)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// httpStatusError is a polling request answered with another status than 200.
type httpStatusError struct {
	code int
	body string
}

func (e httpStatusError) Error() string {
	return "http " + strconv.Itoa(e.code) + ": " + e.body
}

// pollKind shortens a session's error to a key for counting.
func pollKind(err error) string {
	var he httpStatusError
	var ke kindError
	switch {
	case errors.As(err, &he):
		return "http " + strconv.Itoa(he.code)
	case errors.As(err, &ke):
		return string(ke)
	}
	return errorKind(err)
}

// newPollTransport is one session's transport: its connections from src,
// two at most (the outstanding GET's and the POST's), kept alive.
func newPollTransport(src net.IP, timeout time.Duration) *http.Transport {
	nd := &net.Dialer{Timeout: timeout, Control: bindNoPort}
	if src != nil {
		nd.LocalAddr = &net.TCPAddr{IP: src}
	}
	return &http.Transport{
		DialContext:         nd.DialContext,
		MaxConnsPerHost:     2,
		MaxIdleConns:        2,
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     0, // the server's idle timeout (60 s) is longer than a ping interval
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
		// A GET may wait a whole ping interval for its answer.
		ResponseHeaderTimeout: 0,
	}
}

// pollSession is one client session.
type pollSession struct {
	base    *url.URL
	hc      *http.Client
	tr      *http.Transport
	timeout time.Duration // open requests and POSTs
	sid     string
	open    eioOpen
}

func newPollSession(base *url.URL, src net.IP, timeout time.Duration) *pollSession {
	tr := newPollTransport(src, timeout)
	return &pollSession{base: base, tr: tr, hc: &http.Client{Transport: tr}, timeout: timeout}
}

// do sends one request and reads the whole answer; another status than
// 200 is an httpStatusError.
func (s *pollSession) do(ctx context.Context, method, u string, body []byte) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "text/plain;charset=UTF-8")
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, httpStatusError{resp.StatusCode, strings.TrimSpace(string(b[:min(len(b), 80)]))}
	}
	return b, nil
}

// getPackets is one GET of the session; it may wait up to a ping
// interval and a timeout for the server's packets.
func (s *pollSession) getPackets(ctx context.Context) ([][]byte, error) {
	wait := s.timeout
	if s.open.PingInterval > 0 {
		wait += time.Duration(s.open.PingInterval+s.open.PingTimeout) * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	b, err := s.do(ctx, http.MethodGet, pollURL(s.base, s.sid, ""), nil)
	if err != nil {
		return nil, err
	}
	return splitPayload(b), nil
}

// post sends packets (joined) to the session, with token in the query
// when it is set.
func (s *pollSession) post(ctx context.Context, token string, packets ...string) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	b, err := s.do(ctx, http.MethodPost, pollURL(s.base, s.sid, token), []byte(strings.Join(packets, "\x1e")))
	if err != nil {
		return err
	}
	if string(b) != "ok" {
		return kindError("post answered " + strconv.Quote(string(b[:min(len(b), 20)])))
	}
	return nil
}

// connect opens the session: the open GET, the CONNECT POSTed with token
// in the query, and GETs until its answer. A ping before the answer is
// answered.
func (s *pollSession) connect(ctx context.Context, token string) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	b, err := s.do(ctx, http.MethodGet, pollURL(s.base, "", ""), nil)
	if err != nil {
		return err
	}
	ps := splitPayload(b)
	if len(ps) == 0 {
		return kindError("empty open answer")
	}
	if s.open, err = parseOpen(ps[0]); err != nil {
		return kindError("bad open packet")
	}
	s.sid = s.open.SID
	if err := s.post(ctx, token, "40"); err != nil {
		return err
	}
	for {
		ps, err := s.getPackets(ctx)
		if err != nil {
			return err
		}
		for _, p := range ps {
			switch k, _ := connectAnswer(p); k {
			case "ok":
				return nil
			case "refused":
				return kindError("connect_error")
			case "close":
				return kindError("closed before the connect answer")
			case "ping":
				if err := s.post(ctx, "", "3"); err != nil {
					return err
				}
			}
		}
	}
}

// keepAlive keeps a GET outstanding until ctx is done or the session
// ends, answering each ping with a POST of "3" from a second goroutine
// (the next GET is already waiting meanwhile). It returns why the session
// ended: nil when ctx was done, else the error, the close packet or a
// failed pong. pings counts the pings answered.
func (s *pollSession) keepAlive(ctx context.Context, pings *atomic.Int64) error {
	ctx, cancel := context.WithCancelCause(ctx)
	pong := make(chan struct{}, 4)
	done := make(chan struct{})
	defer func() { cancel(nil); <-done }()
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-pong:
			}
			if err := s.post(ctx, "", "3"); err != nil {
				cancel(fmt.Errorf("pong: %w", err))
				return
			}
			pings.Add(1)
		}
	}()
	for {
		ps, err := s.getPackets(ctx)
		if ctx.Err() != nil {
			if c := context.Cause(ctx); c != context.Canceled {
				return c
			}
			return nil
		}
		if err != nil {
			return err
		}
		for _, p := range ps {
			switch k, _ := connectAnswer(p); k {
			case "ping":
				select {
				case pong <- struct{}{}:
				default:
					return kindError("pongs piling up")
				}
			case "close":
				return kindError("close packet")
			}
		}
	}
}

// close drops the session's connections.
func (s *pollSession) close() { s.tr.CloseIdleConnections() }
