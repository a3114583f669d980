// Package command is the pgbattery CLI, in the mould of Serf's and Consul's:
// one hashicorp/cli command per file, client commands talking to the local
// agent's HTTP API through agent/api.
//
// Exit codes, as Consul's: 0 success; 1 any error, including bad flags or
// arguments; 2 a query that ran but matched nothing (members -status);
// 127 an unknown command.
package command

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/hashicorp/cli"

	"github.com/pgbattery/pgbattery/agent/version"
)

// Run runs the CLI with the process's arguments (without the program name)
// and returns the exit code.
func Run(args []string) int {
	ui := &cli.BasicUi{Reader: os.Stdin, Writer: os.Stdout, ErrorWriter: os.Stderr}
	return run(args, ui, os.Stdout, os.Stderr)
}

func run(args []string, ui cli.Ui, out, errOut io.Writer) int {
	c := &cli.CLI{
		Name:        "pgbattery",
		Args:        args,
		Version:     strings.TrimRight(version.Info(), "\n"),
		Commands:    Commands(ui),
		HelpFunc:    helpFunc,
		HelpWriter:  out,
		ErrorWriter: errOut,
	}
	code, err := c.Run()
	if err != nil {
		fmt.Fprintf(errOut, "Error executing CLI: %v\n", err)
		return 1
	}
	return code
}

// Commands returns the factories of every subcommand.
func Commands(ui cli.Ui) map[string]cli.CommandFactory {
	return map[string]cli.CommandFactory{
		"agent":                     func() (cli.Command, error) { return newAgentCommand(ui), nil },
		"demo":                      func() (cli.Command, error) { return newDemoCommand(ui), nil },
		"doctor":                    func() (cli.Command, error) { return newDoctorCommand(ui), nil },
		"force-leave":               func() (cli.Command, error) { return newForceLeaveCommand(ui), nil },
		"join":                      func() (cli.Command, error) { return newJoinCommand(ui), nil },
		"keygen":                    func() (cli.Command, error) { return &KeygenCommand{UI: ui}, nil },
		"leave":                     func() (cli.Command, error) { return newLeaveCommand(ui), nil },
		"members":                   func() (cli.Command, error) { return newMembersCommand(ui), nil },
		"version":                   func() (cli.Command, error) { return &VersionCommand{UI: ui}, nil },
		"status":                    func() (cli.Command, error) { return newStatusCommand(ui), nil },
		"history":                   func() (cli.Command, error) { return newHistoryCommand(ui), nil },
		"switchover":                func() (cli.Command, error) { return newSwitchoverCommand(ui), nil },
		"failover":                  func() (cli.Command, error) { return newFailoverCommand(ui), nil },
		"pause":                     func() (cli.Command, error) { return newPauseCommand(ui), nil },
		"resume":                    func() (cli.Command, error) { return newResumeCommand(ui), nil },
		"reinit":                    func() (cli.Command, error) { return newReinitCommand(ui), nil },
		"operator":                  func() (cli.Command, error) { return newOperatorCommand(), nil },
		"operator raft":             func() (cli.Command, error) { return newOperatorRaftCommand(), nil },
		"operator raft list-peers":  func() (cli.Command, error) { return newOperatorRaftListPeersCommand(ui), nil },
		"operator raft remove-peer": func() (cli.Command, error) { return newOperatorRaftRemovePeerCommand(ui), nil },
		"operator raft transfer-leader": func() (cli.Command, error) {
			return newOperatorRaftTransferLeaderCommand(ui), nil
		},
	}
}

// helpFunc is cli.BasicHelpFunc with the exit codes added.
func helpFunc(commands map[string]cli.CommandFactory) string {
	var b strings.Builder
	b.WriteString("Usage: pgbattery [--version] [--help] <command> [<args>]\n\n")
	b.WriteString("Available commands are:\n")
	names := make([]string, 0, len(commands))
	width := 0
	for name := range commands {
		names = append(names, name)
		width = max(width, len(name))
	}
	sort.Strings(names)
	for _, name := range names {
		synopsis := ""
		if cmd, err := commands[name](); err == nil {
			synopsis = cmd.Synopsis()
		}
		fmt.Fprintf(&b, "    %-*s    %s\n", width, name, synopsis)
	}
	b.WriteString(exitCodesHelp)
	return b.String()
}

const exitCodesHelp = `
Exit codes: 0 success, 1 error (including bad flags or arguments),
2 nothing matched (members -status), 127 unknown command.
`
