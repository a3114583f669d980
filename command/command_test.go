package command

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/cli"

	"github.com/pgbattery/pgbattery/agent/api"
	"github.com/pgbattery/pgbattery/agent/version"
	"github.com/pgbattery/pgbattery/test/testutil"
)

// fakeAPI is an HTTP API stand-in that records requests; the unit under
// test is the CLI's formatting and flag handling, not the agent.
type fakeAPI struct {
	mu       sync.Mutex
	requests []string // "METHOD PATH?QUERY token=TOKEN"
	status   int
	body     string
	srv      *httptest.Server
}

func newFakeAPI(t *testing.T, status int, body string) *fakeAPI {
	t.Helper()
	f := &fakeAPI{status: status, body: body}
	ln, err := net.Listen("tcp", net.JoinHostPort(testutil.Addr(t), "0"))
	if err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		line := r.Method + " " + r.URL.Path
		if r.URL.RawQuery != "" {
			line += "?" + r.URL.RawQuery
		}
		f.requests = append(f.requests, line+" token="+r.Header.Get(api.TokenHeader))
		status, body := f.status, f.body
		f.mu.Unlock()
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	f.srv.Listener.Close()
	f.srv.Listener = ln
	f.srv.Start()
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPI) addr() string { return f.srv.Listener.Addr().String() }

func (f *fakeAPI) lastRequest() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.requests) == 0 {
		return ""
	}
	return f.requests[len(f.requests)-1]
}

// runCLI runs the whole CLI as main does and returns code, stdout, stderr.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	ui := &cli.BasicUi{Writer: &out, ErrorWriter: &errOut}
	code := run(args, ui, &out, &errOut)
	return code, out.String(), errOut.String()
}

const membersJSON = `[
 {"name":"node2","addr":"127.0.0.3:8301","status":"failed","tags":{"role":"replica","raft":"voter","build":"0.1.0-dev"}},
 {"name":"node1","addr":"127.0.0.2:8301","status":"alive","tags":{"role":"primary","raft":"voter","build":"0.1.0-dev","zone":"a"}},
 {"name":"witness-long-name","addr":"[::1]:8301","status":"alive","tags":{"role":"witness"}}
]`

func TestVersion(t *testing.T) {
	code, out, _ := runCLI(t, "version")
	if code != 0 || out != version.Info() {
		t.Fatalf("code %d, out %q", code, out)
	}
	for _, flag := range []string{"-v", "--version"} {
		code, out, _ = runCLI(t, flag)
		if code != 0 || out != version.Info() {
			t.Fatalf("%s: code %d, out %q", flag, code, out)
		}
	}
	if code, _, errOut := runCLI(t, "version", "extra"); code != 1 || !strings.Contains(errOut, "takes no arguments") {
		t.Fatalf("extra argument: code %d, %q", code, errOut)
	}
}

func TestExitCodesAndHelp(t *testing.T) {
	if code, _, errOut := runCLI(t, "no-such-command"); code != 127 || !strings.Contains(errOut, "Available commands are:") {
		t.Fatalf("unknown command: %d %q", code, errOut)
	}
	code, out, _ := runCLI(t, "--help")
	if code != 0 || !strings.Contains(out, "Exit codes: 0 success, 1 error") {
		t.Fatalf("--help: %d %q", code, out)
	}
	for name := range Commands(cli.NewMockUi()) {
		// Nested commands ("operator raft list-peers") are separate words.
		code, out, errOut := runCLI(t, append(strings.Fields(name), "-h")...)
		if code != 0 || !strings.Contains(out+errOut, "Usage: pgbattery "+name) {
			t.Errorf("%s -h: code %d, out %q err %q", name, code, out, errOut)
		}
	}
	// A bad flag is an error (1, as in Consul), with the command's help.
	for _, name := range []string{"members", "join", "leave", "force-leave", "agent", "status", "history",
		"switchover", "failover", "pause", "resume", "operator raft list-peers", "operator raft remove-peer",
		"operator raft transfer-leader"} {
		code, _, errOut := runCLI(t, append(strings.Fields(name), "-no-such-flag")...)
		if code != 1 || !strings.Contains(errOut, "flag provided but not defined: -no-such-flag") ||
			!strings.Contains(errOut, "Usage: pgbattery "+name) {
			t.Errorf("%s -no-such-flag: code %d, %q", name, code, errOut)
		}
	}
}

