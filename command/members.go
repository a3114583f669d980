package command

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/hashicorp/cli"

	"github.com/pgbattery/pgbattery/agent/api"
)

// MembersCommand lists the cluster's members as the local agent sees them.
type MembersCommand struct {
	UI    cli.Ui
	flags *flag.FlagSet
	http  HTTPFlags

	detailed bool
	status   string
	format   string
	help     string
}

func newMembersCommand(ui cli.Ui) *MembersCommand {
	c := &MembersCommand{UI: ui}
	c.flags = newFlagSet("members")
	c.flags.BoolVar(&c.detailed, "detailed", false, "Show every tag of each member instead of the Role, Raft and Build columns.")
	c.flags.StringVar(&c.status, "status", "", "Only list members whose status (alive, suspect, failed, left, leaving) matches this regular expression.")
	c.flags.StringVar(&c.format, "format", "text", "Output format: text or json.")
	c.http.AddTo(c.flags)
	c.help = usage(membersHelp, c.flags)
	return c
}

const membersHelp = `
Usage: pgbattery members [options]

  Lists the members of the cluster as the local agent's gossip sees them:
  name, gossip address, status, role (primary, replica, witness), raft
  suffrage and build version. Exits 2 when no member matches -status.
`

func (c *MembersCommand) Run(args []string) int {
	if !parseFlags(c.UI, c.flags, args, c.help) {
		return 1
	}
	if c.flags.NArg() > 0 {
		c.UI.Error("The members command takes no arguments.")
		return 1
	}
	if c.format != "text" && c.format != "json" {
		c.UI.Error(fmt.Sprintf("Invalid -format %q: use text or json.", c.format))
		return 1
	}
	statusRE, err := regexp.Compile(c.status)
	if err != nil {
		c.UI.Error(fmt.Sprintf("Invalid -status regular expression: %s", err))
		return 1
	}
	client, err := c.http.APIClient()
	if err != nil {
		c.UI.Error(fmt.Sprintf("Error connecting to the pgbattery agent: %s", err))
		return 1
	}
	members, err := client.Members(context.Background())
	if err != nil {
		c.UI.Error(fmt.Sprintf("Error retrieving members: %s", err))
		return 1
	}

	matched := make([]api.Member, 0, len(members))
	for _, m := range members {
		if statusRE.MatchString(m.Status) {
			matched = append(matched, m)
		}
	}
	sort.SliceStable(matched, func(i, j int) bool { return matched[i].Name < matched[j].Name })

	if c.format == "json" {
		out, err := json.MarshalIndent(matched, "", "  ")
		if err != nil {
			c.UI.Error(fmt.Sprintf("Error encoding members: %s", err))
			return 1
		}
		c.UI.Output(string(out))
	} else if len(matched) > 0 {
		c.UI.Output(formatMembers(matched, c.detailed))
	}
	if len(matched) == 0 {
		return 2
	}
	return 0
}

// formatMembers renders members as aligned columns.
func formatMembers(members []api.Member, detailed bool) string {
	header := []string{"Node", "Address", "Status", "Role", "Raft", "Build"}
	if detailed {
		header = []string{"Node", "Address", "Status", "Tags"}
	}
	tab := newTable(header...)
	for _, m := range members {
		if detailed {
			tab.row(m.Name, m.Addr, m.Status, formatTags(m.Tags))
			continue
		}
		tab.row(m.Name, m.Addr, m.Status,
			orDash(m.Tags[api.TagRole]), orDash(m.Tags[api.TagRaft]), orDash(m.Tags[api.TagBuild]))
	}
	return strings.TrimRight(tab.String(), "\n")
}

// formatTags renders tags as k1=v1,k2=v2 sorted by key.
func formatTags(tags map[string]string) string {
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	pairs := make([]string, len(keys))
	for i, k := range keys {
		pairs[i] = k + "=" + tags[k]
	}
	return strings.Join(pairs, ",")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (c *MembersCommand) Synopsis() string { return "Lists the members of the cluster" }
func (c *MembersCommand) Help() string     { return c.help }
