package forward

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/sidecar/sidecar/engine/store"
)

// maxIdle bounds how long the scheduler sleeps without looking at the
// outbox, in case the wall clock jumps.
const maxIdle = time.Minute

// drainLimit is how much of a response body is read so the connection can
// be reused; the body itself is ignored.
const drainLimit = 64 << 10

// Run delivers due items with Concurrency workers until ctx is done, then
// waits for every worker to return and returns nil. A delivery cut short by
// ctx is not counted as a failure: the item stays due and is tried first on
// the next Run. Run returns an error only when the store fails to answer a
// read (it was closed under Run), or ErrRunning.
func (f *Forwarder) Run(ctx context.Context) error {
	if !f.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer f.running.Store(false)
	if f.ownClient {
		defer f.client.CloseIdleConnections()
	}
	g, ctx := errgroup.WithContext(ctx)
	work := make(chan job) // unbuffered: an item is handed only to an idle worker
	for range f.cfg.Concurrency {
		// Stopped when the scheduler closes work (on ctx done or error).
		g.Go(func() error {
			for j := range work {
				f.deliver(ctx, j)
			}
			return nil
		})
	}
	// Stopped by ctx; closes work so the workers stop too.
	g.Go(func() error {
		defer close(work)
		return f.schedule(ctx, work)
	})
	return g.Wait()
}

// job is one due item handed to a worker.
type job struct {
	id string
}

// schedule hands due items to workers, then sleeps until the next item is
// due, an Enqueue or a finished delivery pokes it, or ctx is done.
func (f *Forwarder) schedule(ctx context.Context, work chan<- job) error {
	timer := time.NewTimer(maxIdle)
	defer timer.Stop()
	batch := make([]job, 0, f.cfg.Concurrency)
	for {
		var next time.Time
		var err error
		batch, next, err = f.due(batch[:0])
		if err != nil {
			return fmt.Errorf("forward: scan outbox: %w", err)
		}
		for i, j := range batch {
			select {
			case work <- j:
			case <-ctx.Done():
				for _, j := range batch[i:] {
					f.release(j.id)
				}
				return nil
			}
		}
		if len(batch) == cap(batch) {
			continue // the batch was full: more may be due now
		}
		wait := maxIdle
		if !next.IsZero() {
			wait = min(wait, max(next.Sub(f.now()), 0))
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return nil
		case <-f.wake:
		case <-timer.C:
		}
	}
}

// due appends to jobs up to cap(jobs) items that are due and not held,
// marking them held (in flight). next is when the earliest other item becomes
// due (zero if none); it is only meaningful when jobs is not full.
func (f *Forwarder) due(jobs []job) (_ []job, next time.Time, err error) {
	now := f.now()
	nowNanos := now.UnixNano()
	f.mu.Lock()
	defer f.mu.Unlock()
	err = f.ob.Scan(func(id string, at int64) bool {
		if at > nowNanos {
			if next.IsZero() || time.Unix(0, at).Before(next) {
				next = time.Unix(0, at)
			}
			return false // items come in due order: nothing further is due
		}
		if until, held := f.hold[id]; held {
			if until.IsZero() || until.After(now) {
				if !until.IsZero() && (next.IsZero() || until.Before(next)) {
					next = until
				}
				return true
			}
		}
		f.hold[id] = time.Time{}
		jobs = append(jobs, job{id: id})
		return len(jobs) < cap(jobs)
	})
	return jobs, next, err
}

// release drops the hold on id, so the scheduler may hand it out again.
func (f *Forwarder) release(id string) {
	f.mu.Lock()
	delete(f.hold, id)
	f.mu.Unlock()
}

// holdUntil keeps id from being tried before t: its outcome could not be
// written to the store, whose due entry still says "now".
func (f *Forwarder) holdUntil(id string, t time.Time) {
	f.mu.Lock()
	f.hold[id] = t
	f.mu.Unlock()
}

// outcome of one attempt.
type outcome int

const (
	outcomeRetry outcome = iota
	outcomeDelivered
	outcomeGone
	outcomeCancelled
)

// deliver makes one attempt for j and records its outcome in the store.
func (f *Forwarder) deliver(ctx context.Context, j job) {
	defer f.poke() // the scheduler may have skipped j, or be waiting on a worker
	rec, ok, err := f.ob.Load(j.id)
	var body []byte
	if err == nil && ok {
		body, err = f.ob.Body(j.id)
	}
	switch {
	case errors.Is(err, store.ErrUnreadable):
		rec.ID = j.id // a record that does not decode is all zero
		f.dropUnreadable(&rec, err)
		return
	case err != nil:
		f.log.Error("read outbox item", "id", j.id, "err", err)
		f.holdUntil(j.id, f.now().Add(f.cfg.InitialBackoff))
		return
	case !ok:
		f.release(j.id) // delivered or dropped since it was listed
		return
	}
	res, retryAfter, desc := f.attempt(ctx, &rec, body)
	if res == outcomeRetry {
		rec.LastErr = desc
	}
	f.finish(&rec, res, retryAfter)
	if f.log.Enabled(ctx, slog.LevelDebug) {
		f.log.Debug("forward attempt", "id", rec.ID, "event_id", rec.EventID, "attempts", rec.Attempts, "result", desc)
	}
}