func TestKeygen(t *testing.T) {
	code, out, _ := runCLI(t, "keygen")
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(out))
	if code != 0 || err != nil || len(key) != 32 {
		t.Fatalf("code %d, key %q (%d bytes), %v", code, out, len(key), err)
	}
	_, out2, _ := runCLI(t, "keygen")
	if out2 == out {
		t.Fatal("two keys are equal")
	}
}

func TestMembersTable(t *testing.T) {
	f := newFakeAPI(t, 200, membersJSON)
	code, out, errOut := runCLI(t, "members", "-http-addr", f.addr())
	want := "" +
		"Node               Address         Status  Role     Raft   Build\n" +
		"node1              127.0.0.2:8301  alive   primary  voter  0.1.0-dev\n" +
		"node2              127.0.0.3:8301  failed  replica  voter  0.1.0-dev\n" +
		"witness-long-name  [::1]:8301      alive   witness  -      -\n"
	if code != 0 || out != want {
		t.Fatalf("code %d (%s)\n got:\n%s\nwant:\n%s", code, errOut, out, want)
	}
	if r := f.lastRequest(); r != "GET /v1/agent/members token=" {
		t.Fatalf("request %q", r)
	}
}

func TestMembersDetailedStatusAndJSON(t *testing.T) {
	f := newFakeAPI(t, 200, membersJSON)

	code, out, _ := runCLI(t, "members", "-http-addr", f.addr(), "-detailed", "-status", "^alive$")
	want := "" +
		"Node               Address         Status  Tags\n" +
		"node1              127.0.0.2:8301  alive   build=0.1.0-dev,raft=voter,role=primary,zone=a\n" +
		"witness-long-name  [::1]:8301      alive   role=witness\n"
	if code != 0 || out != want {
		t.Fatalf("detailed: code %d\n got:\n%s\nwant:\n%s", code, out, want)
	}

	code, out, _ = runCLI(t, "members", "-http-addr", f.addr(), "-format=json", "-status", "fail")
	var got []api.Member
	if err := json.Unmarshal([]byte(out), &got); err != nil || code != 0 {
		t.Fatalf("json: code %d, %v: %q", code, err, out)
	}
	if len(got) != 1 || got[0].Name != "node2" || got[0].Tags["role"] != "replica" {
		t.Fatalf("json members %+v", got)
	}

	// Nothing matches: exit 2, as Consul's members does.
	code, out, _ = runCLI(t, "members", "-http-addr", f.addr(), "-status", "left")
	if code != 2 || out != "" {
		t.Fatalf("no match: code %d, out %q", code, out)
	}
	code, out, _ = runCLI(t, "members", "-http-addr", f.addr(), "-status", "left", "-format", "json")
	if code != 2 || strings.TrimSpace(out) != "[]" {
		t.Fatalf("no match json: code %d, out %q", code, out)
	}

	for _, args := range [][]string{{"-status", "("}, {"-format", "yaml"}, {"extra"}} {
		code, _, errOut := runCLI(t, append([]string{"members", "-http-addr", f.addr()}, args...)...)
		if code != 1 || errOut == "" {
			t.Errorf("%v: code %d, %q", args, code, errOut)
		}
	}
}

