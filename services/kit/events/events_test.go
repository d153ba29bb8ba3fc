package events

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/meshop/meshop/localenv"
	"github.com/meshop/meshop/services/kit/kittest"
	"github.com/meshop/meshop/services/kit/telemetry"
)

// fixture is one database, one embedded NATS, and the actors started on
// them, stopped when the test ends.
type fixture struct {
	t    *testing.T
	ctx  context.Context
	db   *sqlx.DB
	nats *localenv.NATS
	bus  *Bus // the admin user's: may publish any subject
	tel  *telemetry.Telemetry
	exp  *tracetest.InMemoryExporter
	logs *localenv.LogBuffer
	log  *slog.Logger
	reg  *prometheus.Registry // the consumers' metrics
	wg   sync.WaitGroup
	stop context.CancelFunc
}

func newFixture(t *testing.T, dbURL string) *fixture {
	t.Helper()
	ctx := context.Background()
	f := &fixture{t: t, ctx: ctx, logs: &localenv.LogBuffer{}, reg: prometheus.NewRegistry()}
	f.log = slog.New(slog.NewJSONHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	db := kittest.DB(t, dbURL, Migrations())
	// What a handler writes: its effect, checked for exactly-once.
	if _, err := db.Exec(`CREATE TABLE effects (consumer TEXT NOT NULL, event_id TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	f.db = db
	f.exp = tracetest.NewInMemoryExporter()
	var err error
	f.tel, err = telemetry.New(ctx, telemetry.Config{Service: "test", SampleRate: 1, Exporter: f.exp})
	if err != nil {
		t.Fatal(err)
	}
	f.nats = localenv.NATST(t)
	connectCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	f.bus, err = Connect(connectCtx, f.nats.AdminURL(), f.log)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	f.ctx, f.stop = runCtx, stop
	// Cleanups run last-in first-out: actors stop before the bus closes,
	// the bus before NATS shuts down.
	t.Cleanup(f.bus.Close)
	t.Cleanup(func() {
		stop()
		f.wg.Wait()
		if t.Failed() {
			t.Logf("logs:\n%s", f.logs.String())
		}
	})
	return f
}

// run starts an actor, which must return nil when the test ends.
func (f *fixture) run(name string, actor func(context.Context) error) {
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		if err := actor(f.ctx); err != nil {
			f.t.Errorf("%s returned %v", name, err)
		}
	}()
}

func (f *fixture) relay(cfg RelayConfig) *Relay {
	cfg.DB, cfg.Bus, cfg.Telemetry, cfg.Logger = f.db, f.bus, f.tel, f.log
	return NewRelay(cfg)
}

// consumer starts a consumer whose default handler records its effect.
func (f *fixture) consumer(cfg ConsumerConfig) {
	f.t.Helper()
	cfg.DB, cfg.Bus, cfg.Telemetry, cfg.Metrics, cfg.Logger = f.db, f.bus, f.tel, f.reg, f.log
	if cfg.Handler == nil {
		cfg.Handler = recordEffect(cfg.Name)
	}
	c, err := NewConsumer(cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	f.run("consumer "+cfg.Name, c.Run)
}

func recordEffect(consumer string) Handler {
	return func(ctx context.Context, tx *Tx, ev Envelope) error {
		_, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO effects (consumer, event_id) VALUES (?, ?)`), consumer, ev.ID)
		return err
	}
}

