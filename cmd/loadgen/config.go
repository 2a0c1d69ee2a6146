//go:build linux

package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"
)

// target is what every subcommand needs to reach a server and to spread
// connections over processes and source addresses.
type target struct {
	URL         string        // ws://host:port/ws, or several comma-separated: one per node
	API         string        // http://host:port (one per URL), derived from URL when empty
	Secret      string        // HS256 secret to mint tokens with
	Token       string        // one static token for every connection
	TokenCmd    string        // shell command printing a token; {user} is replaced
	APIKey      string        // Bearer key for /api/*
	UserPrefix  string        // user ids are prefix + global index
	Src         string        // source address range, "127.0.0.2-127.0.0.250"
	PerProc     int           // connections per worker process
	ConnectRate int           // new connections per second, all workers together
	DialWorkers int           // concurrent handshakes per worker
	Retries     int           // extra attempts per connection
	DialTimeout time.Duration // per attempt, handshake included
	ReadyWait   time.Duration // how long connecting may take in all
	Timeout     time.Duration // hard limit on the whole command; workers die with it
	Batch       time.Duration // workers pause this long after reading, to read in batches

	// Set by validate: the nodes, in --url order. Connection i (its global
	// index) goes to node i mod len(urls).
	urls []*url.URL
	apis []string
}

func (t *target) register(fs *flag.FlagSet) {
	fs.StringVar(&t.URL, "url", "ws://127.0.0.1:8080/ws", "WebSocket URL; ?token=<JWT> is appended. Several, comma-separated, are the nodes of a cluster: connection i goes to the (i mod n)th")
	fs.StringVar(&t.API, "api", "", "HTTP base URL for /api/* (default: from --url); with several --url, one per URL, comma-separated")
	fs.StringVar(&t.Secret, "secret", firstEnv("LOADGEN_SECRET", "SIDECAR_AUTH__JWT_SECRET"), "HS256 secret for minting tokens (env LOADGEN_SECRET, SIDECAR_AUTH__JWT_SECRET)")
	fs.StringVar(&t.Token, "token", "", "use this token for every connection instead of minting")
	fs.StringVar(&t.TokenCmd, "token-cmd", "", "sh command printing a token, run per connection; {user} is replaced by the user id")
	fs.StringVar(&t.APIKey, "api-key", firstKey(firstEnv("LOADGEN_API_KEY", "SIDECAR_API__KEYS")), "API key for /api/* (env LOADGEN_API_KEY, first of SIDECAR_API__KEYS)")
	fs.StringVar(&t.UserPrefix, "user-prefix", "u", "user id prefix: connection i is user <prefix><i>")
	fs.StringVar(&t.Src, "src", "127.0.0.2-127.0.0.254", "source addresses, a range a.b.c.x-a.b.c.y or a comma list")
	fs.IntVar(&t.PerProc, "per-proc", 9000, "connections per worker process (open-file limit is 20000)")
	fs.IntVar(&t.ConnectRate, "connect-rate", 2000, "connections opened per second, all workers together")
	fs.IntVar(&t.DialWorkers, "dial-workers", 64, "concurrent handshakes per worker")
	fs.IntVar(&t.Retries, "retries", 5, "extra attempts for a connection that fails")
	fs.DurationVar(&t.DialTimeout, "dial-timeout", 10*time.Second, "per attempt, handshake included")
	fs.DurationVar(&t.ReadyWait, "ready-wait", 3*time.Minute, "how long connecting may take in all")
	fs.DurationVar(&t.Timeout, "timeout", 20*time.Minute, "hard limit on the whole command")
	fs.DurationVar(&t.Batch, "batch", 500*time.Microsecond, "after reading, a worker pauses this long so frames are read in batches (receipt times are late by up to this); 0 reads each as it comes")
}

