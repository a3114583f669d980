package command

import (
	"strings"
	"testing"
)

const doctorFailBody = `{"asker":"n1","time":"2026-11-23T22:00:00Z","status":"fail","checks":[
 {"id":"version.postgres","status":"fail","summary":"the nodes have 2 different PostgreSQL major versions",
  "details":["15: n1, n2","16: n3"],"advice":"Physical replication only works between servers of the same major version."},
 {"id":"gossip.encryption","status":"warn","summary":"gossip is not encrypted","advice":"Set encrypt."},
 {"id":"raft.voters","status":"ok","summary":"3 voters","details":["voters: n1, n2, n3"]}
],"options":{"clock_threshold_ms":250,"min_free_wal":1,"max_slot_retained":2}}`

func TestDoctorText(t *testing.T) {
	f := newFakeAPI(t, 200, doctorFailBody)
	code, out, errOut := runCLI(t, "doctor", "-http-addr", f.addr(), "-clock-threshold=250ms", "-min-free-wal=2GB")
	if code != 1 {
		t.Fatalf("a failed check must exit 1, got %d (%s)", code, errOut)
	}
	if got := f.lastRequest(); got != "GET /v1/agent/doctor?clock_threshold=250ms&max_slot_retained=1GB&min_free_wal=2GB token=" {
		t.Errorf("request %q", got)
	}
	for _, want := range []string{
		"[fail] version.postgres   the nodes have 2 different PostgreSQL major versions",
		"       - 16: n3",
		"       Physical replication only works",
		"[warn] gossip.encryption  gossip is not encrypted",
		"[ok  ] raft.voters        3 voters\n",
		"1 failed, 1 warnings, 1 ok",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "voters: n1, n2, n3") {
		t.Errorf("details of a passing check shown without -verbose:\n%s", out)
	}
	_, out, _ = runCLI(t, "doctor", "-http-addr", f.addr(), "-verbose")
	if !strings.Contains(out, "voters: n1, n2, n3") {
		t.Errorf("-verbose hides the details of a passing check:\n%s", out)
	}
}

func TestDoctorExitCodesAndFlags(t *testing.T) {
	warnOnly := strings.Replace(doctorFailBody, `"status":"fail","summary":"the nodes`, `"status":"ok","summary":"the nodes`, 1)
	f := newFakeAPI(t, 200, warnOnly)
	if code, out, errOut := runCLI(t, "doctor", "-http-addr", f.addr(), "-format=json"); code != 0 || !strings.Contains(out, `"id": "gossip.encryption"`) {
		t.Errorf("warnings only: exit %d, want 0 (%s%s)", code, out, errOut)
	}
	if got := f.lastRequest(); !strings.Contains(got, "input=1") {
		t.Errorf("-format=json does not ask for the gathered input: %q", got)
	}
	for _, args := range [][]string{{"-format=xml"}, {"-clock-threshold=0s"}, {"extra"}} {
		if code, _, _ := runCLI(t, append([]string{"doctor", "-http-addr", f.addr()}, args...)...); code != 1 {
			t.Errorf("doctor %v: exit %d, want 1", args, code)
		}
	}
	down := newFakeAPI(t, 503, `{"error":"this agent runs no raft"}`)
	if code, _, errOut := runCLI(t, "doctor", "-http-addr", down.addr()); code != 1 || !strings.Contains(errOut, "runs no raft") {
		t.Errorf("agent error: exit %d, %q", code, errOut)
	}
}

func TestReinitCommand(t *testing.T) {
	f := newFakeAPI(t, 200, `{"node":"n2","id":"abc","from":"n1","epoch":4}`)
	code, out, errOut := runCLI(t, "reinit", "-http-addr", f.addr(), "-token", "tk", "-reason", "disk swapped", "n2")
	if code != 0 || !strings.Contains(out, "Reinit of n2 requested (id abc): it re-clones from n1 (epoch 4)") {
		t.Fatalf("exit %d: %s%s", code, out, errOut)
	}
	if got := f.lastRequest(); got != "PUT /v1/operator/reinit?node=n2&reason=disk+swapped token=tk" {
		t.Errorf("request %q", got)
	}
	// Flags after the node name work too.
	if code, _, errOut := runCLI(t, "reinit", "n2", "-force", "-http-addr", f.addr()); code != 0 {
		t.Errorf("flags after the node: exit %d: %s", code, errOut)
	} else if got := f.lastRequest(); got != "PUT /v1/operator/reinit?force=1&node=n2 token=" {
		t.Errorf("request %q", got)
	}
	for _, args := range [][]string{{}, {"n2", "n3"}, {"-wait=maybe", "n2"}} {
		if code, _, _ := runCLI(t, append([]string{"reinit", "-http-addr", f.addr()}, args...)...); code != 1 {
			t.Errorf("reinit %v: exit %d, want 1", args, code)
		}
	}
	refused := newFakeAPI(t, 409, `{"error":"n1 is the primary of epoch 4"}`)
	if code, _, errOut := runCLI(t, "reinit", "-http-addr", refused.addr(), "n1"); code != 1 || !strings.Contains(errOut, "409") || !strings.Contains(errOut, "is the primary") {
		t.Errorf("refused: exit %d, %q", code, errOut)
	}
}

func TestReinitWait(t *testing.T) {
	// The fake answers every request with the same body: one that serves
	// as both the PUT's answer and the status with the request done.
	body := `{"node":"n2","id":"abc","from":"n1","epoch":4,"pending":[],"recent":[{"node":"n2","id":"abc","index":9,"epoch":4,"outcome":"done","detail":"re-cloned from n1","from":"n1","done_index":12}]}`
	f := newFakeAPI(t, 200, body)
	code, out, errOut := runCLI(t, "reinit", "-wait", "-timeout=10s", "-http-addr", f.addr(), "n2")
	if code != 0 || !strings.Contains(out, "Reinit of n2 done: re-cloned from n1") {
		t.Fatalf("exit %d: %s%s", code, out, errOut)
	}
	if got := f.lastRequest(); got != "GET /v1/operator/reinit token=" {
		t.Errorf("last request %q", got)
	}
	cancelled := strings.Replace(body, `"outcome":"done"`, `"outcome":"cancelled"`, 1)
	f2 := newFakeAPI(t, 200, cancelled)
	if code, _, errOut := runCLI(t, "reinit", "-wait", "-timeout=10s", "-http-addr", f2.addr(), "n2"); code != 1 || !strings.Contains(errOut, "cancelled") {
		t.Errorf("cancelled: exit %d %q", code, errOut)
	}
	pending := `{"node":"n2","id":"abc","from":"n1","epoch":4,"pending":[{"node":"n2","id":"abc"}],"recent":[]}`
	f3 := newFakeAPI(t, 200, pending)
	if code, _, errOut := runCLI(t, "reinit", "-wait", "-timeout=1s", "-http-addr", f3.addr(), "n2"); code != 1 || !strings.Contains(errOut, "stays pending") {
		t.Errorf("timeout: exit %d %q", code, errOut)
	}
}
