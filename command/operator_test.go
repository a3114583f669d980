package command

import (
	"strings"
	"testing"
)

const statusBody = `{
 "node":"n2","from_leader":true,"cluster_id":"c0ffee","primary":"n1","primary_ready":true,"writable":true,
 "epoch":3,"timeline":2,"paused":true,
 "pending":{"kind":"switchover","epoch":3,"from":"n1","target":"n3"},
 "sync":{"mode":"quorum","standbys":["n2","n3"],"k":1,"quorum":2},
 "lease":{"holder":"n1","epoch":3,"released":false},
 "controller":{"state":"operation","reason":"switchover: waiting for primary n1 to step down"},
 "raft":{"leader":"n2","state":"Leader","term":4,"applied_index":99},
 "members":[
  {"name":"n1","role":"primary","voter":true,"sync":false,"gossip_status":"alive","postgres":"running","probed":true,"running":true,"healthy":true,"writable":true,"timeline":2,"lsn":"0/5000060","lag_bytes":0},
  {"name":"n2","role":"replica","voter":true,"sync":true,"gossip_status":"alive","postgres":"running","probed":true,"running":true,"healthy":true,"in_recovery":true,"timeline":2,"lsn":"0/5000000","lag_bytes":96},
  {"name":"n3","role":"replica","voter":true,"sync":true,"gossip_status":"failed","postgres":"running","probed":false,"probe_error":"probing n3: timeout"},
  {"name":"w1","role":"witness","voter":true,"gossip_status":"alive"}
 ],
 "last_failover":{"epoch":3,"kind":"failover","from":"n3","to":"n1","reason":"primary n3 failed","write_gap_ms":812}
}`

func TestStatusText(t *testing.T) {
	f := newFakeAPI(t, 200, statusBody)
	code, out, errOut := runCLI(t, "status", "-http-addr", f.addr(), "-token", "tk")
	if code != 0 {
		t.Fatalf("code %d: %s", code, errOut)
	}
	if got := f.lastRequest(); got != "GET /v1/status token=tk" {
		t.Errorf("request %q", got)
	}
	want := "" +
		"Cluster:        c0ffee\n" +
		"Epoch:          3\n" +
		"Timeline:       2\n" +
		"Primary:        n1 (writable)\n" +
		"Raft leader:    n2\n" +
		"Paused:         yes (automatic failover disabled)\n" +
		"Controller:     operation: switchover: waiting for primary n1 to step down\n" +
		"Sync:           quorum, ANY 1 (n2, n3)\n" +
		"Pending:        switchover n1 -> n3\n" +
		"Last failover:  epoch 3, failover n3 -> n1, write gap 812ms (primary n3 failed)\n" +
		"\n" +
		"Node  Role     Postgres     LSN        Lag   Sync  Gossip\n" +
		"n1    primary  read-write   0/5000060  0 B   -     alive\n" +
		"n2    replica  streaming    0/5000000  96 B  sync  alive\n" +
		"n3    replica  unreachable  -          -     sync  failed\n" +
		"w1    witness  -            -          -     -     alive\n"
	if out != want {
		t.Errorf("status output:\n%s\nwant:\n%s", out, want)
	}
}

func TestStatusJSONAndErrors(t *testing.T) {
	f := newFakeAPI(t, 200, statusBody)
	code, out, _ := runCLI(t, "status", "-format=json", "-http-addr", f.addr())
	if code != 0 || !strings.Contains(out, `"cluster_id": "c0ffee"`) || !strings.Contains(out, `"probe_error": "probing n3: timeout"`) {
		t.Errorf("status -format=json: code %d\n%s", code, out)
	}
	if code, _, errOut := runCLI(t, "status", "-format=yaml", "-http-addr", f.addr()); code != 1 || !strings.Contains(errOut, "Invalid -format") {
		t.Errorf("bad format: %d %q", code, errOut)
	}
	if code, _, errOut := runCLI(t, "status", "-watch", "-format=json", "-http-addr", f.addr()); code != 1 || !strings.Contains(errOut, "-watch") {
		t.Errorf("-watch with json: %d %q", code, errOut)
	}
	down := newFakeAPI(t, 503, `{"error":"this agent runs no raft"}`)
	if code, _, errOut := runCLI(t, "status", "-http-addr", down.addr()); code != 1 || !strings.Contains(errOut, "this agent runs no raft") {
		t.Errorf("agent error: %d %q", code, errOut)
	}
}

func TestStatusFromFollower(t *testing.T) {
	body := strings.Replace(statusBody, `"from_leader":true`, `"from_leader":false`, 1)
	f := newFakeAPI(t, 200, body)
	_, out, _ := runCLI(t, "status", "-http-addr", f.addr())
	if !strings.Contains(out, "Note:           answered by n2, not the raft leader") {
		t.Errorf("a follower's answer is not flagged:\n%s", out)
	}
}