func TestHTTPAddrAndTokenPrecedence(t *testing.T) {
	fromEnv := newFakeAPI(t, 200, "[]")
	fromFlag := newFakeAPI(t, 200, "[]")

	// Environment only.
	t.Setenv(api.HTTPAddrEnvName, fromEnv.addr())
	t.Setenv(api.HTTPTokenEnvName, "env-token")
	runCLI(t, "members")
	if r := fromEnv.lastRequest(); r != "GET /v1/agent/members token=env-token" {
		t.Fatalf("env: %q", r)
	}

	// Flags win over the environment.
	runCLI(t, "members", "-http-addr", "http://"+fromFlag.addr(), "-token", "flag-token")
	if r := fromFlag.lastRequest(); r != "GET /v1/agent/members token=flag-token" {
		t.Fatalf("flags: %q", r)
	}

	// An explicitly empty -token beats the environment too.
	runCLI(t, "members", "-token=")
	if r := fromEnv.lastRequest(); r != "GET /v1/agent/members token=" {
		t.Fatalf("empty token flag: %q", r)
	}

	// Neither: the default address.
	t.Setenv(api.HTTPAddrEnvName, "")
	var h HTTPFlags
	if h.Address() != api.DefaultAddress {
		t.Fatalf("default address %q", h.Address())
	}
}

func TestJoin(t *testing.T) {
	f := newFakeAPI(t, 200, `{"num_joined": 2}`)
	code, out, _ := runCLI(t, "join", "-http-addr", f.addr(), "-token", "tk", "127.0.0.3", "[::1]:8301")
	if code != 0 || out != "Successfully joined cluster by contacting 2 nodes.\n" {
		t.Fatalf("code %d, %q", code, out)
	}
	if r := f.lastRequest(); r != "PUT /v1/agent/join?address=127.0.0.3&address=%5B%3A%3A1%5D%3A8301 token=tk" {
		t.Fatalf("request %q", r)
	}
	if code, _, errOut := runCLI(t, "join", "-http-addr", f.addr()); code != 1 || !strings.Contains(errOut, "At least one address") {
		t.Fatalf("no address: %d %q", code, errOut)
	}

	bad := newFakeAPI(t, 500, `{"error":"dial tcp 127.0.0.9:8301: connection refused"}`)
	code, _, errOut := runCLI(t, "join", "-http-addr", bad.addr(), "127.0.0.9")
	if code != 1 || !strings.Contains(errOut, "Error joining the cluster: agent answered 500 Internal Server Error: dial tcp 127.0.0.9:8301: connection refused") {
		t.Fatalf("failed join: %d %q", code, errOut)
	}
}

func TestLeaveAndForceLeave(t *testing.T) {
	f := newFakeAPI(t, 200, "")
	code, out, _ := runCLI(t, "leave", "-http-addr", f.addr())
	if code != 0 || out != "Graceful leave complete\n" || f.lastRequest() != "PUT /v1/agent/leave token=" {
		t.Fatalf("leave: %d %q %q", code, out, f.lastRequest())
	}
	code, out, _ = runCLI(t, "force-leave", "-http-addr", f.addr(), "node3")
	if code != 0 || out != "" || f.lastRequest() != "PUT /v1/agent/force-leave/node3 token=" {
		t.Fatalf("force-leave: %d %q %q", code, out, f.lastRequest())
	}
	for _, args := range [][]string{{}, {"a", "b"}} {
		if code, _, _ := runCLI(t, append([]string{"force-leave", "-http-addr", f.addr()}, args...)...); code != 1 {
			t.Errorf("force-leave %v: code %d", args, code)
		}
	}

	denied := newFakeAPI(t, 403, `{"error":"permission denied"}`)
	code, _, errOut := runCLI(t, "force-leave", "-http-addr", denied.addr(), "node3")
	if code != 1 || !strings.Contains(errOut, "Error forcing node3 to leave: agent answered 403 Forbidden: permission denied") {
		t.Fatalf("denied: %d %q", code, errOut)
	}

	// No agent listening: a clear error, exit 1.
	code, _, errOut = runCLI(t, "leave", "-http-addr", net.JoinHostPort(testutil.Addr(t), "1"))
	if code != 1 || !strings.Contains(errOut, "Error leaving the cluster: PUT /v1/agent/leave:") {
		t.Fatalf("no agent: %d %q", code, errOut)
	}
}
