// Package agent is the long-running pgbattery agent: it supervises the node's
// PostgreSQL, gossips with its peers, and serves the HTTP API. The CLI
// (package command) builds a config.RuntimeConfig and runs an Agent.
package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-metrics"

	"github.com/pgbattery/pgbattery/agent/config"
	"github.com/pgbattery/pgbattery/agent/procs"
	"github.com/pgbattery/pgbattery/agent/version"
	"github.com/pgbattery/pgbattery/gateway"
	"github.com/pgbattery/pgbattery/gossip"
	"github.com/pgbattery/pgbattery/pgctl"
)

// Layout of data_dir. PGDATA is a subdirectory so that the agent's own state
// (raft, serf snapshot, secrets) never lives inside PostgreSQL's directory,
// where pg_basebackup or pg_rewind would copy or clobber it.
const (
	postgresSubdir = "postgres" // pgctl's Dir: PGDATA in postgres/data, sockets in postgres/run
	secretsSubdir  = "secrets"
	serfSubdir     = "serf"
	raftSubdir     = "raft"
)

// Agent is one node's pgbattery agent.
type Agent struct {
	logger hclog.Logger

	cfgMu sync.RWMutex
	cfg   *config.RuntimeConfig

	gossip    *gossip.Gossip
	http      *httpServer
	telemetry *telemetry
	cluster   *cluster
	router    *router
	gateway   *gateway.Gateway

	// ctx is cancelled at Shutdown; every goroutine the agent starts
	// watches it and is waited for through wg.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	shutdownOnce sync.Once
	shutdownCh   chan struct{} // closed when the agent has stopped
	leaveOnce    sync.Once
	leaving      atomic.Bool // set once Leave starts: gossip tag updates stop
}

// New checks the configuration against the machine and prepares an agent.
// Nothing is started until Start.
func New(cfg *config.RuntimeConfig, logger hclog.Logger) (*Agent, error) {
	if cfg == nil {
		return nil, errors.New("agent: no configuration")
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	a := &Agent{
		logger:     logger,
		cfg:        cfg,
		shutdownCh: make(chan struct{}),
	}
	return a, nil
}

func (a *Agent) config() *config.RuntimeConfig {
	a.cfgMu.RLock()
	defer a.cfgMu.RUnlock()
	return a.cfg
}

// Start creates the data directory, starts PostgreSQL supervision, gossip
// and the HTTP API. It returns once every listener is bound; an error leaves
// nothing running.
func (a *Agent) Start(ctx context.Context) (err error) {
	cfg := a.config()
	a.ctx, a.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			a.stopAll(context.Background())
		}
	}()

	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return fmt.Errorf("creating data_dir %s: %w", cfg.DataDir, err)
	}
	a.logger.Info("starting pgbattery agent", "version", version.Full(), "node", cfg.NodeName,
		"data_dir", cfg.DataDir, "server", cfg.Server, "bootstrap_expect", cfg.BootstrapExpect)

	a.telemetry, err = setupTelemetry(cfg.Telemetry, cfg.NodeName, a.logger.Named("telemetry"))
	if err != nil {
		return err
	}
	a.telemetry.startCleanup(a.ctx)
	a.startProcsSizer()

	if err := a.startGossip(cfg); err != nil {
		return err
	}
	a.cluster, err = newCluster(a, cfg)
	if err != nil {
		return err
	}

	a.http = newHTTPServer(a.logger.Named("http"), cfg.ACL.Token, cfg.ACL.ReadsRequireToken, a.routes())
	a.http.setRateLimit(cfg.Limits.HTTPMaxRPS, cfg.Limits.HTTPBurst)
	if httpTLSEnabled(cfg) {
		tc, err := httpServerTLS(cfg.TLS)
		if err != nil {
			return err
		}
		a.http.setTLS(tc)
	}
	if err := a.http.Listen(net.JoinHostPort(cfg.BindAddr, strconv.Itoa(cfg.Ports.HTTP))); err != nil {
		return err
	}
	a.goRun("http", func(ctx context.Context) {
		if err := a.http.Serve(); err != nil {
			a.logger.Error("HTTP API stopped", "error", err)
		}
	})
	a.cluster.start()
	if err := a.startGateway(cfg); err != nil {
		return err
	}

	if len(cfg.Join) > 0 {
		n, err := a.gossip.Join(cfg.Join, !cfg.Rejoin)
		if err != nil {
			return fmt.Errorf("joining %v: %w", cfg.Join, err)
		}
		a.logger.Info("joined cluster", "contacted", n)
	}
	if len(cfg.RetryJoin) > 0 {
		done := a.gossip.RetryJoin(a.ctx, cfg.RetryJoin, cfg.RetryInterval, cfg.RetryMax)
		a.goRun("retry-join", func(ctx context.Context) {
			// As in Consul, an agent that was told to retry-join a bounded
			// number of times and never got in has no cluster to serve.
			select {
			case err := <-done:
				if err != nil && ctx.Err() == nil {
					a.logger.Error("could not join the cluster; shutting down", "error", err)
					a.shutdownSoon()
				}
			case <-ctx.Done():
			}
		})
	}
	a.goRun("gossip-events", a.consumeGossipEvents)
	return nil
}