func (t *target) validate() error {
	t.urls, t.apis = nil, nil
	for _, raw := range strings.Split(t.URL, ",") {
		raw = strings.TrimSpace(raw)
		u, err := url.Parse(raw)
		if err != nil || u.Scheme != "ws" || u.Host == "" {
			return fmt.Errorf("--url %q: want ws://host:port/path (wss is not supported), or several comma-separated", raw)
		}
		t.urls = append(t.urls, u)
	}
	if len(t.urls) > 255 {
		return fmt.Errorf("--url: %d URLs, at most 255", len(t.urls))
	}
	if t.API == "" {
		for _, u := range t.urls {
			t.apis = append(t.apis, "http://"+u.Host)
		}
		t.API = strings.Join(t.apis, ",")
	} else {
		for _, a := range strings.Split(t.API, ",") {
			t.apis = append(t.apis, strings.TrimRight(strings.TrimSpace(a), "/"))
		}
		if len(t.apis) != len(t.urls) {
			return fmt.Errorf("--api: %d URLs for %d --url: want one per --url", len(t.apis), len(t.urls))
		}
	}
	if t.Secret == "" && t.Token == "" && t.TokenCmd == "" {
		return errors.New("no way to get tokens: set --secret (or SIDECAR_AUTH__JWT_SECRET), --token or --token-cmd")
	}
	if _, err := parseSrc(t.Src); err != nil {
		return err
	}
	if t.PerProc < 1 || t.PerProc > 19000 {
		return fmt.Errorf("--per-proc %d: want 1..19000", t.PerProc)
	}
	if t.ConnectRate < 1 || t.DialWorkers < 1 {
		return errors.New("--connect-rate and --dial-workers must be positive")
	}
	return nil
}

// nodes is how many servers the connections are spread over.
func (t *target) nodes() int { return len(t.urls) }

// nodeOf is the node that connection i (its global index) goes to.
func (t *target) nodeOf(i int) int { return i % len(t.urls) }

// oneNode refuses several --url for a subcommand that measures one server.
func (t *target) oneNode(cmd string) error {
	if len(t.urls) > 1 {
		return fmt.Errorf("--url: %s measures one server; got %d URLs", cmd, len(t.urls))
	}
	return nil
}

// workerArgs are the flags a child needs; the secret travels in the
// environment so that it does not show in ps.
func (t *target) workerArgs() []string {
	return []string{
		"--url", t.URL, "--token", t.Token, "--token-cmd", t.TokenCmd,
		"--user-prefix", t.UserPrefix, "--src", t.Src,
		"--dial-workers", fmt.Sprint(t.DialWorkers), "--retries", fmt.Sprint(t.Retries),
		"--dial-timeout", t.DialTimeout.String(), "--timeout", t.Timeout.String(),
		"--batch", t.Batch.String(),
	}
}

// parseSrc reads "127.0.0.2-127.0.0.250" (last octet varies) or "a,b,c".
func parseSrc(s string) ([]net.IP, error) {
	var ips []net.IP
	if lo, hi, ok := strings.Cut(s, "-"); ok {
		a, b := net.ParseIP(lo).To4(), net.ParseIP(hi).To4()
		if a == nil || b == nil || a[0] != b[0] || a[1] != b[1] || a[2] != b[2] || a[3] > b[3] {
			return nil, fmt.Errorf("--src %q: want a.b.c.x-a.b.c.y", s)
		}
		for x := int(a[3]); x <= int(b[3]); x++ {
			ips = append(ips, net.IPv4(a[0], a[1], a[2], byte(x)).To4())
		}
		return ips, nil
	}
	for _, f := range strings.Split(s, ",") {
		ip := net.ParseIP(strings.TrimSpace(f))
		if ip == nil {
			return nil, fmt.Errorf("--src: bad address %q", f)
		}
		ips = append(ips, ip)
	}
	return ips, nil
}

func firstEnv(keys ...string) string {
	for _, k := range keys {
		if v := os.Getenv(k); v != "" {
			return v
		}
	}
	return ""
}

func firstKey(list string) string {
	k, _, _ := strings.Cut(list, ",")
	return strings.TrimSpace(k)
}