// dropUnreadable removes an item that cannot be read back (the file was
// edited or damaged): it can never be delivered. Counted as Failed.
func (f *Forwarder) dropUnreadable(rec *store.OutboxRecord, err error) {
	f.log.Error("dropping unreadable outbox item", "id", rec.ID, "err", err)
	if rmErr := f.ob.Remove(rec.ID); rmErr != nil {
		f.storeFailed(rec.ID, 1, f.now(), rmErr)
		return
	}
	f.removed(rec)
	f.failed.Add(1)
}

// removed releases the hold on rec and its room in the outbox, once it has
// been removed from the store.
func (f *Forwarder) removed(rec *store.OutboxRecord) {
	f.release(rec.ID)
	f.budget.release(rec.User, charge(rec.Size))
}

// attempt POSTs body for rec once. desc says what happened, for logs and
// the record.
func (f *Forwarder) attempt(parent context.Context, rec *store.OutboxRecord, body []byte) (res outcome, retryAfter time.Duration, desc string) {
	ctx, cancel := context.WithTimeout(parent, f.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, rec.URL, bytes.NewReader(body))
	if err != nil {
		return outcomeRetry, 0, err.Error()
	}
	ts := f.now()
	if f.cfg.Signer != nil {
		for k, v := range f.cfg.Signer.Headers(rec.ID, ts, body) {
			req.Header[k] = v
		}
	} else {
		req.Header.Set("Webhook-Id", rec.ID)
		req.Header.Set("Webhook-Timestamp", strconv.FormatInt(ts.Unix(), 10))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", userAgent)

	resp, err := f.client.Do(req)
	if err != nil {
		if parent.Err() != nil {
			return outcomeCancelled, 0, "cancelled"
		}
		return outcomeRetry, 0, err.Error()
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, drainLimit))
	_ = resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return outcomeDelivered, 0, resp.Status
	case resp.StatusCode == http.StatusGone:
		return outcomeGone, 0, resp.Status
	}
	return outcomeRetry, parseRetryAfter(resp.Header.Get("Retry-After"), ts), resp.Status
}

// finish records the outcome of an attempt on rec and releases its hold.
func (f *Forwarder) finish(rec *store.OutboxRecord, res outcome, retryAfter time.Duration) {
	now := f.now()
	switch res {
	case outcomeCancelled:
		f.release(rec.ID) // stays due; tried first on the next Run
		return
	case outcomeDelivered, outcomeGone:
		if err := f.ob.Remove(rec.ID); err != nil {
			f.storeFailed(rec.ID, rec.Attempts+1, now, err)
			return
		}
		f.removed(rec)
		if res == outcomeDelivered {
			f.delivered.Add(1)
			return
		}
		f.gone.Add(1)
		f.log.Warn("app answered 410 Gone: item dropped", "id", rec.ID, "event_id", rec.EventID, "url", rec.URL)
		return
	}

	rec.Attempts++
	delay := f.jitter(backoffCeiling(f.cfg.InitialBackoff, f.cfg.MaxBackoff, rec.Attempts))
	delay = max(delay, min(retryAfter, f.cfg.MaxBackoff))
	nextAt := now.Add(delay)
	if nextAt.After(rec.Created.Add(f.cfg.RetryHorizon)) {
		if err := f.ob.Remove(rec.ID); err != nil {
			f.storeFailed(rec.ID, rec.Attempts, now, err)
			return
		}
		f.removed(rec)
		f.failed.Add(1)
		f.log.Warn("retry horizon passed: item dropped", "id", rec.ID, "event_id", rec.EventID,
			"url", rec.URL, "attempts", rec.Attempts, "horizon", f.cfg.RetryHorizon)
		return
	}
	rec.Due = nextAt.UnixNano()
	if err := f.ob.Reschedule(rec.ID, rec.Due, rec.Attempts, rec.LastErr); err != nil {
		f.storeFailed(rec.ID, rec.Attempts, now, err)
		return
	}
	f.release(rec.ID)
	f.retried.Add(1)
}

// storeFailed handles an outcome the store refused to record (disk full):
// the item keeps its old state on disk, so it is held in memory for a
// backoff instead of being retried at once, over and over.
// failures sizes the hold like the backoff after that many failures.
func (f *Forwarder) storeFailed(id string, failures int, now time.Time, err error) {
	f.log.Error("record forward outcome", "id", id, "err", err)
	f.holdUntil(id, now.Add(backoffCeiling(f.cfg.InitialBackoff, f.cfg.MaxBackoff, failures)))
}

// parseRetryAfter reads a Retry-After header: delay seconds or an HTTP date.
// Anything else is 0.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 || secs > int64(365*24*time.Hour/time.Second) {
			return 0
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
