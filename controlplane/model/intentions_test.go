package model

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseIntentions(t *testing.T) {
	allow := func(name string) IntentionSource { return IntentionSource{Name: name, Action: IntentionAllow} }
	deny := func(name string) IntentionSource { return IntentionSource{Name: name, Action: IntentionDeny} }
	for _, tc := range []struct {
		name     string
		dest     string
		raw      string
		want     *Intentions
		problems []string // substrings, one per problem
	}{
		{
			name: "exact names first, then the wildcard",
			dest: "payment",
			raw:  `{"Kind":"service-intentions","Name":"payment","Sources":[{"Name":"*","Action":"deny","Precedence":8},{"Name":"order","Action":"allow"},{"Name":"auth","Action":"deny"}]}`,
			want: &Intentions{Destination: "payment", Sources: []IntentionSource{deny("auth"), allow("order"), deny("*")}},
		},
		{
			name: "L7 permissions keep their order",
			dest: "user",
			raw: `{"Sources":[{"Name":"order","Permissions":[
				{"Action":"deny","HTTP":{"PathExact":"/meshop.user.v1.Users/Delete"}},
				{"Action":"allow","HTTP":{"PathPrefix":"/meshop.user.v1.Users/","Methods":["POST"],"Header":[{"Name":"x-tenant","Exact":"a","IgnoreCase":true}]}}]}]}`,
			want: &Intentions{Destination: "user", Sources: []IntentionSource{{Name: "order", Permissions: []IntentionPermission{
				{Action: IntentionDeny, HTTP: HTTPMatch{PathExact: "/meshop.user.v1.Users/Delete"}},
				{Action: IntentionAllow, HTTP: HTTPMatch{PathPrefix: "/meshop.user.v1.Users/", Methods: []string{"POST"},
					Headers: []HeaderMatch{{Name: "x-tenant", Exact: "a", IgnoreCase: true}}}},
			}}}},
		},
		{
			name:     "an unsupported matcher denies its source, not the others",
			dest:     "user",
			raw:      `{"Sources":[{"Name":"order","Permissions":[{"Action":"allow","HTTP":{"PathRegex":"(unclosed"}}]},{"Name":"auth","Action":"allow"}]}`,
			want:     &Intentions{Destination: "user", Sources: []IntentionSource{allow("auth"), deny("order")}},
			problems: []string{`source "order": permission 0: PathRegex`},
		},
		{
			name:     "a grpc- header is refused (gRPC NACKs it)",
			dest:     "user",
			raw:      `{"Sources":[{"Name":"order","Permissions":[{"Action":"allow","HTTP":{"Header":[{"Name":"grpc-timeout","Present":true}]}}]}]}`,
			want:     &Intentions{Destination: "user", Sources: []IntentionSource{deny("order")}},
			problems: []string{`header "grpc-timeout" cannot be matched`},
		},
		{
			name:     "a header match needs exactly one way to match",
			dest:     "user",
			raw:      `{"Sources":[{"Name":"order","Permissions":[{"Action":"allow","HTTP":{"Header":[{"Name":"x","Exact":"a","Prefix":"b"}]}}]}]}`,
			want:     &Intentions{Destination: "user", Sources: []IntentionSource{deny("order")}},
			problems: []string{"want exactly one of"},
		},
		{
			name:     "a JWT permission denies its source",
			dest:     "user",
			raw:      `{"Sources":[{"Name":"order","Permissions":[{"Action":"allow","JWT":{"Providers":[{"Name":"okta"}]},"HTTP":{"PathPrefix":"/"}}]}]}`,
			want:     &Intentions{Destination: "user", Sources: []IntentionSource{deny("order")}},
			problems: []string{"JWT requirements are not supported"},
		},
		{
			name:     "an entry-wide JWT denies everyone",
			dest:     "user",
			raw:      `{"JWT":{"Providers":[{"Name":"okta"}]},"Sources":[{"Name":"order","Action":"allow"}]}`,
			want:     denyAll("user"),
			problems: []string{"every caller is denied"},
		},
		{
			name:     "unreadable JSON denies everyone",
			dest:     "user",
			raw:      `{"Sources":`,
			want:     denyAll("user"),
			problems: []string{"unreadable config entry"},
		},
		{
			name:     "a peer's source is ignored",
			dest:     "user",
			raw:      `{"Sources":[{"Name":"order","Peer":"other","Action":"allow"},{"Name":"auth","Action":"allow"}]}`,
			want:     &Intentions{Destination: "user", Sources: []IntentionSource{allow("auth")}},
			problems: []string{"peer, sameness group"},
		},
		{
			name:     "neither action nor permissions",
			dest:     "user",
			raw:      `{"Sources":[{"Name":"order"}]}`,
			want:     &Intentions{Destination: "user", Sources: []IntentionSource{deny("order")}},
			problems: []string{"want either action allow or deny"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := checker{}
			got := parseIntentions(&c, tc.dest, []byte(tc.raw))
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("intentions (-want +got):\n%s", diff)
			}
			if len(c.problems) != len(tc.problems) {
				t.Fatalf("problems = %v, want %d", c.problems, len(tc.problems))
			}
			for i, p := range c.problems {
				if p.Kind != KindIntention || !strings.Contains(p.Message, tc.problems[i]) {
					t.Errorf("problem %d = %s, want kind %s with %q", i, p, KindIntention, tc.problems[i])
				}
			}
		})
	}
}

func TestEffectiveSources(t *testing.T) {
	src := func(name string, a IntentionAction) IntentionSource { return IntentionSource{Name: name, Action: a} }
	wildcard := &Intentions{Destination: "*", Sources: []IntentionSource{src("auth", IntentionAllow), src("order", IntentionAllow), src("*", IntentionDeny)}}
	for _, tc := range []struct {
		name  string
		exact *Intentions
		wild  *Intentions
		want  []IntentionSource
	}{
		{name: "none", want: nil},
		{name: "only the wildcard destination", wild: wildcard, want: wildcard.Sources},
		{
			name:  "the service's own entry names a source first",
			exact: &Intentions{Sources: []IntentionSource{src("order", IntentionDeny)}},
			wild:  wildcard,
			want:  []IntentionSource{src("order", IntentionDeny), src("auth", IntentionAllow), src("*", IntentionDeny)},
		},
		{
			name:  "the service's own * shadows the whole wildcard entry",
			exact: &Intentions{Sources: []IntentionSource{src("user", IntentionAllow), src("*", IntentionDeny)}},
			wild:  wildcard,
			want:  []IntentionSource{src("user", IntentionAllow), src("*", IntentionDeny)},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, EffectiveSources(tc.exact, tc.wild)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}
