package engine

import (
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/sidecar/sidecar/engine/store"
)

// fillDisk makes writes to files past their current size fail with EFBIG,
// as a full disk makes them fail (RLIMIT_FSIZE is process-wide: not for
// parallel tests). The returned func frees the space; it also runs at
// cleanup.
func fillDisk(t *testing.T, path string) (free func()) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	free = func() { syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old) }
	t.Cleanup(free)
	full := old
	full.Cur = uint64(fi.Size()) + 8
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &full); err != nil {
		t.Fatal(err)
	}
	return free
}

// With the disk full, delivery and presence go on, what cannot be kept says
// so (a status update is refused, /readyz is 503 naming the store), and it
// all recovers when space frees.
func TestDiskFullDeliveryGoesOn(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.db")
	st, err := store.Open(path, store.Options{Sync: "always"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	n := startNode(t, func(c *Config) {
		c.Store, c.PresenceStore, c.Streams = st, st, st.Streams(100, time.Hour)
	})
	c := n.dial("u1")
	publish(t, n, "newNotification", "kept", Target{Users: []string{"u1"}})
	since := c.mustEvent("newNotification")["id"].(string)
	time.Sleep(100 * time.Millisecond) // u1's session is written

	free := fillDisk(t, path)
	publish(t, n, "newNotification", "not kept", Target{Users: []string{"u1"}})
	if m := c.mustEvent("newNotification"); m["data"] != "not kept" {
		t.Fatalf("delivery with the disk full: %v", m)
	}
	c.send(map[string]any{"event": "updateStatus", "data": map[string]any{"status": "busy"}, "ack": 1})
	if ack := c.mustAck(1); ackCode(ack) != ackInternal {
		t.Fatalf("updateStatus with the disk full: %v, want an internal error ack", ack)
	}
	n.dial("u2")
	waitPresence(t, n.router, "u2", eventOnline)
	if status, body := n.request("GET", "/readyz", "", nil); status != http.StatusServiceUnavailable ||
		body["checks"].(map[string]any)["store"].(map[string]any)["ready"] != false {
		t.Fatalf("/readyz with the disk full = %d %v", status, body)
	}
	if got := counterValue(n.e.metrics.replayStoreErrors); got < 1 {
		t.Fatalf("replay store errors counted %v", got)
	}

	free()
	publish(t, n, "newNotification", "kept again", Target{Users: []string{"u1"}})
	c.mustEvent("newNotification")
	if status, body := n.request("GET", "/readyz", "", nil); status != http.StatusOK {
		t.Fatalf("/readyz once space freed = %d %v", status, body)
	}
	c.send(map[string]any{"event": "updateStatus", "data": map[string]any{"status": "busy"}, "ack": 2})
	if ack := c.mustAck(2); ack["ok"] != true {
		t.Fatalf("updateStatus once space freed: %v", ack)
	}
	// u2's session, refused with the disk full, is kept with the next
	// change: after a crash u2 would otherwise be online for good.
	n.dial("u3")
	waitFor(t, 2*time.Second, "u2's and u3's sessions stored", func() bool {
		ss, _ := st.Sessions()
		var users []string
		for _, s := range ss {
			users = append(users, s.User)
		}
		return slices.Contains(users, "u2") && slices.Contains(users, "u3")
	})
	// The replay says what it lost: the event that was not kept.
	r := n.dialSince("u1", since)
	if evs, recovered := r.replayed(); len(evs) != 1 || evs[0]["data"] != "kept again" || recovered {
		t.Fatalf("replay after the full disk: %v recovered=%v, want the one kept, not recovered", evs, recovered)
	}
}
