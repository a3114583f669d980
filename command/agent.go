package command

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/cli"
	"github.com/hashicorp/go-hclog"

	"github.com/pgbattery/pgbattery/agent/config"
	"github.com/pgbattery/pgbattery/agent/version"
)

// gracefulTimeout bounds a graceful shutdown: leaving gossip and stopping
// PostgreSQL cleanly. A second signal ends the wait at once.
const gracefulTimeout = 30 * time.Second

// agentRunner is what the command needs of an agent.Agent; tests give it
// a stand-in to exercise the signal handling.
type agentRunner interface {
	Start(ctx context.Context) error
	Shutdown(ctx context.Context) error
	Reload(cfg *config.RuntimeConfig) error
	ShutdownCh() <-chan struct{}
}

// AgentCommand runs the agent.
type AgentCommand struct {
	UI cli.Ui

	// newAgent builds the agent; agent.New unless a test replaces it.
	newAgent func(*config.RuntimeConfig, hclog.Logger) (agentRunner, error)
	// signals delivers SIGINT, SIGTERM and SIGHUP; the process's signals
	// unless a test replaces it.
	signals <-chan os.Signal
	// logOutput is where the agent logs; os.Stderr unless a test replaces it.
	logOutput io.Writer
	// gracefulTimeout bounds graceful shutdown; gracefulTimeout by default.
	gracefulTimeout time.Duration
}

func newAgentCommand(ui cli.Ui) *AgentCommand {
	return &AgentCommand{
		UI:       ui,
		newAgent: newAgent,
	}
}

const agentHelp = `
Usage: pgbattery agent [options]

  Runs a pgbattery agent: it supervises this node's PostgreSQL, gossips with
  the other agents, takes part in the cluster's raft group and serves the
  PostgreSQL gateway and the HTTP API. It runs until interrupted.

  Configuration comes from HCL or JSON files (-config-file, -config-dir) and
  the flags below; flags win over files, and later files over earlier ones.
  See docs/config.md for every key.

  Signals: SIGINT or SIGTERM leave the cluster and stop PostgreSQL cleanly
  (a second signal exits at once); SIGHUP re-reads the configuration files
  and applies what can change while running.

  With -validate, the configuration is checked, every problem printed, and
  the command exits 0 when it is valid, 1 when it is not, starting nothing.
`

func (c *AgentCommand) flagSet(opts *config.LoadOpts, validate *bool) *flag.FlagSet {
	fs := newFlagSet("agent")
	config.AddFlags(fs, opts)
	fs.BoolVar(validate, "validate", false, "Check the configuration, print every problem, and exit.")
	return fs
}

func (c *AgentCommand) Help() string {
	var (
		opts     config.LoadOpts
		validate bool
	)
	return usage(agentHelp, c.flagSet(&opts, &validate))
}

func (c *AgentCommand) Synopsis() string { return "Runs a pgbattery agent" }

func (c *AgentCommand) Run(args []string) int {
	var (
		opts     config.LoadOpts
		validate bool
	)
	fs := c.flagSet(&opts, &validate)
	if !parseFlags(c.UI, fs, args, c.Help()) {
		return 1
	}
	if fs.NArg() > 0 {
		c.UI.Error(fmt.Sprintf("The agent command takes no arguments, got %q.", fs.Args()))
		return 1
	}

	cfg, warnings, err := config.Load(opts)
	if validate {
		for _, w := range warnings {
			c.UI.Warn("Warning: " + w)
		}
		if err != nil {
			c.UI.Error(configErrorText(err))
			return 1
		}
		c.UI.Output("Configuration is valid!")
		return 0
	}
	if err != nil {
		c.UI.Error(configErrorText(err))
		return 1
	}

	out := c.logOutput
	if out == nil {
		out = os.Stderr
	}
	logger := hclog.New(&hclog.LoggerOptions{
		Name:       "agent",
		Level:      hclog.LevelFromString(cfg.LogLevel),
		JSONFormat: cfg.LogJSON,
		Output:     out,
	})
	for _, w := range warnings {
		logger.Warn("configuration: " + w)
	}

	signals := c.signals
	if signals == nil {
		ch := make(chan os.Signal, 4)
		signal.Notify(ch, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
		defer signal.Stop(ch)
		signals = ch
	}
	timeout := c.gracefulTimeout
	if timeout <= 0 {
		timeout = gracefulTimeout
	}

	c.UI.Output(fmt.Sprintf("==> Starting pgbattery agent %s", version.Full()))
	c.UI.Output(fmt.Sprintf("    Node: %s  Server: %t  Data dir: %s", cfg.NodeName, cfg.Server, cfg.DataDir))
	c.UI.Output(fmt.Sprintf("    Bind: %s  Advertise: %s  Ports: gateway %d, http %d, serf %d, raft %d, postgres %d",
		cfg.BindAddr, cfg.AdvertiseAddr, cfg.Ports.Gateway, cfg.Ports.HTTP, cfg.Ports.Serf, cfg.Ports.Raft, cfg.Ports.Postgres))

	ag, err := c.newAgent(cfg, logger)
	if err != nil {
		logger.Error("cannot create the agent", "error", err)
		return 1
	}
	code, ok, reloadPending := c.start(ag, signals, logger, timeout)
	if !ok {
		return code
	}
	c.UI.Output("==> pgbattery agent running")
	if reloadPending {
		c.reload(ag, opts, logger)
	}
	return c.handleSignals(ag, opts, signals, logger, timeout)
}

// start starts the agent. A SIGINT or SIGTERM during start-up (initdb or a
// clone can take a while) cancels it and stops whatever had started; a
// SIGHUP is remembered and served once the agent runs.
func (c *AgentCommand) start(ag agentRunner, signals <-chan os.Signal, logger hclog.Logger, timeout time.Duration) (code int, ok, reloadPending bool) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- ag.Start(ctx) }()

	for {
		select {
		case err := <-done:
			if err != nil {
				logger.Error("agent failed to start", "error", err)
				return 1, false, false
			}
			return 0, true, reloadPending
		case sig := <-signals:
			if sig == syscall.SIGHUP {
				logger.Info("SIGHUP while starting: reloading once started")
				reloadPending = true
				continue
			}
			logger.Info("caught signal while starting; stopping", "signal", sig.String())
			cancel()
			select {
			case <-done:
			case <-signals:
				return 1, false, false
			case <-time.After(timeout):
				logger.Error("agent did not stop starting in time", "timeout", timeout)
				return 1, false, false
			}
			c.shutdown(ag, signals, logger, timeout)
			return 1, false, false
		}
	}
}

