package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	sockaddr "github.com/hashicorp/go-sockaddr"
)

// LoadOpts says where the configuration comes from.
type LoadOpts struct {
	// ConfigFiles are read in order. A file ending in .json is JSON, any
	// other is HCL. An entry that is a directory is read like a ConfigDirs
	// entry, at its place in the order.
	ConfigFiles []string
	// ConfigDirs are read after ConfigFiles, in order; from each, the
	// *.hcl and *.json files in lexical order (subdirectories are skipped).
	ConfigDirs []string
	// FlagConfig holds the values given as flags; they win over every file.
	FlagConfig Config
}

// Load reads, merges, defaults and validates the configuration. The
// warnings are things worth logging that do not stop the agent. The error,
// when not nil, is an Errors listing every problem found.
func Load(opts LoadOpts) (*RuntimeConfig, []string, error) {
	var (
		srcs []source
		errs Errors
	)
	readFile := func(path string) {
		data, err := readLimited(path)
		if err != nil {
			errs = append(errs, &Error{Pos: Pos{File: path}, Msg: fmt.Sprintf("cannot read config file: %v", errorCause(err))})
			return
		}
		srcs = append(srcs, source{name: path, data: data, json: strings.EqualFold(filepath.Ext(path), ".json")})
	}
	readDir := func(dir string) {
		entries, err := os.ReadDir(dir)
		if err != nil {
			errs = append(errs, &Error{Pos: Pos{File: dir}, Msg: fmt.Sprintf("cannot read config directory: %v", errorCause(err))})
			return
		}
		for _, e := range entries { // os.ReadDir sorts by name
			ext := strings.ToLower(filepath.Ext(e.Name()))
			if ext != ".hcl" && ext != ".json" {
				continue
			}
			path := filepath.Join(dir, e.Name())
			if fi, err := os.Stat(path); err == nil && fi.IsDir() {
				continue
			}
			readFile(path)
		}
	}
	for _, f := range opts.ConfigFiles {
		if fi, err := os.Stat(f); err == nil && fi.IsDir() {
			readDir(f)
			continue
		}
		readFile(f)
	}
	for _, d := range opts.ConfigDirs {
		readDir(d)
	}

	if len(errs) > 0 {
		// As with a syntax error: what the unreadable file says is
		// unknown, so only report what the readable files get wrong on
		// their own (unknown keys, wrong types), not missing keys.
		_, _, decodeErrs := build(srcs, nil, false)
		errs = append(errs, decodeErrs...)
		return nil, nil, errs
	}
	rt, warnings, buildErrs := build(srcs, &opts.FlagConfig, true)
	if len(buildErrs) > 0 {
		return nil, warnings, buildErrs
	}
	return rt, warnings, nil
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxConfigFileSize {
		return nil, fmt.Errorf("larger than %d bytes", maxConfigFileSize)
	}
	return data, nil
}

