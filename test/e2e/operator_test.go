package e2e

import (
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// opCLI runs a pgbattery client command (nested names such as "operator
// raft list-peers" are passed as separate words) against p's API, with
// -http-addr last so that it reaches the leaf command's flags.
func opCLI(t *testing.T, p *agentProc, timeout time.Duration, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	all := append(append([]string{}, args...), "-http-addr="+p.httpAddr())
	out, err := exec.CommandContext(ctx, binary, all...).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running pgbattery %v: %v", args, err)
	}
	return string(out), 0
}

// statusJSON is the subset of GET /v1/status the test reads.
type statusJSON struct {
	Node       string `json:"node"`
	FromLeader bool   `json:"from_leader"`
	ClusterID  string `json:"cluster_id"`
	Primary    string `json:"primary"`
	Writable   bool   `json:"writable"`
	Epoch      uint64 `json:"epoch"`
	Paused     bool   `json:"paused"`
	Sync       struct {
		Mode     string   `json:"mode"`
		Standbys []string `json:"standbys"`
		K        int      `json:"k"`
	} `json:"sync"`
	Controller struct {
		State string `json:"state"`
	} `json:"controller"`
	Raft struct {
		Leader string `json:"leader"`
	} `json:"raft"`
	Members []struct {
		Name     string  `json:"name"`
		Role     string  `json:"role"`
		Probed   bool    `json:"probed"`
		Running  bool    `json:"running"`
		LSN      string  `json:"lsn"`
		LagBytes *uint64 `json:"lag_bytes"`
	} `json:"members"`
	Secrets any `json:"secrets"`
}

func statusOf(t *testing.T, p *agentProc) statusJSON {
	t.Helper()
	out, code := opCLI(t, p, 30*time.Second, "status", "-format=json")
	if code != 0 {
		t.Fatalf("status -format=json on %s: exit %d: %s", p.name, code, out)
	}
	var st statusJSON
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status -format=json is not JSON: %v\n%s", err, out)
	}
	return st
}