// startProcsSizer sizes the Go scheduler to the agent's load (agent/procs)
// and reports what is in force as the runtime.gomaxprocs gauge.
func (a *Agent) startProcsSizer() {
	metrics.SetGauge(gomaxprocsGauge, float32(runtime.GOMAXPROCS(0)))
	sizer := procs.New(a.logger.Named("procs"))
	sizer.Sampled = func(n int, _ procs.Load) { metrics.SetGauge(gomaxprocsGauge, float32(n)) }
	a.goRun("procs", sizer.Run)
}

// goRun starts an owned goroutine: it gets the agent's context and
// Shutdown waits for it.
func (a *Agent) goRun(name string, fn func(ctx context.Context)) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		fn(a.ctx)
		a.logger.Trace("goroutine stopped", "name", name)
	}()
}

func (a *Agent) startGossip(cfg *config.RuntimeConfig) error {
	serfDir := filepath.Join(cfg.DataDir, serfSubdir)
	if err := os.MkdirAll(serfDir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", serfDir, err)
	}
	g, err := gossip.New(gossip.Config{
		NodeName:         cfg.NodeName,
		BindAddr:         cfg.BindAddr,
		BindPort:         cfg.Ports.Serf,
		AdvertiseAddr:    cfg.AdvertiseAddr,
		AdvertisePort:    cfg.Ports.Serf,
		EncryptKey:       cfg.EncryptKey,
		Profile:          cfg.Gossip.Profile,
		Timing:           gossipTiming(cfg.Gossip),
		SnapshotPath:     filepath.Join(serfDir, "local.snapshot"),
		RejoinAfterLeave: cfg.Rejoin,
		Tags:             a.initialTags(cfg),
		Logger:           a.logger.Named("gossip"),
	})
	if err != nil {
		return fmt.Errorf("starting gossip on %s:%d: %w", cfg.BindAddr, cfg.Ports.Serf, err)
	}
	a.gossip = g
	return nil
}

func gossipTiming(c config.GossipConfig) gossip.Timing {
	return gossip.Timing{
		ProbeInterval:  c.ProbeInterval,
		ProbeTimeout:   c.ProbeTimeout,
		SuspicionMult:  c.SuspicionMult,
		GossipInterval: c.GossipInterval,
		RetransmitMult: c.RetransmitMult,
	}
}

// initialTags are the gossip tags the node starts with; pgStateChanged
// keeps role and PostgreSQL state current.
func (a *Agent) initialTags(cfg *config.RuntimeConfig) map[string]string {
	tags := map[string]string{}
	for k, v := range cfg.Tags {
		tags[k] = v
	}
	adv := cfg.AdvertiseAddr
	tags[gossip.TagBuild] = version.Short()
	tags[gossip.TagAPI] = net.JoinHostPort(adv, strconv.Itoa(cfg.Ports.HTTP))
	tags[gossip.TagRaftAddr] = net.JoinHostPort(adv, strconv.Itoa(cfg.Ports.Raft))
	if cfg.BootstrapExpect > 0 {
		tags[tagBootstrapExpect] = strconv.Itoa(cfg.BootstrapExpect)
	}
	if cfg.Failover.NoFailover {
		tags[tagNoFailover] = "1"
	}
	if cfg.Failover.FailoverPriority != config.DefaultFailoverPriority {
		tags[tagFailoverPriority] = strconv.Itoa(cfg.Failover.FailoverPriority)
	}
	if cfg.Server {
		tags[gossip.TagRaft] = gossip.RaftVoter
	} else {
		tags[gossip.TagRaft] = gossip.RaftNonvoter
	}
	if cfg.Postgres.Enabled {
		tags[gossip.TagRole] = gossip.RoleUnknown
		tags[gossip.TagPG] = gossip.PGStarting
		tags[gossip.TagGateway] = net.JoinHostPort(adv, strconv.Itoa(cfg.Ports.Gateway))
		tags[tagPostgresAddr] = net.JoinHostPort(adv, strconv.Itoa(cfg.Ports.Postgres))
	} else {
		tags[gossip.TagRole] = gossip.RoleWitness

	}
	return tags
}

