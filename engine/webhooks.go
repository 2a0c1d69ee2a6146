package engine

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/sidecar/sidecar/engine/webhook"
)

// dedupWebhook namespaces webhook ids among the ids the store remembers
// (stored as "wh:wh:<id>", the store adding its own prefix). Changing it
// would forget, on upgrade, the ids of the last dedup_ttl.
const dedupWebhook = "wh:"

// webhookBody is the Standard Webhooks payload the app sends. Data is
// decoded in the same pass, straight into what the rules read.
type webhookBody struct {
	Type      string `json:"type"`
	Timestamp string `json:"timestamp"`
	Data      any    `json:"data"`
}

// webhookShape is the body a webhook must have, for 400 messages.
const webhookShape = `a JSON object {"type": "booking.created", "timestamp": "...", "data": {...}} whose "type" is a string`

// serveWebhook is POST /webhooks. The order matters:
//  1. the body, at most webhooks.max_body_bytes (413);
//  2. the signature over the raw bytes (400 malformed headers, 401 bad
//     signature or stale timestamp);
//  3. the JSON shape (400);
//  4. a pipeline slot (429 with Retry-After: nothing is remembered, so the
//     retry goes through);
//  5. the webhook-id, atomically (a retry is answered 200 and does nothing);
//  6. the rules, and 202 with the names of the rules whose decisions were
//     carried out ("matched"), and those that failed at run time or whose
//     output could not be encoded, each with why ("errors": [{rule, kind,
//     message}]: the payload lacks what a rule needs, or a rule has a bug;
//     a retry would fail the same way, so it is accepted, counted and
//     told, not refused).
//
// If what the rules decided cannot be kept (a forward cannot be queued: 503
// "overloaded" when the outbox is full; or the node is stopping), the id is
// forgotten again and the answer is 503 with Retry-After, so the sender
// retries.
func (e *Engine) serveWebhook(w http.ResponseWriter, r *http.Request) {
	if e.cfg.Webhooks == nil {
		httpError(w, http.StatusNotFound, "not_configured", "no webhook secrets are configured (webhooks.secrets)")
		return
	}
	body, ok := e.readBody(w, r, e.cfg.Webhook.MaxBodyBytes)
	if !ok {
		e.metrics.webhook(http.StatusRequestEntityTooLarge)
		return
	}
	id, err := e.cfg.Webhooks.Verify(r.Header, body)
	if err != nil {
		status := webhook.Status(err)
		e.metrics.webhook(status)
		httpError(w, status, "bad_signature", err.Error())
		return
	}
	var wb webhookBody
	if err := json.Unmarshal(body, &wb); err != nil {
		e.metrics.webhook(http.StatusBadRequest)
		httpError(w, http.StatusBadRequest, "bad_request", jsonProblem(err, body, "the body", webhookShape))
		return
	}
	if wb.Type == "" {
		e.metrics.webhook(http.StatusBadRequest)
		httpError(w, http.StatusBadRequest, "bad_request", `the body has no "type"; want `+webhookShape)
		return
	}
	select {
	case e.webhookSlots <- struct{}{}:
		defer func() { <-e.webhookSlots }()
	default:
		e.metrics.webhook(http.StatusTooManyRequests)
		w.Header().Set("Retry-After", retryAfterSec)
		httpError(w, http.StatusTooManyRequests, "overloaded", "too many webhooks in flight; retry later")
		return
	}
	first, err := e.cfg.Store.MarkSeen(dedupWebhook+id, e.cfg.Webhook.DedupTTL)
	if err != nil {
		e.metrics.webhook(http.StatusServiceUnavailable)
		e.log.Error("remember webhook id", "id", id, "err", err)
		w.Header().Set("Retry-After", retryAfterSec)
		httpError(w, http.StatusServiceUnavailable, "store_unavailable", "cannot record the webhook id; retry later")
		return
	}
	if !first {
		e.metrics.webhook(http.StatusOK)
		writeJSON(w, http.StatusOK, map[string]any{"id": id, "duplicate": true})
		return
	}
	ev := &Event{ID: id, Type: wb.Type, Source: SourceWebhook, Time: time.Now(), Data: wb.Data}
	out, err := e.process(r.Context(), ev)
	if err != nil {
		// Nothing was sent: forwards go first, and a node that can no
		// longer publish says so before the first emit. Forget the id so
		// the sender's retry, here or on another node, delivers it all.
		// (Only if the node stops between two emits of one webhook has the
		// first gone out; the retry then sends it again: at least once.)
		if uerr := e.cfg.Store.Unmark(dedupWebhook + id); uerr != nil {
			e.log.Error("forget webhook id", "id", id, "err", uerr)
		}
		e.metrics.webhook(http.StatusServiceUnavailable)
		w.Header().Set("Retry-After", retryAfterSec)
		if errors.Is(err, ErrOverloaded) {
			httpError(w, http.StatusServiceUnavailable, "overloaded", "the event cannot be kept now (the outbox to the app is full); retry later")
			return
		}
		e.log.Error("webhook not processed", "id", id, "type", wb.Type, "err", err)
		httpError(w, http.StatusServiceUnavailable, "unavailable", "the event could not be kept; retry later")
		return
	}
	e.metrics.webhook(http.StatusAccepted)
	writeJSON(w, http.StatusAccepted, map[string]any{"id": id, "type": wb.Type, "matched": out.matched, "errors": out.errors})
}
