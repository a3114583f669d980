package pgctl

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/jackc/pgx/v5"
)

// InitDBOptions tune InitDB.
type InitDBOptions struct {
	// Locale for initdb --locale. Default "C" (always available; byte-order
	// collation).
	Locale string
	// NoSync skips initdb's fsync (tests only).
	NoSync bool
}

// InitDB creates a new cluster in PGDATA: data checksums on, UTF8,
// scram-sha-256 for local and host connections, the control superuser
// (initdb's bootstrap superuser, password through --pwfile), the managed
// configuration, pg_hba.conf and the replication role. It starts
// PostgreSQL briefly with no TCP listener to create the role and leaves it
// stopped. PGDATA must be absent or empty.
func (i *Instance) InitDB(ctx context.Context, opts InitDBOptions) error {
	i.opMu.Lock()
	defer i.opMu.Unlock()
	if i.isRunning() {
		return fmt.Errorf("initdb: %w", ErrRunning)
	}
	empty, err := i.dataDirEmpty()
	if err != nil {
		return fmt.Errorf("initdb: %w", err)
	}
	if !empty {
		return fmt.Errorf("initdb into %s: %w; refusing to overwrite existing data", i.cfg.DataDir, ErrDataExists)
	}
	if err := i.prepareDirs(); err != nil {
		return fmt.Errorf("initdb: %w", err)
	}
	if err := i.user.mkdir(i.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("initdb: %w", err)
	}

	// The superuser password reaches initdb in a file that only the OS
	// user can read, and is removed at once.
	pwfile := filepath.Join(i.cfg.Dir, ".initdb-pwfile")
	if err := i.user.writeFile(pwfile, []byte(i.cfg.Superuser.Password+"\n"), 0o600); err != nil {
		return fmt.Errorf("initdb: %w", err)
	}
	defer os.Remove(pwfile)

	locale := opts.Locale
	if locale == "" {
		locale = "C"
	}
	args := []string{
		"-D", i.cfg.DataDir,
		"--username=" + i.cfg.Superuser.User,
		"--pwfile=" + pwfile,
		"--auth-local=scram-sha-256",
		"--auth-host=scram-sha-256",
		"--encoding=UTF8",
		"--locale=" + locale,
		"--data-checksums",
	}
	if opts.NoSync {
		args = append(args, "--no-sync")
	}
	i.log.Info("initializing PostgreSQL data directory", "dir", i.cfg.DataDir, "version", i.cfg.Binaries.Version)
	if _, err := i.run(ctx, "initdb", args...); err != nil {
		os.RemoveAll(i.cfg.DataDir)
		return fmt.Errorf("initdb in %s: %w", i.cfg.DataDir, err)
	}
	os.Remove(pwfile)

	i.mu.Lock()
	i.state = dynamicState{}
	i.mu.Unlock()
	if err := i.writeConfig(dynamicState{}); err != nil {
		return fmt.Errorf("initdb: %w", err)
	}

	// Create the replication role on a postmaster that listens on the unix
	// socket only.
	if _, err := i.startWithRetry(ctx, []string{"-c", "listen_addresses="}); err != nil {
		i.stop(context.Background(), StopImmediate)
		return fmt.Errorf("initdb: starting the new cluster to create roles: %w", err)
	}
	err = i.createReplicationRole(ctx)
	stopCtx, cancel := context.WithTimeout(context.Background(), 30*i.cfg.StopGrace)
	defer cancel()
	if serr := i.stop(stopCtx, StopFast); serr != nil && err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("initdb: %w", err)
	}
	return nil
}

func (i *Instance) createReplicationRole(ctx context.Context) error {
	conn, err := i.Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	verifier, err := scramVerifier(i.cfg.Replication.Password)
	if err != nil {
		return err
	}
	// The verifier, not the password, goes over the wire; and this session
	// keeps even the verifier out of the server log.
	if _, err := conn.Exec(ctx, "SET log_statement = 'none'; SET log_min_duration_statement = -1; SET log_min_error_statement = panic"); err != nil {
		return fmt.Errorf("creating replication role: %w", err)
	}
	sql := fmt.Sprintf("CREATE ROLE %s WITH LOGIN REPLICATION PASSWORD %s",
		pgx.Identifier{i.cfg.Replication.User}.Sanitize(), quoteLiteral(verifier))
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("creating replication role %s: %w", i.cfg.Replication.User, err)
	}
	return nil
}

// quoteLiteral renders an SQL string literal (standard_conforming_strings
// on, the default since 9.1).
func quoteLiteral(s string) string {
	out := []byte{'\''}
	for j := 0; j < len(s); j++ {
		if s[j] == '\'' {
			out = append(out, '\'')
		}
		out = append(out, s[j])
	}
	return string(append(out, '\''))
}
