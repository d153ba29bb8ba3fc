package notification

import (
	"context"
	"fmt"
	"log/slog"
	"net/smtp"
	"strings"

	userclient "github.com/meshop/meshop/services/user/client"
)

// Sender delivers a notification. Handle calls it inside the transaction
// that records the notification: a failed send rolls the record back and the
// event is redelivered (at least once).
type Sender interface {
	Send(ctx context.Context, n Notification) error
}

// LogSender is the default: the notification table is the mailbox, and the
// send is one log line.
type LogSender struct{ Logger *slog.Logger }

// Send implements Sender.
func (s LogSender) Send(ctx context.Context, n Notification) error {
	s.Logger.InfoContext(ctx, "email sent", "notification", n.ID, "user", n.UserID, "subject", n.Subject)
	return nil
}

// Recipients finds a user's email address.
type Recipients interface {
	Email(ctx context.Context, userID string) (string, error)
}

// SMTPSender sends mail through an SMTP relay (SMTP_ADDR), without auth:
// the relay is local (a mail catcher or the host's MTA).
type SMTPSender struct {
	Addr       string // host:port
	From       string
	Recipients Recipients
}

// Send implements Sender.
func (s SMTPSender) Send(ctx context.Context, n Notification) error {
	to, err := s.Recipients.Email(ctx, n.UserID)
	if err != nil {
		return fmt.Errorf("notification: recipient of %s: %w", n.ID, err)
	}
	msg := strings.Join([]string{
		"From: " + s.From, "To: " + to, "Subject: " + n.Subject,
		"Content-Type: text/plain; charset=utf-8", "", n.Body, "",
	}, "\r\n")
	if err := smtp.SendMail(s.Addr, nil, s.From, []string{to}, []byte(msg)); err != nil {
		return fmt.Errorf("notification: smtp %s: %w", s.Addr, err)
	}
	return nil
}

// NewRecipients reads email addresses from the user service's profiles,
// over its gRPC API (package userclient, on meshclient.Client.Conn("user")).
func NewRecipients(c *userclient.Client) Recipients { return recipients{c} }

type recipients struct{ user *userclient.Client }

func (r recipients) Email(ctx context.Context, userID string) (string, error) {
	p, err := r.user.Lookup(ctx, userID)
	return p.Email, err
}
