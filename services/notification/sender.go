package notification

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/smtp"
	"strings"
	"time"

	userclient "github.com/meshop/meshop/services/user/client"
)

// Sender delivers a notification. The Dispatcher calls it after the
// transaction that recorded the notification has committed, with a
// deadline (DispatcherConfig.SendTimeout); an error is retried later. A
// notification may be sent more than once (at least once): n.ID is the
// same every time.
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

// DefaultSMTPTimeout bounds an SMTPSender's send when its context has no
// earlier deadline.
const DefaultSMTPTimeout = 10 * time.Second

// SMTPSender sends mail through an SMTP relay (SMTP_ADDR), without auth:
// the relay is local (a mail catcher or the host's MTA). Every send is
// bounded, the recipient's lookup, the dial and each read and write of the
// conversation, by ctx's deadline or Timeout, whichever comes first: a
// relay that accepts the connection and never answers fails the send.
type SMTPSender struct {
	Addr       string // host:port
	From       string
	Recipients Recipients
	// Timeout [DefaultSMTPTimeout] bounds one send.
	Timeout time.Duration
}

// Send implements Sender.
func (s SMTPSender) Send(ctx context.Context, n Notification) error {
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = DefaultSMTPTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	to, err := s.Recipients.Email(ctx, n.UserID)
	if err != nil {
		return fmt.Errorf("notification: recipient of %s: %w", n.ID, err)
	}
	if err := s.deliver(ctx, to, message(s.From, to, n)); err != nil {
		return fmt.Errorf("notification: smtp %s: %w", s.Addr, err)
	}
	return nil
}

// deliver is smtp.SendMail with a deadline: the connection is dialled
// with ctx and carries ctx's deadline, and ctx ending interrupts it.
func (s SMTPSender) deliver(ctx context.Context, to string, msg []byte) error {
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "tcp", s.Addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(deadline); err != nil {
			return err
		}
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) }) // cancellation, too, ends a blocked read
	defer stop()
	host, _, _ := net.SplitHostPort(s.Addr)
	c, err := smtp.NewClient(conn, host) // reads the greeting
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("localhost"); err != nil {
		return err
	}
	if ok, _ := c.Extension("STARTTLS"); ok { // as smtp.SendMail does
		if err := c.StartTLS(&tls.Config{ServerName: host}); err != nil {
			return err
		}
	}
	if err := c.Mail(s.From); err != nil {
		return err
	}
	if err := c.Rcpt(to); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	if err := w.Close(); err != nil { // the relay's answer to the message
		return err
	}
	// Accepted: a failed QUIT must not make it a failed send (and a
	// duplicate on the retry).
	_ = c.Quit()
	return nil
}

// message is n as an email to to. Its Message-ID is made from n.ID, so
// every attempt at the same notification carries the same one: a mail
// system can drop what at-least-once sending duplicated.
func message(from, to string, n Notification) []byte {
	domain := "meshop.local"
	if _, d, ok := strings.Cut(from, "@"); ok && d != "" {
		domain = d
	}
	return []byte(strings.Join([]string{
		"From: " + from, "To: " + to, "Subject: " + n.Subject,
		"Date: " + n.CreatedAt.Format(time.RFC1123Z),
		"Message-ID: <" + n.ID + "@" + domain + ">",
		"MIME-Version: 1.0",
		"Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit",
		"", n.Body, "",
	}, "\r\n"))
}

// NewRecipients reads email addresses from the user service's profiles,
// over its gRPC API (package userclient, on meshclient.Client.Conn("user")).
func NewRecipients(c *userclient.Client) Recipients { return recipients{c} }

type recipients struct{ user *userclient.Client }

func (r recipients) Email(ctx context.Context, userID string) (string, error) {
	p, err := r.user.Lookup(ctx, userID)
	return p.Email, err
}
