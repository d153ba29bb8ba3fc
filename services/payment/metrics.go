package payment

import (
	"context"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics reports the payments and refunds tables on every scrape (issue
// 12): how many are in each status. Read from the database, the figures
// hold across restarts and are the same whichever instance is scraped. A
// refund or payment lingering UNKNOWN is money whose fate the provider
// has not told yet (the resolver asks again). A status with no rows is
// reported as 0, so a dashboard shows it before the first one.
type Metrics struct {
	db       *sqlx.DB
	payments *prometheus.Desc
	refunds  *prometheus.Desc
}

// NewMetrics reports on db's payments and refunds.
func NewMetrics(db *sqlx.DB) *Metrics {
	return &Metrics{
		db: db,
		payments: prometheus.NewDesc("meshop_payment_payments", "Payments (charges) by status.",
			[]string{"status"}, nil),
		refunds: prometheus.NewDesc("meshop_payment_refunds", "Refunds by status.",
			[]string{"status"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.payments
	ch <- m.refunds
}

// Collect implements prometheus.Collector. A failed query reports the
// error as an invalid metric, which the scrape shows.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	m.byStatus(ctx, ch, m.payments, `SELECT status, COUNT(*) AS n FROM payments GROUP BY status`,
		StatusPending, StatusUnknown, StatusSucceeded, StatusDeclined, StatusFailed)
	m.byStatus(ctx, ch, m.refunds, `SELECT status, COUNT(*) AS n FROM refunds GROUP BY status`,
		RefundPending, RefundUnknown, RefundSucceeded)
}

// byStatus sends desc's series from query's (status, n) rows, with 0 for
// each of known that has none.
func (m *Metrics) byStatus(ctx context.Context, ch chan<- prometheus.Metric, desc *prometheus.Desc, query string, known ...string) {
	var rows []struct {
		Status string `db:"status"`
		N      int    `db:"n"`
	}
	if err := m.db.SelectContext(ctx, &rows, query); err != nil {
		ch <- prometheus.NewInvalidMetric(desc, err)
		return
	}
	counts := make(map[string]int, len(known))
	for _, s := range known {
		counts[s] = 0
	}
	for _, r := range rows {
		counts[r.Status] = r.N
	}
	for s, n := range counts {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, float64(n), s)
	}
}