func TestListPeers(t *testing.T) {
	f := newFakeAPI(t, 200, `[
 {"node":"n1","id":"n1","address":"127.0.0.2:8300","state":"leader","voter":true,"raft_protocol":"3","commit_index":120,"trails_leader_by":0,"reported":true},
 {"node":"n2","id":"n2","address":"127.0.0.3:8300","state":"follower","voter":true,"raft_protocol":"3","commit_index":118,"trails_leader_by":2,"reported":true},
 {"node":"","id":"n3","address":"127.0.0.4:8300","state":"unknown","voter":false,"raft_protocol":"","commit_index":0,"trails_leader_by":0,"reported":false}
]`)
	code, out, errOut := runCLI(t, "operator", "raft", "list-peers", "-http-addr", f.addr())
	if code != 0 {
		t.Fatalf("code %d: %s", code, errOut)
	}
	want := "" +
		"Node  ID  Address         State     Voter  RaftProtocol  Commit Index  Trails Leader By\n" +
		"n1    n1  127.0.0.2:8300  leader    true   3             120           0 commits\n" +
		"n2    n2  127.0.0.3:8300  follower  true   3             118           2 commits\n" +
		"-     n3  127.0.0.4:8300  unknown   false  -             -             -\n"
	if out != want {
		t.Errorf("list-peers:\n%s\nwant:\n%s", out, want)
	}
	if got := f.lastRequest(); got != "GET /v1/operator/raft/configuration token=" {
		t.Errorf("request %q", got)
	}
}

func TestRemovePeerAndTransferLeader(t *testing.T) {
	f := newFakeAPI(t, 200, ``)
	if code, _, errOut := runCLI(t, "operator", "raft", "remove-peer", "-http-addr", f.addr()); code != 1 || !strings.Contains(errOut, "Missing peer ID") {
		t.Errorf("remove-peer without id: %d %q", code, errOut)
	}
	code, out, errOut := runCLI(t, "operator", "raft", "remove-peer", "-id=n3", "-token=tk", "-http-addr", f.addr())
	if code != 0 || !strings.Contains(out, `Removed peer with id "n3"`) {
		t.Errorf("remove-peer: %d %q %q", code, out, errOut)
	}
	if got := f.lastRequest(); got != "DELETE /v1/operator/raft/peer?id=n3 token=tk" {
		t.Errorf("request %q", got)
	}
	nf := newFakeAPI(t, 404, `{"error":"no raft peer with ID \"n9\" (peers: [n1 n2])"}`)
	if code, _, errOut := runCLI(t, "operator", "raft", "remove-peer", "-id=n9", "-http-addr", nf.addr()); code != 1 || !strings.Contains(errOut, "404") || !strings.Contains(errOut, "peers: [n1 n2]") {
		t.Errorf("remove-peer unknown: %d %q", code, errOut)
	}

	tl := newFakeAPI(t, 200, `{"from":"n1","to":"n2"}`)
	code, out, _ = runCLI(t, "operator", "raft", "transfer-leader", "-http-addr", tl.addr())
	if code != 0 || !strings.Contains(out, "from n1 to n2") {
		t.Errorf("transfer-leader: %d %q", code, out)
	}
	if got := tl.lastRequest(); got != "PUT /v1/operator/raft/transfer-leader token=" {
		t.Errorf("request %q", got)
	}
	runCLI(t, "operator", "raft", "transfer-leader", "-id", "n3", "-http-addr", tl.addr())
	if got := tl.lastRequest(); got != "PUT /v1/operator/raft/transfer-leader?id=n3 token=" {
		t.Errorf("request %q", got)
	}
}

func TestSwitchoverAndFailover(t *testing.T) {
	f := newFakeAPI(t, 200, `{"kind":"switchover","epoch":3,"from":"n1","target":"n2"}`)
	code, out, _ := runCLI(t, "switchover", "-to", "n2", "-force", "-token", "tk", "-http-addr", f.addr())
	if code != 0 || !strings.Contains(out, "Switchover requested at epoch 3: n1 -> n2") {
		t.Errorf("switchover: %d %q", code, out)
	}
	if got := f.lastRequest(); got != "PUT /v1/operator/switchover?force=1&to=n2 token=tk" {
		t.Errorf("request %q", got)
	}

	done := newFakeAPI(t, 200, `{"kind":"switchover","epoch":3,"from":"n1","waited":true,"done":true,"new_primary":"n3","new_epoch":4}`)
	code, out, _ = runCLI(t, "switchover", "-wait", "-http-addr", done.addr())
	if code != 0 || !strings.Contains(out, "n1 -> the best standby") || !strings.Contains(out, "New primary: n3 (epoch 4)") {
		t.Errorf("switchover -wait: %d %q", code, out)
	}
	if got := done.lastRequest(); got != "PUT /v1/operator/switchover?wait=1 token=" {
		t.Errorf("request %q", got)
	}

	back := newFakeAPI(t, 200, `{"kind":"switchover","epoch":3,"from":"n1","target":"n2","waited":true,"done":true,"new_primary":"n1","new_epoch":4,
	 "transition":{"epoch":4,"kind":"reinstate","to":"n1","reason":"switchover could not finish: n2 lags"}}`)
	code, out, _ = runCLI(t, "switchover", "-to=n2", "-wait", "-http-addr", back.addr())
	if code != 1 || !strings.Contains(out, "did not finish; n1 is primary again at epoch 4: switchover could not finish: n2 lags") {
		t.Errorf("reinstated switchover: %d %q", code, out)
	}

	refused := newFakeAPI(t, 409, `{"error":"switchover refused: n2 lags 4096 bytes behind the primary"}`)
	code, _, errOut := runCLI(t, "switchover", "-to=n2", "-http-addr", refused.addr())
	if code != 1 || !strings.Contains(errOut, "409") || !strings.Contains(errOut, "lags 4096 bytes") {
		t.Errorf("refused switchover: %d %q", code, errOut)
	}

	if code, _, errOut := runCLI(t, "failover", "-http-addr", f.addr()); code != 1 || !strings.Contains(errOut, "needs a target") {
		t.Errorf("failover without -to: %d %q", code, errOut)
	}
	fo := newFakeAPI(t, 200, `{"kind":"failover","epoch":3,"from":"n1","target":"n3"}`)
	code, out, errOut = runCLI(t, "failover", "-to=n3", "-http-addr", fo.addr())
	if code != 0 || !strings.Contains(errOut, "data that was not yet on n3 may be lost") || !strings.Contains(out, "Failover requested at epoch 3: n1 -> n3") {
		t.Errorf("failover: %d out %q err %q", code, out, errOut)
	}
	if got := fo.lastRequest(); got != "PUT /v1/operator/failover?to=n3 token=" {
		t.Errorf("request %q", got)
	}
}

