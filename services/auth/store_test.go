package auth

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/meshop/meshop/localenv"
	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/events"
)

func TestStore(t *testing.T) {
	localenv.EachDatabase(t, func(t *testing.T, databaseURL string) {
		ctx := context.Background()
		s := openStore(t, databaseURL, nil)
		at := time.Date(2026, 11, 22, 10, 0, 0, 123000, time.UTC)
		ada := Credentials{UserID: "u1", Email: "ada@example.com", PasswordHash: "$argon2id$...", CreatedAt: at}
		ev, _ := events.New("auth", events.UserRegistered, "u1", Registered{UserID: "u1", Email: ada.Email, Name: "Ada"})
		if err := s.InsertCredentials(ctx, ada, ev); err != nil {
			t.Fatal(err)
		}
		got, err := s.Credentials(ctx, "ada@example.com")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(ada, got); diff != "" {
			t.Errorf("Credentials (-want +got):\n%s", diff)
		}
		if taken, err := s.EmailTaken(ctx, "ada@example.com"); err != nil || !taken {
			t.Errorf("EmailTaken = %v, %v", taken, err)
		}
		if taken, _ := s.EmailTaken(ctx, "bob@example.com"); taken {
			t.Error("EmailTaken(bob) = true")
		}
		if _, err := s.Credentials(ctx, "bob@example.com"); !errs.Is(err, errs.NotFound) {
			t.Errorf("Credentials(bob) = %v, want NotFound", err)
		}

		// A taken email: a conflict, and the event is not recorded either.
		ev2, _ := events.New("auth", events.UserRegistered, "u2", Registered{UserID: "u2"})
		err = s.InsertCredentials(ctx, Credentials{UserID: "u2", Email: "ada@example.com", PasswordHash: "x", CreatedAt: at}, ev2)
		if e := errs.As(err); e.Kind != errs.Conflict || e.Code != "email_taken" {
			t.Errorf("duplicate email: %v", err)
		}
		var ids []string
		if err := s.db.Select(&ids, "SELECT id FROM outbox"); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{ev.ID}, ids); diff != "" {
			t.Errorf("outbox ids (-want +got):\n%s", diff)
		}

		// Keys: rotate twice, then delete the retired.
		k1 := SigningKey{Kid: "k1", Algorithm: "ES256", PrivateKey: "pem1", CreatedAt: at, ActiveFrom: at}
		k2 := SigningKey{Kid: "k2", Algorithm: "ES256", PrivateKey: "pem2", CreatedAt: at.Add(time.Hour), ActiveFrom: at.Add(time.Hour + time.Minute)}
		if err := s.RotateKeys(ctx, k1, at); err != nil {
			t.Fatal(err)
		}
		retire := at.Add(2 * time.Hour)
		if err := s.RotateKeys(ctx, k2, retire); err != nil {
			t.Fatal(err)
		}
		keys, err := s.SigningKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		k1.RetireAfter = &retire
		want := map[string]SigningKey{"k1": k1, "k2": k2}
		if len(keys) != 2 {
			t.Fatalf("keys = %+v", keys)
		}
		for _, k := range keys {
			if diff := cmp.Diff(want[k.Kid], k); diff != "" {
				t.Errorf("key %s (-want +got):\n%s", k.Kid, diff)
			}
		}
		if err := s.DeleteKeysRetiredBefore(ctx, retire); err != nil {
			t.Fatal(err)
		}
		if keys, _ := s.SigningKeys(ctx); len(keys) != 2 {
			t.Errorf("a key retiring at the cut-off was deleted: %+v", keys)
		}
		if err := s.DeleteKeysRetiredBefore(ctx, retire.Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		if keys, _ := s.SigningKeys(ctx); len(keys) != 1 || keys[0].Kid != "k2" {
			t.Errorf("after deleting retired keys: %+v, want [k2]", keys)
		}
	})
}
