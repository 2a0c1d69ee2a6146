//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// poster sends the broadcasts. Each body carries the load generator's seq
// and the wall-clock time just before the POST (sentAt, unix ns); the server
// passes body fields through into the frame's data, so every client can tell
// which broadcast it got and how long it took. All processes share the
// machine's clock. With several nodes, broadcast seq goes to the node
// that to picks.
type poster struct {
	client *http.Client
	urls   []string // one per node
	to     postTo
	auth   string
}

func newPoster(t *target, to postTo) *poster {
	tr := &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: time.Minute}
	p := &poster{
		client: &http.Client{Transport: tr, Timeout: 30 * time.Second},
		to:     to,
		auth:   "Bearer " + t.APIKey,
	}
	for _, a := range t.apis {
		p.urls = append(p.urls, a+"/api/socket-test/broadcast")
	}
	return p
}

// postResult is one broadcast POST as the coordinator saw it.
type postResult struct {
	seq    int64
	node   int   // the node it was POSTed to
	sentAt int64 // unix ns, just before the request
	took   time.Duration
	err    error
}

func (p *poster) broadcast(ctx context.Context, seq int64) postResult {
	body := make([]byte, 0, 160)
	body = append(body, `{"title":"loadgen","message":"benchmark broadcast","type":"info","seq":`...)
	body = strconv.AppendInt(body, seq, 10)
	body = append(body, `,"sentAt":`...)
	r := postResult{seq: seq, node: p.to.pick(seq, 0), sentAt: time.Now().UnixNano()}
	body = strconv.AppendInt(body, r.sentAt, 10)
	body = append(body, '}')
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.urls[r.node], bytes.NewReader(body))
	if err != nil {
		r.err = err
		return r
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", p.auth)
	resp, err := p.client.Do(req)
	r.took = time.Duration(time.Now().UnixNano() - r.sentAt)
	if err != nil {
		r.err = err
		return r
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		r.err = fmt.Errorf("broadcast: %s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	return r
}

// serverConns asks GET /api/socket-test/stats for the server's connection
// count; -1 when it cannot tell.
func (p *poster) serverConns(ctx context.Context, api string) int64 {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, api+"/api/socket-test/stats", nil)
	if err != nil {
		return -1
	}
	req.Header.Set("Authorization", p.auth)
	resp, err := p.client.Do(req)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var v struct {
		Connections *int64 `json:"connections"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&v) != nil || v.Connections == nil {
		return -1
	}
	return *v.Connections
}
