package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgbattery/pgbattery/agent/api"
)

// put sends a PUT to p's API and returns the status code and the body.
func put(t *testing.T, p *agentProc, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, "http://"+p.httpAddr()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("PUT %s on %s: %v", path, p.name, err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil || b.Len() > 1<<20 {
			break
		}
	}
	return resp.StatusCode, b.String()
}

// TestReinitStandby re-clones a standby of a 3-node cluster from the
// primary (issue 4, item 8): the node sets its data aside, clones, follows
// the primary again with all its data, and the state, the API and the logs
// say so. A reinit of the primary is refused with 409.
func TestReinitStandby(t *testing.T) {
	c := startFaultCluster(t, 3, false)
	primary := c.settle(t)
	var standby, other *agentProc
	for _, p := range c.others(primary) {
		if standby == nil {
			standby = p
		} else {
			other = p
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := execOn(ctx, t, primary, "CREATE TABLE reinit_probe (v text); INSERT INTO reinit_probe VALUES ('before')"); err != nil {
		t.Fatalf("writing before the reinit: %v", err)
	}
	pgdata := filepath.Join(standby.dataDir(), "postgres", "data")
	oldPM := postmasterPID(standby.dataDir())
	if oldPM == 0 {
		t.Fatalf("%s has no running postmaster before the reinit", standby.name)
	}

	t.Run("refused for the primary", func(t *testing.T) {
		code, body := put(t, other, "/v1/operator/reinit?node="+primary.name)
		if code != http.StatusConflict || !strings.Contains(body, "is the primary") {
			t.Fatalf("reinit of the primary: %d %s; want 409 saying it is the primary", code, body)
		}
		out, exit := opCLI(t, other, 30*time.Second, "reinit", primary.name)
		if exit != 1 || !strings.Contains(out, "409") {
			t.Fatalf("pgbattery reinit %s: exit %d: %s; want exit 1 with the 409", primary.name, exit, out)
		}
		code, body = put(t, other, "/v1/operator/reinit?node=nosuchnode")
		if code != http.StatusNotFound {
			t.Fatalf("reinit of an unknown node: %d %s; want 404", code, body)
		}
		code, body = put(t, other, "/v1/operator/reinit")
		if code != http.StatusBadRequest {
			t.Fatalf("reinit without a node: %d %s; want 400", code, body)
		}
	})

	// Ask a node other than the target (and, likely, not the leader), so
	// the request is forwarded to the raft leader.
	out, exit := opCLI(t, other, 5*time.Minute, "reinit", "-wait", "-timeout=4m", "-reason=e2e test", standby.name)
	if exit != 0 || !strings.Contains(out, "done") {
		t.Fatalf("pgbattery reinit -wait %s: exit %d:\n%s", standby.name, exit, out)
	}
	t.Logf("reinit output:\n%s", out)

	var rs api.ReinitStatus
	if code := other.get("/v1/operator/reinit", &rs); code != 200 {
		t.Fatalf("GET /v1/operator/reinit: %d", code)
	}
	if len(rs.Pending) != 0 || len(rs.Recent) != 1 {
		t.Fatalf("reinit status: %+v; want no pending and one finished request", rs)
	}
	rec := rs.Recent[0]
	if rec.Node != standby.name || rec.Outcome != "done" || rec.From != primary.name || rec.Reason != "e2e test" || rec.RequestedBy != other.name {
		t.Errorf("reinit record %+v; want node %s done from %s, requested by %s", rec, standby.name, primary.name, other.name)
	}
	if fi, err := os.Stat(pgdata + ".old"); err != nil || !fi.IsDir() {
		t.Errorf("the previous data was not set aside in %s.old: %v", pgdata, err)
	}
	if pm := postmasterPID(standby.dataDir()); pm == oldPM {
		t.Errorf("the postmaster of %s is still %d: PostgreSQL did not restart", standby.name, pm)
	}
	if !strings.Contains(standby.logs(), "reinit done") || !strings.Contains(standby.logs(), "cloning from the primary") {
		t.Errorf("the log of %s does not tell of the re-clone", standby.name)
	}

	// It follows the primary again: a replica, streaming, with the old and
	// the new rows, and back in the synchronous set.
	waitFor(t, 2*time.Minute, standby.name+" a replica again", func() bool { return role(standby) == "replica" })
	// On a loaded machine the primary may fence for a moment (or even fail
	// over): write to whichever node is the writable primary, retrying.
	waitFor(t, 2*time.Minute, "a write after the reinit", func() bool {
		for _, p := range c.nodes {
			if role(p) == "primary" {
				wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer wcancel()
				return execOn(wctx, t, p, "INSERT INTO reinit_probe VALUES ('after')") == nil
			}
		}
		return false
	})
	waitFor(t, time.Minute, "both rows on "+standby.name, func() bool {
		n, err := queryOn[int64](t, standby, "SELECT count(DISTINCT v) FROM reinit_probe")
		return err == nil && n == 2
	})
	waitFor(t, 2*time.Minute, "every standby in the synchronous set", func() bool {
		st, ok := clusterStatus(other)
		return ok && st.Writable && len(st.Sync.Standbys) == 2
	})
	var raw json.RawMessage
	if code := standby.get("/v1/health/replica", &raw); code != 200 {
		t.Errorf("/v1/health/replica on %s after the reinit: %d", standby.name, code)
	}
}

// TestReinitSurvivesRestart requests the reinit of a standby whose agent is
// down: the request waits in the replicated state, and the agent carries it
// out once it is back.
func TestReinitSurvivesRestart(t *testing.T) {
	c := startFaultCluster(t, 3, false)
	primary := c.settle(t)
	others := c.others(primary)
	standby, other := others[0], others[1]
	pgdata := filepath.Join(standby.dataDir(), "postgres", "data")

	killNode(t, standby)
	// The raft leader is kept off the primary, so the killed standby may
	// have been it: until a new one is elected the request is 503.
	var code int
	var body string
	waitFor(t, time.Minute, "the reinit request accepted", func() bool {
		code, body = put(t, other, "/v1/operator/reinit?node="+standby.name+"&reason=while+down")
		if code != http.StatusOK && code != http.StatusServiceUnavailable {
			t.Fatalf("reinit of a stopped standby: %d %s", code, body)
		}
		return code == http.StatusOK
	})
	var resp api.ReinitResponse
	if err := json.Unmarshal([]byte(body), &resp); err != nil || resp.ID == "" {
		t.Fatalf("reinit answer %q: %v", body, err)
	}
	// The agent asked may be a follower that applies the commit a moment
	// after the leader answered.
	waitFor(t, 10*time.Second, "the request pending while the node is down", func() bool {
		var rs api.ReinitStatus
		return other.get("/v1/operator/reinit", &rs) == 200 && len(rs.Pending) == 1 && rs.Pending[0].ID == resp.ID
	})
	if _, err := os.Stat(pgdata + ".old"); err == nil {
		t.Fatalf("%s.old exists before the reinit", pgdata)
	}

	c.restart(standby)
	waitFor(t, 4*time.Minute, "the reinit done after the restart", func() bool {
		var rs api.ReinitStatus
		if other.get("/v1/operator/reinit", &rs) != 200 {
			return false
		}
		for _, r := range rs.Recent {
			if r.ID == resp.ID {
				return r.Outcome == "done"
			}
		}
		return false
	})
	if fi, err := os.Stat(pgdata + ".old"); err != nil || !fi.IsDir() {
		t.Errorf("the data of %s was not set aside: %v", standby.name, err)
	}
	if !strings.Contains(standby.logs(), "reinit "+resp.ID) {
		t.Errorf("the restarted agent's log does not mention reinit %s", resp.ID)
	}
	waitFor(t, 2*time.Minute, standby.name+" a replica again", func() bool { return role(standby) == "replica" })
}
