package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgbattery/pgbattery/agent/doctor"
)

func runDoctor(t *testing.T, p *agentProc, args ...string) (*doctor.Result, int, string) {
	t.Helper()
	out, code := opCLI(t, p, time.Minute, append([]string{"doctor", "-format=json"}, args...)...)
	var res doctor.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("doctor -format=json on %s (exit %d) is not JSON: %v\n%s", p.name, code, err, out)
	}
	return &res, code, out
}

func checksByID(res *doctor.Result) map[string]doctor.Check {
	m := map[string]doctor.Check{}
	for _, c := range res.Checks {
		m[c.ID] = c
	}
	return m
}

// TestDoctor runs `pgbattery doctor` against a healthy 3-node cluster of
// real agents (no check fails, exit 0; the checks that must pass on it do),
// then kills a standby's node and checks that doctor reports it missing and
// exits 1. The detection of every other problem (another PostgreSQL major,
// an even number of voters, a clock offset, rewind impossible...) is tested
// on crafted reports in agent/doctor.
func TestDoctor(t *testing.T) {
	c := startFaultCluster(t, 3, false)
	primary := c.settle(t)
	others := c.others(primary)

	var res *doctor.Result
	var out string
	mustBeOK := []string{doctor.IDReachable, doctor.IDAgentVersion, doctor.IDPostgresMajor, doctor.IDClock,
		doctor.IDRaftQuorum, doctor.IDRaftVoters, doctor.IDStandbys, doctor.IDSync, doctor.IDStandbySetting,
		doctor.IDDiskWAL, doctor.IDRewind, doctor.IDSlots}
	notOK := func(checks map[string]doctor.Check) []string {
		var bad []string
		for _, id := range mustBeOK {
			if ch := checks[id]; ch.Status != doctor.OK {
				bad = append(bad, fmt.Sprintf("%s: %s: %s %v", id, ch.Status, ch.Summary, ch.Details))
			}
		}
		return bad
	}
	// Right after settling the controller may still be widening the
	// synchronous set, and on a loaded machine a status query may time
	// out once: give the cluster some tries to look healthy.
	var code int
	for deadline := time.Now().Add(2 * time.Minute); ; {
		res, code, out = runDoctor(t, others[0])
		bad := notOK(checksByID(res))
		if code == 0 && res.Status != doctor.Fail && len(bad) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("doctor on a healthy cluster: exit %d, not ok:\n%s\n%s", code, strings.Join(bad, "\n"), out)
		}
		time.Sleep(time.Second)
	}
	checks := checksByID(res)
	if len(checks) != 14 {
		t.Errorf("%d checks, want 14:\n%s", len(checks), out)
	}
	// This cluster runs without a gossip key and without TLS: doctor says
	// so, as a warning.
	if checks[doctor.IDGossipEncrypt].Status != doctor.Warn || checks[doctor.IDTLS].Status != doctor.Warn {
		t.Errorf("gossip %s, tls %s; want both warn on a cluster without encrypt and tls", checks[doctor.IDGossipEncrypt].Status, checks[doctor.IDTLS].Status)
	}
	if res.Input == nil || len(res.Input.Nodes) != 3 {
		t.Fatalf("the JSON answer lacks the three gathered reports")
	}
	for name, nr := range res.Input.Nodes {
		if nr.Report == nil || nr.Report.PGMajor != 15 || !nr.Report.Running {
			t.Errorf("report of %s: %+v", name, nr)
		}
		if name != res.Asker && nr.RTT <= 0 {
			t.Errorf("no round trip measured to %s", name)
		}
	}

	text, code := opCLI(t, others[0], time.Minute, "doctor")
	if code != 0 || !strings.Contains(text, "[ok  ] version.postgres") || !strings.Contains(text, "[warn] gossip.encryption") ||
		!strings.Contains(text, "keygen") || !strings.Contains(text, "0 failed") {
		t.Errorf("doctor text output (exit %d):\n%s", code, text)
	}
	if _, code := opCLI(t, others[0], time.Minute, "doctor", "-format=xml"); code != 1 {
		t.Errorf("doctor -format=xml: exit %d, want 1", code)
	}

	// A standby goes missing: its whole node dies.
	gone := others[1]
	killNode(t, gone)
	waitFor(t, 2*time.Minute, "doctor to report the missing standby", func() bool {
		var code int
		res, code, out = runDoctor(t, others[0])
		ch := checksByID(res)[doctor.IDStandbys]
		// The dead node may have been the raft leader: wait for the
		// election too, then the quorum is held by the minimum.
		return code == 1 && res.Status == doctor.Fail && ch.Status == doctor.Fail && strings.Contains(strings.Join(ch.Details, "\n"), gone.name) &&
			checksByID(res)[doctor.IDRaftQuorum].Status == doctor.Warn
	})
	checks = checksByID(res)
	if checks[doctor.IDReachable].Status != doctor.Fail {
		t.Errorf("agents.reachable with %s dead: %s", gone.name, checks[doctor.IDReachable].Status)
	}
	if ch := checks[doctor.IDRaftQuorum]; ch.Status != doctor.Warn {
		t.Errorf("raft.quorum with one of three voters dead: %s (%s), want warn", ch.Status, ch.Summary)
	}
}
