// Package log builds Meshop's structured logger: log/slog with JSON output,
// the service name under "svc", and the current span's "trace_id" and
// "span_id" on every record logged with a context, so a log line leads to
// its trace in Jaeger.
package log

import (
	"context"
	"io"
	"log/slog"

	kitlog "github.com/go-kit/log"
	"go.opentelemetry.io/otel/trace"
)

// New returns a JSON logger for service svc writing to w at level.
func New(w io.Writer, svc string, level slog.Level) *slog.Logger {
	h := slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})
	return slog.New(traceHandler{h}).With("svc", svc)
}

// ParseLevel maps "debug", "info", "warn", "error" to a level.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	err := l.UnmarshalText([]byte(s))
	return l, err
}

// traceHandler adds trace_id and span_id from the record's context.
type traceHandler struct{ slog.Handler }

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return traceHandler{h.Handler.WithAttrs(attrs)}
}

func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{h.Handler.WithGroup(name)}
}

// GoKit adapts l to the go-kit logger interface, for go-kit packages (sd,
// lb) that want one. Key-value pairs pass through; a "level" key chooses
// the slog level.
func GoKit(l *slog.Logger) kitlog.Logger { return goKitLogger{l} }

type goKitLogger struct{ l *slog.Logger }

func (g goKitLogger) Log(keyvals ...any) error {
	level, msg := slog.LevelInfo, "go-kit"
	attrs := make([]any, 0, len(keyvals))
	for i := 0; i+1 < len(keyvals); i += 2 {
		key, _ := keyvals[i].(string)
		switch key {
		case "level":
			if s, ok := keyvals[i+1].(interface{ String() string }); ok {
				_ = level.UnmarshalText([]byte(s.String()))
			}
		case "msg":
			msg, _ = keyvals[i+1].(string)
		default:
			attrs = append(attrs, key, keyvals[i+1])
		}
	}
	g.l.Log(context.Background(), level, msg, attrs...)
	return nil
}
