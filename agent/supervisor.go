package agent

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-metrics"

	"github.com/pgbattery/pgbattery/agent/config"
	"github.com/pgbattery/pgbattery/gossip"
	"github.com/pgbattery/pgbattery/pgctl"
)

// PostgreSQL states the supervisor reports (gossip tag "pg", readiness).
const (
	pgStateStarting = gossip.PGStarting
	pgStateRunning  = gossip.PGRunning
	pgStateStopped  = gossip.PGStopped
	pgStateCrashed  = gossip.PGCrashed
)

// Restart pacing after PostgreSQL dies: the first restart is immediate (a
// crash is usually a one-off and every millisecond is downtime), then the
// wait doubles up to restartBackoffMax so a PostgreSQL that cannot start
// does not spin. A run longer than restartBackoffReset forgets the history.
const (
	restartBackoffMin   = 250 * time.Millisecond
	restartBackoffMax   = 10 * time.Second
	restartBackoffReset = 30 * time.Second
	startTimeout        = 5 * time.Minute
	stopTimeout         = 30 * time.Second
)

// pgSupervisor keeps the node's PostgreSQL running: it initializes it on
// first start, restarts it when it dies and stops it at shutdown. With one
// node (bootstrap_expect = 1) it is the primary; with more, the raft
// control plane decides its role.
type pgSupervisor struct {
	logger hclog.Logger
	inst   *pgctl.Instance
	single bool

	mu    sync.Mutex
	role  string
	state string
}

func newPGSupervisor(cfg *config.RuntimeConfig, logger hclog.Logger) (*pgSupervisor, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bins, err := pgctl.FindBinaries(ctx, cfg.Postgres.BinDir)
	if err != nil {
		return nil, err
	}
	secrets := filepath.Join(cfg.DataDir, secretsSubdir)
	superPW, err := pgctl.LoadOrCreateSecret(secrets, "superuser")
	if err != nil {
		return nil, fmt.Errorf("loading the agent's PostgreSQL secret: %w", err)
	}
	replPW, err := pgctl.LoadOrCreateSecret(secrets, "replication")
	if err != nil {
		return nil, fmt.Errorf("loading the replication secret: %w", err)
	}
	s := &pgSupervisor{
		logger: logger,
		single: cfg.BootstrapExpect == 1,
		role:   gossip.RoleUnknown,
		state:  pgStateStopped,
	}
	inst, err := pgctl.NewInstance(pgctl.Config{
		NodeName:    cfg.NodeName,
		Binaries:    bins,
		Dir:         filepath.Join(cfg.DataDir, postgresSubdir),
		ListenAddr:  cfg.BindAddr,
		Port:        cfg.Ports.Postgres,
		OSUser:      cfg.Postgres.OSUser,
		Parameters:  cfg.Postgres.Parameters,
		HBA:         cfg.Postgres.HBA,
		Superuser:   pgctl.Credentials{Password: superPW},
		Replication: pgctl.Credentials{Password: replPW},
		Logger:      logger,
	})
	if err != nil {
		return nil, fmt.Errorf("configuring PostgreSQL: %w", err)
	}
	s.inst = inst
	logger.Info("using PostgreSQL", "bin_dir", bins.Dir, "version", bins.Version)
	return s, nil
}

// State is the last known role and state of PostgreSQL.
func (s *pgSupervisor) State() (role, state string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.role, s.state
}

func (s *pgSupervisor) set(role, state string, notify func(role, state string)) {
	s.mu.Lock()
	changed := s.role != role || s.state != state
	s.role, s.state = role, state
	s.mu.Unlock()
	if !changed {
		return
	}
	metrics.SetGauge([]string{"postgres", "running"}, boolGauge(state == pgStateRunning))
	metrics.SetGauge([]string{"postgres", "is_primary"}, boolGauge(state == pgStateRunning && role == gossip.RolePrimary))
	if notify != nil {
		notify(role, state)
	}
}