// pgStateChanged publishes the supervisor's view of PostgreSQL in gossip.
func (a *Agent) pgStateChanged(role, state string) {
	if a.gossip == nil || a.leaving.Load() {
		// After a leave serf waits out its broadcast timeout for a tag
		// update nobody will receive.
		return
	}
	if err := a.gossip.UpdateTags(map[string]string{gossip.TagRole: role, gossip.TagPG: state}); err != nil {
		a.logger.Warn("updating gossip tags", "error", err)
	}
}

// consumeGossipEvents logs membership changes. The raft control plane
// subscribes to the same stream for failure detection.
func (a *Agent) consumeGossipEvents(ctx context.Context) {
	events := a.gossip.Events()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			if a.cluster != nil {
				a.cluster.onGossipEvent(ev)
			}
			if a.router != nil {
				a.router.onGossipEvent(ev)
			}
			switch ev.Type {
			case gossip.EventUpdate:
				a.logger.Debug("member updated", "node", ev.Node)
			default:
				a.logger.Info("member "+ev.Type.String(), "node", ev.Node, "addr", ev.Member.Address())
			}
		}
	}
}

// Leave leaves the gossip cluster gracefully, so peers record "left" rather
// than "failed". It is idempotent.
func (a *Agent) Leave(ctx context.Context) error {
	var err error
	a.leaveOnce.Do(func() {
		if a.cluster != nil && a.cluster.rec != nil {
			// A primary hands over first: the cluster can fail over
			// while this node leaves gossip and stops.
			a.cluster.rec.handOver()
		}
		a.leaving.Store(true)
		if a.gossip != nil {
			err = a.gossip.Leave(ctx)
		}
	})
	return err
}

// Shutdown leaves the cluster, stops PostgreSQL cleanly and every goroutine.
func (a *Agent) Shutdown(ctx context.Context) error {
	a.logger.Info("shutting down")
	if err := a.Leave(ctx); err != nil {
		a.logger.Warn("leaving the cluster", "error", err)
	}
	return a.stopAll(ctx)
}

func (a *Agent) stopAll(ctx context.Context) error {
	var firstErr error
	a.shutdownOnce.Do(func() {
		if a.http != nil && a.http.ln != nil {
			if err := a.http.Shutdown(ctx); err != nil {
				a.logger.Warn("stopping HTTP API", "error", err)
			}
		}
		if a.cancel != nil {
			a.cancel()
		}
		// The supervisor stops PostgreSQL when its context ends; wait for
		// it (bounded by the caller's ctx) before gossip goes away.
		done := make(chan struct{})
		go func() { a.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			firstErr = fmt.Errorf("waiting for the agent to stop: %w", ctx.Err())
		}
		if a.cluster != nil {
			if a.cluster.rec != nil {
				// Run stops PostgreSQL when its context ends; this covers a
				// Start that failed before the reconciler ran.
				a.cluster.rec.stop(pgctl.StopFast)
			}
			if err := a.cluster.shutdown(ctx); err != nil && firstErr == nil {
				firstErr = err
			}
		}
		if a.gossip != nil {
			if err := a.gossip.Shutdown(); err != nil {
				a.logger.Warn("stopping gossip", "error", err)
			}
		}
		close(a.shutdownCh)
		a.logger.Info("agent stopped")
	})
	return firstErr
}

// ShutdownCh is closed once the agent has stopped, on its own (a fatal error,
// a leave through the API) or through Shutdown.
func (a *Agent) ShutdownCh() <-chan struct{} { return a.shutdownCh }

// Reload applies what can change without a restart: log level, tags and
// PostgreSQL parameters and pg_hba (a reload of the postmaster).
func (a *Agent) Reload(cfg *config.RuntimeConfig) error {
	old := a.config()
	if cfg.NodeName != old.NodeName || cfg.DataDir != old.DataDir {
		return fmt.Errorf("node_name and data_dir cannot change on reload (restart the agent)")
	}
	a.cfgMu.Lock()
	a.cfg = cfg
	a.cfgMu.Unlock()
	if lvl := hclog.LevelFromString(cfg.LogLevel); lvl != hclog.NoLevel {
		a.logger.SetLevel(lvl)
	}
	if a.cluster != nil && a.cluster.rec != nil {
		if inst := a.cluster.rec.instance(); inst.Running() {
			if err := inst.Reload(a.ctx); err != nil {
				return fmt.Errorf("reloading PostgreSQL settings: %w", err)
			}
		}
	}
	a.logger.Info("configuration reloaded")
	return nil
}

// shutdownSoon stops the agent from inside (after a leave through the API),
// outside the request's goroutine.
func (a *Agent) shutdownSoon() {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := a.stopAll(ctx); err != nil {
			a.logger.Error("stopping after leave", "error", err)
		}
	}()
}