// errorCause drops the "open PATH: " prefix of *os.PathError, since the
// message already starts with the path.
func errorCause(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// build merges the sources and the flags and produces the runtime config.
// Without validate it only decodes, reporting syntax, unknown-key and type
// errors.
func build(srcs []source, flags *Config, validate bool) (*RuntimeConfig, []string, Errors) {
	m := &merged{pos: positions{}, list: map[string][]Pos{}}
	var (
		errs     Errors
		badKeys  = map[string]bool{}
		syntaxOK = true
		files    []string
	)
	for _, src := range srcs {
		d, es := decodeSource(src)
		for _, e := range es {
			if e.Key == "" {
				syntaxOK = false
			}
			badKeys[e.Key] = true
		}
		errs = append(errs, es...)
		if d != nil {
			m.add(d)
			files = append(files, src.name)
		}
	}
	if flags != nil {
		m.add(flagSource(flags))
	}
	if !syntaxOK || !validate {
		// What a broken file meant to say is unknown: checking the rest
		// would report missing keys that are only hidden by the error.
		sortErrors(errs, srcs)
		return nil, nil, errs
	}
	b := &builder{m: m, bad: badKeys}
	rt := b.build()
	rt.ConfigFiles = files
	errs = append(errs, b.errs...)
	sortErrors(errs, srcs)
	return rt, b.warnings, errs
}

// sortErrors orders errors as a reader meets them: problems without a
// position first (a missing key), then file by file in merge order and
// line by line, then flags.
func sortErrors(errs Errors, srcs []source) {
	order := map[string]int{}
	for i, s := range srcs {
		if _, ok := order[s.name]; !ok {
			order[s.name] = i + 1
		}
	}
	rank := func(e *Error) (int, int) {
		switch {
		case e.Pos.Flag != "":
			return len(srcs) + 1, 0
		case e.Pos.File == "":
			return 0, 0
		default:
			return order[e.Pos.File], e.Pos.Line
		}
	}
	sort.SliceStable(errs, func(i, j int) bool {
		fi, li := rank(errs[i])
		fj, lj := rank(errs[j])
		if fi != fj {
			return fi < fj
		}
		return li < lj
	})
}

// builder turns the merged Config into a RuntimeConfig, collecting errors.
type builder struct {
	m        *merged
	bad      map[string]bool // keys whose decoding already failed
	errs     Errors
	warnings []string
}

// maxValueInMessage caps how much of a user's value a message repeats.
const maxValueInMessage = 100

// shorten truncates long string arguments of a message.
func shorten(args []any) []any {
	out := make([]any, len(args))
	for i, a := range args {
		if s, ok := a.(string); ok && len(s) > maxValueInMessage {
			a = s[:maxValueInMessage] + "..."
		}
		out[i] = a
	}
	return out
}

func (b *builder) errf(key, format string, args ...any) {
	if b.bad[key] {
		return
	}
	args = shorten(args)
	b.errs = append(b.errs, &Error{Pos: b.m.pos[key], Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (b *builder) warnf(key, format string, args ...any) {
	args = shorten(args)
	e := &Error{Pos: b.m.pos[key], Key: key, Msg: fmt.Sprintf(format, args...)}
	b.warnings = append(b.warnings, e.Error())
}

func (b *builder) isSet(key string) bool    { _, ok := b.m.pos[key]; return ok }
func (b *builder) fromFlag(key string) bool { return b.m.pos[key].Flag != "" }

func (b *builder) str(p *string, def string) string {
	if p == nil {
		return def
	}
	return *p
}

func (b *builder) boolean(p *bool, def bool) bool {
	if p == nil {
		return def
	}
	return *p
}

func (b *builder) integer(key string, p *int, def, lo, hi int) int {
	if p == nil {
		return def
	}
	if *p < lo || *p > hi {
		b.errf(key, "must be %d..%d, not %d", lo, hi, *p)
	}
	return *p
}

// duration parses a duration; zero is allowed only when allowZero.
func (b *builder) duration(key string, p *string, def time.Duration, allowZero bool) time.Duration {
	if p == nil {
		return def
	}
	d, err := time.ParseDuration(strings.TrimSpace(*p))
	if err != nil {
		b.errf(key, "%q is not a duration (use e.g. \"500ms\", \"5s\", \"1m\")", *p)
		return def
	}
	switch {
	case d < 0:
		b.errf(key, "must not be negative, not %s", *p)
	case d == 0 && !allowZero:
		b.errf(key, "must be greater than zero")
	}
	return d
}

func (b *builder) size(key string, p *string, def int64) int64 {
	if p == nil {
		return def
	}
	n, err := ParseSize(*p)
	if err != nil {
		b.errf(key, "%v", err)
		return def
	}
	return n
}

// oneOf checks v against a set of allowed values (case-insensitive) and
// returns it in lower case.
func (b *builder) oneOf(key, v string, allowed ...string) string {
	lv := strings.ToLower(strings.TrimSpace(v))
	for _, a := range allowed {
		if lv == a {
			return lv
		}
	}
	b.errf(key, "must be one of %s, not %q", quoteList(allowed), v)
	return lv
}

func quoteList(vs []string) string {
	q := make([]string, len(vs))
	for i, v := range vs {
		q[i] = strconv.Quote(v)
	}
	if len(q) == 1 {
		return q[0]
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}

// path returns an absolute path. Paths in files must be absolute, since
// "relative to what" has no good answer for a file read from a config dir;
// a path given as a flag is relative to the working directory, as a shell
// user expects.
func (b *builder) path(key string, p *string) string {
	if p == nil || *p == "" {
		return ""
	}
	v := *p
	if filepath.IsAbs(v) {
		return filepath.Clean(v)
	}
	if b.fromFlag(key) {
		abs, err := filepath.Abs(v)
		if err != nil {
			b.errf(key, "cannot make %q absolute: %v", v, err)
			return v
		}
		return abs
	}
	b.errf(key, "must be an absolute path, not %q", v)
	return v
}

// existingFile checks that path names a readable regular file.
func (b *builder) existingFile(key, path string) {
	if path == "" || !filepath.IsAbs(path) {
		return
	}
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		b.errf(key, "%v", errorCause(err))
	case fi.IsDir():
		b.errf(key, "%s is a directory, not a file", path)
	}
}

var (
	nodeNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)
	paramRE    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$`)
)

// reservedParameters are PostgreSQL settings the agent manages itself;
// setting them in postgres.parameters would fight the agent.
var reservedParameters = map[string]string{
	"port":                          "set ports.postgres",
	"listen_addresses":              "the agent listens on bind_addr",
	"data_directory":                "set data_dir",
	"config_file":                   "the agent writes postgresql.conf",
	"hba_file":                      "use postgres.hba",
	"ident_file":                    "the agent manages it",
	"unix_socket_directories":       "the agent keeps the socket in data_dir",
	"synchronous_standby_names":     "set replication.mode",
	"synchronous_commit":            "set replication.mode",
	"primary_conninfo":              "the agent manages replication",
	"primary_slot_name":             "the agent manages replication",
	"recovery_target_timeline":      "the agent manages replication",
	"default_transaction_read_only": "the agent uses it to fence an old primary",
	"pgbattery.fenced":              "the agent uses it to mark a fenced primary",
}

var hbaTypes = map[string]bool{
	"local": true, "host": true, "hostssl": true, "hostnossl": true,
	"hostgssenc": true, "hostnogssenc": true,
}

// reservedTags are the gossip tags the agent sets itself (gossip/tags.go,
// agent/cluster.go); a user tag of the same name would be overwritten. "dc"
// is free text and left to the user.
var reservedTags = map[string]bool{
	"role": true, "pg": true, "gw": true, "api": true, "raft": true,
	"raft_addr": true, "build": true, "lsn": true, "cluster": true,
	"pgaddr": true, "expect": true, "rstate": true, "nofailover": true, "prio": true,
}

// maxUserTagBytes bounds the user's tags: serf's whole tag set must fit in
// 512 bytes, and pgbattery's own tags need most of it.
const maxUserTagBytes = 192

func (b *builder) build() *RuntimeConfig {
	c := &b.m.cfg
	rt := &RuntimeConfig{}

	// Identity and paths.
	rt.NodeName = b.str(c.NodeName, "")
	if c.NodeName == nil {
		host, err := os.Hostname()
		if err != nil || host == "" {
			b.errf("node_name", "not set and the host name is unknown (%v): set node_name", err)
		}
		rt.NodeName = host
	}
	if !nodeNameRE.MatchString(rt.NodeName) {
		if c.NodeName == nil {
			b.errf("node_name", "the host name %q is not a valid node name (1..128 of A-Z a-z 0-9 _ . -, starting with a letter or digit): set node_name", rt.NodeName)
		} else {
			b.errf("node_name", "%q is not valid: use 1..128 of A-Z a-z 0-9 _ . -, starting with a letter or digit", rt.NodeName)
		}
	}
	if c.DataDir == nil || *c.DataDir == "" {
		if !b.bad["data_dir"] {
			b.errs = append(b.errs, &Error{Pos: b.m.pos["data_dir"], Key: "data_dir", Msg: "must be set (in a config file or with -data-dir)"})
		}
	} else {
		rt.DataDir = b.path("data_dir", c.DataDir)
	}

	// Addresses.
	rt.BindAddr = strings.TrimSpace(b.str(c.BindAddr, DefaultBindAddr))
	bindIP := net.ParseIP(rt.BindAddr)
	if bindIP == nil {
		b.errf("bind_addr", "%q is not an IP address", rt.BindAddr)
	}
	if c.AdvertiseAddr != nil {
		rt.AdvertiseAddr = strings.TrimSpace(*c.AdvertiseAddr)
		ip := net.ParseIP(rt.AdvertiseAddr)
		switch {
		case ip == nil:
			b.errf("advertise_addr", "%q is not an IP address", rt.AdvertiseAddr)
		case ip.IsUnspecified():
			b.errf("advertise_addr", "must be an address other nodes can reach, not %s", rt.AdvertiseAddr)
		}
	} else if bindIP != nil {
		if !bindIP.IsUnspecified() {
			rt.AdvertiseAddr = rt.BindAddr
		} else {
			ip, err := sockaddr.GetPrivateIP()
			switch {
			case err != nil:
				b.errf("advertise_addr", "not set, and finding a private IP failed: %v", err)
			case ip == "":
				b.errf("advertise_addr", "not set, bind_addr is %s and no private IPv4 address was found: set advertise_addr or bind_addr", rt.BindAddr)
			default:
				rt.AdvertiseAddr = ip
			}
		}
	}

	// Cluster membership.
	rt.Server = b.boolean(c.Server, false)
	rt.BootstrapExpect = b.integer("bootstrap_expect", c.BootstrapExpect, 0, 0, 9)
	if rt.BootstrapExpect > 0 {
		if !rt.Server {
			b.errf("bootstrap_expect", "requires server = true: only servers (raft voters) bootstrap the cluster")
		}
		if rt.BootstrapExpect%2 == 0 {
			b.warnf("bootstrap_expect", "%d voters survive no more failures than %d would: use an odd number", rt.BootstrapExpect, rt.BootstrapExpect-1)
		}
	}
	rt.Join = b.addresses("join", c.Join)
	rt.RetryJoin = b.addresses("retry_join", c.RetryJoin)
	rt.RetryInterval = b.duration("retry_interval", c.RetryInterval, DefaultRetryInterval, false)
	rt.RetryMax = b.integer("retry_max", c.RetryMax, 0, 0, 1<<30)
	rt.Rejoin = b.boolean(c.Rejoin, false)
	if c.Encrypt != nil && *c.Encrypt != "" {
		rt.Encrypt = strings.TrimSpace(*c.Encrypt)
		key, err := base64.StdEncoding.DecodeString(rt.Encrypt)
		switch {
		case err != nil:
			b.errf("encrypt", "is not valid base64: %v (generate a key with `pgbattery keygen`)", err)
		case len(key) != 16 && len(key) != 24 && len(key) != 32:
			b.errf("encrypt", "key is %d bytes; it must decode to 16, 24 or 32 bytes (generate one with `pgbattery keygen`)", len(key))
		default:
			rt.EncryptKey = key
		}
	}

	// Logging.
	rt.LogLevel = DefaultLogLevel
	if c.LogLevel != nil {
		rt.LogLevel = b.oneOf("log_level", *c.LogLevel, "trace", "debug", "info", "warn", "error")
	}
	rt.LogJSON = b.boolean(c.LogJSON, false)

	rt.Tags = map[string]string{}
	tagBytes := 0
	for k, v := range c.Tags {
		switch {
		case k == "":
			b.errf("tags", "a tag name must not be empty")
		case reservedTags[k]:
			key := "tags." + k
			if _, ok := b.m.pos[key]; !ok {
				key = "tags"
			}
			b.errf(key, "%q is a tag pgbattery sets itself", k)
		}
		rt.Tags[k] = v
		tagBytes += len(k) + len(v) + 2
	}
	if tagBytes > maxUserTagBytes {
		b.errf("tags", "take %d bytes; at most %d fit in gossip beside pgbattery's own tags", tagBytes, maxUserTagBytes)
	}

	b.buildPorts(rt)
	b.buildPostgres(rt)
	b.buildReplication(rt)
	b.buildGossip(rt)
	b.buildFailover(rt)
	b.buildGateway(rt)
	b.buildTelemetry(rt)
	b.buildTLS(rt)
	b.buildLimits(rt)

	raft := orZero(c.Raft)
	rt.Raft.Multiplier = b.integer("raft.multiplier", raft.Multiplier, DefaultRaftMultiplier, 1, 10)
	sw := orZero(c.Switchover)
	rt.Switchover.DrainTimeout = b.duration("switchover.drain_timeout", sw.DrainTimeout, DefaultDrainTimeout, false)
	acl := orZero(c.ACL)
	rt.ACL.Token = b.str(acl.Token, "")
	rt.ACL.ReadsRequireToken = b.boolean(acl.ReadsRequireToken, false)
	if rt.ACL.ReadsRequireToken && rt.ACL.Token == "" {
		b.errf("acl.reads_require_token", "requires acl.token")
	}
	dbg := orZero(c.Debug)
	rt.Debug.ClockControl = b.boolean(dbg.ClockControl, false)
	if rt.Debug.ClockControl {
		b.warnf("debug.clock_control", "is on: anyone who may write to the HTTP API can move this agent's lease clock forward and so end its primary's lease; for fault tests only, never in production")
	}
	return rt
}

func orZero[T any](p *T) *T {
	if p == nil {
		return new(T)
	}
	return p
}

// addresses checks join addresses: "host", "host:port", "[v6]:port", or a
// bare IPv6 address.
func (b *builder) addresses(key string, addrs []string) []string {
	out := make([]string, 0, len(addrs))
	for i, a := range addrs {
		a = strings.TrimSpace(a)
		out = append(out, a)
		if err := checkJoinAddress(a); err != nil {
			pos := b.m.pos[key]
			if ps := b.m.list[key]; i < len(ps) {
				pos = ps[i]
			}
			if !b.bad[key] {
				b.errs = append(b.errs, &Error{Pos: pos, Key: key, Msg: fmt.Sprintf("%q: %v", a, err)})
			}
		}
	}
	return out
}

func checkJoinAddress(a string) error {
	if a == "" {
		return errors.New("empty address")
	}
	if ip := net.ParseIP(a); ip != nil {
		return nil
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		if strings.Contains(err.Error(), "missing port") {
			bracketed := strings.HasPrefix(a, "[")
			host = strings.TrimSuffix(strings.TrimPrefix(a, "["), "]")
			if strings.ContainsAny(host, "[]") || host == "" {
				return errors.New("not a host, host:port or [IPv6]:port")
			}
			if (bracketed || strings.Contains(host, ":")) && net.ParseIP(host) == nil {
				return errors.New("not a host, host:port or [IPv6]:port")
			}
			return nil
		}
		return errors.New("not a host, host:port or [IPv6]:port")
	}
	if host == "" {
		return errors.New("no host")
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port must be 1..65535, not %q", port)
	}
	return nil
}

func (b *builder) buildPorts(rt *RuntimeConfig) {
	p := orZero(b.m.cfg.Ports)
	rt.Ports = Ports{
		Gateway:         b.port("ports.gateway", p.Gateway, DefaultPortGateway, false),
		GatewayReadOnly: b.port("ports.gateway_read_only", p.GatewayReadOnly, DefaultPortGatewayRO, true),
		Postgres:        b.port("ports.postgres", p.Postgres, DefaultPortPostgres, false),
		HTTP:            b.port("ports.http", p.HTTP, DefaultPortHTTP, false),
		Serf:            b.port("ports.serf", p.Serf, DefaultPortSerf, false),
		Raft:            b.port("ports.raft", p.Raft, DefaultPortRaft, false),
	}
	// No two listeners on one port. Report the conflict at the key that was
	// set last in this order, which is the one the user just wrote.
	type named struct {
		key  string
		port int
	}
	all := []named{
		{"ports.gateway", rt.Ports.Gateway},
		{"ports.gateway_read_only", rt.Ports.GatewayReadOnly},
		{"ports.postgres", rt.Ports.Postgres},
		{"ports.http", rt.Ports.HTTP},
		{"ports.serf", rt.Ports.Serf},
		{"ports.raft", rt.Ports.Raft},
	}
	for i := 1; i < len(all); i++ {
		for j := 0; j < i; j++ {
			if all[i].port <= 0 || all[i].port != all[j].port {
				continue
			}
			key, other := all[i].key, all[j].key
			if !b.isSet(key) && b.isSet(other) {
				key, other = other, key
			}
			b.errf(key, "port %d is also used by %s", all[i].port, other)
		}
	}
}

func (b *builder) port(key string, p *int, def int, allowDisabled bool) int {
	if p == nil {
		return def
	}
	if allowDisabled && *p == -1 {
		return -1
	}
	if *p < 1 || *p > 65535 {
		if allowDisabled {
			b.errf(key, "must be 1..65535, or -1 to disable, not %d", *p)
		} else {
			b.errf(key, "must be 1..65535, not %d", *p)
		}
		return 0
	}
	return *p
}

func (b *builder) buildPostgres(rt *RuntimeConfig) {
	p := orZero(b.m.cfg.Postgres)
	rt.Postgres.Enabled = b.boolean(p.Enabled, true)
	rt.Postgres.BinDir = b.path("postgres.bin_dir", p.BinDir)
	if rt.Postgres.BinDir != "" && filepath.IsAbs(rt.Postgres.BinDir) {
		fi, err := os.Stat(rt.Postgres.BinDir)
		switch {
		case err != nil:
			b.errf("postgres.bin_dir", "%v", errorCause(err))
		case !fi.IsDir():
			b.errf("postgres.bin_dir", "%s is not a directory", rt.Postgres.BinDir)
		default:
			bin := filepath.Join(rt.Postgres.BinDir, "postgres")
			fi, err := os.Stat(bin)
			if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
				b.errf("postgres.bin_dir", "%s has no executable postgres binary", rt.Postgres.BinDir)
			}
		}
	}
	rt.Postgres.OSUser = b.str(p.OSUser, DefaultOSUser)
	if rt.Postgres.OSUser == "" {
		b.errf("postgres.os_user", "must not be empty")
	} else if os.Geteuid() == 0 {
		if _, err := user.Lookup(rt.Postgres.OSUser); err != nil {
			b.errf("postgres.os_user", "no OS user %q: PostgreSQL refuses to run as root, so the agent runs it as this user", rt.Postgres.OSUser)
		}
	} else if p.OSUser != nil {
		if u, err := user.Current(); err == nil && u.Username != rt.Postgres.OSUser {
			b.warnf("postgres.os_user", "ignored: the agent does not run as root, so PostgreSQL runs as %s", u.Username)
		}
	}

	rt.Postgres.Parameters = map[string]string{}
	names := make([]string, 0, len(p.Parameters))
	for k := range p.Parameters {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		v := p.Parameters[k]
		key := "postgres.parameters." + k
		if _, ok := b.m.pos[key]; !ok {
			b.m.pos[key] = b.m.pos["postgres.parameters"]
		}
		lk := strings.ToLower(k)
		switch {
		case !paramRE.MatchString(k):
			b.errf(key, "is not a valid PostgreSQL setting name")
		case reservedParameters[lk] != "":
			b.errf(key, "is managed by pgbattery (%s)", reservedParameters[lk])
		case strings.ContainsAny(v, "\n\r\x00"):
			b.errf(key, "value must be one line")
		}
		rt.Postgres.Parameters[lk] = v
	}

	for i, line := range p.HBA {
		pos := b.m.pos["postgres.hba"]
		if ps := b.m.list["postgres.hba"]; i < len(ps) {
			pos = ps[i]
		}
		fields := strings.Fields(line)
		var msg string
		switch {
		case strings.ContainsAny(line, "\n\r\x00"):
			msg = "an entry must be one line"
		case len(fields) == 0:
			msg = "an entry must not be empty"
		case !hbaTypes[fields[0]]:
			msg = fmt.Sprintf("%q: the first field must be local, host, hostssl, hostnossl, hostgssenc or hostnogssenc", line)
		case len(fields) < 4:
			msg = fmt.Sprintf("%q: too few fields for a pg_hba.conf line", line)
		}
		if msg != "" && !b.bad["postgres.hba"] {
			b.errs = append(b.errs, &Error{Pos: pos, Key: "postgres.hba", Msg: msg})
		}
		rt.Postgres.HBA = append(rt.Postgres.HBA, strings.TrimSpace(line))
	}
}

func (b *builder) buildReplication(rt *RuntimeConfig) {
	r := orZero(b.m.cfg.Replication)
	rt.Replication.Mode = ReplicationQuorum
	if r.Mode != nil {
		rt.Replication.Mode = b.oneOf("replication.mode", *r.Mode, ReplicationQuorum, ReplicationStrict, ReplicationAsync)
	}
	rt.Replication.MaxLagOnFailover = b.size("replication.max_lag_on_failover", r.MaxLagOnFailover, DefaultMaxLagOnFailover)
}

func (b *builder) buildGossip(rt *RuntimeConfig) {
	g := orZero(b.m.cfg.Gossip)
	rt.Gossip.Profile = DefaultGossipProfile
	if g.Profile != nil {
		rt.Gossip.Profile = b.oneOf("gossip.profile", *g.Profile, "lan", "local", "wan")
	}
	rt.Gossip.ProbeInterval = b.boundedDuration("gossip.probe_interval", g.ProbeInterval, 10*time.Millisecond, time.Minute)
	rt.Gossip.ProbeTimeout = b.boundedDuration("gossip.probe_timeout", g.ProbeTimeout, time.Millisecond, time.Minute)
	rt.Gossip.GossipInterval = b.boundedDuration("gossip.gossip_interval", g.GossipInterval, time.Millisecond, 10*time.Second)
	rt.Gossip.SuspicionMult = b.integer("gossip.suspicion_mult", g.SuspicionMult, 0, 1, 100)
	rt.Gossip.RetransmitMult = b.integer("gossip.retransmit_mult", g.RetransmitMult, 0, 1, 100)
	if rt.Gossip.ProbeInterval > 0 && rt.Gossip.ProbeTimeout > 0 && rt.Gossip.ProbeTimeout >= rt.Gossip.ProbeInterval {
		b.errf("gossip.probe_timeout", "must be shorter than gossip.probe_interval (%s)", rt.Gossip.ProbeInterval)
	}
}

// boundedDuration parses an optional duration (zero = the default comes
// from elsewhere) within [lo, hi].
func (b *builder) boundedDuration(key string, p *string, lo, hi time.Duration) time.Duration {
	if p == nil {
		return 0
	}
	d := b.duration(key, p, 0, false)
	if d > 0 && (d < lo || d > hi) {
		b.errf(key, "must be %s..%s, not %s", lo, hi, d)
	}
	return d
}

func (b *builder) buildFailover(rt *RuntimeConfig) {
	f := orZero(b.m.cfg.Failover)
	fo := &rt.Failover
	fo.Lease = b.duration("failover.lease", f.Lease, DefaultLease, false)
	fo.LeaseRenewInterval = b.duration("failover.lease_renew_interval", f.LeaseRenewInterval, DefaultLeaseRenewInterval, false)
	fo.HoldDown = b.duration("failover.hold_down", f.HoldDown, DefaultHoldDown, false)
	fo.PostgresHangTimeout = b.duration("failover.postgres_hang_timeout", f.PostgresHangTimeout, DefaultPostgresHangTimeout, false)
	fo.MinFreeSpace = b.size("failover.min_free_space", f.MinFreeSpace, DefaultMinFreeSpace)
	if fo.PostgresHangTimeout > 0 && fo.PostgresHangTimeout < time.Second {
		b.errf("failover.postgres_hang_timeout", "postgres_hang_timeout (%s) must be at least 1s: a busy server must not be mistaken for a hung one", fo.PostgresHangTimeout)
	}
	fo.NoFailover = b.boolean(f.NoFailover, false)
	fo.FailoverPriority = b.integer("failover.failover_priority", f.FailoverPriority, DefaultFailoverPriority, 0, 1000)

	// The primary renews its lease several times per lease, so one lost
	// renewal does not fence it; the controller waits out at least a whole
	// lease before promoting, so the old primary has certainly fenced.
	if fo.Lease > 0 && fo.LeaseRenewInterval > 0 && fo.LeaseRenewInterval >= fo.Lease/2 {
		key := "failover.lease_renew_interval"
		if !b.isSet(key) {
			key = "failover.lease"
		}
		b.errf(key, "lease_renew_interval (%s) must be less than half of lease (%s)", fo.LeaseRenewInterval, fo.Lease)
	}
	if fo.Lease > 0 && fo.HoldDown > 0 && fo.HoldDown < fo.Lease {
		key := "failover.hold_down"
		if !b.isSet(key) {
			key = "failover.lease"
		}
		b.errf(key, "hold_down (%s) must be at least lease (%s): a new primary may only be promoted after the old one's lease has run out", fo.HoldDown, fo.Lease)
	}
}

func (b *builder) buildGateway(rt *RuntimeConfig) {
	g := orZero(b.m.cfg.Gateway)
	gw := &rt.Gateway
	gw.MaxConnections = b.integer("gateway.max_connections", g.MaxConnections, DefaultMaxConnections, 1, 1<<20)
	gw.HoldTimeout = b.duration("gateway.hold_timeout", g.HoldTimeout, DefaultHoldTimeout, true)
	gw.IdleTimeout = b.duration("gateway.idle_timeout", g.IdleTimeout, 0, true)
	gw.Auth = DefaultGatewayAuth
	if g.Auth != nil {
		gw.Auth = b.oneOf("gateway.auth", *g.Auth, "scram", "trust")
	}
	gw.ReadOnlyMaxLag = b.size("gateway.read_only_max_lag", g.ReadOnlyMaxLag, DefaultReadOnlyMaxLag)
	gw.ReadOnlyBalance = DefaultReadOnlyBalance
	if g.ReadOnlyBalance != nil {
		gw.ReadOnlyBalance = b.oneOf("gateway.read_only_balance", *g.ReadOnlyBalance, "round-robin", "least-connections")
	}
}

func (b *builder) buildTelemetry(rt *RuntimeConfig) {
	t := orZero(b.m.cfg.Telemetry)
	tm := &rt.Telemetry
	tm.PrometheusRetentionTime = b.duration("telemetry.prometheus_retention_time", t.PrometheusRetentionTime, DefaultPrometheusRetain, true)
	tm.StatsdAddress = b.hostPort("telemetry.statsd_address", t.StatsdAddress)
	tm.StatsiteAddress = b.hostPort("telemetry.statsite_address", t.StatsiteAddress)
	tm.DisableHostname = b.boolean(t.DisableHostname, false)
	tm.MetricsPrefix = b.str(t.MetricsPrefix, DefaultMetricsPrefix)
	if tm.MetricsPrefix == "" {
		b.errf("telemetry.metrics_prefix", "must not be empty")
	}
}

func (b *builder) hostPort(key string, p *string) string {
	if p == nil || *p == "" {
		return ""
	}
	host, port, err := net.SplitHostPort(*p)
	n, perr := strconv.Atoi(port)
	if err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
		b.errf(key, "%q is not host:port", *p)
	}
	return *p
}

func (b *builder) buildTLS(rt *RuntimeConfig) {
	t := orZero(b.m.cfg.TLS)
	tc := &rt.TLS
	tc.CAFile = b.path("tls.ca_file", t.CAFile)
	tc.CertFile = b.path("tls.cert_file", t.CertFile)
	tc.KeyFile = b.path("tls.key_file", t.KeyFile)
	tc.VerifyIncoming = b.boolean(t.VerifyIncoming, false)
	b.existingFile("tls.ca_file", tc.CAFile)
	b.existingFile("tls.cert_file", tc.CertFile)
	b.existingFile("tls.key_file", tc.KeyFile)
	b.pair("tls", tc.CertFile, tc.KeyFile)
	if tc.VerifyIncoming && tc.CAFile == "" {
		b.errf("tls.verify_incoming", "requires tls.ca_file to verify client certificates against")
	}

	g := orZero(t.Gateway)
	gc := &tc.Gateway
	gc.CertFile = b.path("tls.gateway.cert_file", g.CertFile)
	gc.KeyFile = b.path("tls.gateway.key_file", g.KeyFile)
	gc.Required = b.boolean(g.Required, false)
	b.existingFile("tls.gateway.cert_file", gc.CertFile)
	b.existingFile("tls.gateway.key_file", gc.KeyFile)
	b.pair("tls.gateway", gc.CertFile, gc.KeyFile)
	if gc.Required && gc.CertFile == "" && tc.CertFile == "" {
		b.errf("tls.gateway.required", "requires a certificate: set tls.gateway.cert_file/key_file or tls.cert_file/key_file")
	}
	gc.ClientCAFile = b.path("tls.gateway.client_ca_file", g.ClientCAFile)
	b.existingFile("tls.gateway.client_ca_file", gc.ClientCAFile)
	gc.ClientCert = DefaultClientCert
	if g.ClientCert != nil {
		gc.ClientCert = b.oneOf("tls.gateway.client_cert", *g.ClientCert, "off", "verify-ca", "verify-full")
	}
	if gc.ClientCert == "verify-ca" || gc.ClientCert == "verify-full" {
		if gc.ClientCAFile == "" {
			b.errf("tls.gateway.client_cert", "%q requires tls.gateway.client_ca_file to verify client certificates against", gc.ClientCert)
		}
		if gc.CertFile == "" && tc.CertFile == "" {
			b.errf("tls.gateway.client_cert", "%q requires TLS: set tls.gateway.cert_file/key_file or tls.cert_file/key_file", gc.ClientCert)
		}
	} else if gc.ClientCAFile != "" && g.ClientCert == nil {
		b.warnf("tls.gateway.client_ca_file", "is set but tls.gateway.client_cert is off: client certificates are not asked for")
	}

	h := orZero(t.HTTP)
	tc.HTTP.Enabled = b.boolean(h.Enabled, tc.CertFile != "" && tc.KeyFile != "")
	if tc.HTTP.Enabled && (tc.CertFile == "" || tc.KeyFile == "") {
		b.errf("tls.http.enabled", "requires tls.cert_file and tls.key_file: the HTTP API serves the agent's certificate")
	}
}

func (b *builder) buildLimits(rt *RuntimeConfig) {
	l := orZero(b.m.cfg.Limits)
	rt.Limits.HTTPMaxRPS = DefaultHTTPMaxRPS
	if l.HTTPMaxRPS != nil {
		rt.Limits.HTTPMaxRPS = *l.HTTPMaxRPS
		if *l.HTTPMaxRPS < 0 || *l.HTTPMaxRPS > 1e6 {
			b.errf("limits.http_max_rps", "must be 0 (no limit) .. 1000000, not %g", *l.HTTPMaxRPS)
		}
	}
	rt.Limits.HTTPBurst = b.integer("limits.http_burst", l.HTTPBurst, DefaultHTTPBurst, 1, 1<<20)
	if rt.Limits.HTTPMaxRPS > 0 && float64(rt.Limits.HTTPBurst) < rt.Limits.HTTPMaxRPS && b.isSet("limits.http_burst") {
		b.warnf("limits.http_burst", "(%d) is below limits.http_max_rps (%g): a client can never use its full rate in one second's burst", rt.Limits.HTTPBurst, rt.Limits.HTTPMaxRPS)
	}
}

// pair reports a certificate without its key or a key without its
// certificate.
func (b *builder) pair(prefix, cert, key string) {
	switch {
	case cert != "" && key == "":
		b.errf(prefix+".cert_file", "is set but %s.key_file is not", prefix)
	case cert == "" && key != "":
		b.errf(prefix+".key_file", "is set but %s.cert_file is not", prefix)
	}
}

// ParseSize parses a byte size: a whole number of bytes, or a number with
// a unit B, kB, MB, GB, TB (1024-based, as PostgreSQL reads them; KiB, MiB,
// GiB and TiB are accepted too).
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("%q is not a size (use bytes or e.g. \"16MB\")", s)
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is too large", s)
	}
	unit := strings.TrimSpace(t[i:])
	mult := map[string]int64{
		"": 1, "b": 1,
		"kb": 1 << 10, "kib": 1 << 10,
		"mb": 1 << 20, "mib": 1 << 20,
		"gb": 1 << 30, "gib": 1 << 30,
		"tb": 1 << 40, "tib": 1 << 40,
	}[strings.ToLower(unit)]
	if mult == 0 {
		return 0, fmt.Errorf("%q has an unknown unit %q (use B, kB, MB, GB or TB)", s, unit)
	}
	if n > (1<<63-1)/mult {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n * mult, nil
}
