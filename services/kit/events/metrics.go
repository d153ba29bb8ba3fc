package events

import (
	"context"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/prometheus/client_golang/prometheus"
)

// OutboxMetrics reports a service's outbox on every scrape (issue 12):
// how many events wait to be published, and how old the oldest is. A
// growing age means the relay cannot publish (NATS down, say); nothing
// is lost meanwhile, the events wait in the database.
type OutboxMetrics struct {
	db      *sqlx.DB
	backlog *prometheus.Desc
	oldest  *prometheus.Desc
}

// NewOutboxMetrics reports on db's outbox, labelled with service.
func NewOutboxMetrics(db *sqlx.DB, service string) *OutboxMetrics {
	labels := prometheus.Labels{"service": service}
	return &OutboxMetrics{
		db: db,
		backlog: prometheus.NewDesc("meshop_outbox_unsent", "Events recorded in the outbox and not yet published.",
			nil, labels),
		oldest: prometheus.NewDesc("meshop_outbox_oldest_unsent_age_seconds", "Age of the oldest unpublished event (0: none).",
			nil, labels),
	}
}

// Describe implements prometheus.Collector.
func (m *OutboxMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.backlog
	ch <- m.oldest
}

// Collect implements prometheus.Collector. A failed query is reported as
// an invalid metric, which the scrape shows.
func (m *OutboxMetrics) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var unsent int
	if err := m.db.GetContext(ctx, &unsent, `SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL`); err != nil {
		ch <- prometheus.NewInvalidMetric(m.backlog, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(m.backlog, prometheus.GaugeValue, float64(unsent))
	var oldest []time.Time
	if err := m.db.SelectContext(ctx, &oldest, `SELECT created_at FROM outbox WHERE sent_at IS NULL ORDER BY created_at LIMIT 1`); err != nil {
		ch <- prometheus.NewInvalidMetric(m.oldest, err)
		return
	}
	age := 0.0
	if len(oldest) == 1 {
		age = time.Since(oldest[0]).Seconds()
	}
	ch <- prometheus.MustNewConstMetric(m.oldest, prometheus.GaugeValue, age)
}
