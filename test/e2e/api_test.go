package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgbattery/pgbattery/agent/api"
	"github.com/pgbattery/pgbattery/agent/fsm"
	"github.com/pgbattery/pgbattery/test/testutil"
)

const apiToken = "s3cret"

// call sends a request to p's API, with the token unless token is "".
func call(t *testing.T, p *agentProc, method, path, token string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+p.httpAddr()+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set(api.TokenHeader, token)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b)
}

// TestAPIEveryEndpoint goes through the HTTP API's route table against a
// real 3-agent cluster with an ACL token. The agents run no PostgreSQL
// (witnesses: raft, gossip, the controller and the whole API, seconds to
// start); what needs PostgreSQL (a switchover's happy path, the health of a
// primary or replica, a reinit) is covered by the PostgreSQL clusters of
// operator_test.go, reinit_test.go and the failover tests, and here by its
// refusals. Every endpoint: its happy path (on a follower where the leader
// must act: forwarded), bad input (400), a missing or wrong token (403) for
// the writes, and, with the raft majority gone, no leader (503).
func TestAPIEveryEndpoint(t *testing.T) {
	nodes := startCluster(t, 3, "acl {\n  token = \""+apiToken+"\"\n}\nlimits {\n  http_max_rps = 1000\n  http_burst = 2000\n}\n")
	var leader, follower, third *agentProc
	waitFor(t, time.Minute, "a raft leader known to every agent", func() bool {
		var names []string
		for _, p := range nodes {
			var st statusJSON
			if p.get("/v1/status?local", &st) != 200 || st.Raft.Leader == "" {
				return false
			}
			names = append(names, st.Raft.Leader)
		}
		return names[0] == names[1] && names[1] == names[2]
	})
	var st statusJSON
	waitFor(t, time.Minute, "every agent registered in every agent's replicated state", func() bool {
		for _, p := range nodes {
			if p.get("/v1/status?local", &st) != 200 || len(st.Members) != 3 {
				return false
			}
		}
		return true
	})
	for _, p := range nodes {
		switch {
		case p.name == st.Raft.Leader:
			leader = p
		case follower == nil:
			follower = p
		default:
			third = p
		}
	}
	pausedCmd, err := fsm.Encode(&fsm.SetPaused{Paused: false})
	if err != nil {
		t.Fatal(err)
	}

	type tc struct {
		name         string
		on           *agentProc
		method, path string
		token        string
		body         []byte
		code         int
		has          string // in the body
	}
	run := func(t *testing.T, cases []tc) {
		for _, c := range cases {
			code, body := call(t, c.on, c.method, c.path, c.token, c.body)
			if code != c.code || !strings.Contains(body, c.has) {
				t.Errorf("%s: %s %s on %s: %d %s; want %d containing %q", c.name, c.method, c.path, c.on.name, code, strings.TrimSpace(body), c.code, c.has)
			}
		}
	}
	tok, bad := apiToken, "wrong"

	t.Run("reads", func(t *testing.T) {
		run(t, []tc{
			{"self", follower, "GET", "/v1/agent/self", "", nil, 200, `"name":"` + follower.name + `"`},
			{"members", follower, "GET", "/v1/agent/members", "", nil, 200, `"status":"alive"`},
			{"metrics", follower, "GET", "/v1/agent/metrics", "", nil, 200, "Gauges"},
			{"metrics prometheus", follower, "GET", "/v1/agent/metrics?format=prometheus", "", nil, 200, "# HELP"},
			{"liveness", follower, "GET", "/v1/health/liveness", "", nil, 200, `"ok"`},
			{"readiness of a witness", follower, "GET", "/v1/health/readiness", "", nil, 200, `"none"`},
			{"primary health, no PostgreSQL", follower, "GET", "/v1/health/primary", "", nil, 503, "no PostgreSQL"},
			{"replica health, no PostgreSQL", follower, "GET", "/v1/health/replica", "", nil, 503, "no PostgreSQL"},
			{"replica health, bad max_lag", follower, "GET", "/v1/health/replica?max_lag=far", "", nil, 400, "max_lag"},
			{"read-only health", follower, "GET", "/v1/health/read-only", "", nil, 503, "no PostgreSQL"},
			{"read-only health, bad max_lag", follower, "GET", "/v1/health/read-only?max_lag=-3", "", nil, 400, "negative"},
			{"sync health", follower, "GET", "/v1/health/sync", "", nil, 503, "no PostgreSQL"},
			{"status from a follower comes from the leader", follower, "GET", "/v1/status", "", nil, 200, `"from_leader":true`},
			{"local status on a follower", follower, "GET", "/v1/status?local", "", nil, 200, `"from_leader":false`},
			{"history", follower, "GET", "/v1/history", "", nil, 200, "["},
			{"raft configuration", follower, "GET", "/v1/operator/raft/configuration", "", nil, 200, `"state":"leader"`},
			{"raft progress", follower, "GET", "/v1/operator/raft/progress", "", nil, 200, `"applied_index"`},
			{"pg-status of a witness", follower, "GET", "/v1/internal/pg-status", "", nil, 200, "{"},
			{"doctor report", follower, "GET", "/v1/internal/doctor", "", nil, 200, `"node":"` + follower.name + `"`},
			{"doctor", follower, "GET", "/v1/agent/doctor", "", nil, 200, `"checks"`},
			{"doctor sees the raft quorum", follower, "GET", "/v1/agent/doctor", "", nil, 200, `"id":"raft.quorum","status":"ok"`},
			{"doctor, bad threshold", follower, "GET", "/v1/agent/doctor?clock_threshold=late", "", nil, 400, "clock_threshold"},
			{"reinit status", follower, "GET", "/v1/operator/reinit", "", nil, 200, `"pending":[]`},
			{"web UI", follower, "GET", "/ui/", "", nil, 200, "<"},
			{"unknown endpoint", follower, "GET", "/v1/nothing", "", nil, 404, "no such endpoint"},
			{"wrong method", follower, "POST", "/v1/status", tok, nil, 405, "not allowed"},
		})
	})

	t.Run("writes need the token", func(t *testing.T) {
		var cases []tc
		for _, w := range []struct{ method, path string }{
			{"PUT", "/v1/agent/join?address=" + leader.serfAddr()},
			{"PUT", "/v1/agent/leave"},
			{"PUT", "/v1/agent/force-leave/" + third.name},
			{"PUT", "/v1/internal/apply"},
			{"DELETE", "/v1/operator/raft/peer?id=" + third.name},
			{"PUT", "/v1/operator/raft/transfer-leader"},
			{"PUT", "/v1/operator/switchover"},
			{"PUT", "/v1/operator/failover?to=" + third.name},
			{"PUT", "/v1/operator/pause"},
			{"PUT", "/v1/operator/resume"},
			{"PUT", "/v1/operator/reinit?node=" + third.name},
		} {
			cases = append(cases,
				tc{"no token", follower, w.method, w.path, "", nil, 403, "ACL token"},
				tc{"wrong token", follower, w.method, w.path, bad, nil, 403, "ACL token"})
		}
		run(t, cases)
		// Nothing of it happened: the third agent is still here.
		if memberStatus(follower, third.name) != api.StatusAlive {
			t.Errorf("%s is no longer alive after refused writes", third.name)
		}
	})

	t.Run("writes: bad input and conflicts", func(t *testing.T) {
		run(t, []tc{
			{"join without address", follower, "PUT", "/v1/agent/join", tok, nil, 400, "missing address"},
			{"force-leave without node", follower, "PUT", "/v1/agent/force-leave/", tok, nil, 400, "missing node name"},
			{"force-leave unknown node", follower, "PUT", "/v1/agent/force-leave/nobody", tok, nil, 404, "no member"},
			{"apply garbage", leader, "PUT", "/v1/internal/apply", tok, []byte{0xff, '{'}, 400, "decoding command"},
			{"remove-peer without id", follower, "DELETE", "/v1/operator/raft/peer", tok, nil, 400, "missing peer ID"},
			{"remove-peer unknown", follower, "DELETE", "/v1/operator/raft/peer?id=nobody", tok, nil, 404, "no raft peer"},
			{"transfer-leader unknown", follower, "PUT", "/v1/operator/raft/transfer-leader?id=nobody", tok, nil, 404, "no raft peer"},
			{"transfer-leader to the leader", leader, "PUT", "/v1/operator/raft/transfer-leader?id=" + leader.name, tok, nil, 409, "already the raft leader"},
			{"switchover bad force", follower, "PUT", "/v1/operator/switchover?force=yes-please", tok, nil, 400, "force"},
			{"switchover with no primary", follower, "PUT", "/v1/operator/switchover", tok, nil, 409, "no primary"},
			{"failover without target", follower, "PUT", "/v1/operator/failover", tok, nil, 400, "needs a target"},
			{"failover to unknown", follower, "PUT", "/v1/operator/failover?to=nobody", tok, nil, 404, "no member"},
			{"reinit without node", follower, "PUT", "/v1/operator/reinit", tok, nil, 400, "missing node"},
			{"reinit unknown", follower, "PUT", "/v1/operator/reinit?node=nobody", tok, nil, 404, "no member"},
			{"reinit a witness", follower, "PUT", "/v1/operator/reinit?node=" + third.name, tok, nil, 409, "witness"},
			{"reinit bad force", follower, "PUT", "/v1/operator/reinit?node=" + third.name + "&force=2", tok, nil, 400, "force"},
			{"body too large", leader, "PUT", "/v1/internal/apply", tok, bytes.Repeat([]byte("x"), 70<<10), 413, "larger than"},
		})
	})

	t.Run("writes: happy paths, forwarded from a follower", func(t *testing.T) {
		run(t, []tc{
			{"join", follower, "PUT", "/v1/agent/join?address=" + leader.serfAddr(), tok, nil, 200, `"num_joined":1`},
			{"pause on a follower", follower, "PUT", "/v1/operator/pause", tok, nil, 200, `"paused":true`},
		})
		waitFor(t, 10*time.Second, "paused in the state", func() bool {
			var s statusJSON
			return third.get("/v1/status", &s) == 200 && s.Paused
		})
		run(t, []tc{
			{"resume on a follower", follower, "PUT", "/v1/operator/resume", tok, nil, 200, `"paused":false`},
			{"apply on a follower", follower, "PUT", "/v1/internal/apply", tok, pausedCmd, 503, "not the raft leader"},
			{"apply on the leader", leader, "PUT", "/v1/internal/apply", tok, pausedCmd, 200, ""},
		})
		code, body := call(t, follower, "PUT", "/v1/operator/raft/transfer-leader?id="+follower.name, tok, nil)
		var tr api.TransferLeaderResponse
		if code != 200 || json.Unmarshal([]byte(body), &tr) != nil || tr.From != leader.name {
			t.Fatalf("transfer-leader from a follower: %d %s; want 200 from %s", code, body, leader.name)
		}
		waitFor(t, 30*time.Second, follower.name+" the raft leader", func() bool {
			var s statusJSON
			return third.get("/v1/status?local", &s) == 200 && s.Raft.Leader == follower.name
		})
		leader, follower = follower, leader
	})

	t.Run("leave, force-leave, remove-peer", func(t *testing.T) {
		if code, body := call(t, third, "PUT", "/v1/agent/leave", tok, nil); code != 200 {
			t.Fatalf("leave: %d %s", code, body)
		}
		waitFor(t, 30*time.Second, third.name+" left", func() bool { return memberStatus(leader, third.name) == api.StatusLeft })
		waitFor(t, 30*time.Second, third.name+"'s agent exits", third.exited)
		if code, body := call(t, follower, "PUT", "/v1/agent/force-leave/"+third.name, tok, nil); code != 200 {
			t.Errorf("force-leave of a left node: %d %s", code, body)
		}
		// Whether leave took it out of the raft configuration or not, the
		// removal from a follower ends with it gone.
		code, body := call(t, follower, "DELETE", "/v1/operator/raft/peer?id="+third.name, tok, nil)
		if code != 200 && code != 404 {
			t.Errorf("remove-peer from a follower: %d %s", code, body)
		}
		waitFor(t, 30*time.Second, "two raft peers", func() bool {
			var peers []api.RaftPeer
			return leader.get("/v1/operator/raft/configuration", &peers) == 200 && len(peers) == 2
		})
	})

	t.Run("no leader", func(t *testing.T) {
		follower.kill()
		waitFor(t, time.Minute, leader.name+" without a raft leader", func() bool {
			var s statusJSON
			return leader.get("/v1/status?local", &s) == 200 && s.Raft.Leader == ""
		})
		lone := leader
		run(t, []tc{
			{"pause", lone, "PUT", "/v1/operator/pause", tok, nil, 503, ""},
			{"resume", lone, "PUT", "/v1/operator/resume", tok, nil, 503, ""},
			{"transfer-leader", lone, "PUT", "/v1/operator/raft/transfer-leader", tok, nil, 503, ""},
			{"remove-peer", lone, "DELETE", "/v1/operator/raft/peer?id=" + follower.name, tok, nil, 503, ""},
			{"apply", lone, "PUT", "/v1/internal/apply", tok, pausedCmd, 503, "not the raft leader"},
			{"status answers from the local state", lone, "GET", "/v1/status", "", nil, 200, `"from_leader":false`},
			{"doctor says the quorum is lost", lone, "GET", "/v1/agent/doctor", "", nil, 200, `"status":"fail"`},
			{"liveness", lone, "GET", "/v1/health/liveness", "", nil, 200, "ok"},
		})
	})
}