// handleSignals waits for the agent to stop or for a signal: SIGHUP
// reloads, SIGINT and SIGTERM shut down gracefully.
func (c *AgentCommand) handleSignals(ag agentRunner, opts config.LoadOpts, signals <-chan os.Signal, logger hclog.Logger, timeout time.Duration) int {
	for {
		select {
		case <-ag.ShutdownCh():
			// The agent stopped by itself: after a leave through the API
			// (success), or a fatal error, if the agent can tell us.
			if e, ok := ag.(interface{ Err() error }); ok && e.Err() != nil {
				logger.Error("agent stopped", "error", e.Err())
				return 1
			}
			return 0
		case sig := <-signals:
			if sig == syscall.SIGHUP {
				c.reload(ag, opts, logger)
				continue
			}
			c.UI.Output(fmt.Sprintf("==> Caught signal: %v; shutting down gracefully (send it again to exit at once)", sig))
			return c.shutdown(ag, signals, logger, timeout)
		}
	}
}

// shutdown stops the agent gracefully, within timeout; a second SIGINT or
// SIGTERM gives up waiting.
func (c *AgentCommand) shutdown(ag agentRunner, signals <-chan os.Signal, logger hclog.Logger, timeout time.Duration) int {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- ag.Shutdown(ctx) }()
	for {
		select {
		case err := <-done:
			if err != nil {
				logger.Error("graceful shutdown failed", "error", err)
				return 1
			}
			return 0
		case sig := <-signals:
			if sig == syscall.SIGHUP {
				continue
			}
			logger.Warn("caught second signal; exiting without waiting", "signal", sig.String())
			return 1
		case <-time.After(timeout + time.Second):
			// Shutdown should honour ctx; this is the backstop.
			logger.Error("graceful shutdown timed out", "timeout", timeout)
			return 1
		}
	}
}

// reload re-reads the configuration with the same files and flags. A bad
// configuration is logged and the agent keeps running with the old one.
func (c *AgentCommand) reload(ag agentRunner, opts config.LoadOpts, logger hclog.Logger) {
	logger.Info("reloading configuration")
	cfg, warnings, err := config.Load(opts)
	for _, w := range warnings {
		logger.Warn("configuration: " + w)
	}
	if err != nil {
		for _, line := range configErrorLines(err) {
			logger.Error("invalid configuration, keeping the running one", "error", line)
		}
		return
	}
	if err := ag.Reload(cfg); err != nil {
		logger.Error("reloading configuration failed", "error", err)
		return
	}
}

func configErrorLines(err error) []string {
	var errs config.Errors
	if errors.As(err, &errs) {
		lines := make([]string, len(errs))
		for i, e := range errs {
			lines[i] = e.Error()
		}
		return lines
	}
	return []string{err.Error()}
}

func configErrorText(err error) string {
	lines := configErrorLines(err)
	noun := "problems"
	if len(lines) == 1 {
		noun = "problem"
	}
	return fmt.Sprintf("Invalid configuration (%d %s):\n  %s", len(lines), noun, strings.Join(lines, "\n  "))
}
