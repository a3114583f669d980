package command

import (
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/hashicorp/cli"

	"github.com/pgbattery/pgbattery/agent/api"
)

// HTTPFlags are the flags every client command shares. A flag wins over its
// environment variable, which wins over the default.
type HTTPFlags struct {
	addr       trackedString
	token      trackedString
	caFile     trackedString
	serverName trackedString
	clientCert trackedString
	clientKey  trackedString
}

// trackedString is a string flag that knows whether it was given.
type trackedString struct {
	v   string
	set bool
}

func (s *trackedString) String() string     { return s.v }
func (s *trackedString) Set(v string) error { s.v, s.set = v, true; return nil }

// AddTo registers -http-addr and -token on fs.
func (f *HTTPFlags) AddTo(fs *flag.FlagSet) {
	fs.Var(&f.addr, "http-addr",
		fmt.Sprintf("Address of the agent's HTTP API: host:port, or an http:// or https:// URL. "+
			"Also set with the %s environment variable. Default: %s.", api.HTTPAddrEnvName, api.DefaultAddress))
	fs.Var(&f.token, "token",
		fmt.Sprintf("ACL token sent with the request. Also set with the %s environment variable.", api.HTTPTokenEnvName))
	fs.Var(&f.caFile, "ca-file",
		fmt.Sprintf("PEM CA bundle to verify an https:// agent's certificate against. Also set with the %s environment variable. Default: the system roots.", api.HTTPCACertEnvName))
	fs.Var(&f.serverName, "tls-server-name",
		fmt.Sprintf("The name the agent's certificate must carry, when it is not the host of -http-addr. Also set with the %s environment variable.", api.HTTPTLSServerNameEnvName))
	fs.Var(&f.clientCert, "client-cert",
		fmt.Sprintf("PEM client certificate for an agent with tls.verify_incoming. Also set with the %s environment variable.", api.HTTPClientCertEnvName))
	fs.Var(&f.clientKey, "client-key",
		fmt.Sprintf("PEM key of -client-cert. Also set with the %s environment variable.", api.HTTPClientKeyEnvName))
}

// flagOrEnv resolves a flag that an environment variable can also set.
func flagOrEnv(f trackedString, env string) string {
	if f.set {
		return f.v
	}
	return os.Getenv(env)
}

// Address is the resolved HTTP API address.
func (f *HTTPFlags) Address() string {
	if f.addr.set {
		return f.addr.v
	}
	if v := os.Getenv(api.HTTPAddrEnvName); v != "" {
		return v
	}
	return api.DefaultAddress
}

// Token is the resolved ACL token.
func (f *HTTPFlags) Token() string {
	if f.token.set {
		return f.token.v
	}
	return os.Getenv(api.HTTPTokenEnvName)
}

// APIClient returns a client for the resolved address and token.
func (f *HTTPFlags) APIClient() (*api.Client, error) {
	return api.NewClient(api.Config{
		Address: f.Address(), Token: f.Token(),
		CAFile:        flagOrEnv(f.caFile, api.HTTPCACertEnvName),
		TLSServerName: flagOrEnv(f.serverName, api.HTTPTLSServerNameEnvName),
		ClientCert:    flagOrEnv(f.clientCert, api.HTTPClientCertEnvName),
		ClientKey:     flagOrEnv(f.clientKey, api.HTTPClientKeyEnvName),
	})
}

// newFlagSet returns a flag set that reports errors through the command
// rather than printing them itself.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseFlags parses args and reports a bad flag with the command's help.
func parseFlags(ui cli.Ui, fs *flag.FlagSet, args []string, help string) bool {
	if err := fs.Parse(args); err != nil {
		ui.Error(fmt.Sprintf("Error parsing flags: %v", err))
		ui.Error("")
		ui.Error(strings.TrimSpace(help))
		return false
	}
	return true
}

// usage formats a command's help text followed by its flags.
func usage(text string, fs *flag.FlagSet) string {
	var b strings.Builder
	b.WriteString(strings.TrimSpace(text))
	b.WriteString("\n")
	if fs == nil {
		return b.String()
	}
	var flags []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) { flags = append(flags, f) })
	if len(flags) == 0 {
		return b.String()
	}
	sort.Slice(flags, func(i, j int) bool { return flags[i].Name < flags[j].Name })
	b.WriteString("\nOptions:\n")
	for _, f := range flags {
		b.WriteString("\n  -" + f.Name)
		if f.DefValue != "" && f.DefValue != "false" {
			b.WriteString("=" + f.DefValue)
		}
		b.WriteString("\n")
		b.WriteString(wrap(f.Usage, 72, "      "))
	}
	return b.String()
}

func wrap(s string, width int, indent string) string {
	var b strings.Builder
	line := indent
	for _, w := range strings.Fields(s) {
		if len(line) > len(indent) && len(line)+1+len(w) > width {
			b.WriteString(line + "\n")
			line = indent
		}
		if len(line) > len(indent) {
			line += " "
		}
		line += w
	}
	if len(line) > len(indent) {
		b.WriteString(line + "\n")
	}
	return b.String()
}
