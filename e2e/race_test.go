package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/meshop/meshop/e2e/system"
	"github.com/meshop/meshop/localenv"
	"github.com/meshop/meshop/services/kit/sqldb"
)

// raceProducts are bought round robin, one each, so 200 checkouts stay
// within the seeded stock.
var raceProducts = []string{"p-filters", "p-mug", "p-espresso", "p-decaf"}

// TestOrderInstancesRace (issue 12): three order instances share one
// database and all run recovery; a client buys 200 times, retrying each
// purchase with its key against whichever instance answers (a fifth of
// them sent to two instances at once), while one instance after another
// is killed with SIGKILL and started again. Whatever the interleaving:
// every key ends in one final order, no order is charged twice, no
// cancelled order keeps a charge without its refund, and the stock taken
// is exactly what the confirmed orders hold.
func TestOrderInstancesRace(t *testing.T) {
	const (
		checkouts = 200
		clients   = 8
		instances = 3
	)
	ctx := context.Background()
	// A killed run's claim expires after CHECKOUT_LEASE; recoverers pick
	// up its orders at once.
	orderEnv := []string{"RECOVER_INTERVAL=200ms", "RECOVER_GRACE=1ms", "CHECKOUT_LEASE=2s"}
	orderDB := "" // SQLite, the system's default, without PostgreSQL
	if os.Getenv(localenv.PostgresEnv) != "" {
		orderDB = localenv.PostgresT(t)
		orderEnv = append(orderEnv, "DATABASE_URL="+orderDB)
	}
	sys := startSystem(t, func(plan *system.Plan) {
		if plan.Envoy != "" {
			t.Skip("sidecar mode: one instance per service; the race runs proxyless")
		}
	})
	if orderDB == "" {
		orderDB = "sqlite:" + filepath.Join(sys.Dir, "data", "order.db")
	}
	// The system's order instance, restarted on the shared database, and
	// two replicas.
	if err := sys.StopService("order"); err != nil {
		t.Fatal(err)
	}
	ids := make([]string, instances)
	for n := range instances {
		ids[n] = system.PrimaryID("order")
		if n > 0 {
			ids[n] = fmt.Sprintf("%s-%d", system.PrimaryID("order"), n+1)
		}
		if _, err := sys.StartInstance(ctx, "order", ids[n], sys.Binary("order"), orderEnv); err != nil {
			t.Fatal(err)
		}
	}
	bearer := customer(t, sys, "race@example.com")
	stockBefore := stocks(t, sys)

	// The killer: every 0.2-0.7 s one running instance dies mid-flight
	// (while at least two run) and is started again, until the clients
	// are done.
	done := make(chan struct{})
	var kills int
	var killer, restarts sync.WaitGroup
	killer.Go(func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(200*time.Millisecond + rand.N(500*time.Millisecond)):
			}
			running := sys.Instances("order")
			if len(running) < 2 {
				continue
			}
			id := running[rand.IntN(len(running))].ID
			if err := sys.KillInstance(id); err != nil {
				t.Errorf("kill %s: %v", id, err)
				return
			}
			kills++
			restarts.Go(func() {
				if _, err := sys.StartInstance(ctx, "order", id, sys.Binary("order"), orderEnv); err != nil {
					t.Errorf("restart %s: %v", id, err)
				}
			})
		}
	})

	type outcome struct {
		status, reason string
		attempts       int
	}
	outcomes := make([]outcome, checkouts)
	keys := make(chan int)
	var buyers sync.WaitGroup
	for range clients {
		buyers.Go(func() {
			for i := range keys {
				key := fmt.Sprintf("race-%03d", i)
				body := fmt.Sprintf(`{"items":[{"product_id":%q,"quantity":1}],"payment":{"card_token":"tok_visa"}}`, raceProducts[i%len(raceProducts)])
				deadline := time.Now().Add(90 * time.Second)
				for outcomes[i].status == "" && time.Now().Before(deadline) {
					outcomes[i].attempts++
					targets := sys.Instances("order")
					if len(targets) == 0 {
						time.Sleep(50 * time.Millisecond) // all three down at once: rare and brief
						continue
					}
					rand.Shuffle(len(targets), func(a, b int) { targets[a], targets[b] = targets[b], targets[a] })
					if len(targets) > 1 && rand.IntN(5) == 0 {
						// The same key at two instances at once.
						go postCheckout(targets[1].URL(), bearer, key, body)
					}
					code, o := postCheckout(targets[0].URL(), bearer, key, body)
					switch {
					case code == http.StatusCreated && o["status"] == "CONFIRMED":
						outcomes[i].status = "CONFIRMED"
					case code == http.StatusConflict && o["status"] == "CANCELLED":
						outcomes[i].status, outcomes[i].reason = "CANCELLED", fmt.Sprint(o["code"])
					case code == 0 || code == http.StatusServiceUnavailable:
						// The instance died under the request, or the
						// checkout is pending: retry the key.
						time.Sleep(100 * time.Millisecond)
					default:
						t.Errorf("%s: unexpected answer %d %v", key, code, o)
						outcomes[i].status = "UNEXPECTED"
					}
				}
				if outcomes[i].status == "" {
					t.Errorf("%s: no final answer within 90 s after %d attempts", key, outcomes[i].attempts)
				}
			}
		})
	}
	for i := range checkouts {
		keys <- i
	}
	close(keys)
	buyers.Wait()
	close(done)
	killer.Wait()
	restarts.Wait()
	if t.Failed() {
		return
	}
	attempts, cancelled := 0, 0
	for _, o := range outcomes {
		attempts += o.attempts
		if o.status == "CANCELLED" {
			cancelled++
		}
	}
	t.Logf("%d checkouts, %d attempts, %d kills, %d cancelled", checkouts, attempts, kills, cancelled)
	if kills == 0 {
		t.Fatal("no instance was killed: the race did not happen")
	}

	orders := openDB(t, orderDB)
	payments := openDB(t, "sqlite:"+filepath.Join(sys.Dir, "data", "payment.db"))
	// One order per key, every one final.
	var byStatus []struct {
		Status string `db:"status"`
		N      int    `db:"n"`
	}
	if err := orders.Select(&byStatus, `SELECT status, COUNT(*) AS n FROM orders GROUP BY status`); err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, s := range byStatus {
		total += s.N
		if s.Status != "CONFIRMED" && s.Status != "CANCELLED" {
			t.Errorf("%d orders %s, want every order final", s.N, s.Status)
		}
	}
	if total != checkouts {
		t.Errorf("%d orders for %d keys: %v", total, checkouts, byStatus)
	}
	// No double charge, at payment or at the provider.
	for _, q := range []string{
		`SELECT COUNT(*) FROM (SELECT order_id FROM payments WHERE status = 'SUCCEEDED' GROUP BY order_id HAVING COUNT(*) > 1) AS twice`,
		`SELECT COUNT(*) FROM (SELECT order_id FROM simulator_charges GROUP BY order_id HAVING COUNT(*) > 1) AS twice`,
	} {
		var twice int
		if err := payments.Get(&twice, q); err != nil || twice != 0 {
			t.Errorf("%d orders charged twice (%v): %s", twice, err, q)
		}
	}
	// Every confirmed order charged once; every cancelled one either never
	// charged or refunded.
	type row struct {
		ID     string `db:"id"`
		Status string `db:"status"`
	}
	var all []row
	if err := orders.Select(&all, `SELECT id, status FROM orders`); err != nil {
		t.Fatal(err)
	}
	for _, o := range all {
		var charged, refunded int
		if err := payments.Get(&charged, `SELECT COUNT(*) FROM payments WHERE order_id = ? AND status = 'SUCCEEDED'`, o.ID); err != nil {
			t.Fatal(err)
		}
		if err := payments.Get(&refunded, `SELECT COUNT(*) FROM refunds WHERE order_id = ? AND status = 'SUCCEEDED'`, o.ID); err != nil {
			t.Fatal(err)
		}
		switch {
		case o.Status == "CONFIRMED" && (charged != 1 || refunded != 0):
			t.Errorf("confirmed order %s: %d charges, %d refunds; want 1 and 0", o.ID, charged, refunded)
		case o.Status == "CANCELLED" && charged != refunded:
			t.Errorf("cancelled order %s: %d charges, %d refunds; a charge of a cancelled order must be refunded", o.ID, charged, refunded)
		}
	}
	// No oversell, no lost stock: what left the shelf is what confirmed
	// orders hold.
	var sold []struct {
		ProductID string `db:"product_id"`
		N         int64  `db:"n"`
	}
	if err := orders.Select(&sold, `SELECT i.product_id, SUM(i.quantity) AS n FROM order_items i JOIN orders o ON o.id = i.order_id
		WHERE o.status = 'CONFIRMED' GROUP BY i.product_id`); err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{}
	for _, s := range sold {
		want[s.ProductID] = s.N
	}
	eventually(t, 30*time.Second, func() (bool, string) {
		after := stocks(t, sys)
		for _, p := range raceProducts {
			if stockBefore[p]-after[p] != want[p] {
				return false, fmt.Sprintf("%s: stock %d → %d, confirmed orders hold %d", p, stockBefore[p], after[p], want[p])
			}
		}
		return true, ""
	})
}

// postCheckout posts one checkout with key to an order instance; a dead
// instance gives status 0.
func postCheckout(base, bearer, key, body string) (int, map[string]any) {
	req, _ := http.NewRequest(http.MethodPost, base+"/orders", bytes.NewBufferString(body))
	req.Header.Set("Authorization", bearer)
	req.Header.Set("Idempotency-Key", key)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return 0, map[string]any{"error": err.Error()}
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// stocks returns the race's products' stock.
func stocks(t *testing.T, sys *system.System) map[string]int64 {
	out := map[string]int64{}
	for _, id := range raceProducts {
		p := call[map[string]any](t, "GET", sys.Instance("product").URL()+"/products/"+id, nil, "", http.StatusOK)
		out[id] = int64(p["stock"].(float64))
	}
	return out
}

// openDB opens a service's database for the test's checks, closed at the
// test's end.
func openDB(t *testing.T, url string) *sqlx.DB {
	t.Helper()
	db, err := sqldb.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