func TestOperatorCommands(t *testing.T) {
	nodes := startPGCluster(t, 3)
	// The agents' warnings and errors, for whoever reads the verbose output
	// (the whole log is printed only when the test fails).
	t.Cleanup(func() {
		for _, p := range nodes {
			var lines []string
			for _, l := range strings.Split(p.logs(), "\n") {
				if (strings.Contains(l, "[WARN]") || strings.Contains(l, "[ERROR]")) && len(lines) < 30 {
					lines = append(lines, l)
				}
			}
			if len(lines) > 0 {
				t.Logf("warnings and errors of %s:\n%s", p.name, strings.Join(lines, "\n"))
			}
		}
	})
	primary := primaryOf(t, nodes)
	var follower *agentProc
	for _, p := range nodes {
		if p != primary {
			follower = p
			break
		}
	}

	t.Run("status", func(t *testing.T) {
		var st statusJSON
		waitFor(t, 30*time.Second, "status with every member probed and a lag", func() bool {
			st = statusOf(t, follower)
			if len(st.Members) != 3 {
				return false
			}
			for _, m := range st.Members {
				if !m.Probed || !m.Running || m.LSN == "" || m.LagBytes == nil {
					return false
				}
			}
			return true
		})
		if st.Primary != primary.name || !st.Writable || st.Epoch == 0 || st.ClusterID == "" {
			t.Errorf("status: primary %q writable %v epoch %d cluster %q; want primary %s, writable, epoch > 0, a cluster id",
				st.Primary, st.Writable, st.Epoch, st.ClusterID, primary.name)
		}
		if !st.FromLeader || st.Node != st.Raft.Leader {
			t.Errorf("status asked on a node should come from the raft leader %q, came from %q (from_leader=%v)", st.Raft.Leader, st.Node, st.FromLeader)
		}
		if st.Controller.State != "healthy" {
			t.Errorf("controller state %q, want healthy", st.Controller.State)
		}
		if st.Secrets != nil {
			t.Errorf("status exposes secrets: %v", st.Secrets)
		}
		roles := map[string]int{}
		for _, m := range st.Members {
			roles[m.Role]++
		}
		if roles["primary"] != 1 || roles["replica"] != 2 {
			t.Errorf("roles %v, want 1 primary and 2 replicas", roles)
		}

		text, code := opCLI(t, follower, 30*time.Second, "status")
		if code != 0 {
			t.Fatalf("status: exit %d: %s", code, text)
		}
		for _, want := range []string{"Cluster:", "Epoch:", "Primary:", primary.name + " (writable)", "Raft leader:", "Controller:", "Sync:",
			"Node", "Role", "Postgres", "LSN", "Lag", "Gossip", "read-write", "streaming"} {
			if !strings.Contains(text, want) {
				t.Errorf("status output lacks %q:\n%s", want, text)
			}
		}
		t.Logf("pgbattery status:\n%s", text)

		// ?local answers from the follower's own replica of the state.
		var local statusJSON
		if code := follower.get("/v1/status?local", &local); code != 200 || local.FromLeader == (follower.name != st.Raft.Leader) {
			t.Errorf("status?local on %s: %d, from_leader %v (leader %s)", follower.name, code, local.FromLeader, st.Raft.Leader)
		}
		if follower.name != st.Raft.Leader && local.Controller.State != "unknown" {
			t.Errorf("a follower's own answer claims controller state %q", local.Controller.State)
		}
	})

	t.Run("sync-and-health", func(t *testing.T) {
		// Quorum mode with two streaming standbys: both become synchronous.
		waitFor(t, 60*time.Second, "both standbys in the synchronous set", func() bool {
			st := statusOf(t, follower)
			return st.Sync.Mode == "quorum" && len(st.Sync.Standbys) == 2 && st.Sync.K >= 1
		})
		for _, p := range nodes {
			isPrimary := p == primary
			checks := map[string]int{
				"/v1/health/primary":                   map[bool]int{true: 200, false: 503}[isPrimary],
				"/v1/health/replica":                   map[bool]int{true: 503, false: 200}[isPrimary],
				"/v1/health/replica?max_lag=104857600": map[bool]int{true: 503, false: 200}[isPrimary],
				"/v1/health/replica?max_lag=1h":        map[bool]int{true: 503, false: 200}[isPrimary],
				"/v1/health/sync":                      map[bool]int{true: 503, false: 200}[isPrimary],
				"/v1/health/read-only":                 200,
				"/v1/health/replica?max_lag=lots":      400,
			}
			for path, want := range checks {
				var got int
				// Lag and sync membership settle within a renewal or two.
				for i := 0; i < 50; i++ {
					if got = p.get(path, nil); got == want {
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
				if got != want {
					t.Errorf("%s on %s (primary=%v): %d, want %d", path, p.name, isPrimary, got, want)
				}
			}
		}
	})

	t.Run("list-peers", func(t *testing.T) {
		var out string
		waitFor(t, 30*time.Second, "list-peers with 3 reporting voters", func() bool {
			var code int
			out, code = opCLI(t, follower, 30*time.Second, "operator", "raft", "list-peers")
			if code != 0 {
				return false
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 4 {
				return false
			}
			leaders, voters := 0, 0
			for _, l := range lines[1:] {
				f := strings.Fields(l)
				if len(f) < 9 || f[6] == "-" {
					return false // a peer did not report
				}
				if f[3] == "leader" {
					leaders++
				}
				if f[4] == "true" {
					voters++
				}
			}
			return leaders == 1 && voters == 3
		})
		if !strings.HasPrefix(out, "Node") || !strings.Contains(out, "Trails Leader By") || !strings.Contains(out, "Commit Index") {
			t.Errorf("list-peers header is not Consul's:\n%s", out)
		}
		t.Logf("pgbattery operator raft list-peers:\n%s", out)
	})

	t.Run("pause-resume", func(t *testing.T) {
		if out, code := opCLI(t, follower, 30*time.Second, "pause"); code != 0 || !strings.Contains(out, "paused") {
			t.Fatalf("pause: exit %d: %s", code, out)
		}
		waitFor(t, 10*time.Second, "paused in status", func() bool { return statusOf(t, primary).Paused })
		text, _ := opCLI(t, primary, 30*time.Second, "status")
		if !strings.Contains(text, "Paused:") || !strings.Contains(text, "yes") {
			t.Errorf("status does not show the pause:\n%s", text)
		}
		if out, code := opCLI(t, primary, 30*time.Second, "resume"); code != 0 || !strings.Contains(out, "resumed") {
			t.Fatalf("resume: exit %d: %s", code, out)
		}
		waitFor(t, 10*time.Second, "resumed in status", func() bool { return !statusOf(t, follower).Paused })
	})

	t.Run("switchover-refused", func(t *testing.T) {
		out, code := opCLI(t, follower, 30*time.Second, "switchover", "-to", "nosuchnode")
		if code != 1 || !strings.Contains(out, "404") {
			t.Errorf("switchover to an unknown node: exit %d, want 1 with a 404: %s", code, out)
		}
		out, code = opCLI(t, follower, 30*time.Second, "switchover", "-to", primary.name)
		if code != 1 || !strings.Contains(out, "already the primary") {
			t.Errorf("switchover to the primary: exit %d, want 1 'already the primary': %s", code, out)
		}
	})

	t.Run("switchover-and-back", func(t *testing.T) {
		old := primary
		target := follower
		// The target must be in the synchronous set and caught up; give
		// the controller time to settle the set after bootstrap.
		var out string
		var code int
		waitFor(t, 60*time.Second, "a switchover the cluster accepts", func() bool {
			out, code = opCLI(t, old, 90*time.Second, "switchover", "-to", target.name, "-wait")
			return code == 0 || !strings.Contains(out, "409")
		})
		if code != 0 || !strings.Contains(out, "New primary: "+target.name) {
			t.Fatalf("switchover -to %s -wait: exit %d:\n%s", target.name, code, out)
		}
		t.Logf("switchover:\n%s", out)
		if p := primaryOf(t, nodes); p != target {
			t.Fatalf("after the switchover the primary is %s, want %s", p.name, target.name)
		}
		waitFor(t, 3*time.Minute, "the old primary to follow as a replica", func() bool { return role(old) == "replica" })

		waitFor(t, 60*time.Second, "the switchover back", func() bool {
			out, code = opCLI(t, target, 90*time.Second, "switchover", "-to", old.name, "-wait")
			return code == 0 || !strings.Contains(out, "409")
		})
		if code != 0 || !strings.Contains(out, "New primary: "+old.name) {
			t.Fatalf("switchover back -to %s -wait: exit %d:\n%s", old.name, code, out)
		}
		if p := primaryOf(t, nodes); p != old {
			t.Fatalf("after the switchover back the primary is %s, want %s", p.name, old.name)
		}
		waitFor(t, 3*time.Minute, "the intermediate primary to follow as a replica", func() bool { return role(target) == "replica" })

		hist, code := opCLI(t, follower, 30*time.Second, "history")
		if code != 0 || strings.Count(hist, "switchover") < 2 {
			t.Errorf("history after two switchovers: exit %d:\n%s", code, hist)
		}
		t.Logf("pgbattery history:\n%s", hist)
		text, _ := opCLI(t, follower, 30*time.Second, "status")
		t.Logf("pgbattery status after the switchovers:\n%s", text)
	})

	t.Run("transfer-leader", func(t *testing.T) {
		before := statusOf(t, follower)
		if out, code := opCLI(t, follower, 30*time.Second, "operator", "raft", "remove-peer", "-id=nosuch"); code != 1 || !strings.Contains(out, "404") {
			t.Errorf("remove-peer of an unknown ID: exit %d, want 1 with a 404: %s", code, out)
		}
		// Name a target that is neither the current leader nor the
		// PostgreSQL primary (the agents hand raft leadership away from the
		// primary by design); ask another node, so the request is forwarded.
		var target, via *agentProc
		for _, p := range nodes {
			switch {
			case p.name != before.Raft.Leader && p.name != before.Primary && target == nil:
				target = p
			case via == nil && p.name != before.Raft.Leader:
				via = p
			}
		}
		if target == nil || via == nil || target == via {
			t.Skipf("no suitable target/via pair (leader %s, primary %s)", before.Raft.Leader, before.Primary)
		}
		// A raft election under load can leave a moment with no leader:
		// the API then answers 503, and the operator tries again.
		var out string
		var code int
		for attempt := 0; attempt < 10; attempt++ {
			out, code = opCLI(t, via, 30*time.Second, "operator", "raft", "transfer-leader", "-id="+target.name)
			if code == 0 || !strings.Contains(out, "503") {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		if code != 0 || !strings.Contains(out, "to "+target.name) {
			t.Fatalf("transfer-leader -id=%s via %s: exit %d: %s", target.name, via.name, code, out)
		}
		waitFor(t, 10*time.Second, "the new raft leader in status", func() bool {
			st := statusOf(t, via)
			return st.Raft.Leader == target.name && st.FromLeader
		})
		// Moving the raft leader does not move the primary.
		if st := statusOf(t, target); st.Primary != before.Primary || st.Epoch != before.Epoch {
			t.Errorf("transfer-leader changed the primary: %s epoch %d, was %s epoch %d", st.Primary, st.Epoch, before.Primary, before.Epoch)
		}
	})
}
