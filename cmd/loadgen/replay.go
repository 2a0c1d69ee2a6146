//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/gobwas/ws"
)

// replayResult is the output of `loadgen replay`: one JSON object.
type replayResult struct {
	Kind      string       `json:"kind"` // "replay"
	Machine   machine      `json:"machine"`
	ServerCmd string       `json:"server_cmd"`
	ServerGo  string       `json:"server_go,omitempty"`
	Store     string       `json:"store,omitempty"`
	User      string       `json:"user"`
	Events    int          `json:"events"` // missed per repetition
	Reps      []replayRep  `json:"reps"`
	ResumedMs quant        `json:"upgrade_to_resumed_ms"` // over the repetitions
	AllOK     bool         `json:"all_ok"`                // every repetition: every event, in order, recovered
	First     *replayFirst `json:"first"`
	TookS     float64      `json:"took_s"`
}

// replayFirst is the first, live connection that gave the first since id.
type replayFirst struct {
	ID    string `json:"id"`    // the id of the live event it got
	Frame string `json:"frame"` // that frame, as received
}

// replayRep is one repetition: POST events while the user is offline,
// reconnect with ?since=<the last id seen>.
type replayRep struct {
	Since       string  `json:"since"`
	PostS       float64 `json:"post_s"`         // POSTing the events, one after the other
	PostErrors  int     `json:"post_errors"`    // not 202, or delivered to a connection
	UpgradeMs   float64 `json:"upgrade_ms"`     // dial start to the 101
	ResumedMs   float64 `json:"resumed_ms"`     // dial start to the resumed frame
	FirstMs     float64 `json:"first_event_ms"` // dial start to the first replayed event
	replayCheck         // what arrived
}

// replayCheck is what a replay delivered, against what was posted.
type replayCheck struct {
	Received  int    `json:"received"`  // events before resumed
	Matched   int    `json:"matched"`   // of them, the posted ids, in posting order
	InOrder   bool   `json:"in_order"`  // exactly the posted ids, in order (ids and seqs increasing), then resumed
	Recovered bool   `json:"recovered"` // resumed said so
	Resumed   bool   `json:"resumed"`   // a resumed frame came
	LastID    string `json:"last_id"`
	Problem   string `json:"problem,omitempty"` // the first thing wrong
}

