package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshop/meshop/e2e/system"
	"github.com/meshop/meshop/services/kit/events"
)

// TestNATSOutage stops NATS for 60 s while customers check out: checkouts
// keep succeeding (their events wait in the outbox), and once NATS is
// back every event is published: in order per subject, one confirmation
// email per order, none lost, none twice, and the outboxes empty (issue
// 12).
func TestNATSOutage(t *testing.T) {
	sys := startSystem(t, nil)
	bearer := customer(t, sys, "outage@example.com")
	var orders []string
	buy := func(key string) {
		t.Helper()
		code, o := checkout(sys, bearer, key)
		if code != http.StatusCreated || o["status"] != "CONFIRMED" {
			t.Fatalf("checkout %s: %d %v", key, code, o)
		}
		orders = append(orders, o["id"].(string))
	}
	buy("before-outage")

	sys.NATS.Shutdown()
	outage := time.Now()
	arrivals := time.NewTicker(2 * time.Second) // customers arriving during the outage
	defer arrivals.Stop()
	for i := 0; time.Since(outage) < 60*time.Second; i++ {
		buy(fmt.Sprint("during-outage-", i))
		<-arrivals.C
	}
	if err := sys.NATS.Restart(); err != nil {
		t.Fatal(err)
	}
	buy("after-outage")

	byID := map[string]string{}
	for _, id := range orders {
		byID[id] = id
	}
	oneConfirmationEach(t, sys, bearer, byID)
	// Each order's events reach the stream in the order they happened:
	// the outbox publishes oldest first, also after an outage.
	for _, typ := range []string{events.OrderCreated, events.OrderConfirmed} {
		subject := events.Subject("order", typ)
		if got := inStreamOrder(t, sys, subject, orders); !slices.Equal(got, orders) {
			t.Errorf("%s in the stream: %v\nwant the checkouts' order: %v", subject, got, orders)
		}
	}
	for _, svc := range []string{"order", "payment", "product"} {
		eventually(t, 30*time.Second, func() (bool, string) {
			m := text(t, sys.Instance(svc).URL()+"/metrics")
			return strings.Contains(m, `meshop_outbox_unsent{service="`+svc+`"} 0`), svc + "'s outbox still holds events"
		})
	}
}

// inStreamOrder returns the subject ids of the events on subject in the
// EVENTS stream, in stream order, first occurrence only, keeping only
// those in want.
func inStreamOrder(t *testing.T, sys *system.System, subject string, want []string) []string {
	t.Helper()
	nc, err := nats.Connect(sys.NATS.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := js.Stream(ctx, events.Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	total := int(info.State.Subjects[subject])
	consumer, err := js.OrderedConsumer(ctx, events.Stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var got []string
	for read := 0; read < total; {
		batch, err := consumer.Fetch(total-read, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for msg := range batch.Messages() {
			read++
			var e events.Envelope
			if err := json.Unmarshal(msg.Data(), &e); err != nil {
				t.Fatalf("%s: %v", subject, err)
			}
			if !seen[e.SubjectID] && slices.Contains(want, e.SubjectID) {
				got = append(got, e.SubjectID)
			}
			seen[e.SubjectID] = true
		}
		if batch.Error() != nil {
			t.Fatalf("%s: read %d of %d: %v", subject, read, total, batch.Error())
		}
	}
	return got
}
