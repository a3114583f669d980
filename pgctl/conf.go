package pgctl

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// File names inside PGDATA.
const (
	// ManagedConfFile holds every setting pgbattery manages. postgresql.conf
	// includes it on its last line, so it wins over postgresql.conf; only
	// postgresql.auto.conf (ALTER SYSTEM) and the command line are read
	// later, and pgctl strips managed keys from postgresql.auto.conf.
	ManagedConfFile = "postgresql.pgbattery.conf"
	includeLine     = "include 'postgresql.pgbattery.conf'\t# added by pgbattery: keep this the last line"
	autoConfFile    = "postgresql.auto.conf"
	standbySignal   = "standby.signal"
	recoverySignal  = "recovery.signal"
)

// reservedParameters are settings pgctl writes itself; postgres.parameters
// may not set them (and ALTER SYSTEM settings of them are removed).
var reservedParameters = map[string]string{
	"listen_addresses":              "set the agent's bind/advertise address instead",
	"port":                          "set ports.postgres instead",
	"unix_socket_directories":       "pgbattery keeps the socket in the node's own directory",
	"data_directory":                "fixed by the data layout",
	"config_file":                   "fixed by the data layout",
	"hba_file":                      "pgbattery writes pg_hba.conf; add rules with postgres.hba",
	"ident_file":                    "fixed by the data layout",
	"primary_conninfo":              "managed by pgbattery (follow)",
	"primary_slot_name":             "managed by pgbattery (follow)",
	"recovery_target_timeline":      "managed by pgbattery (follow)",
	"synchronous_standby_names":     "managed by pgbattery (replication.mode)",
	"default_transaction_read_only": "managed by pgbattery (fencing)",
	FenceMarker:                     "managed by pgbattery (fencing)",
}

// FenceMarker is a placeholder setting the managed file carries with the
// fence, 'on' or 'off'. default_transaction_read_only cannot tell a fenced
// primary from a role or database made read-only with ALTER ROLE/DATABASE
// ... SET: their own value hides the server's. This one every session sees,
// so the gateway asks it before it lets such a session onto a primary.
const FenceMarker = "pgbattery.fenced"

// defaultParameters are pgbattery's defaults for a replicated cluster. A
// key in postgres.parameters overrides them.
var defaultParameters = map[string]string{
	"wal_level":             "replica",
	"hot_standby":           "on",
	"max_wal_senders":       "16",
	"max_replication_slots": "16",
	"wal_log_hints":         "on",
	// pg_rewind of a crashed primary needs the WAL back to the point of
	// divergence, but the crash recovery it runs first ends with a
	// checkpoint that recycles old segments; keeping 256 MB of WAL makes
	// the common case (a primary that died moments ago) rewind instead
	// of re-clone. It also lets a briefly disconnected standby catch up.
	"wal_keep_size":        "256MB",
	"password_encryption":  "scram-sha-256",
	"wal_receiver_timeout": "10s",
	"wal_sender_timeout":   "10s",
	// How soon a standby tries streaming again after an attempt failed.
	// At a failover a re-pointed standby usually fails once (its new
	// upstream is still being promoted, or it must switch timelines), and
	// the new primary's first commit waits for a synchronous standby to
	// stream again: this interval is on the write path of every failover.
	// A failed attempt against a dead address costs a refused connect.
	"wal_retrieve_retry_interval": "50ms",
}

var paramNameRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$`)

// validateParameters checks user-supplied postgresql.conf settings.
func validateParameters(params map[string]string) error {
	var errs []error
	for _, k := range sortedKeys(params) {
		v := params[k]
		lk := strings.ToLower(k)
		if !paramNameRe.MatchString(k) {
			errs = append(errs, fmt.Errorf("postgres.parameters: %q is not a valid setting name", k))
			continue
		}
		if why, ok := reservedParameters[lk]; ok {
			errs = append(errs, fmt.Errorf("postgres.parameters: %s cannot be set: %s", k, why))
			continue
		}
		if strings.ContainsAny(v, "\r\n\x00") {
			errs = append(errs, fmt.Errorf("postgres.parameters: %s: value must be a single line", k))
		}
	}
	return errors.Join(errs...)
}

// quoteConfValue renders a postgresql.conf string literal.
func quoteConfValue(v string) string {
	v = strings.ReplaceAll(v, `\`, `\\`)
	v = strings.ReplaceAll(v, `'`, `''`)
	return "'" + v + "'"
}

