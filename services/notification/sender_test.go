package notification

import (
	"bufio"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/kittest"
	userclient "github.com/meshop/meshop/services/user/client"
	userv1 "github.com/meshop/meshop/services/user/proto/meshop/user/v1"
)

// usersServer answers Lookup from a map of emails, as the user service.
type usersServer struct {
	userv1.UnimplementedUsersServer
	emails map[string]string
}

func (s usersServer) Lookup(_ context.Context, req *userv1.LookupRequest) (*userv1.LookupResponse, error) {
	email, ok := s.emails[req.GetId()]
	if !ok {
		return nil, errs.New(errs.NotFound, userclient.ReasonUserNotFound, "no user")
	}
	return &userv1.LookupResponse{Profile: &userv1.Profile{Id: req.GetId(), Email: email}}, nil
}

func TestRecipientsOverGRPC(t *testing.T) {
	conn, _ := kittest.ServeGRPC(t, func(s grpc.ServiceRegistrar) {
		userv1.RegisterUsersServer(s, usersServer{emails: map[string]string{"u1": "ada@example.com"}})
	})
	recipients := NewRecipients(userclient.New(conn))

	ctx := context.Background()
	if email, err := recipients.Email(ctx, "u1"); err != nil || email != "ada@example.com" {
		t.Errorf("Email(u1) = %q, %v", email, err)
	}
	_, err := recipients.Email(ctx, "u9")
	if e := errs.As(err); e.Kind != errs.NotFound || errs.Reason(err) != userclient.ReasonUserNotFound {
		t.Errorf("Email(u9) = %v, want NotFound %s", err, userclient.ReasonUserNotFound)
	}
}

// smtpServer is a minimal SMTP relay that accepts every message; it
// returns its address and the messages' DATA as they arrive.
func smtpServer(t *testing.T) (string, <-chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 4)
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	t.Cleanup(func() { ln.Close() }) // runs first: Accept returns
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				r, w := bufio.NewReader(c), bufio.NewWriter(c)
				say := func(line string) { w.WriteString(line + "\r\n"); w.Flush() }
				say("220 test ESMTP")
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					switch cmd := strings.ToUpper(strings.TrimSpace(line)); {
					case strings.HasPrefix(cmd, "EHLO"), strings.HasPrefix(cmd, "HELO"):
						say("250 test")
					case cmd == "DATA":
						say("354 go ahead")
						var data strings.Builder
						for {
							l, err := r.ReadString('\n')
							if err != nil {
								return
							}
							if l == ".\r\n" {
								break
							}
							data.WriteString(l)
						}
						got <- data.String()
						say("250 queued")
					case cmd == "QUIT":
						say("221 bye")
						return
					default:
						say("250 ok")
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), got
}

func TestSMTPSenderDelivers(t *testing.T) {
	addr, got := smtpServer(t)
	s := SMTPSender{Addr: addr, From: "shop@meshop.local", Recipients: fixedRecipients{"u1": "ada@example.com"}}
	n := Notification{ID: "n1", UserID: "u1", Subject: "Your order is confirmed", Body: "Order o1 is confirmed.", CreatedAt: time.Now().UTC()}
	for range 2 { // a second attempt carries the same Message-ID
		if err := s.Send(context.Background(), n); err != nil {
			t.Fatal(err)
		}
		select {
		case msg := <-got:
			for _, want := range []string{"To: ada@example.com\r\n", "Subject: Your order is confirmed\r\n", "Message-ID: <n1@meshop.local>\r\n", "\r\n\r\nOrder o1 is confirmed."} {
				if !strings.Contains(msg, want) {
					t.Errorf("message lacks %q:\n%s", want, msg)
				}
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no message arrived")
		}
	}
}

func TestSMTPSenderGivesUpOnAHangingRelay(t *testing.T) {
	addr, accepted := hangingSMTP(t)
	s := SMTPSender{Addr: addr, From: "shop@meshop.local", Recipients: fixedRecipients{"u1": "ada@example.com"}, Timeout: 300 * time.Millisecond}
	n := Notification{ID: "n1", UserID: "u1"}

	t.Run("its own timeout", func(t *testing.T) {
		start := time.Now()
		err := s.Send(context.Background(), n)
		if err == nil || !strings.Contains(err.Error(), "timeout") {
			t.Errorf("err = %v, want a timeout", err)
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("gave up after %s, want about 300ms", took)
		}
		<-accepted
	})
	t.Run("the caller's cancellation", func(t *testing.T) {
		s.Timeout = time.Minute
		ctx, cancel := context.WithCancel(context.Background())
		go func() { <-accepted; time.Sleep(100 * time.Millisecond); cancel() }()
		start := time.Now()
		if err := s.Send(ctx, n); err == nil {
			t.Error("sent to a relay that never answered")
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("gave up %s after the call, want about 100ms", took)
		}
	})
}