// writeClusterCerts writes a CA and, for each address, a certificate for
// both server and client use that names the address.
func writeClusterCerts(t *testing.T, dir string, addrs []string) (ca string, certs, keys []string) {
	t.Helper()
	c := testutil.NewCA(t, "e2e CA")
	ca = c.WriteFile(t, filepath.Join(dir, "ca.pem"))
	for i, a := range addrs {
		cert, key := c.Issue(t, "agent "+a, a).WriteFiles(t, filepath.Join(dir, fmt.Sprintf("n%d.pem", i+1)), filepath.Join(dir, fmt.Sprintf("n%d-key.pem", i+1)))
		certs, keys = append(certs, cert), append(keys, key)
	}
	return ca, certs, keys
}

// TestAPIOverTLS runs three agents with a tls block and verify_incoming:
// the HTTP API speaks HTTPS only and asks for client certificates, the
// agents forward to each other over HTTPS with their own certificates (a
// follower's status comes from the leader, a follower's pause commits
// through it), and the CLI reaches it with https://, PGBATTERY_CACERT and a
// client certificate, and not without them.
func TestAPIOverTLS(t *testing.T) {
	dir := testutil.TempDir(t)
	nodes := make([]*agentProc, 3)
	for i := range nodes {
		nodes[i] = newNode(t, fmt.Sprintf("n%d", i+1), nodeOpts{expect: 3})
	}
	addrs := []string{nodes[0].addr, nodes[1].addr, nodes[2].addr}
	ca, certs, keys := writeClusterCerts(t, dir, addrs)
	for i, p := range nodes {
		p.appendConfig(fmt.Sprintf("tls {\n  ca_file = %q\n  cert_file = %q\n  key_file = %q\n  verify_incoming = true\n}\n", ca, certs[i], keys[i]))
	}
	pool := x509.NewCertPool()
	caPEM, _ := os.ReadFile(ca)
	pool.AppendCertsFromPEM(caPEM)
	clientCert, err := tls.LoadX509KeyPair(certs[0], keys[0])
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{clientCert}}}}
	getTLS := func(p *agentProc, path string, out any) int {
		resp, err := hc.Get("https://" + p.httpAddr() + path)
		if err != nil {
			return 0
		}
		defer resp.Body.Close()
		if out != nil && resp.StatusCode == 200 {
			json.NewDecoder(resp.Body).Decode(out)
		}
		return resp.StatusCode
	}
	nodes[0].start()
	waitFor(t, 30*time.Second, "first agent's HTTPS API", func() bool { return getTLS(nodes[0], "/v1/agent/self", nil) == 200 })
	for _, p := range nodes[1:] {
		p.start("-join=" + nodes[0].serfAddr())
	}
	var st statusJSON
	waitFor(t, time.Minute, "a raft leader", func() bool {
		return getTLS(nodes[0], "/v1/status?local", &st) == 200 && st.Raft.Leader != ""
	})
	var follower *agentProc
	for _, p := range nodes {
		if p.name != st.Raft.Leader {
			follower = p
			break
		}
	}
	// Go's TLS listener answers a plaintext request with 400 and nothing
	// else: no API over plain HTTP.
	if code := follower.get("/v1/agent/self", nil); code == 200 {
		t.Errorf("plain HTTP served on a TLS agent")
	}
	waitFor(t, 30*time.Second, "a follower's status from the leader over HTTPS", func() bool {
		var s statusJSON
		return getTLS(follower, "/v1/status", &s) == 200 && s.FromLeader && s.Node == st.Raft.Leader
	})

	cli := func(env []string, args ...string) (string, int) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, binary, args...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return string(out), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	addrEnv := "PGBATTERY_HTTP_ADDR=https://" + follower.httpAddr()
	certEnv := []string{"PGBATTERY_CLIENT_CERT=" + certs[0], "PGBATTERY_CLIENT_KEY=" + keys[0]}
	if out, code := cli(append([]string{addrEnv, "PGBATTERY_CACERT=" + ca}, certEnv...), "pause"); code != 0 || !strings.Contains(out, "paused") {
		t.Fatalf("pause over HTTPS from a follower: exit %d: %s", code, out)
	}
	waitFor(t, 10*time.Second, "paused", func() bool {
		var s statusJSON
		return getTLS(nodes[2], "/v1/status", &s) == 200 && s.Paused
	})
	if out, code := cli(nil, "members", "-http-addr=https://"+follower.httpAddr(), "-ca-file="+ca, "-client-cert="+certs[1], "-client-key="+keys[1]); code != 0 || !strings.Contains(out, "alive") {
		t.Errorf("members with -ca-file and a client certificate: exit %d: %s", code, out)
	}
	if out, code := cli(append([]string{addrEnv}, certEnv...), "members"); code == 0 || !strings.Contains(out, "certificate") {
		t.Errorf("members without the CA: exit %d: %s; want a certificate error", code, out)
	}
	if out, code := cli([]string{addrEnv, "PGBATTERY_CACERT=" + ca}, "members"); code == 0 {
		t.Errorf("members without a client certificate (verify_incoming): exit 0: %s", out)
	}
	if out, code := cli(append([]string{addrEnv, "PGBATTERY_CACERT=" + ca}, certEnv...), "doctor", "-format=json"); !strings.Contains(out, `"id": "tls"`) {
		t.Errorf("doctor over HTTPS: exit %d: %s", code, out)
	} else if strings.Contains(out, "HTTP API without TLS") || strings.Contains(out, "raft RPC without TLS") {
		t.Errorf("doctor does not see the TLS on: %s", out)
	}
}