// record commits events in one transaction, as a producer does.
func (f *fixture) record(ctx context.Context, evs ...Envelope) {
	f.t.Helper()
	err := NewOutbox(f.tel.Propagator, nil).InTx(ctx, f.db, func(tx *Tx) error {
		for _, ev := range evs {
			if err := tx.Record(ctx, ev); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) count(query string, args ...any) int {
	f.t.Helper()
	var n int
	if err := f.db.Get(&n, f.db.Rebind(query), args...); err != nil {
		f.t.Fatal(err)
	}
	return n
}

func (f *fixture) effects(consumer string) int {
	return f.count(`SELECT COUNT(*) FROM effects WHERE consumer = ?`, consumer)
}

func (f *fixture) streamMsgs(subject string) int {
	f.t.Helper()
	s, err := f.bus.js.Stream(context.Background(), Stream)
	if err != nil {
		f.t.Fatal(err)
	}
	info, err := s.Info(context.Background(), jetstream.WithSubjectFilter(subject))
	if err != nil {
		f.t.Fatal(err)
	}
	n := 0
	for _, c := range info.State.Subjects {
		n += int(c)
	}
	return n
}

// settled reports whether consumer has no message left to deliver or
// awaiting an ack.
func (f *fixture) settled(consumer string) bool {
	c, err := f.bus.js.Consumer(context.Background(), Stream, consumer)
	if err != nil {
		return false
	}
	info, err := c.Info(context.Background())
	return err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.NumRedelivered == 0
}

func (f *fixture) deadLetter(consumer string) *jetstream.RawStreamMsg {
	f.t.Helper()
	s, err := f.bus.js.Stream(context.Background(), Stream)
	if err != nil {
		f.t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(context.Background(), DeadLetterSubject(consumer))
	if err != nil {
		f.t.Fatalf("no dead letter for %s: %v", consumer, err)
	}
	return m
}

// deadLettered is meshop_events_dead_lettered_total for consumer, type
// and reason.
func (f *fixture) deadLettered(consumer, typ, reason string) float64 {
	f.t.Helper()
	c, err := deadLetterCounter(f.reg)
	if err != nil {
		f.t.Fatal(err)
	}
	return testutil.ToFloat64(c.WithLabelValues(consumer, typ, reason))
}

// publishRaw puts a message on the stream directly, as a buggy or foreign
// producer might.
func (f *fixture) publishRaw(subject string, data []byte, msgID string) {
	f.t.Helper()
	if _, err := f.bus.js.Publish(context.Background(), subject, data, jetstream.WithMsgID(msgID)); err != nil {
		f.t.Fatal(err)
	}
}

// eventually polls cond until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(timeout)
	for !cond() {
		select {
		case <-deadline:
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func mustNew(t *testing.T, source, typ, subjectID string) Envelope {
	t.Helper()
	ev, err := New(source, typ, subjectID, map[string]string{"id": subjectID})
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func TestOutboxToConsumer(t *testing.T) {
	localenv.EachDatabase(t, func(t *testing.T, dbURL string) {
		f := newFixture(t, dbURL)
		// An hour-long interval: after the first pass, only Notify moves events.
		relay := f.relay(RelayConfig{Interval: time.Hour})
		f.record(f.ctx, mustNew(t, "order", OrderCreated, "o-0"))
		f.run("relay", relay.Run)
		eventually(t, 10*time.Second, "the first pass to send the first event", func() bool {
			return f.count(`SELECT COUNT(*) FROM outbox WHERE sent_at IS NOT NULL`) == 1
		})

		confirmed := mustNew(t, "order", OrderConfirmed, "o-1")
		failed := mustNew(t, "payment", PaymentFailed, "o-2")
		other := mustNew(t, "order", OrderCancelled, "o-3")
		f.record(f.ctx, confirmed, failed, other)
		relay.Notify()

		// Rolled back: never published.
		rollBack := errors.New("roll back")
		err := NewOutbox(f.tel.Propagator, relay.Notify).InTx(f.ctx, f.db, func(tx *Tx) error {
			if err := tx.Record(f.ctx, mustNew(t, "order", OrderConfirmed, "rolled-back")); err != nil {
				t.Fatal(err)
			}
			return rollBack
		})
		if !errors.Is(err, rollBack) {
			t.Fatalf("InTx = %v, want %v", err, rollBack)
		}
		relay.Notify()

		var got []string
		var mu sync.Mutex
		f.consumer(ConsumerConfig{Name: "notification", Types: []string{OrderConfirmed, PaymentFailed},
			Handler: func(ctx context.Context, tx *Tx, ev Envelope) error {
				mu.Lock()
				got = append(got, ev.Source+"/"+ev.Type+"/"+ev.SubjectID)
				mu.Unlock()
				return recordEffect("notification")(ctx, tx, ev)
			}})
		eventually(t, 10*time.Second, "both events handled", func() bool { return f.effects("notification") == 2 })
		eventually(t, 10*time.Second, "the consumer to settle", func() bool { return f.settled("notification") })
		if n := f.count(`SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL`); n != 0 {
			t.Errorf("%d outbox rows unsent", n)
		}
		if n := f.streamMsgs("events.>"); n != 4 {
			t.Errorf("stream holds %d events, want the 4 committed", n)
		}
		mu.Lock()
		defer mu.Unlock()
		want := map[string]bool{"order/order.confirmed/o-1": true, "payment/payment.failed/o-2": true}
		if len(got) != 2 || !want[got[0]] || !want[got[1]] {
			t.Errorf("handled %v, want %v", got, want)
		}
		if n := f.count(`SELECT COUNT(*) FROM processed_events WHERE consumer = 'notification'`); n != 2 {
			t.Errorf("processed_events has %d rows, want 2", n)
		}
	})
}

func TestHandlerRecordsEventsThatLeaveAtOnce(t *testing.T) {
	localenv.EachDatabase(t, func(t *testing.T, dbURL string) {
		f := newFixture(t, dbURL)
		f.record(f.ctx, mustNew(t, "order", OrderConfirmed, "o-1"))
		// After its first pass the relay only moves on Notify.
		relay := f.relay(RelayConfig{Interval: time.Hour})
		f.run("relay", relay.Run)
		eventually(t, 10*time.Second, "the first pass", func() bool {
			return f.count(`SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL`) == 0
		})
		f.consumer(ConsumerConfig{Name: "notification", Types: []string{OrderConfirmed}, Outbox: NewOutbox(f.tel.Propagator, relay.Notify),
			Handler: func(ctx context.Context, tx *Tx, ev Envelope) error {
				sent, err := New("notification", NotificationSent, ev.SubjectID, map[string]string{"about": ev.ID})
				if err != nil {
					return err
				}
				return tx.Record(ctx, sent)
			}})
		f.consumer(ConsumerConfig{Name: "audit", Types: []string{NotificationSent}})
		eventually(t, 10*time.Second, "notification.sent handled downstream", func() bool { return f.effects("audit") == 1 })
	})
}

func TestRelayRepublishAfterCrashIsHandledOnce(t *testing.T) {
	localenv.EachDatabase(t, func(t *testing.T, dbURL string) {
		f := newFixture(t, dbURL)
		relay := f.relay(RelayConfig{Interval: 20 * time.Millisecond})
		ev := mustNew(t, "order", OrderConfirmed, "o-1")
		f.record(f.ctx, ev)
		f.run("relay", relay.Run)
		eventually(t, 10*time.Second, "the event sent", func() bool {
			return f.count(`SELECT COUNT(*) FROM outbox WHERE sent_at IS NOT NULL`) == 1
		})
		// The state a crash between publish and mark leaves behind.
		if _, err := f.db.Exec(`UPDATE outbox SET sent_at = NULL`); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "the event sent again", func() bool {
			return f.count(`SELECT COUNT(*) FROM outbox WHERE sent_at IS NOT NULL`) == 1
		})
		if n := f.streamMsgs("events.>"); n != 1 {
			t.Errorf("stream holds %d messages, want 1 (the republish deduplicated by Nats-Msg-Id)", n)
		}
		var calls atomic.Int32
		f.consumer(ConsumerConfig{Name: "notification", Types: []string{OrderConfirmed},
			Handler: func(ctx context.Context, tx *Tx, ev Envelope) error {
				calls.Add(1)
				return recordEffect("notification")(ctx, tx, ev)
			}})
		eventually(t, 10*time.Second, "the event handled", func() bool { return f.effects("notification") == 1 })
		eventually(t, 10*time.Second, "the consumer to settle", func() bool { return f.settled("notification") })
		if calls.Load() != 1 {
			t.Errorf("handler called %d times, want 1", calls.Load())
		}
	})
}

func TestConsumerDedupesByEventID(t *testing.T) {
	localenv.EachDatabase(t, func(t *testing.T, dbURL string) {
		f := newFixture(t, dbURL)
		ev := mustNew(t, "order", OrderConfirmed, "o-1")
		body, _ := json.Marshal(ev)
		// The same event twice under different message ids: what a republish
		// after the duplicate window looks like.
		f.publishRaw(Subject(ev.Source, ev.Type), body, "first")
		f.publishRaw(Subject(ev.Source, ev.Type), body, "second")
		var calls atomic.Int32
		f.consumer(ConsumerConfig{Name: "notification", Types: []string{OrderConfirmed},
			Handler: func(ctx context.Context, tx *Tx, ev Envelope) error {
				calls.Add(1)
				return recordEffect("notification")(ctx, tx, ev)
			}})
		// Another consumer is independent: it handles the event too.
		f.consumer(ConsumerConfig{Name: "audit", Types: []string{OrderConfirmed}})
		// A consumer's info can show nothing pending before its first
		// delivery: wait for the effects too.
		eventually(t, 10*time.Second, "both deliveries settled", func() bool {
			return f.effects("notification") == 1 && f.effects("audit") == 1 && f.settled("notification") && f.settled("audit")
		})
		if calls.Load() != 1 || f.effects("notification") != 1 {
			t.Errorf("handler called %d times with %d effects, want 1 and 1", calls.Load(), f.effects("notification"))
		}
		if n := f.effects("audit"); n != 1 {
			t.Errorf("audit consumer effects = %d, want 1", n)
		}
	})
}

func TestHandlerFailureRetriedThenDeadLettered(t *testing.T) {
	localenv.EachDatabase(t, func(t *testing.T, dbURL string) {
		f := newFixture(t, dbURL)
		broken := mustNew(t, "order", OrderConfirmed, "always-fails")
		flaky := mustNew(t, "order", OrderConfirmed, "fails-once")
		var mu sync.Mutex
		calls := map[string]int{}
		f.consumer(ConsumerConfig{Name: "notification", Types: []string{OrderConfirmed},
			MaxDeliver: 3, Backoff: []time.Duration{20 * time.Millisecond, 40 * time.Millisecond},
			Handler: func(ctx context.Context, tx *Tx, ev Envelope) error {
				mu.Lock()
				calls[ev.SubjectID]++
				n := calls[ev.SubjectID]
				mu.Unlock()
				// Written, then rolled back with the failure.
				if err := recordEffect("notification")(ctx, tx, ev); err != nil {
					return err
				}
				if ev.SubjectID == "always-fails" || n == 1 {
					return errors.New("smtp: connection refused")
				}
				return nil
			}})
		f.record(f.ctx, broken, flaky)
		f.run("relay", f.relay(RelayConfig{Interval: 20 * time.Millisecond}).Run)

		eventually(t, 15*time.Second, "the broken event dead-lettered", func() bool {
			return f.streamMsgs(DeadLetterSubject("notification")) == 1
		})
		eventually(t, 10*time.Second, "the consumer to settle", func() bool { return f.settled("notification") })
		mu.Lock()
		if calls["always-fails"] != 3 || calls["fails-once"] != 2 {
			t.Errorf("handler calls = %v, want always-fails:3 fails-once:2", calls)
		}
		mu.Unlock()
		var ids []string
		if err := f.db.Select(&ids, `SELECT event_id FROM effects`); err != nil {
			t.Fatal(err)
		}
		if len(ids) != 1 || ids[0] != flaky.ID {
			t.Errorf("effects = %v, want only the flaky event %s (failed attempts roll back)", ids, flaky.ID)
		}
		if n := f.count(`SELECT COUNT(*) FROM processed_events WHERE event_id = ?`, broken.ID); n != 0 {
			t.Errorf("dead-lettered event marked processed")
		}
		dl := f.deadLetter("notification")
		if !bytes.Contains(dl.Data, []byte(broken.ID)) {
			t.Errorf("dead letter body %s is not the broken event", dl.Data)
		}
		for h, want := range map[string]string{
			HeaderDeadSubject: Subject("order", OrderConfirmed), HeaderDeadConsumer: "notification", HeaderDeadDeliveries: "3",
		} {
			if got := dl.Header.Get(h); got != want {
				t.Errorf("dead letter header %s = %q, want %q", h, got, want)
			}
		}
		if r := dl.Header.Get(HeaderDeadReason); !strings.Contains(r, "handler failed 3 times: smtp: connection refused") {
			t.Errorf("dead letter reason = %q", r)
		}
		if dl.Header.Get("traceparent") == "" {
			t.Error("dead letter lost the traceparent header")
		}
		if !strings.Contains(f.logs.String(), `"msg":"event dead-lettered"`) {
			t.Error("no log line for the dead letter")
		}
		// Counted once, as a handler failure; the flaky event, handled on
		// its second delivery, is not counted.
		want := `
# HELP meshop_events_dead_lettered_total Events a consumer gave up on and published to its dead-letter subject, by consumer, event type and reason.
# TYPE meshop_events_dead_lettered_total counter
meshop_events_dead_lettered_total{consumer="notification",reason="handler_failed",type="order.confirmed"} 1
meshop_events_dead_lettered_total{consumer="notification",reason="poison",type="order.confirmed"} 0
meshop_events_dead_lettered_total{consumer="notification",reason="unfinished",type="order.confirmed"} 0
`
		if err := testutil.GatherAndCompare(f.reg, strings.NewReader(want), DeadLetterMetricName); err != nil {
			t.Error(err)
		}
	})
}

func TestPoisonMessageDeadLetteredWithoutBlocking(t *testing.T) {
	localenv.EachDatabase(t, func(t *testing.T, dbURL string) {
		f := newFixture(t, dbURL)
		var calls atomic.Int32
		f.consumer(ConsumerConfig{Name: "notification", Types: []string{OrderConfirmed, PaymentFailed},
			Handler: func(ctx context.Context, tx *Tx, ev Envelope) error {
				calls.Add(1)
				return recordEffect("notification")(ctx, tx, ev)
			}})
		poison := []struct{ subject, body string }{
			{Subject("order", OrderConfirmed), `{"id": "x", "type": `},                                  // truncated JSON
			{Subject("order", OrderConfirmed), `not json at all`},                                       // not JSON
			{Subject("payment", PaymentFailed), `{"type":"payment.failed"}`},                            // no id
			{Subject("payment", PaymentFailed), `{"id":"y","source":"order","type":"order.confirmed"}`}, // not what the subject says
		}
		for i, p := range poison {
			f.publishRaw(p.subject, []byte(p.body), fmt.Sprintf("poison-%d", i))
		}
		// The stream holds the poison before a good event from the outbox.
		good := mustNew(t, "order", OrderConfirmed, "o-1")
		f.record(f.ctx, good)
		f.run("relay", f.relay(RelayConfig{}).Run)

		eventually(t, 10*time.Second, "the good event handled", func() bool { return f.effects("notification") == 1 })
		eventually(t, 10*time.Second, "all poison dead-lettered", func() bool {
			return f.streamMsgs(DeadLetterSubject("notification")) == len(poison)
		})
		eventually(t, 10*time.Second, "the consumer to settle", func() bool { return f.settled("notification") })
		if calls.Load() != 1 {
			t.Errorf("handler called %d times, want once (never for poison)", calls.Load())
		}
		dl := f.deadLetter("notification") // the last poison message
		if r := dl.Header.Get(HeaderDeadReason); !strings.HasPrefix(r, "poison: ") || dl.Header.Get(HeaderDeadDeliveries) != "1" {
			t.Errorf("dead letter headers = %v", dl.Header)
		}
		if n := strings.Count(f.logs.String(), `"msg":"event dead-lettered"`); n != len(poison) {
			t.Errorf("%d dead-letter log lines, want one per poison message (%d)", n, len(poison))
		}
		if !strings.Contains(f.logs.String(), "unparseable envelope") {
			t.Error("log does not say the envelope was unparseable")
		}
		// Each poison message counted under the type its subject names.
		for typ, want := range map[string]float64{OrderConfirmed: 2, PaymentFailed: 2} {
			if got := f.deadLettered("notification", typ, DeadLetterPoison); got != want {
				t.Errorf("dead-lettered poison of %s = %v, want %v", typ, got, want)
			}
			if got := f.deadLettered("notification", typ, DeadLetterHandlerFailed); got != 0 {
				t.Errorf("dead-lettered handler failures of %s = %v, want 0", typ, got)
			}
		}
	})
}

func TestTraceJoinsProducerToConsumer(t *testing.T) {
	localenv.EachDatabase(t, func(t *testing.T, dbURL string) {
		f := newFixture(t, dbURL)
		ctx, request := f.tel.Tracer("test").Start(f.ctx, "POST /orders", trace.WithSpanKind(trace.SpanKindServer))
		f.record(ctx, mustNew(t, "order", OrderConfirmed, "o-1"))
		request.End()
		want := request.SpanContext().TraceID()

		handled := make(chan trace.SpanContext, 1)
		f.consumer(ConsumerConfig{Name: "notification", Types: []string{OrderConfirmed},
			Handler: func(ctx context.Context, tx *Tx, ev Envelope) error {
				handled <- trace.SpanContextFromContext(ctx)
				return nil
			}})
		f.run("relay", f.relay(RelayConfig{}).Run)
		var got trace.SpanContext
		select {
		case got = <-handled:
		case <-time.After(10 * time.Second):
			t.Fatal("event not handled within 10s")
		}
		if got.TraceID() != want {
			t.Fatalf("handler's trace id %s, want the producer's %s", got.TraceID(), want)
		}
		spans := map[string]tracetest.SpanStub{}
		// The publish span ends at the ack, which may come after the
		// process span ended: wait for both.
		eventually(t, 10*time.Second, "the publish and process spans exported", func() bool {
			_ = f.tel.TracerProvider.ForceFlush(context.Background())
			for _, s := range f.exp.GetSpans() {
				spans[s.Name] = s
			}
			_, pub := spans["publish "+OrderConfirmed]
			_, proc := spans["process "+OrderConfirmed]
			return pub && proc
		})
		pub, proc := spans["publish "+OrderConfirmed], spans["process "+OrderConfirmed]
		if pub.SpanKind != trace.SpanKindProducer || proc.SpanKind != trace.SpanKindConsumer {
			t.Errorf("span kinds: publish %v, process %v", pub.SpanKind, proc.SpanKind)
		}
		if pub.Parent.SpanID() != request.SpanContext().SpanID() || pub.SpanContext.TraceID() != want {
			t.Errorf("publish span's parent %s, want the request span %s", pub.Parent.SpanID(), request.SpanContext().SpanID())
		}
		if proc.Parent.SpanID() != pub.SpanContext.SpanID() || proc.SpanContext.TraceID() != want {
			t.Errorf("process span's parent %s, want the publish span %s", proc.Parent.SpanID(), pub.SpanContext.SpanID())
		}
		if proc.SpanContext.SpanID() != got.SpanID() {
			t.Error("the handler does not run inside the process span")
		}
	})
}

func TestTwoRelaysShareOneOutbox(t *testing.T) {
	localenv.EachDatabase(t, func(t *testing.T, dbURL string) {
		f := newFixture(t, dbURL)
		const n = 60
		var evs []Envelope
		for i := range n {
			evs = append(evs, mustNew(t, "order", OrderCreated, fmt.Sprint("o-", i)))
		}
		f.record(f.ctx, evs...)
		for i := range 2 {
			f.run(fmt.Sprint("relay ", i), f.relay(RelayConfig{BatchSize: 7, Interval: 10 * time.Millisecond}).Run)
		}
		f.consumer(ConsumerConfig{Name: "audit", Types: []string{OrderCreated}})
		eventually(t, 15*time.Second, "every event handled", func() bool { return f.effects("audit") == n })
		eventually(t, 10*time.Second, "the consumer to settle", func() bool { return f.settled("audit") })
		if got := f.streamMsgs("events.>"); got != n {
			t.Errorf("stream holds %d events, want %d", got, n)
		}
		if f.db.DriverName() != "pgx" {
			return // SQLite relays may both publish a row; JetStream dropped the duplicate above
		}
		_ = f.tel.TracerProvider.ForceFlush(context.Background())
		publishes := 0
		for _, s := range f.exp.GetSpans() {
			if strings.HasPrefix(s.Name, "publish ") {
				publishes++
			}
		}
		if publishes != n {
			t.Errorf("%d publishes for %d events: SKIP LOCKED should let each row be published once", publishes, n)
		}
	})
}

func TestRecordRefusesBadEnvelopes(t *testing.T) {
	f := newFixture(t, "sqlite::memory:")
	good := mustNew(t, "order", OrderCreated, "o-1")
	tests := []struct {
		name string
		edit func(*Envelope)
		want string
	}{
		{"no id", func(ev *Envelope) { ev.ID = "" }, "has no id"},
		{"source with a dot", func(ev *Envelope) { ev.Source = "order.v2" }, `source "order.v2"`},
		{"wildcard source", func(ev *Envelope) { ev.Source = "*" }, `source "*"`},
		{"one-token type", func(ev *Envelope) { ev.Type = "created" }, `event type "created"`},
		{"type with a space", func(ev *Envelope) { ev.Type = "order. created" }, `event type "order. created"`},
		{"too big", func(ev *Envelope) { ev.Data = []byte(`"` + strings.Repeat("x", MaxEnvelopeBytes) + `"`) }, "byte limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := good
			tt.edit(&ev)
			err := NewOutbox(f.tel.Propagator, nil).InTx(f.ctx, f.db, func(tx *Tx) error { return tx.Record(f.ctx, ev) })
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Record error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestNewConsumerChecksConfig(t *testing.T) {
	f := newFixture(t, "sqlite::memory:")
	ok := ConsumerConfig{Name: "notification", Types: []string{OrderConfirmed}, Handler: recordEffect("x"),
		DB: f.db, Bus: f.bus, Telemetry: f.tel, Metrics: f.reg, Logger: f.log}
	tests := []struct {
		name string
		edit func(*ConsumerConfig)
		want string
	}{
		{"no name", func(c *ConsumerConfig) { c.Name = "" }, "consumer name"},
		{"dotted name", func(c *ConsumerConfig) { c.Name = "a.b" }, `consumer name "a.b"`},
		{"no types", func(c *ConsumerConfig) { c.Types = nil }, "no event types"},
		{"one-token type", func(c *ConsumerConfig) { c.Types = []string{"ping"} }, `event type "ping"`},
		{"wildcard type", func(c *ConsumerConfig) { c.Types = []string{"order.*"} }, `event type "order.*"`},
		{"no handler", func(c *ConsumerConfig) { c.Handler = nil }, "no handler"},
		{"no bus", func(c *ConsumerConfig) { c.Bus = nil }, "required"},
		{"no metrics", func(c *ConsumerConfig) { c.Metrics = nil }, "required"},
		{"metric name taken", func(c *ConsumerConfig) {
			c.Metrics = prometheus.NewRegistry()
			c.Metrics.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: DeadLetterMetricName, Help: "other"}))
		}, "dead-letter metric"},
		{"negative MaxDeliver", func(c *ConsumerConfig) { c.MaxDeliver = -1 }, "MaxDeliver"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ok
			tt.edit(&cfg)
			_, err := NewConsumer(cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewConsumer() error = %v, want one containing %q", err, tt.want)
			}
		})
	}
	// The process's consumers share the counter on one registry.
	for range 2 {
		if _, err := NewConsumer(ok); err != nil {
			t.Errorf("valid config refused: %v", err)
		}
	}
}

func TestConnectGivesUpWhenContextEnds(t *testing.T) {
	port, err := localenv.FreePort() // nothing listens there
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = Connect(ctx, fmt.Sprintf("nats://user:secret@127.0.0.1:%d", port), slog.New(slog.DiscardHandler))
	if err == nil {
		t.Fatal("Connect succeeded with no server")
	}
	if strings.Contains(err.Error(), "secret") || !strings.Contains(err.Error(), "stream EVENTS not ready") {
		t.Errorf("error = %v, want a redacted URL and the reason", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Connect took %s after its context ended", took)
	}
}

func TestHeaderCarrierKeepsW3CNames(t *testing.T) {
	h := nats.Header{}
	headerCarrier(h).Set("traceparent", "00-x")
	if _, ok := h["traceparent"]; !ok {
		t.Errorf("headers = %v, want the lowercase traceparent key", h)
	}
	h2 := nats.Header{"Traceparent": {"00-y"}}
	if got := headerCarrier(h2).Get("traceparent"); got != "00-y" {
		t.Errorf("Get(traceparent) = %q on a capitalised header", got)
	}
}