// runReplay is `loadgen replay`: the time to replay missed events to one
// client, from the upgrade to the resumed frame.
func runReplay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var t target
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	t.register(fs)
	user := fs.String("user", "u1", "the user that misses the events")
	events := fs.Int("events", 1000, "events POSTed to the user while offline, per repetition (the server's replay.max_events must keep them)")
	reps := fs.Int("repeat", 5, "repetitions")
	label := fs.String("server-cmd", "", "the server's command line, recorded in the result")
	serverGo := fs.String("server-go", "", "the server's Go version, recorded in the result")
	store := fs.String("store", "", "the server's store, recorded in the result")
	pause := fs.Duration("pause", time.Second, "pause between repetitions")
	pid := fs.Int("server-pid", 0, "pid of the server, left out of the quiet check (optional)")
	quietLimit := fs.Float64("quiet-limit", 0.25, "before each reconnect, wait until other processes use fewer cores than this")
	quietWait := fs.Duration("quiet-wait", time.Minute, "longest wait for a quiet machine")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := t.validate(); err != nil {
		return err
	}
	if err := t.oneNode("replay"); err != nil {
		return err
	}
	if *events < 1 || *reps < 1 {
		return errors.New("--events and --repeat must be positive")
	}
	ctx, cancel := context.WithTimeout(ctx, min(t.Timeout, 5*time.Minute+time.Duration(*reps)*(*quietWait+*pause+time.Minute)))
	defer cancel()
	logf := newLogf(stderr)
	start := time.Now()
	res := replayResult{Kind: "replay", Machine: describeMachine(), ServerCmd: *label, ServerGo: *serverGo,
		Store: *store, User: *user, Events: *events, AllOK: true}
	base, _ := url.Parse(t.URL)
	tk := &tokens{secret: []byte(t.Secret), static: t.Token, cmd: t.TokenCmd}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	send := t.API + "/api/socket-test/send/" + url.PathEscape(*user)
	auth := "Bearer " + t.APIKey

	// The first connection: live, to get an id to resume from.
	c, err := replayDial(ctx, base, tk, *user, "", t.DialTimeout)
	if err != nil {
		return fmt.Errorf("first connection: %w", err)
	}
	id, status, err := postSend(ctx, hc, send, auth, 0, 0)
	if err != nil || status.Delivered != 1 {
		c.conn.Close()
		return fmt.Errorf("live event to %s: %v (delivered %d)", *user, err, status.Delivered)
	}
	f, err := c.waitFor(func(p []byte) bool { return bytes.Contains(p, []byte(`"id":"`+id+`"`)) }, 5*time.Second)
	c.conn.Close()
	if err != nil {
		return fmt.Errorf("live event %s not received: %w", id, err)
	}
	res.First = &replayFirst{ID: id, Frame: string(f)}
	since := id
	logf("live event %s received; %d repetitions of %d missed events", id, *reps, *events)
	time.Sleep(200 * time.Millisecond) // let the server index the close

	for r := 1; r <= *reps; r++ {
		rep := replayRep{Since: since}
		ids := make([]string, 0, *events)
		t0 := time.Now()
		for i := 1; i <= *events; i++ {
			id, st, err := postSend(ctx, hc, send, auth, r, i)
			if err != nil || st.Delivered != 0 {
				rep.PostErrors++
				if err == nil {
					err = fmt.Errorf("delivered to %d connections: is %s still connected?", st.Delivered, *user)
				}
				if rep.PostErrors == 1 {
					logf("rep %d: POST %d: %v", r, i, err)
				}
				continue
			}
			ids = append(ids, id)
		}
		rep.PostS = round3(time.Since(t0).Seconds())
		var pids []int
		if *pid > 0 {
			pids = []int{*pid}
		}
		if oc, quiet := waitQuiet(ctx, pids, *quietLimit, 3*time.Second, *quietWait); !quiet {
			logf("rep %d: machine still busy (others use %.2f cores); measuring anyway", r, oc)
		}
		got, err := replayOnce(ctx, base, tk, *user, since, t.DialTimeout, &rep)
		if err != nil {
			return fmt.Errorf("rep %d: %w", r, err)
		}
		rep.replayCheck = checkReplay(got, ids, r)
		if rep.LastID != "" {
			since = rep.LastID
		}
		if !rep.InOrder || !rep.Recovered || rep.Received != *events || rep.PostErrors > 0 {
			res.AllOK = false
		}
		logf("rep %d: %d events, in order %v, recovered %v; 101 after %.2f ms, first event %.2f ms, resumed %.2f ms%s",
			r, rep.Received, rep.InOrder, rep.Recovered, rep.UpgradeMs, rep.FirstMs, rep.ResumedMs, problem(rep.Problem))
		res.Reps = append(res.Reps, rep)
		sleepCtx(ctx, *pause)
	}
	var ms []float64
	for _, r := range res.Reps {
		ms = append(ms, r.ResumedMs)
	}
	res.ResumedMs = quantOf(ms)
	res.TookS = round3(time.Since(start).Seconds())
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(&res)
}

func problem(p string) string {
	if p == "" {
		return ""
	}
	return "; " + p
}

// sendStatus is the answer of POST /api/socket-test/send/{user}.
type sendStatus struct {
	ID        string `json:"id"`
	Delivered int    `json:"delivered"`
}