// Prepare makes sure PGDATA holds a cluster: initdb on the first start of a
// single-node cluster. A node of a larger cluster gets its data from the
// primary (pg_basebackup), which the raft control plane orchestrates.
func (s *pgSupervisor) Prepare(ctx context.Context) error {
	if s.inst.HasData() {
		return nil
	}
	if !s.single {
		return errors.New("this node has no PostgreSQL data and bootstrap_expect is not 1: " +
			"creating a multi-node PostgreSQL cluster needs the raft control plane, which this build does not include yet; " +
			"run a single node (bootstrap_expect = 1) or a node without PostgreSQL (postgres { enabled = false })")
	}
	s.logger.Info("no PostgreSQL data yet: running initdb", "data_dir", s.inst.DataDir())
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	if err := s.inst.InitDB(ctx, pgctl.InitDBOptions{}); err != nil {
		return fmt.Errorf("initializing PostgreSQL: %w", err)
	}
	return nil
}

// Run keeps PostgreSQL running until ctx ends, then stops it (fast
// shutdown). notify is told about every role/state change.
func (s *pgSupervisor) Run(ctx context.Context, notify func(role, state string)) {
	backoff := time.Duration(0)
	for ctx.Err() == nil {
		s.set(gossip.RoleUnknown, pgStateStarting, notify)
		startCtx, cancel := context.WithTimeout(ctx, startTimeout)
		pm, err := s.inst.Start(startCtx, pgctl.StartOptions{})
		cancel()
		if err != nil {
			if pm != nil {
				// Started but not ready in time: stop it and start over.
				s.stop()
			}
			if ctx.Err() != nil {
				break
			}
			s.set(gossip.RoleUnknown, pgStateCrashed, notify)
			backoff = nextBackoff(backoff)
			s.logger.Error("starting PostgreSQL failed; will retry", "retry_in", backoff, "error", err)
			if !sleepCtx(ctx, backoff) {
				break
			}
			continue
		}
		s.set(s.observeRole(ctx), pgStateRunning, notify)
		started := time.Now()

		select {
		case <-ctx.Done():
		case <-pm.Done():
			st := pm.ExitStatus()
			metrics.IncrCounter([]string{"postgres", "crashes"}, 1)
			s.set(gossip.RoleUnknown, pgStateCrashed, notify)
			if time.Since(started) > restartBackoffReset {
				backoff = 0
			}
			if backoff == 0 {
				s.logger.Error("PostgreSQL died; restarting it now", "exit", st.String(), "detected_after", time.Since(st.At))
				backoff = restartBackoffMin / 2 // the next failure waits restartBackoffMin
				continue
			}
			backoff = nextBackoff(backoff)
			s.logger.Error("PostgreSQL died again; restarting", "exit", st.String(), "retry_in", backoff)
			if !sleepCtx(ctx, backoff) {
				break
			}
		}
	}
	s.stop()
	s.set(gossip.RoleUnknown, pgStateStopped, notify)
}

// observeRole asks the running PostgreSQL whether it is a primary.
func (s *pgSupervisor) observeRole(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := s.inst.Status(ctx)
	if err != nil {
		s.logger.Warn("reading PostgreSQL status", "error", err)
		return gossip.RoleUnknown
	}
	if st.Role == pgctl.RolePrimary {
		return gossip.RolePrimary
	}
	return gossip.RoleReplica
}

func (s *pgSupervisor) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if err := s.inst.Stop(ctx, pgctl.StopFast); err != nil {
		s.logger.Error("stopping PostgreSQL", "error", err)
	}
}

// Close makes sure PostgreSQL is stopped (Run does it when its context
// ends; Close covers a Start that failed half-way).
func (s *pgSupervisor) Close(ctx context.Context) error {
	if err := s.inst.Stop(ctx, pgctl.StopFast); err != nil {
		return fmt.Errorf("stopping PostgreSQL: %w", err)
	}
	return nil
}

// Reload re-reads PostgreSQL's configuration (SIGHUP).
func (s *pgSupervisor) Reload(ctx context.Context, cfg *config.RuntimeConfig) error {
	if !s.inst.Running() {
		return nil
	}
	return s.inst.Reload(ctx)
}

func nextBackoff(d time.Duration) time.Duration {
	if d < restartBackoffMin {
		return restartBackoffMin
	}
	if d *= 2; d > restartBackoffMax {
		return restartBackoffMax
	}
	return d
}

// sleepCtx waits d or until ctx ends; it reports whether the full wait ran.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func boolGauge(b bool) float32 {
	if b {
		return 1
	}
	return 0
}