// TestAPIRateLimit checks the per-client rate limit on a real agent: over
// the burst a client gets 429 with Retry-After, while the health endpoints
// stay open.
func TestAPIRateLimit(t *testing.T) {
	p := newNode(t, "rl", nodeOpts{extraHCL: "limits {\n  http_max_rps = 0.5\n  http_burst = 3\n}\n"})
	p.start()
	waitFor(t, 30*time.Second, "the agent's API", func() bool { return p.get("/v1/health/liveness", nil) == 200 })
	codes := []int{}
	for i := 0; i < 5; i++ {
		code, _ := call(t, p, "GET", "/v1/agent/self", "", nil)
		codes = append(codes, code)
	}
	if codes[0] != 200 || codes[len(codes)-1] != http.StatusTooManyRequests {
		t.Fatalf("codes of 5 quick requests with a burst of 3: %v; want 200 first, 429 last", codes)
	}
	req, _ := http.NewRequest("GET", "http://"+p.httpAddr()+"/v1/agent/members", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), "rate limit exceeded") {
		t.Errorf("over the limit: %d Retry-After=%q %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	for i := 0; i < 10; i++ {
		for _, path := range []string{"/v1/health/liveness", "/v1/health/readiness", "/v1/agent/metrics"} {
			if code, body := call(t, p, "GET", path, "", nil); code != 200 {
				t.Fatalf("%s limited: %d %s", path, code, body)
			}
		}
	}
}
