package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/sidecar/sidecar/config"
	"github.com/sidecar/sidecar/engine/webhook"
)

// runWebhook signs an event with the first of webhooks.secrets, as the app
// would, posts it to a running sidecar and prints the answer. It is the
// shortest way to see a rule fire. With --print-secret it prints that
// secret instead, for code that signs on its own.
func runWebhook(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("webhook")
	path := fs.String("config", "", "config file whose webhooks.secrets signs the request")
	url := fs.String("url", "", "webhook endpoint (default: http://127.0.0.1<listen port>/webhooks)")
	typ := fs.String("type", "", "event type, e.g. booking.created")
	data := fs.String("data", "{}", "the event's data as JSON, or @file to read it from a file")
	id := fs.String("id", "", "webhook-id (default: a random msg_ id); repeat one to see a retry dropped")
	printSecret := fs.Bool("print-secret", false, "print the secret it signs with (webhooks.secrets[0]) and post nothing, e.g.\nexport WEBHOOK_SECRET=$(sidecar webhook --config config.example.yaml --print-secret)")
	if ok, err := parseFlags(fs, args, stdout, stderr); !ok {
		return err
	}
	if *typ == "" && !*printSecret {
		fmt.Fprintln(stderr, "sidecar webhook: --type is required")
		return errReported
	}
	cfg, _, err := config.Load(*path, os.Environ())
	if err != nil {
		return err
	}
	if len(cfg.Webhooks.Secrets) == 0 {
		return fmt.Errorf("webhooks.secrets is empty: nothing to sign with")
	}
	if *printSecret {
		// For an app's own signing code in development (the Node snippet
		// of README.md reads WEBHOOK_SECRET); alone on stdout, as token's
		// JWT is.
		fmt.Fprintln(stdout, cfg.Webhooks.Secrets[0])
		return nil
	}
	signer, err := webhook.NewSigner(cfg.Webhooks.Secrets[0])
	if err != nil {
		return fmt.Errorf("webhooks.secrets[0]: %w", err)
	}
	raw := []byte(*data)
	if strings.HasPrefix(*data, "@") {
		if raw, err = os.ReadFile((*data)[1:]); err != nil {
			return err
		}
	}
	if !json.Valid(raw) {
		return fmt.Errorf("--data is not valid JSON")
	}
	body, _ := json.Marshal(map[string]any{
		"type":      *typ,
		"timestamp": time.Now().UTC().Format(time.RFC3339),
		"data":      json.RawMessage(raw),
	})
	if *id == "" {
		var b [12]byte
		rand.Read(b[:])
		*id = "msg_" + hex.EncodeToString(b[:])
	}
	if *url == "" {
		*url = "http://" + localAddr(cfg.Listen) + "/webhooks"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, *url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	for k, v := range signer.Headers(*id, time.Now(), body) {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	fmt.Fprintf(stdout, "%s %s", resp.Status, answer)
	if resp.StatusCode >= 300 {
		return errReported
	}
	return nil
}

// localAddr turns a listen address into one to dial: ":8080" → 127.0.0.1:8080.
func localAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
