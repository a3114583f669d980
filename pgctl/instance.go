package pgctl

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/hashicorp/go-hclog"
)

// Default role names of the agent's own PostgreSQL roles.
const (
	DefaultSuperuser       = "pgbattery"
	DefaultReplicationUser = "pgbattery_replication"
	DefaultPort            = 5433
)

// Errors callers can test with errors.Is.
var (
	// ErrNotRunning: the operation needs a running postmaster.
	ErrNotRunning = errors.New("PostgreSQL is not running")
	// ErrRunning: the operation needs a stopped instance.
	ErrRunning = errors.New("PostgreSQL is running")
	// ErrNoData: the data directory holds no cluster (no PG_VERSION).
	ErrNoData = errors.New("data directory holds no PostgreSQL cluster")
	// ErrDataExists: initdb or clone into a directory that already holds data.
	ErrDataExists = errors.New("data directory is not empty")
	// ErrIsPrimary: a standby operation on a running primary.
	ErrIsPrimary = errors.New("PostgreSQL is running as a primary")
)

// Config describes one node's PostgreSQL. Only Binaries, Dir, ListenAddr
// and the two credentials' passwords are required.
type Config struct {
	// NodeName is this node's name: application_name towards the primary
	// (so it is the name pg_stat_replication and synchronous_standby_names
	// use) and cluster_name in process titles. PostgreSQL truncates it to
	// 63 bytes.
	NodeName string

	Binaries *Binaries

	// Dir is the node's PostgreSQL directory. Defaults below live in it.
	Dir string
	// DataDir is PGDATA. Default Dir/data.
	DataDir string
	// SocketDir is unix_socket_directories. Default Dir/run. Its path
	// must leave room for "/.s.PGSQL.NNNNN" within 107 bytes.
	SocketDir string
	// LogFile receives the postmaster's stderr. Default Dir/postgresql.log.
	LogFile string
	// PassFile is the libpq password file for the agent's roles, used by
	// primary_conninfo, pg_basebackup and pg_rewind. Default Dir/pgpass.
	PassFile string

	// ListenAddr is listen_addresses (one address or a comma list).
	ListenAddr string
	// Port is the PostgreSQL port. Default 5433.
	Port int

	// OSUser runs every PostgreSQL program when the agent is root
	// (default "postgres"). Ignored when the agent is not root: then
	// PostgreSQL runs as the agent's user.
	OSUser string

	// Parameters are extra postgresql.conf settings (postgres.parameters).
	Parameters map[string]string
	// HBA are client pg_hba.conf lines appended after the agent's rules.
	HBA []string
	// AgentHosts are the pg_hba ADDRESS values from which the agent's
	// roles may connect over the network. Default ["all"]: peers, the
	// gateway and pg_rewind on any node; scram-sha-256 always.
	AgentHosts []string

	// Superuser is the agent's control role (created by initdb as the
	// bootstrap superuser). Default name "pgbattery".
	Superuser Credentials
	// Replication is the replication role. Default name
	// "pgbattery_replication".
	Replication Credentials

	Logger hclog.Logger

	// OnExit, if set, is called (from the goroutine that reaped it) each
	// time a postmaster started by this Instance exits, expected or not.
	// It must not block.
	OnExit func(ExitStatus)

	// StopGrace is how long each escalation step of Stop waits once the
	// caller's context is done (fast, then immediate, then SIGKILL).
	// Default 10s.
	StopGrace time.Duration
}

func (c *Config) agentHosts() []string {
	if len(c.AgentHosts) == 0 {
		return []string{"all"}
	}
	return c.AgentHosts
}

// Instance controls one node's PostgreSQL. Its methods are safe for
// concurrent use; lifecycle operations (start, stop, clone, rewind, …) are
// serialised.
type Instance struct {
	cfg  Config
	log  hclog.Logger
	user osUser

	opMu sync.Mutex // serialises lifecycle operations

	control controlConn // reused for Status and Promote

	mu          sync.Mutex
	state       dynamicState
	pm          *Postmaster
	startCancel context.CancelFunc // set while Start waits for readiness
}