// postSend sends {"title","message","rep":rep,"seq":seq} to one user and
// returns the event's id.
func postSend(ctx context.Context, hc *http.Client, u, auth string, rep, seq int) (string, sendStatus, error) {
	body := fmt.Appendf(nil, `{"title":"replay","message":"missed event","type":"info","rep":%d,"seq":%d}`, rep, seq)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return "", sendStatus{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", auth)
	resp, err := hc.Do(req)
	if err != nil {
		return "", sendStatus{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	var st sendStatus
	if resp.StatusCode != http.StatusAccepted {
		return "", st, fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(b))
	}
	if err := json.Unmarshal(b, &st); err != nil || st.ID == "" {
		return "", st, fmt.Errorf("answer %q: no id", b)
	}
	return st.ID, st, nil
}

// replayConn is a blocking client connection with its unread bytes,
// data[off:].
type replayConn struct {
	conn net.Conn
	data []byte
	off  int
}

func replayDial(ctx context.Context, base *url.URL, tk *tokens, user, since string, timeout time.Duration) (*replayConn, error) {
	tok, err := tk.get(ctx, user)
	if err != nil {
		return nil, err
	}
	u := *base
	q := u.Query()
	q.Set("token", tok)
	if since != "" {
		q.Set("since", since)
	}
	u.RawQuery = q.Encode()
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, br, _, err := ws.Dialer{Timeout: timeout}.Dial(dctx, u.String())
	if err != nil {
		return nil, err
	}
	c := &replayConn{conn: conn, data: make([]byte, 0, 256<<10)}
	if br != nil {
		b, _ := br.Peek(br.Buffered())
		c.data = append(c.data, b...)
		ws.PutReader(br)
	}
	return c, nil
}

// next returns the next text message's payload (a copy), answering nothing:
// the server's pings come every 25 s, longer than a replay takes.
func (c *replayConn) next(deadline time.Time) ([]byte, error) {
	for {
		f, n, err := nextFrame(c.data[c.off:])
		if err != nil {
			return nil, err
		}
		if n > 0 {
			c.off += n
			switch {
			case f.op == opClose:
				return nil, errServerClose
			case f.op == opText && f.fin:
				return slices.Clone(f.payload), nil
			case f.op == opText || f.op == opContinuation:
				return nil, errors.New("fragmented message: not expected here")
			}
			continue
		}
		// Keep the partial frame at the start, and room to read after it.
		if c.off > 0 {
			c.data = c.data[:copy(c.data, c.data[c.off:])]
			c.off = 0
		}
		if cap(c.data)-len(c.data) < 64<<10 {
			c.data = slices.Grow(c.data, 256<<10)
		}
		c.conn.SetReadDeadline(deadline)
		m, err := c.conn.Read(c.data[len(c.data):cap(c.data)])
		c.data = c.data[:len(c.data)+m]
		if err != nil && m == 0 {
			return nil, err
		}
	}
}

func (c *replayConn) waitFor(match func([]byte) bool, d time.Duration) ([]byte, error) {
	deadline := time.Now().Add(d)
	for {
		p, err := c.next(deadline)
		if err != nil {
			return nil, err
		}
		if match(p) {
			return p, nil
		}
	}
}

var resumedPrefix = []byte(`{"event":"resumed"`)

// replayOnce reconnects with ?since= and reads every message until the
// resumed frame, timing the 101, the first event and resumed from the
// start of the dial.
func replayOnce(ctx context.Context, base *url.URL, tk *tokens, user, since string, timeout time.Duration, rep *replayRep) ([][]byte, error) {
	t0 := time.Now()
	c, err := replayDial(ctx, base, tk, user, since, timeout)
	if err != nil {
		return nil, err
	}
	defer c.conn.Close()
	rep.UpgradeMs = round3(ms(time.Since(t0)))
	deadline := time.Now().Add(30 * time.Second)
	var got [][]byte
	for {
		p, err := c.next(deadline)
		if err != nil {
			return got, fmt.Errorf("after %d messages: %w", len(got), err)
		}
		if len(got) == 0 {
			rep.FirstMs = round3(ms(time.Since(t0)))
		}
		got = append(got, p)
		if bytes.HasPrefix(p, resumedPrefix) {
			rep.ResumedMs = round3(ms(time.Since(t0)))
			return got, nil
		}
	}
}

// checkReplay checks the messages of one replay, the resumed frame last,
// against the ids posted for repetition rep, in posting order.
func checkReplay(msgs [][]byte, posted []string, rep int) replayCheck {
	var r replayCheck
	fail := func(format string, a ...any) {
		if r.Problem == "" {
			r.Problem = fmt.Sprintf(format, a...)
		}
	}
	lastSeq := 0
	var lastID streamID
	for i, m := range msgs {
		var v struct {
			Event string `json:"event"`
			ID    string `json:"id"`
			Data  struct {
				Recovered *bool `json:"recovered"`
				Rep       int   `json:"rep"`
				Seq       int   `json:"seq"`
			} `json:"data"`
		}
		if err := json.Unmarshal(m, &v); err != nil {
			fail("message %d: %v", i, err)
			continue
		}
		if v.Event == "resumed" {
			r.Resumed = true
			r.Recovered = v.Data.Recovered != nil && *v.Data.Recovered
			if i != len(msgs)-1 {
				fail("resumed is message %d of %d", i, len(msgs))
			}
			continue
		}
		r.Received++
		if v.Event != "newNotification" || v.Data.Rep != rep {
			fail("message %d: event %q of rep %d, want newNotification of rep %d", i, v.Event, v.Data.Rep, rep)
			continue
		}
		id, ok := parseStreamID(v.ID)
		if !ok {
			fail("message %d: id %q", i, v.ID)
		} else if !lastID.less(id) {
			fail("message %d: id %s after %s", i, v.ID, r.LastID)
		}
		if v.Data.Seq <= lastSeq {
			fail("message %d: seq %d after %d", i, v.Data.Seq, lastSeq)
		}
		if r.Received <= len(posted) && posted[r.Received-1] == v.ID {
			r.Matched++
		}
		lastID, lastSeq, r.LastID = id, v.Data.Seq, v.ID
	}
	if !r.Resumed {
		fail("no resumed frame")
	}
	if r.Received != len(posted) || r.Matched != len(posted) {
		fail("%d received, %d of the %d posted ids in order", r.Received, r.Matched, len(posted))
	}
	r.InOrder = r.Problem == ""
	return r
}

// streamID is a server event id, "<unix ms>-<seq>".
type streamID struct{ ms, seq int64 }

func parseStreamID(s string) (streamID, bool) {
	a, b, ok := bytes.Cut([]byte(s), []byte("-"))
	if !ok {
		return streamID{}, false
	}
	m, err1 := strconv.ParseInt(string(a), 10, 64)
	q, err2 := strconv.ParseInt(string(b), 10, 64)
	if err1 != nil || err2 != nil || m < 0 || q < 0 {
		return streamID{}, false
	}
	return streamID{m, q}, true
}

func (a streamID) less(b streamID) bool { return a.ms < b.ms || (a.ms == b.ms && a.seq < b.seq) }

// writeReplaySummary prints a `loadgen replay` result as markdown.
func writeReplaySummary(w io.Writer, r *replayResult) {
	m := r.Machine
	fmt.Fprintf(w, "#### replay of %d missed events to one client: `%s`, %s\n\n", r.Events, r.ServerCmd, m.Date)
	fmt.Fprintf(w, "%d CPUs (%s), Linux %s; loadgen %s", m.NProc, m.CPU, m.Kernel, m.LoadgenGo)
	if r.ServerGo != "" {
		fmt.Fprintf(w, ", server %s", r.ServerGo)
	}
	if r.Store != "" {
		fmt.Fprintf(w, "; store %s", r.Store)
	}
	fmt.Fprint(w, "\n\n| rep | POSTs (s) | 101 ms | first event ms | **resumed ms** | events | in order | recovered |\n|---|---|---|---|---|---|---|---|\n")
	for i, p := range r.Reps {
		fmt.Fprintf(w, "| %d | %.2f | %.2f | %.2f | **%.2f** | %d | %v | %v |\n",
			i+1, p.PostS, p.UpgradeMs, p.FirstMs, p.ResumedMs, p.Received, p.InOrder, p.Recovered)
	}
	verdict := "every repetition: every event, in order, recovered"
	if !r.AllOK {
		verdict = "**not every repetition was complete, in order and recovered**"
	}
	fmt.Fprintf(w, "\nUpgrade → resumed: median **%.2f ms** (max %.2f) over %d repetitions; %s.\n\n", r.ResumedMs.P50, r.ResumedMs.Max, len(r.Reps), verdict)
}
