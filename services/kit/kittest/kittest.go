// Package kittest holds the test helpers that the services' tests (and
// the kit's own) share, so each is written once:
//
//	DB          a database opened and migrated for a test, closed at its end
//	Outbox      the events a store recorded in its outbox
//	Send        one request to a service's JSON API, and its decoded answer
//	ErrorOf     the code and details of an error body (DESIGN §2)
//	ServeGRPC   gRPC services served in process, and a connection to them
//	ErrorInfo   the code and Meshop reason of a gRPC error
//
// It is an ordinary package, not an internal one: each service is a module
// of its own, and Go lets no other module import a kit/internal package.
// Only _test.go files import it. It imports nothing of the kit but sqldb and errs,
// so package tests inside the kit (events) can use it without an import
// cycle; Outbox is generic for the same reason. Test doubles of one kit
// package stay beside it (auth/authtest), as net/http/httptest does.
package kittest

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/meshop/meshop/services/kit/sqldb"
)

// DB opens the database at databaseURL with sets applied (see
// sqldb.OpenMigrated) and closes it when the test ends.
func DB(t testing.TB, databaseURL string, sets ...sqldb.MigrationSet) *sqlx.DB {
	t.Helper()
	db, err := sqldb.OpenMigrated(context.Background(), databaseURL, sets...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Outbox returns the envelopes in db's outbox (events.Migrations), oldest
// first, each decoded into an E: pass events.Envelope. It takes the type
// rather than naming it because package events' own tests import kittest.
func Outbox[E any](t testing.TB, db *sqlx.DB) []E {
	t.Helper()
	var bodies []string
	if err := db.Select(&bodies, `SELECT envelope FROM outbox ORDER BY created_at, id`); err != nil {
		t.Fatal(err)
	}
	out := []E{}
	for _, b := range bodies {
		var e E
		if err := json.Unmarshal([]byte(b), &e); err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}