// unquoteConfValue reverses quoteConfValue for the lines pgctl wrote.
func unquoteConfValue(v string) (string, bool) {
	v = strings.TrimSpace(v)
	if len(v) < 2 || v[0] != '\'' || v[len(v)-1] != '\'' {
		return v, true
	}
	in := v[1 : len(v)-1]
	var b strings.Builder
	for i := 0; i < len(in); i++ {
		c := in[i]
		switch {
		case c == '\'' && i+1 < len(in) && in[i+1] == '\'':
			b.WriteByte('\'')
			i++
		case c == '\\' && i+1 < len(in):
			b.WriteByte(in[i+1])
			i++
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), true
}

// dynamicState is what the agent changes at run time. It lives in the
// managed file, so a restarted agent finds it again (loadDynamicState).
type dynamicState struct {
	PrimaryConnInfo         string
	PrimarySlotName         string
	SynchronousStandbyNames string
	Fenced                  bool
}

// renderManagedConf renders postgresql.pgbattery.conf.
func (i *Instance) renderManagedConf(st dynamicState) []byte {
	var b bytes.Buffer
	b.WriteString("# Managed by pgbattery: rewritten on every start and configuration change.\n")
	b.WriteString("# Do not edit; set postgres.parameters in the agent configuration instead.\n\n")
	b.WriteString("# Node identity\n")
	fmt.Fprintf(&b, "listen_addresses = %s\n", quoteConfValue(i.cfg.ListenAddr))
	fmt.Fprintf(&b, "port = %d\n", i.cfg.Port)
	fmt.Fprintf(&b, "unix_socket_directories = %s\n", quoteConfValue(i.cfg.SocketDir))

	b.WriteString("\n# Parameters (pgbattery defaults, then postgres.parameters)\n")
	params := make(map[string]string, len(defaultParameters)+len(i.cfg.Parameters))
	for k, v := range defaultParameters {
		params[k] = v
	}
	if i.cfg.NodeName != "" {
		// Shows in process titles (ps) and log lines.
		params["cluster_name"] = i.cfg.NodeName
	}
	for k, v := range i.cfg.Parameters {
		params[strings.ToLower(k)] = v
	}
	for _, k := range sortedKeys(params) {
		fmt.Fprintf(&b, "%s = %s\n", k, quoteConfValue(params[k]))
	}

	b.WriteString("\n# Replication and fencing (changed by the agent at run time)\n")
	fmt.Fprintf(&b, "synchronous_standby_names = %s\n", quoteConfValue(st.SynchronousStandbyNames))
	if st.Fenced {
		b.WriteString("default_transaction_read_only = 'on'\n")
		b.WriteString(FenceMarker + " = 'on'\n")
	} else {
		b.WriteString("default_transaction_read_only = 'off'\n")
		b.WriteString(FenceMarker + " = 'off'\n")
	}
	fmt.Fprintf(&b, "primary_conninfo = %s\n", quoteConfValue(st.PrimaryConnInfo))
	fmt.Fprintf(&b, "primary_slot_name = %s\n", quoteConfValue(st.PrimarySlotName))
	b.WriteString("recovery_target_timeline = 'latest'\n")
	return b.Bytes()
}

// loadDynamicState reads the run-time state back from an existing managed
// file. A missing file yields the zero state.
func loadDynamicState(dataDir string) (dynamicState, error) {
	var st dynamicState
	f, err := os.Open(filepath.Join(dataDir, ManagedConfFile))
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("reading managed configuration: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		val, _ := unquoteConfValue(v)
		switch strings.TrimSpace(k) {
		case "primary_conninfo":
			st.PrimaryConnInfo = val
		case "primary_slot_name":
			st.PrimarySlotName = val
		case "synchronous_standby_names":
			st.SynchronousStandbyNames = val
		case "default_transaction_read_only":
			st.Fenced = val == "on" || val == "true"
		}
	}
	return st, sc.Err()
}

// ensureInclude makes postgresql.conf include the managed file on its last
// line. pg_basebackup and pg_rewind copy postgresql.conf from the source,
// which carries the same line, so this is normally a no-op after initdb.
func (i *Instance) ensureInclude() error {
	path := filepath.Join(i.cfg.DataDir, "postgresql.conf")
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	var kept []string
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "include 'postgresql.pgbattery.conf'") {
			continue
		}
		kept = append(kept, l)
	}
	kept = append(kept, includeLine)
	out := strings.Join(kept, "\n") + "\n"
	if out == string(b) {
		return nil
	}
	return i.user.writeFile(path, []byte(out), 0o600)
}

