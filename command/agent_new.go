package command

import (
	"github.com/hashicorp/go-hclog"

	"github.com/pgbattery/pgbattery/agent"
	"github.com/pgbattery/pgbattery/agent/config"
)

// newAgent builds the real agent.
func newAgent(cfg *config.RuntimeConfig, logger hclog.Logger) (agentRunner, error) {
	a, err := agent.New(cfg, logger)
	if err != nil {
		return nil, err
	}
	return a, nil
}
