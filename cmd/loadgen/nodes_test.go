//go:build linux

package main

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestTargetSeveralURLs(t *testing.T) {
	valid := func() target {
		return target{URL: "ws://127.0.0.1:8081/ws, ws://127.0.0.1:8082/ws,ws://127.0.0.1:8083/socket.io/", Secret: "s",
			Src: "127.0.0.2-127.0.0.3", PerProc: 9000, ConnectRate: 1, DialWorkers: 1}
	}
	tg := valid()
	if err := tg.validate(); err != nil {
		t.Fatal(err)
	}
	if tg.nodes() != 3 {
		t.Fatalf("nodes() = %d, want 3", tg.nodes())
	}
	if want := []string{"http://127.0.0.1:8081", "http://127.0.0.1:8082", "http://127.0.0.1:8083"}; !slices.Equal(tg.apis, want) {
		t.Errorf("apis = %v, want %v", tg.apis, want)
	}
	if tg.API != "http://127.0.0.1:8081,http://127.0.0.1:8082,http://127.0.0.1:8083" {
		t.Errorf("API = %q", tg.API)
	}
	if got := tg.urls[2].Path; got != "/socket.io/" {
		t.Errorf("third URL's path = %q", got)
	}
	for i, want := range []int{0, 1, 2, 0, 1} {
		if got := tg.nodeOf(i); got != want {
			t.Errorf("nodeOf(%d) = %d, want %d", i, got, want)
		}
	}
	if err := tg.oneNode("replay"); err == nil || !strings.Contains(err.Error(), "replay measures one server") {
		t.Errorf("oneNode = %v, want a refusal", err)
	}
	// validate is idempotent: a second call (as the worker's) sees the same.
	if err := tg.validate(); err != nil || tg.nodes() != 3 || len(tg.apis) != 3 {
		t.Errorf("second validate: %v, %d nodes, %d apis", err, tg.nodes(), len(tg.apis))
	}

	for _, tc := range []struct {
		name, url, api, wantErr string
		apis                    []string
	}{
		{"apis given", "ws://a:1/ws,ws://b:2/ws", "http://x:1/, http://y:2", "", []string{"http://x:1", "http://y:2"}},
		{"too few apis", "ws://a:1/ws,ws://b:2/ws", "http://x:1", "--api: 1 URLs for 2", nil},
		{"bad second url", "ws://a:1/ws,http://b:2/ws", "", "--url \"http://b:2/ws\"", nil},
		{"empty element", "ws://a:1/ws,", "", "--url \"\"", nil},
		{"one url", "ws://a:1/ws", "", "", []string{"http://a:1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tg := valid()
			tg.URL, tg.API = tc.url, tc.api
			err := tg.validate()
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("validate() = %v, want an error containing %q", err, tc.wantErr)
			}
			if err == nil && !slices.Equal(tg.apis, tc.apis) {
				t.Errorf("apis = %v, want %v", tg.apis, tc.apis)
			}
			if err == nil && tg.oneNode("x") != nil && tg.nodes() == 1 {
				t.Error("oneNode refused one URL")
			}
		})
	}
}

func TestDialerBase(t *testing.T) {
	tg := target{URL: "ws://a:1/ws,ws://b:2/ws", Secret: "s", Src: "127.0.0.2", PerProc: 1, ConnectRate: 1, DialWorkers: 1}
	if err := tg.validate(); err != nil {
		t.Fatal(err)
	}
	d := &dialer{bases: tg.urls}
	for i, want := range []string{"a:1", "b:2", "a:1", "b:2"} {
		if got := d.base(i).Host; got != want {
			t.Errorf("base(%d) = %s, want %s", i, got, want)
		}
	}
}

func TestParsePostTo(t *testing.T) {
	for _, tc := range []struct {
		in       string
		nodes    int
		targeted bool
		want     string // String(); "" for an error
	}{
		{"", 3, false, "rr"},
		{"rr", 3, false, "rr"},
		{"2", 3, false, "node 2"},
		{"0", 1, false, "node 0"},
		{"3", 3, false, ""},
		{"-1", 3, false, ""},
		{"x", 3, false, ""},
		{"local", 3, false, ""}, // a broadcast has no recipient's node
		{"local", 3, true, "local"},
		{"cross", 3, true, "cross"},
		{"cross", 1, true, ""},
	} {
		p, err := parsePostTo(tc.in, tc.nodes, tc.targeted)
		if got := p.String(); (err != nil) != (tc.want == "") || err == nil && got != tc.want {
			t.Errorf("parsePostTo(%q, %d, %v) = %q, %v; want %q", tc.in, tc.nodes, tc.targeted, got, err, tc.want)
		}
	}
}

