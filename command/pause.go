package command

import (
	"context"
	"flag"
	"fmt"

	"github.com/hashicorp/cli"
)

// PauseCommand turns automatic failover off.
type PauseCommand struct {
	UI    cli.Ui
	flags *flag.FlagSet
	http  HTTPFlags
	help  string
}

func newPauseCommand(ui cli.Ui) *PauseCommand {
	c := &PauseCommand{UI: ui}
	c.flags = newFlagSet("pause")
	c.http.AddTo(c.flags)
	c.help = usage(pauseHelp, c.flags)
	return c
}

const pauseHelp = `
Usage: pgbattery pause [options]

  Turns automatic failover off for maintenance: while paused, the
  controller promotes no one, whatever happens to the primary. Operator
  switchovers and failovers still work. Undo with "pgbattery resume".
`

func (c *PauseCommand) Run(args []string) int {
	return runSetPaused(c.UI, c.flags, &c.http, c.help, args, true)
}

func runSetPaused(ui cli.Ui, fs *flag.FlagSet, hf *HTTPFlags, help string, args []string, paused bool) int {
	if !parseFlags(ui, fs, args, help) {
		return 1
	}
	if fs.NArg() > 0 {
		ui.Error(fmt.Sprintf("The %s command takes no arguments.", fs.Name()))
		return 1
	}
	client, err := hf.APIClient()
	if err != nil {
		ui.Error(fmt.Sprintf("Error connecting to the pgbattery agent: %s", err))
		return 1
	}
	if paused {
		err = client.Pause(context.Background())
	} else {
		err = client.Resume(context.Background())
	}
	if err != nil {
		ui.Error(fmt.Sprintf("Error: %s", err))
		return 1
	}
	if paused {
		ui.Output("Automatic failover paused")
	} else {
		ui.Output("Automatic failover resumed")
	}
	return 0
}

func (c *PauseCommand) Synopsis() string { return "Turns automatic failover off" }
func (c *PauseCommand) Help() string     { return c.help }
