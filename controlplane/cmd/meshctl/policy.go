package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/hashicorp/consul/api"
	"github.com/spf13/cobra"

	"github.com/meshop/meshop/controlplane/catalog"
	"github.com/meshop/meshop/controlplane/model"
)

// serviceName is a Consul service name the mesh accepts (a DNS label).
var serviceName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

func newPolicyCmd(a *app) *cobra.Command {
	cmd := group(&cobra.Command{
		Use:   "policy",
		Short: "Validate and write service policies (timeouts, retries, breakers, splits)",
		Long: `A policy is the JSON document in Consul KV at mesh/policy/<service>: how
callers treat the service. validate checks a file offline with the control
plane's own parser; set validates it and writes it with check-and-set.`,
		Example: `  meshctl policy validate payment.json
  meshctl policy set payment payment.json`,
	})
	var maxBytes int
	validate := &cobra.Command{
		Use:   "validate <file>",
		Short: "Check a policy file offline with the control plane's parser",
		Long: `validate parses the file exactly as the control plane parses mesh/policy/<service>
(unknown fields, trailing data, out-of-range values and a document over the
size limit are errors) and prints the policy in force with the defaults filled
in. It needs neither Consul nor the control plane. "-" reads stdin.`,
		Example: `  meshctl policy validate payment.json
  meshctl policy validate - <<<'{"timeout":"2s","retries":{"attempts":3}}'
  meshctl policy validate payment.json -o json`,
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, _, err := readPolicy(cmd, args[0], maxBytes)
			if err != nil {
				return err
			}
			return printPolicy(cmd, a.output, args[0], p)
		},
	}
	validate.Flags().IntVar(&maxBytes, "max-bytes", model.MaxPolicyBytes, "size limit of a policy (the control plane's POLICY_MAX_BYTES)")

	var cas int64
	set := &cobra.Command{
		Use:   "set <service> <file>",
		Short: "Validate a policy file and write it to mesh/policy/<service> with check-and-set",
		Long: `set validates the file as validate does, then writes it to Consul KV at
mesh/policy/<service> with a check-and-set index: it reads the key's current
ModifyIndex (or takes --cas, the index you read before editing) and the write
succeeds only if nobody changed the key in between. A concurrent edit is
never overwritten: set fails and says so. The token needs key:write on it.`,
		Example: `  meshctl policy set payment payment.json
  meshctl policy set payment payment.json --cas 1234   # the ModifyIndex you read
  CONSUL_HTTP_TOKEN_FILE=~/.consul-token meshctl policy set order order.json`,
		Args: usageArgs(cobra.ExactArgs(2)),
		ValidArgsFunction: func(cmd *cobra.Command, args []string, s string) ([]string, cobra.ShellCompDirective) {
			if len(args) == 0 {
				return a.completeServices(cmd, args, s)
			}
			return []string{"json"}, cobra.ShellCompDirectiveFilterFileExt
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			svc := args[0]
			if !serviceName.MatchString(svc) {
				return usagef("%q is not a service name (lowercase letters, digits, '-')", svc)
			}
			_, raw, err := readPolicy(cmd, args[1], maxBytes)
			if err != nil {
				return err
			}
			consul, err := a.Consul()
			if err != nil {
				return err
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			key := catalog.PolicyPrefix + svc
			index := uint64(cas)
			if cas < 0 {
				cur, _, err := consul.KV().Get(key, (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
				if err != nil {
					return fmt.Errorf("read %s: %s", key, oneLine(err.Error()))
				}
				index = 0 // absent: CAS with 0 creates only if still absent
				if cur != nil {
					index = cur.ModifyIndex
					if bytes.Equal(cur.Value, raw) {
						fmt.Fprintf(cmd.OutOrStdout(), "%s unchanged: it already holds this policy (ModifyIndex %d)\n", key, index)
						return nil
					}
				}
			}
			ok, _, err := consul.KV().CAS(&api.KVPair{Key: key, Value: raw, ModifyIndex: index}, (&api.WriteOptions{}).WithContext(ctx))
			if err != nil {
				return fmt.Errorf("write %s: %s", key, oneLine(err.Error()))
			}
			if !ok {
				now, _, _ := consul.KV().Get(key, (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
				what := "was deleted"
				if now != nil {
					what = fmt.Sprintf("is now at ModifyIndex %d", now.ModifyIndex)
				}
				return fmt.Errorf("%s changed since it was read at ModifyIndex %d (it %s): not written; read it again, merge, and retry", key, index, what)
			}
			after, _, err := consul.KV().Get(key, (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
			if err != nil || after == nil {
				fmt.Fprintf(cmd.OutOrStdout(), "%s written\n", key)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s written (ModifyIndex %d; was %d)\n", key, after.ModifyIndex, index)
			return nil
		},
	}
	set.Flags().IntVar(&maxBytes, "max-bytes", model.MaxPolicyBytes, "size limit of a policy (the control plane's POLICY_MAX_BYTES)")
	set.Flags().Int64Var(&cas, "cas", -1, "write only if the key's ModifyIndex is this (0: only if absent); default: the index read just before writing")
	cmd.AddCommand(validate, set)
	return cmd
}

// readPolicy reads and parses a policy file ("-": stdin).
func readPolicy(cmd *cobra.Command, path string, maxBytes int) (model.Policy, []byte, error) {
	var raw []byte
	var err error
	if path == "-" {
		raw, err = readAll(cmd.InOrStdin())
	} else {
		raw, err = os.ReadFile(path)
	}
	if err != nil {
		return model.Policy{}, nil, err
	}
	p, err := model.ParsePolicy(raw, maxBytes)
	if err != nil {
		return model.Policy{}, nil, fmt.Errorf("%s: invalid policy: %s", path, joinErrors(err))
	}
	return p, raw, nil
}

// joinErrors puts every problem of a joined error on one line.
func joinErrors(err error) string {
	var multi interface{ Unwrap() []error }
	if errors.As(err, &multi) {
		var parts []string
		for _, e := range multi.Unwrap() {
			parts = append(parts, e.Error())
		}
		return strings.Join(parts, "; ")
	}
	return err.Error()
}

func printPolicy(cmd *cobra.Command, format, path string, p model.Policy) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if format != "table" {
		return printStructured(out, format, v)
	}
	fmt.Fprintf(out, "%s: valid; the policy in force would be (defaults filled in):\n", path)
	if err := printStructured(indent(out), "yaml", v); err != nil {
		return err
	}
	for _, g := range p.NotHonouredByGRPC() {
		fmt.Fprintf(out, "note: proxyless gRPC clients do not apply %s\n", g)
	}
	return nil
}
