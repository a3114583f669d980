package config

import (
	"flag"
	"fmt"
	"reflect"
	"strconv"
	"strings"
)

// flagForKey names the agent flag that sets each key, so errors in flag
// values can say "flag -NAME". AddFlags registers exactly these.
var flagForKey = map[string]string{
	"node_name":        "-node",
	"data_dir":         "-data-dir",
	"bind_addr":        "-bind",
	"advertise_addr":   "-advertise",
	"server":           "-server",
	"bootstrap_expect": "-bootstrap-expect",
	"join":             "-join",
	"retry_join":       "-retry-join",
	"retry_interval":   "-retry-interval",
	"retry_max":        "-retry-max",
	"rejoin":           "-rejoin",
	"encrypt":          "-encrypt",
	"log_level":        "-log-level",
	"log_json":         "-log-json",
	"postgres.bin_dir": "-pg-bin-dir",
	"postgres.os_user": "-pg-os-user",
	"ports.gateway":    "-gateway-port",
	"ports.http":       "-http-port",
	"ports.serf":       "-serf-port",
	"ports.raft":       "-raft-port",
	"ports.postgres":   "-postgres-port",
}

// AddFlags registers the agent's configuration flags on fs: -config-file and
// -config-dir (both repeatable) append to opts.ConfigFiles and
// opts.ConfigDirs, and one flag per main key sets opts.FlagConfig. A flag
// that is not given leaves its key unset, so files and defaults apply.
func AddFlags(fs *flag.FlagSet, opts *LoadOpts) {
	c := &opts.FlagConfig
	ports := func() *PortsRaw {
		if c.Ports == nil {
			c.Ports = &PortsRaw{}
		}
		return c.Ports
	}
	pg := func() *PostgresRaw {
		if c.Postgres == nil {
			c.Postgres = &PostgresRaw{}
		}
		return c.Postgres
	}

	fs.Var(&listValue{&opts.ConfigFiles}, "config-file",
		"A configuration file (HCL, or JSON when it ends in .json). Repeatable; later files win.")
	fs.Var(&listValue{&opts.ConfigDirs}, "config-dir",
		"A directory whose *.hcl and *.json files are read in lexical order, after every -config-file. Repeatable.")

	str := func(name, usage string, set func(*string)) {
		fs.Var(funcValue(func(s string) error { set(&s); return nil }), name, usage)
	}
	num := func(name, usage string, set func(*int)) {
		fs.Var(funcValue(func(s string) error {
			n, err := strconv.Atoi(s)
			if err != nil {
				return fmt.Errorf("%q is not a whole number", s)
			}
			set(&n)
			return nil
		}), name, usage)
	}
	boolean := func(name, usage string, set func(*bool)) {
		fs.Var(boolValue(func(b bool) { set(&b) }), name, usage)
	}

	str("node", "Name of this node; unique in the cluster. Default: the host name.", func(s *string) { c.NodeName = s })
	str("data-dir", "Directory for the agent's state and PostgreSQL's data. Required.", func(s *string) { c.DataDir = s })
	str("bind", "IP address to listen on. Default: 0.0.0.0.", func(s *string) { c.BindAddr = s })
	str("advertise", "IP address other nodes reach this node on.", func(s *string) { c.AdvertiseAddr = s })
	boolean("server", "Be a raft voter (run on 3 or 5 nodes).", func(b *bool) { c.Server = b })
	num("bootstrap-expect", "Voters to wait for before bootstrapping the cluster; needs -server.", func(n *int) { c.BootstrapExpect = n })
	fs.Var(&listValue{&c.Join}, "join", "Address of an agent to join at start-up. Repeatable.")
	fs.Var(&listValue{&c.RetryJoin}, "retry-join", "Address of an agent to join, retried until it works. Repeatable.")
	str("retry-interval", "Time between -retry-join attempts. Default: 5s.", func(s *string) { c.RetryInterval = s })
	num("retry-max", "Number of -retry-join attempts; 0 = forever.", func(n *int) { c.RetryMax = n })
	boolean("rejoin", "Re-join the peers known before a restart.", func(b *bool) { c.Rejoin = b })
	str("encrypt", "Base64 gossip encryption key (see `pgbattery keygen`).", func(s *string) { c.Encrypt = s })
	str("log-level", "trace, debug, info, warn or error. Default: info.", func(s *string) { c.LogLevel = s })
	boolean("log-json", "Log JSON lines.", func(b *bool) { c.LogJSON = b })
	str("pg-bin-dir", "Directory of the PostgreSQL server binaries. Default: discovered.", func(s *string) { pg().BinDir = s })
	str("pg-os-user", "OS user PostgreSQL runs as when the agent runs as root. Default: postgres.", func(s *string) { pg().OSUser = s })
	num("gateway-port", "Port of the PostgreSQL gateway. Default: 5432.", func(n *int) { ports().Gateway = n })
	num("http-port", "Port of the HTTP API. Default: 8432.", func(n *int) { ports().HTTP = n })
	num("serf-port", "Port of gossip (TCP and UDP). Default: 8301.", func(n *int) { ports().Serf = n })
	num("raft-port", "Port of raft. Default: 8300.", func(n *int) { ports().Raft = n })
	num("postgres-port", "Port PostgreSQL itself listens on. Default: 5433.", func(n *int) { ports().Postgres = n })
}

// funcValue is a flag.Value that hands each value to a setter.
type funcValue func(string) error

func (f funcValue) String() string     { return "" }
func (f funcValue) Set(s string) error { return f(s) }

// boolValue is a boolean flag.Value ("-server" or "-server=false").
type boolValue func(bool)

func (f boolValue) String() string   { return "" }
func (f boolValue) IsBoolFlag() bool { return true }
func (f boolValue) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("%q is not true or false", s)
	}
	f(b)
	return nil
}

// listValue is a repeatable flag.Value.
type listValue struct{ p *[]string }

func (l *listValue) String() string {
	if l == nil || l.p == nil {
		return ""
	}
	return strings.Join(*l.p, ",")
}
func (l *listValue) Set(s string) error { *l.p = append(*l.p, s); return nil }

// flagSource returns the flag configuration as a decoded source: the
// position of every set key is the flag that set it.
func flagSource(c *Config) *decoded {
	d := &decoded{cfg: *c, pos: positions{}, list: map[string][]Pos{}}
	walkSet(reflect.ValueOf(c).Elem(), "", func(key string, v reflect.Value) {
		p := Pos{Flag: flagForKey[key]}
		if p.Flag == "" {
			p.Flag = "-" + strings.ReplaceAll(key, "_", "-")
		}
		d.pos[key] = p
		if v.Kind() == reflect.Slice {
			for i := 0; i < v.Len(); i++ {
				d.list[key] = append(d.list[key], p)
			}
		}
	})
	return d
}

// walkSet calls fn for every set leaf (non-nil pointer, non-empty list or
// map) of a Config-shaped struct.
func walkSet(v reflect.Value, prefix string, fn func(key string, v reflect.Value)) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("hcl"), ",")
		key := joinKey(prefix, name)
		f := v.Field(i)
		switch f.Kind() {
		case reflect.Ptr:
			if f.IsNil() {
				continue
			}
			if f.Elem().Kind() == reflect.Struct {
				walkSet(f.Elem(), key, fn)
				continue
			}
			fn(key, f)
		case reflect.Slice, reflect.Map:
			if f.Len() > 0 {
				fn(key, f)
			}
		}
	}
}

// Ptr returns a pointer to v, for code that builds a Config by hand
// (tests, the demo): config.Ptr("/var/lib/pgbattery").
func Ptr[T any](v T) *T { return &v }
