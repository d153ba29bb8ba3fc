package events

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Stream settings. Every service creates or updates the stream with the
// same values at start, so whichever starts first leaves it right.
const (
	// StreamSubjects is what the EVENTS stream stores: every event and
	// every dead letter.
	StreamSubjects = "events.>"
	// DuplicateWindow is how long JetStream remembers a Nats-Msg-Id: a
	// relay republishing within it (crash between publish and mark) is a
	// no-op. Later duplicates are caught by the consumers' processed_events.
	DuplicateWindow = 2 * time.Minute
	// StreamMaxAge is how long events are kept in the stream.
	StreamMaxAge = 7 * 24 * time.Hour
)

// Bus is a NATS connection, reconnecting forever, with the EVENTS stream in
// place. One per process, shared by its relay and consumers.
type Bus struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	logger *slog.Logger
}

// Connect dials NATS at rawURL and creates or updates the EVENTS stream. It
// retries with backoff until the stream is in place or ctx ends, so a
// service may start before NATS does (bound the wait with ctx). Once
// connected, the connection reconnects forever, logging each disconnect and
// reconnect once.
func Connect(ctx context.Context, rawURL string, logger *slog.Logger) (*Bus, error) {
	logger = logger.With("component", "events")
	safeURL := redactURL(rawURL)
	nc, err := nats.Connect(rawURL,
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(func(attempts int) time.Duration { return backoff(attempts, 100*time.Millisecond, 5*time.Second) }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				logger.Warn("nats connection lost, reconnecting", "url", safeURL, "err", err)
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) { logger.Info("nats reconnected", "url", safeURL) }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			logger.Warn("nats asynchronous error", "subject", subject, "err", err)
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("events: connect to nats %s: %w", safeURL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("events: jetstream: %w", err)
	}
	b := &Bus{nc: nc, js: js, logger: logger}
	for attempt := 1; ; attempt++ {
		err := b.ensureStream(ctx)
		if err == nil {
			break
		}
		if attempt == 1 {
			logger.Warn("events stream not ready, retrying", "url", safeURL, "err", err)
		}
		select {
		case <-ctx.Done():
			nc.Close()
			return nil, fmt.Errorf("events: nats %s: stream %s not ready: %w", safeURL, Stream, err)
		case <-time.After(backoff(attempt, 100*time.Millisecond, 2*time.Second)):
		}
	}
	logger.Info("events stream ready", "url", safeURL, "stream", Stream)
	return b, nil
}

func (b *Bus) ensureStream(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := b.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        Stream,
		Description: "Meshop domain events, events.<source>.<type>, and dead letters, events.dlq.<consumer>",
		Subjects:    []string{StreamSubjects},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      StreamMaxAge,
		Duplicates:  DuplicateWindow,
	})
	return err
}

// Close closes the connection. Stop the relay and consumers first.
func (b *Bus) Close() { b.nc.Close() }

// backoff is the delay before retry number attempt (from 1): exponential
// from base, capped at max, with ±20% jitter so instances spread out.
func backoff(attempt int, base, max time.Duration) time.Duration {
	d := base
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	return d - d/5 + time.Duration(rand.Int64N(int64(d/5)*2+1))
}

// redactURL hides passwords in a NATS URL (or list of URLs) for logs.
func redactURL(raw string) string {
	parts := strings.Split(raw, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil || u.User == nil {
			continue
		}
		if _, hasPassword := u.User.Password(); !hasPassword {
			u.User = url.User("xxxxx") // nats://<token>@host
		}
		parts[i] = u.Redacted()
	}
	return strings.Join(parts, ",")
}