// NewInstance validates cfg, fills defaults and returns an Instance. It
// touches no files except reading the managed configuration of an existing
// data directory (so a restarted agent finds the follow target, fence and
// synchronous_standby_names it last wrote).
func NewInstance(cfg Config) (*Instance, error) {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Dir != "" {
		if cfg.DataDir == "" {
			cfg.DataDir = filepath.Join(cfg.Dir, "data")
		}
		if cfg.SocketDir == "" {
			cfg.SocketDir = filepath.Join(cfg.Dir, "run")
		}
		if cfg.LogFile == "" {
			cfg.LogFile = filepath.Join(cfg.Dir, "postgresql.log")
		}
		if cfg.PassFile == "" {
			cfg.PassFile = filepath.Join(cfg.Dir, "pgpass")
		}
	}
	if cfg.Port == 0 {
		cfg.Port = DefaultPort
	}
	if cfg.Superuser.User == "" {
		cfg.Superuser.User = DefaultSuperuser
	}
	if cfg.Replication.User == "" {
		cfg.Replication.User = DefaultReplicationUser
	}
	if cfg.StopGrace == 0 {
		cfg.StopGrace = 10 * time.Second
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	u, err := resolveOSUser(cfg.OSUser)
	if err != nil {
		return nil, err
	}
	st, err := loadDynamicState(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	return &Instance{
		cfg:   cfg,
		log:   cfg.Logger,
		user:  u,
		state: st,
	}, nil
}

func (c *Config) validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Binaries == nil {
		add("pgctl: Binaries is required (see FindBinaries)")
	}
	if c.Dir == "" {
		add("pgctl: Dir is required")
	}
	for name, p := range map[string]string{"Dir": c.Dir, "DataDir": c.DataDir, "SocketDir": c.SocketDir, "LogFile": c.LogFile, "PassFile": c.PassFile} {
		if p != "" && !filepath.IsAbs(p) {
			add("pgctl: %s %q must be an absolute path", name, p)
		}
	}
	if l := len(c.SocketDir) + len("/.s.PGSQL.65535"); l > 107 {
		add("pgctl: socket directory %s is too long for a unix socket path (%d > 107 bytes); use a shorter data_dir", c.SocketDir, l)
	}
	if c.ListenAddr == "" {
		add("pgctl: ListenAddr is required")
	}
	if strings.ContainsAny(c.ListenAddr, "'\n") {
		add("pgctl: ListenAddr %q is not a valid address list", c.ListenAddr)
	}
	if c.Port < 1 || c.Port > 65535 {
		add("pgctl: port %d must be 1..65535", c.Port)
	}
	for _, cr := range []struct {
		what string
		c    Credentials
	}{{"superuser", c.Superuser}, {"replication", c.Replication}} {
		if err := validRoleName(cr.c.User); err != nil {
			add("pgctl: %s role: %v", cr.what, err)
		}
		if err := validPassword(cr.c.Password); err != nil {
			add("pgctl: %s role %s: %v", cr.what, cr.c.User, err)
		}
	}
	if c.Superuser.User == c.Replication.User {
		add("pgctl: the superuser and replication roles must differ (both %q)", c.Superuser.User)
	}
	if err := validateParameters(c.Parameters); err != nil {
		errs = append(errs, err)
	}
	for n, l := range c.HBA {
		if strings.ContainsAny(l, "\r\n") {
			add("postgres.hba[%d]: one rule per entry", n)
		}
	}
	for _, h := range c.AgentHosts {
		if h == "" || strings.ContainsAny(h, " \t\n") {
			add("pgctl: AgentHosts entry %q is not a pg_hba address", h)
		}
	}
	return errors.Join(errs...)
}

func validRoleName(n string) error {
	if n == "" || len(n) > 63 {
		return fmt.Errorf("name %q must be 1..63 bytes", n)
	}
	for _, r := range n {
		if !(r == '_' || r == '-' || r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r))) {
			return fmt.Errorf("name %q may hold only ASCII letters, digits, '_' and '-'", n)
		}
	}
	return nil
}

// validPassword accepts printable ASCII without blanks: SCRAM's SASLprep is
// the identity on it, and it needs no escaping beyond passfile rules.
func validPassword(p string) error {
	if len(p) < 16 {
		return errors.New("password must be at least 16 characters (use GenerateSecret)")
	}
	for _, r := range p {
		if r <= ' ' || r >= unicode.MaxASCII {
			return errors.New("password must be printable ASCII without blanks (use GenerateSecret)")
		}
	}
	return nil
}

// Config returns the instance's configuration with defaults filled in.
func (i *Instance) Config() Config { return i.cfg }

// DataDir returns PGDATA.
func (i *Instance) DataDir() string { return i.cfg.DataDir }

// SocketDir returns the unix socket directory.
func (i *Instance) SocketDir() string { return i.cfg.SocketDir }

// HasData reports whether PGDATA holds a cluster (PG_VERSION exists).
func (i *Instance) HasData() bool {
	_, err := os.Stat(filepath.Join(i.cfg.DataDir, "PG_VERSION"))
	return err == nil
}

