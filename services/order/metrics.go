package order

import (
	"context"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics reports the orders table on every scrape (issue 12): how many
// orders are in each status and step, how many are parked for an
// operator, and how old the oldest PENDING one is. A scrape is one small
// query per figure; the table's status index serves them.
type Metrics struct {
	db      *sqlx.DB
	byState *prometheus.Desc
	parked  *prometheus.Desc
	oldest  *prometheus.Desc
}

// NewMetrics reports on db's orders.
func NewMetrics(db *sqlx.DB) *Metrics {
	return &Metrics{
		db: db,
		byState: prometheus.NewDesc("meshop_orders", "Orders by status and checkout step.",
			[]string{"status", "step"}, nil),
		parked: prometheus.NewDesc("meshop_orders_parked", "PENDING orders parked for an operator after their recovery attempt budget.",
			nil, nil),
		oldest: prometheus.NewDesc("meshop_orders_oldest_pending_age_seconds", "Age of the oldest PENDING order (0: none).",
			nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.byState
	ch <- m.parked
	ch <- m.oldest
}

// Collect implements prometheus.Collector. A failed query reports the
// error as an invalid metric, which the scrape shows.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var rows []struct {
		Status string `db:"status"`
		Step   string `db:"step"`
		N      int    `db:"n"`
	}
	if err := m.db.SelectContext(ctx, &rows, `SELECT status, step, COUNT(*) AS n FROM orders GROUP BY status, step`); err != nil {
		ch <- prometheus.NewInvalidMetric(m.byState, err)
		return
	}
	for _, r := range rows {
		ch <- prometheus.MustNewConstMetric(m.byState, prometheus.GaugeValue, float64(r.N), r.Status, r.Step)
	}
	var parked int
	if err := m.db.GetContext(ctx, &parked, `SELECT COUNT(*) FROM orders WHERE status = 'PENDING' AND parked_at IS NOT NULL`); err != nil {
		ch <- prometheus.NewInvalidMetric(m.parked, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(m.parked, prometheus.GaugeValue, float64(parked))
	var oldest []time.Time
	if err := m.db.SelectContext(ctx, &oldest, `SELECT created_at FROM orders WHERE status = 'PENDING' ORDER BY created_at LIMIT 1`); err != nil {
		ch <- prometheus.NewInvalidMetric(m.oldest, err)
		return
	}
	age := 0.0
	if len(oldest) == 1 {
		age = time.Since(oldest[0]).Seconds()
	}
	ch <- prometheus.MustNewConstMetric(m.oldest, prometheus.GaugeValue, age)
}
