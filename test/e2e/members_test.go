package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgbattery/pgbattery/agent/api"
)

// startCluster starts n agents without PostgreSQL, joined to the first.
func startCluster(t *testing.T, n int, extraHCL string) []*agentProc {
	t.Helper()
	nodes := make([]*agentProc, n)
	for i := range nodes {
		nodes[i] = newNode(t, fmt.Sprintf("n%d", i+1), nodeOpts{extraHCL: extraHCL, expect: n})
	}
	nodes[0].start()
	waitFor(t, 30*time.Second, "first agent's API", func() bool { return nodes[0].get("/v1/agent/self", nil) == 200 })
	for _, p := range nodes[1:] {
		p.start("-join=" + nodes[0].serfAddr())
	}
	for _, p := range nodes {
		waitMembers(t, p, n, api.StatusAlive)
	}
	return nodes
}

// waitMembers waits until p sees want members with the given status.
func waitMembers(t *testing.T, p *agentProc, want int, status string) {
	t.Helper()
	waitFor(t, 30*time.Second, fmt.Sprintf("%s to see %d %s members", p.name, want, status), func() bool {
		var ms []api.Member
		if p.get("/v1/agent/members", &ms) != 200 {
			return false
		}
		n := 0
		for _, m := range ms {
			if m.Status == status {
				n++
			}
		}
		return n == want
	})
}

func memberStatus(p *agentProc, node string) string {
	var ms []api.Member
	if p.get("/v1/agent/members", &ms) != 200 {
		return ""
	}
	for _, m := range ms {
		if m.Name == node {
			return m.Status
		}
	}
	return ""
}

func TestMembersThreeAndFive(t *testing.T) {
	for _, n := range []int{3, 5} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			nodes := startCluster(t, n, "")
			out, code := nodes[0].cli("members")
			if code != 0 {
				t.Fatalf("members exited %d: %s", code, out)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != n+1 {
				t.Fatalf("members printed %d lines, want header + %d:\n%s", len(lines), n, out)
			}
			for _, col := range []string{"Node", "Address", "Status", "Role", "Raft", "Build"} {
				if !strings.Contains(lines[0], col) {
					t.Errorf("header %q lacks column %s", lines[0], col)
				}
			}
			for i, p := range nodes {
				line := lines[i+1]
				if !strings.HasPrefix(line, p.name+" ") || !strings.Contains(line, p.serfAddr()) || !strings.Contains(line, "alive") || !strings.Contains(line, "witness") {
					t.Errorf("members line %q does not show %s at %s alive witness", line, p.name, p.serfAddr())
				}
			}

			js, code := nodes[n-1].cli("members", "-format=json")
			if code != 0 {
				t.Fatalf("members -format=json exited %d: %s", code, js)
			}
			var ms []api.Member
			if err := json.Unmarshal([]byte(js), &ms); err != nil {
				t.Fatalf("members -format=json is not JSON: %v\n%s", err, js)
			}
			if len(ms) != n {
				t.Fatalf("JSON lists %d members, want %d", len(ms), n)
			}
			for _, m := range ms {
				if m.Tags["raft_addr"] == "" || m.Tags["api"] == "" || m.Tags["build"] == "" {
					t.Errorf("member %s lacks address/build tags: %v", m.Name, m.Tags)
				}
			}
		})
	}
}

func TestLeaveVersusFailedAndRejoin(t *testing.T) {
	nodes := startCluster(t, 3, "")
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]

	// Graceful leave: the agent exits and its peers record "left".
	out, code := n2.cli("leave")
	if code != 0 {
		t.Fatalf("leave exited %d: %s", code, out)
	}
	waitFor(t, 20*time.Second, "n2 to exit after leave", n2.exited)
	waitFor(t, 20*time.Second, "n1 to see n2 left", func() bool { return memberStatus(n1, "n2") == api.StatusLeft })

	// kill -9: peers record "failed", never "left".
	syscall.Kill(-n3.cmd.Process.Pid, syscall.SIGKILL)
	waitFor(t, 20*time.Second, "n1 to see n3 failed", func() bool { return memberStatus(n1, "n3") == api.StatusFailed })

	// A restarted node rejoins from its serf snapshot, with no -join.
	n3.start()
	waitFor(t, 30*time.Second, "n3 to rejoin", func() bool { return memberStatus(n1, "n3") == api.StatusAlive })

	// force-leave of a failed node turns it into left.
	syscall.Kill(-n3.cmd.Process.Pid, syscall.SIGKILL)
	waitFor(t, 20*time.Second, "n1 to see n3 failed again", func() bool { return memberStatus(n1, "n3") == api.StatusFailed })
	if out, code := n1.cli("force-leave", "n3"); code != 0 {
		t.Fatalf("force-leave exited %d: %s", code, out)
	}
	waitFor(t, 20*time.Second, "n1 to see n3 left", func() bool { return memberStatus(n1, "n3") == api.StatusLeft })

	if out, code := n1.cli("force-leave", "nosuchnode"); code == 0 || !strings.Contains(out, "nosuchnode") {
		t.Errorf("force-leave of an unknown node: exit %d, output %q; want an error naming it", code, out)
	}
}

func TestJoinCommandAndWrongKey(t *testing.T) {
	key1 := "Mi9ZkdqOhUbxuBU8Ax6V3jGRAqAp+Tgz0OfEgqXyxgE="
	key2 := "k6yWBPn5JSKnuNi3k3HZbOxSBGqflTJtG1EUXfY0JTY="
	a := newNode(t, "a", nodeOpts{expect: 2, extraHCL: fmt.Sprintf("encrypt = %q", key1)})
	b := newNode(t, "b", nodeOpts{expect: 2, extraHCL: fmt.Sprintf("encrypt = %q", key1)})
	c := newNode(t, "c", nodeOpts{expect: 2, extraHCL: fmt.Sprintf("encrypt = %q", key2)})
	for _, p := range []*agentProc{a, b} {
		p.start()
		waitFor(t, 30*time.Second, p.name+"'s API", func() bool { return p.get("/v1/agent/self", nil) == 200 })
	}
	out, code := b.cli("join", a.serfAddr())
	if code != 0 || !strings.Contains(out, "1") {
		t.Fatalf("join exited %d: %s", code, out)
	}
	waitMembers(t, a, 2, api.StatusAlive)

	// An agent with another key given -join fails to start and says why.
	c.start("-join=" + a.serfAddr())
	waitFor(t, 30*time.Second, "agent with the wrong key to exit", c.exited)
	if !strings.Contains(strings.ToLower(c.logs()), "key") {
		t.Errorf("the wrong-key agent's log does not mention the key:\n%s", c.logs())
	}
	if testing.Verbose() {
		t.Logf("wrong-key agent said:\n%s", lastLines(c.logs(), 3))
	}
	if st := memberStatus(a, "c"); st != "" {
		t.Errorf("the wrong-key node appears as a member (%s)", st)
	}
}