func TestPauseResume(t *testing.T) {
	f := newFakeAPI(t, 200, `{"paused":true}`)
	if code, out, _ := runCLI(t, "pause", "-http-addr", f.addr(), "-token", "tk"); code != 0 || !strings.Contains(out, "paused") {
		t.Errorf("pause: %d %q", code, out)
	}
	if got := f.lastRequest(); got != "PUT /v1/operator/pause token=tk" {
		t.Errorf("request %q", got)
	}
	if code, out, _ := runCLI(t, "resume", "-http-addr", f.addr()); code != 0 || !strings.Contains(out, "resumed") {
		t.Errorf("resume: %d %q", code, out)
	}
	if got := f.lastRequest(); got != "PUT /v1/operator/resume token=" {
		t.Errorf("request %q", got)
	}
	denied := newFakeAPI(t, 403, `{"error":"permission denied: missing or wrong ACL token"}`)
	if code, _, errOut := runCLI(t, "pause", "-http-addr", denied.addr()); code != 1 || !strings.Contains(errOut, "403") {
		t.Errorf("pause denied: %d %q", code, errOut)
	}
	if code, _, errOut := runCLI(t, "pause", "extra", "-http-addr", f.addr()); code != 1 || !strings.Contains(errOut, "takes no arguments") {
		t.Errorf("pause extra: %d %q", code, errOut)
	}
}

func TestHistory(t *testing.T) {
	f := newFakeAPI(t, 200, `[
 {"epoch":1,"kind":"bootstrap","to":"n1","reason":"first primary","decided_by":"n1","index":5,"term":2},
 {"epoch":2,"kind":"failover","from":"n1","to":"n2","reason":"primary n1 failed","promote_lsn":"0/5000060","decided_by":"n3","decided_at":"2026-11-23T21:54:02.899Z","index":40,"term":3,"write_gap_ms":640,
  "candidates":[{"node":"n2","reachable":true,"healthy":true,"timeline":1,"receive_lsn":"0/5000060","replay_lsn":"0/5000060"},
                {"node":"n3","reachable":true,"healthy":true,"timeline":1,"receive_lsn":"0/5000000","replay_lsn":"0/5000000","rejected":"holds less WAL"}]}
]`)
	code, out, _ := runCLI(t, "history", "-http-addr", f.addr())
	want := "" +
		"Epoch  Kind       From  To  LSN        Write gap  Decided by  At (UTC)\n" +
		"1      bootstrap  -     n1  -          -          n1          -\n" +
		"2      failover   n1    n2  0/5000060  640ms      n3          2026-11-23 21:54:02.899\n"
	if code != 0 || out != want {
		t.Errorf("history: %d\n%s\nwant:\n%s", code, out, want)
	}
	code, out, _ = runCLI(t, "history", "-detailed", "-http-addr", f.addr())
	if code != 0 || !strings.Contains(out, "reason: primary n1 failed") ||
		!strings.Contains(out, "candidate n3: timeline 1, receive 0/5000000, replay 0/5000000, flush -, rejected: holds less WAL") ||
		!strings.Contains(out, "candidate n2: timeline 1, receive 0/5000060, replay 0/5000060, flush -, chosen") {
		t.Errorf("history -detailed: %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, "history", "-format=json", "-http-addr", f.addr())
	if code != 0 || !strings.Contains(out, `"rejected": "holds less WAL"`) {
		t.Errorf("history json: %d\n%s", code, out)
	}
	empty := newFakeAPI(t, 200, `[]`)
	if code, out, _ := runCLI(t, "history", "-http-addr", empty.addr()); code != 0 || !strings.Contains(out, "No history yet") {
		t.Errorf("empty history: %d %q", code, out)
	}
}
