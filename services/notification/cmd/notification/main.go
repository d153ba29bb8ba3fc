// Command notification runs the notification service. Settings: see
// kit/app.Settings, and
//
//	SMTP_ADDR [unset]              send mail through this relay (host:port) instead of only logging
//	SMTP_FROM [shop@meshop.local]  the sender address
//	SMTP_TIMEOUT [10s]             bound on one send: recipient lookup, dial and the whole SMTP conversation
//	SEND_MAX_ATTEMPTS [10]         sends of a notification tried (backoff 5s doubling to 5m) before it is given up
package main

import (
	"context"
	"fmt"
	"os"

	authclient "github.com/meshop/meshop/services/auth/client"
	"github.com/meshop/meshop/services/kit/app"
	"github.com/meshop/meshop/services/kit/auth"
	"github.com/meshop/meshop/services/kit/config"
	"github.com/meshop/meshop/services/kit/events"
	"github.com/meshop/meshop/services/notification"
	userclient "github.com/meshop/meshop/services/user/client"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "notification:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx := context.Background()
	a, err := app.New(ctx, app.Spec{Name: "notification", Upstreams: []string{"auth", "user"}, PublicPrefixes: []string{"/notifications"}})
	if err != nil {
		return err
	}
	env := config.FromEnv()
	smtpAddr, smtpFrom := env.String("SMTP_ADDR", ""), env.String("SMTP_FROM", "shop@meshop.local")
	sendTimeout := env.Duration("SMTP_TIMEOUT", notification.DefaultSMTPTimeout)
	maxAttempts := env.Int("SEND_MAX_ATTEMPTS", 10, 1, 1000)
	if err := env.Err(); err != nil {
		return err
	}
	db, err := a.OpenDB(ctx, notification.Migrations(), events.Migrations())
	if err != nil {
		return err
	}
	defer db.Close()
	bus, relay, err := a.Events(ctx, db)
	if err != nil {
		return err
	}
	defer bus.Close()

	var sender notification.Sender = notification.LogSender{Logger: a.Logger}
	if smtpAddr != "" {
		userConn, err := a.Mesh.Conn("user")
		if err != nil {
			return err
		}
		sender = notification.SMTPSender{Addr: smtpAddr, From: smtpFrom, Recipients: notification.NewRecipients(userclient.New(userConn)), Timeout: sendTimeout}
		a.Logger.Info("sending mail through SMTP", "addr", smtpAddr)
	}
	outbox := events.NewOutbox(a.Telemetry.Propagator, relay.Notify)
	store := notification.NewStore(db, outbox)
	// Notifications are recorded in the consumer's transaction and sent by
	// the dispatcher after it commits, never inside it.
	dispatcher := notification.NewDispatcher(notification.DispatcherConfig{
		Queue: store, Sender: sender, Logger: a.Logger, SendTimeout: sendTimeout, MaxAttempts: maxAttempts,
	})
	handler := notification.Handler{Store: store, Notify: dispatcher.Notify}
	consumer, err := events.NewConsumer(events.ConsumerConfig{
		Name: "notification", Types: notification.Consumed, Handler: handler.Handle,
		DB: db, Bus: bus, Telemetry: a.Telemetry, Metrics: a.Metrics, Logger: a.Logger, Outbox: outbox,
	})
	if err != nil {
		return err
	}

	endpoints := notification.NewEndpoints(notification.New(store), a.Logger, a.Requests)
	authConn, err := a.Mesh.Conn("auth")
	if err != nil {
		return err
	}
	verifier := auth.NewVerifier(authclient.New(authConn), auth.VerifierConfig{Logger: a.Logger})
	return a.Run(ctx, notification.NewHTTPHandler(endpoints, verifier.Middleware), relay.Run, consumer.Run, dispatcher.Run)
}