// sanitizeAutoConf removes reserved settings from postgresql.auto.conf:
// it is read after the managed file, so an ALTER SYSTEM of, say,
// primary_conninfo (or the copy pg_basebackup -R or pg_rewind brought from
// another node) would silently override what the agent decided.
func (i *Instance) sanitizeAutoConf() error {
	path := filepath.Join(i.cfg.DataDir, autoConfFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	var kept []string
	var removed []string
	for _, l := range strings.Split(string(b), "\n") {
		k, _, ok := strings.Cut(strings.TrimSpace(l), "=")
		key := strings.ToLower(strings.TrimSpace(k))
		if ok && !strings.HasPrefix(key, "#") {
			if _, reserved := reservedParameters[key]; reserved {
				removed = append(removed, key)
				continue
			}
		}
		kept = append(kept, l)
	}
	if len(removed) == 0 {
		return nil
	}
	i.log.Warn("removing settings managed by pgbattery from postgresql.auto.conf (ALTER SYSTEM)", "settings", strings.Join(removed, ","))
	return i.user.writeFile(path, []byte(strings.Join(kept, "\n")), 0o600)
}

// renderHBA renders pg_hba.conf: the agent's roles over the local socket and
// the network with scram-sha-256 (never trust), then the configured client
// rules. Rules are matched first to last.
func (i *Instance) renderHBA() []byte {
	su := quoteHBAName(i.cfg.Superuser.User)
	repl := quoteHBAName(i.cfg.Replication.User)
	var b bytes.Buffer
	b.WriteString("# Managed by pgbattery: rewritten on every start. Add client rules with postgres.hba.\n")
	b.WriteString("# TYPE  DATABASE     USER  ADDRESS  METHOD\n")
	b.WriteString("# The agent's control role and replication role (peers, pg_rewind, pg_basebackup).\n")
	fmt.Fprintf(&b, "local   all          %s  scram-sha-256\n", su)
	fmt.Fprintf(&b, "local   replication  %s  scram-sha-256\n", repl)
	for _, addr := range i.cfg.agentHosts() {
		fmt.Fprintf(&b, "host    all          %s  %s  scram-sha-256\n", su, addr)
		fmt.Fprintf(&b, "host    replication  %s  %s  scram-sha-256\n", repl, addr)
	}
	if len(i.cfg.HBA) > 0 {
		b.WriteString("\n# Client access (postgres.hba)\n")
		for _, l := range i.cfg.HBA {
			b.WriteString(l + "\n")
		}
	}
	return b.Bytes()
}

// quoteHBAName quotes a role name for pg_hba.conf.
func quoteHBAName(n string) string {
	return `"` + strings.ReplaceAll(n, `"`, `""`) + `"`
}

// writeConfig writes the managed file, pg_hba.conf and the include line,
// and removes reserved settings from postgresql.auto.conf.
func (i *Instance) writeConfig(st dynamicState) error {
	if err := i.ensureInclude(); err != nil {
		return err
	}
	if err := i.user.writeFile(filepath.Join(i.cfg.DataDir, ManagedConfFile), i.renderManagedConf(st), 0o600); err != nil {
		return err
	}
	if err := i.user.writeFile(filepath.Join(i.cfg.DataDir, "pg_hba.conf"), i.renderHBA(), 0o600); err != nil {
		return err
	}
	return i.sanitizeAutoConf()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