func TestPostToPick(t *testing.T) {
	rr, _ := parsePostTo("rr", 3, true)
	// Broadcasts (home 0): plain round-robin.
	for seq, want := range []int{0, 1, 2, 0, 1, 2} {
		if got := rr.pick(int64(seq), 0); got != want {
			t.Errorf("rr.pick(%d, 0) = %d, want %d", seq, got, want)
		}
	}
	// Webhooks: user seq mod users, on node user mod 3. Whatever the
	// number of users, each node takes a third of them and a third land
	// on the recipient's node.
	for _, users := range []int64{3, 7, 300, 1000} {
		per := make([]int, 3)
		local := 0
		const n = 3000
		for seq := int64(0); seq < n; seq++ {
			home := int((seq % users) % 3)
			node := rr.pick(seq, home)
			per[node]++
			if node == home {
				local++
			}
		}
		for i, c := range per {
			if c < n/3-n/30 || c > n/3+n/30 {
				t.Errorf("%d users: node %d got %d of %d", users, i, c, n)
			}
		}
		if local < n/3-n/30 || local > n/3+n/30 {
			t.Errorf("%d users: %d of %d to the recipient's node, want about a third", users, local, n)
		}
	}
	local, _ := parsePostTo("local", 3, true)
	cross, _ := parsePostTo("cross", 3, true)
	fixed, _ := parsePostTo("1", 3, true)
	for home := range 3 {
		if got := local.pick(5, home); got != home {
			t.Errorf("local.pick(home %d) = %d", home, got)
		}
		if got := cross.pick(5, home); got != (home+1)%3 {
			t.Errorf("cross.pick(home %d) = %d", home, got)
		}
		if got := fixed.pick(5, home); got != 1 {
			t.Errorf("fixed.pick(home %d) = %d", home, got)
		}
	}
}

func TestParsePIDs(t *testing.T) {
	for _, tc := range []struct {
		in    string
		nodes int
		req   bool
		want  []int
		err   string
	}{
		{"", 1, false, nil, ""},
		{"", 1, true, nil, "required"},
		{"42", 1, true, []int{42}, ""},
		{"1, 2,3", 3, true, []int{1, 2, 3}, ""},
		{"1,2", 3, false, nil, "2 pids for 3"},
		{"1,x", 2, false, nil, "bad pid"},
		{"0", 1, false, nil, "bad pid"},
	} {
		got, err := serverPIDs(tc.in, tc.nodes, tc.req)
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) || !slices.Equal(got, tc.want) {
			t.Errorf("serverPIDs(%q, %d, %v) = %v, %v; want %v, %q", tc.in, tc.nodes, tc.req, got, err, tc.want, tc.err)
		}
	}
}

func TestAddIntsMergeSeqs(t *testing.T) {
	if got := addInts([]int{1, 2}, []int{10, 20, 30}); !slices.Equal(got, []int{11, 22, 30}) {
		t.Errorf("addInts = %v", got)
	}
	if got := addInts[int64](nil, nil); got != nil {
		t.Errorf("addInts(nil, nil) = %v", got)
	}
	dst := []seqStat{{N: 1, Min: 5, Max: 5}, {}, {N: 2, Min: 3, Max: 9}}
	mergeSeqs(dst, []seqStat{{N: 2, Min: 2, Max: 7}, {N: 1, Min: 4, Max: 4}, {}, {N: 9}})
	want := []seqStat{{N: 3, Min: 2, Max: 7}, {N: 1, Min: 4, Max: 4}, {N: 2, Min: 3, Max: 9}}
	if !slices.Equal(dst, want) {
		t.Errorf("mergeSeqs = %v, want %v", dst, want)
	}
	if d := subDurations([]time.Duration{5, 7}, []time.Duration{1}); !slices.Equal(d, []time.Duration{4, 7}) {
		t.Errorf("subDurations = %v", d)
	}
}

// fd0 is the first descriptor of a testWorker's connections: high enough
// that none is open in the test process (drop closes its descriptor).
const fd0 = 60000

// testWorker is a worker with conns open on fds fd0.. for users 0..n-1,
// spread over nodes as the fleet spreads them. It has no epoll set.
func testWorker(n, nodes int) *worker {
	w := &worker{nodes: nodes, conns: make([]conn, fd0+n), epfd: -1}
	for u := range n {
		w.conns[fd0+u] = conn{open: true, user: int32(u), node: uint8(u % nodes)}
		w.open++
	}
	return w
}

