package api

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestStatusAndHistoryDecode(t *testing.T) {
	rec := &recorder{status: 200, body: `{"node":"n1","from_leader":true,"primary":"n1","epoch":2,
	 "sync":{"mode":"quorum","standbys":["n2"],"k":1,"quorum":1},
	 "members":[{"name":"n2","role":"replica","probed":true,"lsn":"0/50","lag_bytes":16}]}`}
	c := newTestClient(t, rec, "tk")
	st, err := c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rec.method != "GET" || rec.path != "/v1/status" || rec.token != "tk" {
		t.Errorf("request %s %s token %q", rec.method, rec.path, rec.token)
	}
	if st.Primary != "n1" || st.Sync.K != 1 || len(st.Members) != 1 || st.Members[0].LagBytes == nil || *st.Members[0].LagBytes != 16 {
		t.Errorf("decoded %+v", st)
	}

	rec = &recorder{status: 200, body: `[{"epoch":1,"kind":"bootstrap","to":"n1","reason":"r","index":3,"term":1}]`}
	c = newTestClient(t, rec, "")
	hist, err := c.History(context.Background())
	if err != nil || len(hist) != 1 || hist[0].Kind != "bootstrap" || rec.path != "/v1/history" {
		t.Fatalf("history %+v, %v (path %s)", hist, err, rec.path)
	}
}

func TestOperationRequests(t *testing.T) {
	rec := &recorder{status: 200, body: `{"kind":"switchover","epoch":4,"from":"n1","target":"n2"}`}
	c := newTestClient(t, rec, "tk")
	resp, err := c.Switchover(context.Background(), SwitchoverOptions{To: "n2", Force: true, Wait: true})
	if err != nil || resp.Epoch != 4 || resp.From != "n1" {
		t.Fatalf("switchover: %+v, %v", resp, err)
	}
	if rec.method != http.MethodPut || rec.path != "/v1/operator/switchover" ||
		rec.query["to"][0] != "n2" || rec.query["force"][0] != "1" || rec.query["wait"][0] != "1" {
		t.Errorf("request %s %s %v", rec.method, rec.path, rec.query)
	}
	if _, err := c.Failover(context.Background(), SwitchoverOptions{}); err == nil || !strings.Contains(err.Error(), "target") {
		t.Errorf("failover without target: %v", err)
	}
	if _, err := c.Failover(context.Background(), SwitchoverOptions{To: "n3"}); err != nil || rec.path != "/v1/operator/failover" || len(rec.query["wait"]) != 0 {
		t.Errorf("failover: %v %s %v", err, rec.path, rec.query)
	}

	rec = &recorder{status: 409, body: `{"error":"switchover refused: n2 lags"}`}
	c = newTestClient(t, rec, "")
	if _, err := c.Switchover(context.Background(), SwitchoverOptions{}); !IsStatus(err, 409) || !strings.Contains(err.Error(), "n2 lags") {
		t.Errorf("refused: %v", err)
	}
}

// A switchover with Wait may take up to SwitchoverWaitTimeout: the client's
// ordinary timeout must not cut it short.
func TestSwitchoverWaitOutlastsTimeout(t *testing.T) {
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(300 * time.Millisecond)
		w.Write([]byte(`{"kind":"switchover","epoch":1,"from":"n1","waited":true,"done":true,"new_primary":"n2","new_epoch":2}`))
	}))
	c, err := NewClient(Config{Address: srv.URL, Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Switchover(context.Background(), SwitchoverOptions{}); err == nil {
		t.Error("a switchover without Wait outlived the client's timeout")
	}
	resp, err := c.Switchover(context.Background(), SwitchoverOptions{Wait: true})
	if err != nil || resp.NewPrimary != "n2" {
		t.Errorf("switchover with Wait: %+v, %v", resp, err)
	}
}

func TestRaftRequests(t *testing.T) {
	rec := &recorder{status: 200, body: `[{"node":"n1","id":"n1","address":"a:8300","state":"leader","voter":true,"raft_protocol":"3","commit_index":9,"reported":true}]`}
	c := newTestClient(t, rec, "tk")
	peers, err := c.RaftPeers(context.Background())
	if err != nil || len(peers) != 1 || peers[0].State != "leader" || rec.path != "/v1/operator/raft/configuration" {
		t.Fatalf("peers %+v, %v", peers, err)
	}
	rec.body = ""
	if err := c.RaftRemovePeer(context.Background(), "n3"); err != nil || rec.method != http.MethodDelete || rec.query["id"][0] != "n3" {
		t.Errorf("remove-peer: %v %s %v", err, rec.method, rec.query)
	}
	if err := c.RaftRemovePeer(context.Background(), ""); err == nil {
		t.Error("remove-peer without an ID was sent")
	}
	rec.body = `{"from":"n1","to":"n2"}`
	out, err := c.RaftTransferLeader(context.Background(), "")
	if err != nil || out.To != "n2" || len(rec.query["id"]) != 0 || rec.path != "/v1/operator/raft/transfer-leader" {
		t.Errorf("transfer-leader: %+v %v %v", out, err, rec.query)
	}
	rec.body = `{"paused":true}`
	if err := c.Pause(context.Background()); err != nil || rec.path != "/v1/operator/pause" || rec.method != http.MethodPut {
		t.Errorf("pause: %v %s", err, rec.path)
	}
}
