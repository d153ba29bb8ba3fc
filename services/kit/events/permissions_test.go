package events

import (
	"context"
	"errors"
	"log/slog"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshop/meshop/localenv"
)

// The embedded NATS of local runs and tests authorizes events (issue 11):
// no anonymous clients, and each service publishes only its own subjects.

// connectAs connects a Bus with rawURL's credentials, logging to logs, and
// closes it when the test ends.
func connectAs(t *testing.T, rawURL string, logs *localenv.LogBuffer) *Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bus, err := Connect(ctx, rawURL, slog.New(slog.NewJSONHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bus.Close)
	return bus
}

func password(t *testing.T, rawURL string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	pw, ok := u.User.Password()
	if !ok || pw == "" {
		t.Fatalf("URL %s carries no password", u.Redacted())
	}
	return pw
}

func TestNATSRefusesClientsWithoutCredentials(t *testing.T) {
	n := localenv.NATST(t)
	if strings.Contains(n.Addr(), "@") {
		t.Fatalf("Addr() = %s, want no credentials", n.Addr())
	}
	wrong, err := url.Parse(n.ServiceURL("order"))
	if err != nil {
		t.Fatal(err)
	}
	wrong.User = url.UserPassword("order", "not-the-password")
	for name, rawURL := range map[string]string{"anonymous": n.Addr(), "wrong password": wrong.String()} {
		nc, err := nats.Connect(rawURL, nats.Timeout(5*time.Second))
		if err == nil {
			nc.Close()
			t.Errorf("%s: connected, want refused", name)
		} else if !errors.Is(err, nats.ErrAuthorization) {
			t.Errorf("%s: err = %v, want %v", name, err, nats.ErrAuthorization)
		}
	}
	// The kit's Connect keeps trying, and gives up when its context ends.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if bus, err := Connect(ctx, n.Addr(), slog.New(slog.DiscardHandler)); err == nil {
		bus.Close()
		t.Error("events.Connect without credentials succeeded")
	}
	// Each service's own credentials are accepted.
	for _, svc := range localenv.NATSServices {
		nc, err := nats.Connect(n.ServiceURL(svc))
		if err != nil {
			t.Errorf("%s's credentials refused: %v", svc, err)
			continue
		}
		nc.Close()
	}
}

func TestServicePublishesOnlyItsOwnEvents(t *testing.T) {
	n := localenv.NATST(t)
	logs := &localenv.LogBuffer{}
	// order comes first on a fresh server, so order's user creates EVENTS;
	// payment's then updates it.
	order := connectAs(t, n.ServiceURL("order"), logs)
	connectAs(t, n.ServiceURL("payment"), &localenv.LogBuffer{})
	admin := connectAs(t, n.AdminURL(), &localenv.LogBuffer{})
	if pw := password(t, n.ServiceURL("order")); strings.Contains(logs.String(), pw) {
		t.Errorf("the events log shows order's NATS password:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "events stream ready") {
		t.Fatalf("no 'events stream ready' line in:\n%s", logs.String())
	}

	ctx := context.Background()
	ack, err := order.js.Publish(ctx, Subject("order", OrderCreated), []byte(`{"id":"o-1"}`))
	if err != nil {
		t.Fatalf("order publishing %s: %v", Subject("order", OrderCreated), err)
	}
	if ack.Stream != Stream {
		t.Errorf("PubAck from stream %q, want %s", ack.Stream, Stream)
	}

	// A forged payment event: the server drops it and tells the client
	// asynchronously, so the JetStream publish gets no PubAck.
	forged := Subject("payment", PaymentSucceeded)
	pubCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := order.js.Publish(pubCtx, forged, []byte(`{"id":"forged"}`), jetstream.WithMsgID("forged-1")); err == nil {
		t.Fatalf("order publishing %s succeeded, want refused", forged)
	}
	// Nor does a plain core-NATS publish get in.
	if err := order.nc.Publish(forged, []byte(`{"id":"forged-2"}`)); err != nil {
		t.Fatal(err)
	}
	if err := order.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// Nor another consumer's dead letters.
	if err := order.nc.Publish(DeadLetterSubject("notification"), []byte(`forged`)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the permission violations reported to order's connection", func() bool {
		l := logs.String()
		return strings.Count(l, "Permissions Violation for Publish to") >= 3 &&
			strings.Contains(l, forged) && strings.Contains(l, DeadLetterSubject("notification"))
	})

	// Deleting or purging the stream is JetStream API order may not use.
	delCtx, cancelDel := context.WithTimeout(ctx, time.Second)
	defer cancelDel()
	if err := order.js.DeleteStream(delCtx, Stream); err == nil {
		t.Error("order deleted the EVENTS stream")
	}

	// The stream holds order's event and nothing forged. A message the
	// server accepted is stored before the PubAck, and the flush above
	// round-tripped after the forged publishes, so counting now is enough.
	s, err := admin.js.Stream(ctx, Stream)
	if err != nil {
		t.Fatalf("EVENTS stream: %v", err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter("events.>"))
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 || info.State.Subjects[Subject("order", OrderCreated)] != 1 {
		t.Errorf("stream holds %d messages by subject %v, want only order's one", info.State.Msgs, info.State.Subjects)
	}
}

func TestServiceCredentialsCarryEventsEndToEnd(t *testing.T) {
	f := newFixture(t, "sqlite:"+filepath.Join(t.TempDir(), "store.db"))
	order := connectAs(t, f.nats.ServiceURL("order"), f.logs)
	notification := connectAs(t, f.nats.ServiceURL("notification"), f.logs)

	// order's relay publishes through order's user...
	relay := NewRelay(RelayConfig{DB: f.db, Bus: order, Telemetry: f.tel, Logger: f.log})
	f.record(f.ctx, mustNew(t, "order", OrderCreated, "o-1"))
	f.run("relay", relay.Run)
	// ...a poison message (published by the admin) makes notification
	// dead-letter through its own user...
	f.publishRaw(Subject("order", OrderCreated), []byte(`not json`), "poison-1")
	// ...and notification's consumer creates its durable, pulls and acks.
	c, err := NewConsumer(ConsumerConfig{Name: "notification", Types: []string{OrderCreated},
		Handler: recordEffect("notification"), DB: f.db, Bus: notification, Telemetry: f.tel, Metrics: f.reg, Logger: f.log})
	if err != nil {
		t.Fatal(err)
	}
	f.run("consumer notification", c.Run)

	eventually(t, 10*time.Second, "order.created handled by notification", func() bool { return f.effects("notification") == 1 })
	eventually(t, 10*time.Second, "the poison dead-lettered", func() bool {
		return f.streamMsgs(DeadLetterSubject("notification")) == 1
	})
	eventually(t, 10*time.Second, "notification's consumer to settle (all acked)", func() bool { return f.settled("notification") })
	if n := f.count(`SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL`); n != 0 {
		t.Errorf("%d outbox rows unsent", n)
	}
	if strings.Contains(f.logs.String(), "Permissions Violation") {
		t.Errorf("a service hit a permission it needs:\n%s", f.logs.String())
	}

	// notification may not take over another service's durable consumer.
	ctx, cancel := context.WithTimeout(f.ctx, time.Second)
	defer cancel()
	if _, err := notification.js.CreateOrUpdateConsumer(ctx, Stream, jetstream.ConsumerConfig{
		Durable: "order", FilterSubject: "events.*.order.created", AckPolicy: jetstream.AckExplicitPolicy,
	}); err == nil {
		t.Error("notification created a consumer named order")
	}
}
