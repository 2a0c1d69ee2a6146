package main

import (
	"context"
	"encoding/json"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sidecar/sidecar/engine/auth"
)

// chromiumPath is Debian's Chromium, which .ci/run installs;
// SIDECAR_CHROMIUM names another.
func chromiumPath() string {
	if p := os.Getenv("SIDECAR_CHROMIUM"); p != "" {
		return p
	}
	return "/usr/bin/chromium"
}

// needBrowser skips when headless Chromium or playwright-core is missing.
// .ci/run installs both, so CI always runs the browser test.
func needBrowser(t *testing.T) string {
	t.Helper()
	needNode(t)
	bin := chromiumPath()
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("no Chromium at %s (apt-get install chromium, or set SIDECAR_CHROMIUM): the example page's browser test needs it", bin)
	}
	if _, err := os.Stat(filepath.Join(e2eDir, "node_modules", "playwright-core")); err != nil {
		t.Skip("testdata/e2e/node_modules/playwright-core is missing: run `make test` (it runs npm ci there)")
	}
	return bin
}

// artifactsDir is where the browser test leaves its screenshots:
// $SIDECAR_ARTIFACTS/example-page (kept; .ci/run sets it), else a
// temporary directory.
func artifactsDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if root := os.Getenv("SIDECAR_ARTIFACTS"); root != "" {
		dir = filepath.Join(root, "example-page")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// TestExamplePageInABrowser opens /socket-example.html in headless
// Chromium (testdata/e2e/page.mjs, playwright-core) against
// config.example.yaml, as a newcomer would: it connects as the tour's
// provider and sees the tour's webhook arrive, broadcasts and sends with
// the page's test API buttons and sees the stats, stacks without sideways
// scroll at 390 px, and explains a rejected or expired token without
// reconnecting, Disconnect still usable. Then presence: it watches u2 (a
// `ws` client in page.mjs) and its row follows u2 offline, online, busy,
// and offline again after presence.grace (300 ms here) with a last seen;
// it sets its own status and shows an error ack; and when its connection
// drops it reconnects with ?since= the last id it saw, gets the event it
// missed, shows resumed and watches u2 again. Each step is checked through
// the DOM and leaves a screenshot.
func TestExamplePageInABrowser(t *testing.T) {
	chromium := needBrowser(t)
	n := startExample(t, "SIDECAR_PRESENCE__GRACE=300ms")
	out := artifactsDir(t)
	t.Logf("screenshots in %s", out)
	bad, err := auth.Sign([]byte("another-secret-another-secret-0123456789"), map[string]any{"sub": "prov-1", "exp": time.Now().Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	expired, err := auth.Sign([]byte(n.cfg.Auth.JWTSecret), map[string]any{"sub": "prov-1", "exp": time.Now().Add(-time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := json.Marshal(map[string]any{
		"base":          "http://" + n.addr,
		"chromium":      chromium,
		"out":           out,
		"webhookSecret": n.cfg.Webhooks.Secrets[0],
		"userToken":     n.token(map[string]any{"sub": "prov-1", "role": "provider"}),
		"adminToken":    n.token(map[string]any{"sub": "ops", "role": "admin"}),
		"badToken":      bad,
		"expiredToken":  expired,
		"mintCommand":   "go run ./cmd/sidecar token --config config.example.yaml --sub prov-1 --role provider",
		"u2Token":       n.token(map[string]any{"sub": "u2"}),
		"graceMs":       n.cfg.Presence.Grace.Milliseconds(),
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "page.mjs", string(cfg))
	cmd.Dir = e2eDir
	cmd.Stderr = os.Stderr
	stdout, runErr := cmd.Output()
	var res struct {
		OK          bool              `json:"ok"`
		Error       string            `json:"error"`
		Screenshots map[string]string `json:"screenshots"`
		Facts       struct {
			Who            string `json:"who"`
			WebhookEvent   string `json:"webhookEvent"`
			BroadcastReply string `json:"broadcastAnswer"`
			StatsLine      string `json:"statsLine"`
			Phone          struct {
				InnerWidth  int `json:"innerWidth"`
				ScrollWidth int `json:"scrollWidth"`
			} `json:"phone"`
			BadToken     string `json:"bad-token"`
			ExpiredToken string `json:"expired-token"`
			Presence     struct {
				Before, Online, Busy, Offline string
				LastSeen                      string `json:"lastSeen"`
				GoneAfterMs                   int64  `json:"goneAfterMs"`
			} `json:"presence"`
			MyStatus string `json:"myStatus"`
			ErrorAck string `json:"errorAck"`
			Resumed  string `json:"resumed"`
			SinceURL string `json:"sinceUrl"`
		} `json:"facts"`
	}
	if err := json.Unmarshal(stdout, &res); err != nil {
		t.Fatalf("page.mjs: %v, printed %q (%v)", runErr, stdout, err)
	}
	if !res.OK || runErr != nil {
		t.Fatalf("the example page, in Chromium: %s\nscreenshots: %v", res.Error, res.Screenshots)
	}

	// What the screenshots show, as the DOM said when each was taken.
	f := res.Facts
	for _, c := range []struct{ what, got, want string }{
		{"connected as", f.Who, "as prov-1 (provider)"},
		{"the webhook's event", f.WebhookEvent, "Ana booked Haircut"},
		{"the broadcast's answer", f.BroadcastReply, `"delivered": 1`},
		{"the stats", f.StatsLine, "connections 1 · users 1"},
		{"the bad token's explanation", f.BadToken, "the server says: invalid token"},
		{"the expired token's explanation", f.ExpiredToken, "the server says: token expired"},
		{"the explanation's mint command", f.BadToken, "go run ./cmd/sidecar token --config config.example.yaml"},
		{"u2's row before it connects", f.Presence.Before, "offline"},
		{"u2's row once connected", f.Presence.Online, "online"},
		{"u2's row after its updateStatus", f.Presence.Busy, "busy"},
		{"u2's row after it left", f.Presence.Offline, "offline"},
		{"u2's row after it left", f.Presence.Offline, "last seen"},
		{"my status", f.MyStatus, "Status set to away (ok)."},
		{"the error ack", f.ErrorAck, "bad_request"},
		{"the reconnect's URL", f.SinceURL, "/ws?since="},
		{"the replay's end", f.Resumed, `"recovered":true`},
	} {
		if !strings.Contains(c.got, c.want) {
			t.Errorf("%s: %q, want it to contain %q", c.what, c.got, c.want)
		}
	}
	if grace := n.cfg.Presence.Grace.Milliseconds(); f.Presence.GoneAfterMs < grace*9/10 {
		t.Errorf("u2 showed offline %d ms after it left, before presence.grace (%d ms)", f.Presence.GoneAfterMs, grace)
	}
	if seen, err := time.Parse(time.RFC3339Nano, f.Presence.LastSeen); err != nil || time.Since(seen) > time.Minute {
		t.Errorf("u2's last seen %q (%v): want a time of this test", f.Presence.LastSeen, err)
	}
	if f.Phone.InnerWidth != 390 || f.Phone.ScrollWidth > 390 {
		t.Errorf("at 390 px: innerWidth %d, scrollWidth %d", f.Phone.InnerWidth, f.Phone.ScrollWidth)
	}
	// Each screenshot is a PNG of the size it was taken at: the phone's
	// 390 px wide (the whole page, so at least a screen tall), the others
	// the 1280 px window.
	for name, wantWidth := range map[string]int{"webhook-received": 1280, "broadcast": 1280, "phone-390": 390, "bad-token": 1280, "expired-token": 1280,
		"presence-online": 1280, "presence-offline": 1280, "resumed": 1280} {
		path := res.Screenshots[name]
		fh, err := os.Open(path)
		if err != nil {
			t.Errorf("screenshot %s: %v", name, err)
			continue
		}
		img, err := png.DecodeConfig(fh)
		fh.Close()
		if err != nil || img.Width != wantWidth || img.Height < 600 {
			t.Errorf("screenshot %s (%s): %dx%d (%v), want %d wide", name, path, img.Width, img.Height, err, wantWidth)
		}
	}
}
