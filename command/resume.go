package command

import (
	"flag"

	"github.com/hashicorp/cli"
)

// ResumeCommand turns automatic failover back on.
type ResumeCommand struct {
	UI    cli.Ui
	flags *flag.FlagSet
	http  HTTPFlags
	help  string
}

func newResumeCommand(ui cli.Ui) *ResumeCommand {
	c := &ResumeCommand{UI: ui}
	c.flags = newFlagSet("resume")
	c.http.AddTo(c.flags)
	c.help = usage(resumeHelp, c.flags)
	return c
}

const resumeHelp = `
Usage: pgbattery resume [options]

  Turns automatic failover back on after "pgbattery pause".
`

func (c *ResumeCommand) Run(args []string) int {
	return runSetPaused(c.UI, c.flags, &c.http, c.help, args, false)
}

func (c *ResumeCommand) Synopsis() string { return "Turns automatic failover back on" }
func (c *ResumeCommand) Help() string     { return c.help }