// DataMajor returns the PostgreSQL major version of the data directory.
func (i *Instance) DataMajor() (int, error) {
	b, err := os.ReadFile(filepath.Join(i.cfg.DataDir, "PG_VERSION"))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("%s: %w", i.cfg.DataDir, ErrNoData)
	}
	if err != nil {
		return 0, fmt.Errorf("reading PG_VERSION: %w", err)
	}
	m, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("%s/PG_VERSION holds %q, not a major version", i.cfg.DataDir, strings.TrimSpace(string(b)))
	}
	return m, nil
}

// checkDataMajor refuses data of another major than the binaries.
func (i *Instance) checkDataMajor() error {
	m, err := i.DataMajor()
	if err != nil {
		return err
	}
	if m != i.cfg.Binaries.Major {
		return fmt.Errorf("data directory %s is PostgreSQL %d but the binaries in %s are %d: point postgres.bin_dir at PostgreSQL %d binaries (or upgrade the data with pg_upgrade)",
			i.cfg.DataDir, m, i.cfg.Binaries.Dir, i.cfg.Binaries.Major, m)
	}
	return nil
}

// dataDirEmpty reports whether PGDATA is absent or an empty directory.
func (i *Instance) dataDirEmpty() (bool, error) {
	ents, err := os.ReadDir(i.cfg.DataDir)
	if errors.Is(err, fs.ErrNotExist) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading %s: %w", i.cfg.DataDir, err)
	}
	return len(ents) == 0, nil
}

// prepareDirs creates the node directory, the socket directory and the
// passfile, owned by the OS user, and checks the OS user can reach them.
// PGDATA itself is created by initdb or clone.
func (i *Instance) prepareDirs() error {
	for _, d := range []string{i.cfg.Dir, filepath.Dir(i.cfg.DataDir), i.cfg.SocketDir, filepath.Dir(i.cfg.LogFile), filepath.Dir(i.cfg.PassFile)} {
		if _, err := os.Stat(d); errors.Is(err, fs.ErrNotExist) {
			if err := i.user.mkdir(d, 0o700); err != nil {
				return err
			}
		}
	}
	// The node dir and socket dir are PostgreSQL's: it writes the socket,
	// lock files and (walreceiver, pg_rewind) reads the passfile there.
	if err := i.user.mkdir(i.cfg.Dir, 0o700); err != nil {
		return err
	}
	if err := i.user.mkdir(i.cfg.SocketDir, 0o700); err != nil {
		return err
	}
	for _, d := range []string{i.cfg.DataDir, i.cfg.SocketDir, i.cfg.PassFile} {
		if err := i.user.checkTraversable(d); err != nil {
			return err
		}
	}
	return i.writePassFile()
}

// writePassFile writes the libpq password file for the agent's two roles.
// libpq ignores a passfile readable by group or others, hence 0600.
func (i *Instance) writePassFile() error {
	esc := func(s string) string {
		s = strings.ReplaceAll(s, `\`, `\\`)
		return strings.ReplaceAll(s, `:`, `\:`)
	}
	var b strings.Builder
	for _, c := range []Credentials{i.cfg.Replication, i.cfg.Superuser} {
		fmt.Fprintf(&b, "*:*:*:%s:%s\n", esc(c.User), esc(c.Password))
	}
	return i.user.writeFile(i.cfg.PassFile, []byte(b.String()), 0o600)
}

// ensureDataDirMode gives PGDATA to the OS user with mode 0700, which
// PostgreSQL insists on (0750 with group access is the other choice).
func (i *Instance) ensureDataDirMode() error {
	fi, err := os.Stat(i.cfg.DataDir)
	if err != nil {
		return fmt.Errorf("checking %s: %w", i.cfg.DataDir, err)
	}
	if perm := fi.Mode().Perm(); perm != 0o700 && perm != 0o750 {
		if err := os.Chmod(i.cfg.DataDir, 0o700); err != nil {
			return fmt.Errorf("chmod 0700 %s: %w", i.cfg.DataDir, err)
		}
	}
	return i.user.chown(i.cfg.DataDir)
}

// RemoveData deletes PGDATA (for a re-clone). It refuses while running.
func (i *Instance) RemoveData() error {
	i.opMu.Lock()
	defer i.opMu.Unlock()
	if i.isRunning() {
		return fmt.Errorf("removing %s: %w", i.cfg.DataDir, ErrRunning)
	}
	if pid, ok := i.foreignPostmaster(); ok {
		return fmt.Errorf("removing %s: a postmaster (pid %d) not started by this agent is running on it", i.cfg.DataDir, pid)
	}
	i.log.Warn("removing data directory", "dir", i.cfg.DataDir)
	if err := os.RemoveAll(i.cfg.DataDir); err != nil {
		return fmt.Errorf("removing %s: %w", i.cfg.DataDir, err)
	}
	i.mu.Lock()
	i.state = dynamicState{}
	i.mu.Unlock()
	return nil
}
