package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sidecar/sidecar/engine/webhook"
)

// webhookPoster signs and POSTs booking.created webhooks. Each sender owns
// one keep-alive connection per node and speaks HTTP/1.1 on it directly: a
// request is one write, the answer is read with http.ReadResponse.
// net/http's client costs two more goroutines and channel hand-offs per
// request, which on a 2-core machine shared with the server took more CPU
// than the server.
type webhookPoster struct {
	nodes  []whNode
	to     postTo  // which node each webhook goes to
	resend float64 // this fraction of accepted webhooks is sent again to another node
	signer *webhook.Signer
	prefix string // user id prefix
	users  int
	run    string // webhook-id prefix, unique per run: the server remembers ids for a day
	conns  int
}

// whNode is one node's webhook endpoint.
type whNode struct {
	url  *url.URL
	addr string // host:port to dial
	head []byte // request line and fixed headers
}

func newWebhookPoster(raws []string, signer *webhook.Signer, prefix string, users, conns int) (*webhookPoster, error) {
	p := &webhookPoster{
		signer: signer, prefix: prefix, users: users, conns: conns, to: postTo{mode: "rr", nodes: len(raws)},
		run: "lg_" + strconv.FormatInt(time.Now().UnixNano(), 36) + "_",
	}
	for _, raw := range raws {
		raw = strings.TrimSpace(raw)
		u, err := url.Parse(raw)
		if err != nil || u.Scheme != "http" || u.Host == "" {
			return nil, fmt.Errorf("--webhook-url %q: want http://host:port/path", raw)
		}
		addr := u.Host
		if u.Port() == "" {
			addr = net.JoinHostPort(u.Hostname(), "80")
		}
		head := fmt.Appendf(nil, "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: sidecar-loadgen\r\nContent-Type: application/json\r\n",
			u.RequestURI(), u.Host)
		p.nodes = append(p.nodes, whNode{url: u, addr: addr, head: head})
	}
	if len(p.nodes) == 0 {
		return nil, errors.New("no webhook URL")
	}
	return p, nil
}

// home is the node user k's client is connected to: connection k is user
// k, on node k mod nodes (target.nodeOf).
func (p *webhookPoster) home(user int64) int { return int(user % int64(len(p.nodes))) }

// resends tells whether webhook seq is one of the --resend fraction: every
// round(1/resend)th.
func (p *webhookPoster) resends(seq int64) bool {
	if p.resend <= 0 {
		return false
	}
	every := max(1, int64(math.Round(1/p.resend)))
	return seq%every == 0
}

// whConn is one sender's keep-alive connection; nil c means not connected.
type whConn struct {
	c   net.Conn
	br  *bufio.Reader
	req []byte
}

// whPost is one webhook as the poster saw it.
type whPost struct {
	status int // 0: not sent (skipped) or transport error (err set)
	node   int // the node it was POSTed to
	home   int // the node of its recipient's client
	took   time.Duration
	lag    time.Duration // from its due time to the start of its POST
	err    error
	// The resend to another node, if any: its status and error.
	resent       bool
	resendStatus int
	resendErr    error
	duplicate    bool // the resend was answered {"duplicate": true}
}

// post sends webhook seq to user seq mod users, through one of wcs (a
// sender's connection to each node). Its data.id is
// "<seq>-<user>-<sentAt>", taken just before signing: the shipped rule
// passes it through as bookingId, where the client reads it.
func (p *webhookPoster) post(ctx context.Context, wcs []whConn, seq int64) whPost {
	user := seq % int64(p.users)
	now := time.Now()
	sentAt := now.UnixNano()
	body := make([]byte, 0, 320)
	body = append(body, `{"type":"booking.created","timestamp":"`...)
	body = now.UTC().AppendFormat(body, time.RFC3339)
	body = append(body, `","data":{"id":"`...)
	body = strconv.AppendInt(body, seq, 10)
	body = append(body, '-')
	body = strconv.AppendInt(body, user, 10)
	body = append(body, '-')
	body = strconv.AppendInt(body, sentAt, 10)
	body = append(body, `","providerId":"`...)
	body = append(body, p.prefix...)
	body = strconv.AppendInt(body, user, 10)
	body = append(body, `","customerName":"Loadgen","serviceName":"benchmark","status":"pending"}}`...)
	id := p.run + strconv.FormatInt(seq, 10)
	sig := p.signer.Sign(id, now, body)

	r := whPost{home: p.home(user)}
	r.node = p.to.pick(seq, r.home)
	var first []byte
	r.status, first, r.err = p.send(ctx, &wcs[r.node], r.node, id, now, sig, body)
	r.took = time.Duration(time.Now().UnixNano() - sentAt)
	if r.status == http.StatusOK && r.err == nil { // a new id taken for a duplicate
		r.err = fmt.Errorf("first POST answered 200: %s", bytes.TrimSpace(first))
	}
	if r.status == http.StatusAccepted && p.resends(seq) {
		other := (r.node + 1) % len(p.nodes)
		var answer []byte
		r.resent = true
		r.resendStatus, answer, r.resendErr = p.send(ctx, &wcs[other], other, id, now, sig, body)
		r.duplicate = r.resendStatus == http.StatusOK && bytes.Contains(answer, []byte(`"duplicate":true`))
	}
	return r
}

// send POSTs one signed webhook to node i on wc and returns the status and
// the answer's body (its first 512 bytes).
func (p *webhookPoster) send(ctx context.Context, wc *whConn, i int, id string, now time.Time, sig string, body []byte) (int, []byte, error) {
	b := append(wc.req[:0], p.nodes[i].head...)
	b = append(b, "Content-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\nwebhook-id: "...)
	b = append(b, id...)
	b = append(b, "\r\nwebhook-timestamp: "...)
	b = strconv.AppendInt(b, now.Unix(), 10)
	b = append(b, "\r\nwebhook-signature: "...)
	b = append(b, sig...)
	b = append(b, "\r\n\r\n"...)
	b = append(b, body...)
	wc.req = b

	// A kept-alive connection the server has closed fails at once; the
	// request is then sent once more on a new one. A webhook-id is safe to
	// resend: the server de-duplicates it.
	for attempt := 0; ; attempt++ {
		reused := wc.c != nil
		status, answer, err := p.roundTrip(ctx, wc, p.nodes[i].addr, b)
		if err == nil || !reused || attempt > 0 || ctx.Err() != nil {
			return status, answer, err
		}
	}
}

func (p *webhookPoster) roundTrip(ctx context.Context, wc *whConn, addr string, req []byte) (int, []byte, error) {
	if wc.c == nil {
		d := net.Dialer{Timeout: 10 * time.Second}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return 0, nil, err
		}
		wc.c, wc.br = c, bufio.NewReaderSize(c, 4096)
	}
	fail := func(err error) (int, []byte, error) {
		wc.c.Close()
		wc.c = nil
		return 0, nil, err
	}
	wc.c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := wc.c.Write(req); err != nil {
		return fail(err)
	}
	resp, err := http.ReadResponse(wc.br, nil)
	if err != nil {
		return fail(err)
	}
	var msg []byte
	if resp.StatusCode != http.StatusAccepted {
		msg, _ = io.ReadAll(io.LimitReader(resp.Body, 512))
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || resp.Close {
		wc.c.Close()
		wc.c = nil
	}
	switch resp.StatusCode {
	case http.StatusAccepted:
		return resp.StatusCode, msg, nil
	case http.StatusOK: // a duplicate
		return resp.StatusCode, msg, nil
	}
	return resp.StatusCode, msg, fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(msg))
}