func TestWorkerPerNodeBroadcasts(t *testing.T) {
	w := testWorker(6, 3) // users 0..5: nodes 0,1,2,0,1,2
	w.arm(100, 2, time.Second, "")
	now := time.Now().UnixNano()
	msg := func(seq int64, lat time.Duration) []byte {
		return fmt.Appendf(nil, `{"event":"newNotification","data":{"seq":%d,"sentAt":%d}}`, seq, now-int64(lat))
	}
	// Broadcast 100 reaches everyone; 101 all but user 4 (node 1).
	for u := range 6 {
		w.message(fd0+u, &w.conns[fd0+u], msg(100, time.Duration(u+1)*time.Millisecond), now)
		if u != 4 {
			w.message(fd0+u, &w.conns[fd0+u], msg(101, time.Millisecond), now)
		}
	}
	r := w.report(2)
	if !slices.Equal(r.NodeArmed, []int{2, 2, 2}) || !slices.Equal(r.NodeFrames, []int64{4, 3, 4}) || !slices.Equal(r.NodeMissing, []int64{0, 1, 0}) {
		t.Errorf("armed %v, frames %v, missing %v", r.NodeArmed, r.NodeFrames, r.NodeMissing)
	}
	if len(r.NodeSeqs) != 3 {
		t.Fatalf("%d node seq lists", len(r.NodeSeqs))
	}
	// Node 2 holds users 2 and 5: broadcast 100's last there took 6 ms.
	if s := r.NodeSeqs[2][0]; s.N != 2 || s.Max != int64(6*time.Millisecond) || s.Min != int64(3*time.Millisecond) {
		t.Errorf("node 2, seq 100: %+v", s)
	}
	if s := r.NodeSeqs[1][1]; s.N != 1 {
		t.Errorf("node 1, seq 101: %+v", s)
	}
	if r.Seqs[0].N != 6 || r.Seqs[0].Max != int64(6*time.Millisecond) {
		t.Errorf("seq 100 overall: %+v", r.Seqs[0])
	}
	if r.Gaps != 0 || r.Misrouted != 0 {
		t.Errorf("gaps %d, misrouted %d", r.Gaps, r.Misrouted)
	}
	// A lost connection counts on its node.
	w.drop(fd0+4, &w.conns[fd0+4])
	if r := w.report(2); !slices.Equal(r.NodeClosed, []int{0, 1, 0}) || !slices.Equal(r.NodeOpen, []int{2, 1, 2}) {
		t.Errorf("after a drop: closed %v, open %v", r.NodeClosed, r.NodeOpen)
	}
}

func TestWorkerTargeted(t *testing.T) {
	w := testWorker(4, 2)
	w.arm(10, 4, time.Second, "targeted")
	now := time.Now().UnixNano()
	c := &w.conns[fd0+2] // user 2
	w.message(fd0+2, c, xBody(12, now-int64(time.Millisecond), 2), now)
	w.message(fd0+2, c, xBody(12, now, 2), now) // a duplicate
	w.message(fd0+2, c, xBody(13, now, 3), now) // another user's
	w.message(fd0+2, c, xBody(10, now, 2), now) // out of order: no gap in this mode
	w.message(fd0+2, c, []byte(`{"data":{"seq":11,"sentAt":5}}`), now)
	r := w.report(0)
	if r.Frames != 4 || r.Misrouted != 1 || r.Gaps != 0 || r.Other != 1 {
		t.Errorf("frames %d, misrouted %d, gaps %d, other %d; want 4, 1, 0, 1", r.Frames, r.Misrouted, r.Gaps, r.Other)
	}
	if s := r.Seqs[2]; s.N != 2 || s.Min != 0 || s.Max != int64(time.Millisecond) {
		t.Errorf("seq 12: %+v", s)
	}
	if r.NodeSeqs != nil || !slices.Equal(r.NodeFrames, []int64{4, 0}) {
		t.Errorf("node seqs %v (want none for targeted), node frames %v", r.NodeSeqs, r.NodeFrames)
	}
	// One node: no per-node figures at all, as before.
	w1 := testWorker(2, 1)
	w1.arm(0, 1, time.Second, "")
	if r := w1.report(1); r.NodeArmed != nil || r.NodeFrames != nil || r.NodeMissing != nil || w1.ready().PerNode != nil {
		t.Errorf("one node reports per-node figures: %+v", r)
	}
}
