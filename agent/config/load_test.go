package config

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	sockaddr "github.com/hashicorp/go-sockaddr"
)

// base is the smallest valid configuration; cases add to it.
const base = `
data_dir  = "/var/lib/pgbattery"
bind_addr = "127.0.0.2"
`

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// loadErrors loads opts, expects it to fail, and returns the error lines.
func loadErrors(t *testing.T, opts LoadOpts) []string {
	t.Helper()
	rt, _, err := Load(opts)
	if err == nil {
		t.Fatalf("configuration accepted: %+v", rt)
	}
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("error is %T, not Errors: %v", err, err)
	}
	if rt != nil {
		t.Fatalf("a runtime config came back with errors")
	}
	return strings.Split(err.Error(), "\n")
}

func mustLoad(t *testing.T, opts LoadOpts) (*RuntimeConfig, []string) {
	t.Helper()
	rt, warnings, err := Load(opts)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	return rt, warnings
}

// TestLoadErrors checks the exact message, file, line and key of each kind
// of bad configuration.
func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	noPostgres := filepath.Join(dir, "empty-bin")
	if err := os.Mkdir(noPostgres, 0o755); err != nil {
		t.Fatal(err)
	}
	shortKey := "c2hvcnRrZXk=" // "shortkey", 8 bytes
	certFile := writeFile(t, dir, "cert.pem", "not checked here")

	cases := []struct {
		name    string
		file    string // file name; .json selects JSON
		content string
		want    []string // with FILE standing for the file's path
	}{
		{
			name:    "hcl syntax error",
			file:    "syntax.hcl",
			content: "data_dir = \"/x\"\nports {\n  http = \n}\n",
			want:    []string{"FILE:3:10: Invalid expression: Expected the start of an expression, but found an invalid expression token."},
		},
		{
			name:    "unclosed block",
			file:    "unclosed.hcl",
			content: "ports {\n  http = 1\n",
			want:    []string{"FILE:1:7: Unclosed configuration block: There is no closing brace for this block before the end of the file. This may be caused by incorrect brace nesting elsewhere in this file."},
		},
		{
			name:    "json syntax error",
			file:    "syntax.json",
			content: "{\n  \"data_dir\": \"/x\",\n  \"ports\": {\"http\": }\n}\n",
			want:    []string{"FILE:3:21: Missing JSON value: A JSON value must start with a brace, a bracket, a number, a string, or a keyword."},
		},
		{
			name:    "unknown key with suggestion",
			file:    "unknown.hcl",
			content: base + "data_dri = \"/x\"\n",
			want:    []string{`FILE:4: data_dri: unknown key (did you mean "data_dir"?)`},
		},
		{
			name:    "unknown key without suggestion",
			file:    "unknown2.hcl",
			content: base + "color = \"blue\"\n",
			want:    []string{`FILE:4: color: unknown key`},
		},
		{
			name:    "unknown nested key",
			file:    "nested.hcl",
			content: base + "ports {\n  gateway = 6432\n  postgress = 5433\n}\n",
			want:    []string{`FILE:6: ports.postgress: unknown key (did you mean "postgres"?)`},
		},
		{
			name:    "unknown key two blocks deep",
			file:    "deep.hcl",
			content: base + "tls {\n  gateway {\n    reqired = true\n  }\n}\n",
			want:    []string{`FILE:6: tls.gateway.reqired: unknown key (did you mean "required"?)`},
		},
		{
			name:    "unknown block",
			file:    "block.hcl",
			content: base + "consul {\n  x = 1\n}\n",
			want:    []string{`FILE:4: consul: unknown key`},
		},
		{
			name:    "wrong type",
			file:    "type.hcl",
			content: base + "ports {\n  http = \"eighty\"\n}\nserver = [true]\n",
			want: []string{
				`FILE:5: ports.http: wrong type: a number is required`,
				`FILE:7: server: wrong type: bool required, but have tuple`,
			},
		},
		{
			name:    "fraction for an integer",
			file:    "fraction.hcl",
			content: base + "retry_max = 1.5\n",
			want:    []string{`FILE:4: retry_max: wrong type: a whole number is required`},
		},
		{
			name:    "block written as attribute",
			file:    "attr.hcl",
			content: base + "ports = { http = 1 }\n",
			want:    []string{`FILE:4: ports: must be a block (ports { ... }), not an attribute`},
		},
		{
			name:    "attribute written as block",
			file:    "blk.hcl",
			content: base + "tags {\n  rack = \"a\"\n}\n",
			want:    []string{`FILE:4: tags: must be set as an attribute (tags = ...), not as a block`},
		},
		{
			name:    "bad port",
			file:    "port.hcl",
			content: base + "ports {\n  postgres = 70000\n  http = 0\n  gateway_read_only = -2\n}\n",
			want: []string{
				`FILE:5: ports.postgres: must be 1..65535, not 70000`,
				`FILE:6: ports.http: must be 1..65535, not 0`,
				`FILE:7: ports.gateway_read_only: must be 1..65535, or -1 to disable, not -2`,
			},
		},
		{
			name:    "port conflicting with a default",
			file:    "conflict.hcl",
			content: base + "ports {\n  serf = 8300\n}\n",
			want:    []string{`FILE:5: ports.serf: port 8300 is also used by ports.raft`},
		},
		{
			name:    "two ports set equal",
			file:    "conflict2.hcl",
			content: base + "ports {\n  gateway = 6000\n  http = 6000\n}\n",
			want:    []string{`FILE:6: ports.http: port 6000 is also used by ports.gateway`},
		},
		{
			name:    "missing data_dir",
			file:    "nodata.hcl",
			content: "bind_addr = \"127.0.0.2\"\n",
			want:    []string{`data_dir: must be set (in a config file or with -data-dir)`},
		},
		{
			name:    "relative data_dir",
			file:    "rel.hcl",
			content: "bind_addr = \"127.0.0.2\"\ndata_dir = \"data\"\n",
			want:    []string{`FILE:2: data_dir: must be an absolute path, not "data"`},
		},
		{
			name:    "bin_dir without postgres",
			file:    "bindir.hcl",
			content: base + "postgres {\n  bin_dir = \"" + noPostgres + "\"\n}\n",
			want:    []string{`FILE:5: postgres.bin_dir: ` + noPostgres + ` has no executable postgres binary`},
		},
		{
			name:    "bin_dir missing",
			file:    "bindir2.hcl",
			content: base + "postgres {\n  bin_dir = \"" + filepath.Join(dir, "nope") + "\"\n}\n",
			want:    []string{`FILE:5: postgres.bin_dir: no such file or directory`},
		},
		{
			name:    "bad durations",
			file:    "dur.hcl",
			content: base + "retry_interval = \"5 seconds\"\nswitchover {\n  drain_timeout = \"-1s\"\n}\nfailover {\n  lease = \"0s\"\n}\n",
			want: []string{
				`FILE:4: retry_interval: "5 seconds" is not a duration (use e.g. "500ms", "5s", "1m")`,
				`FILE:6: switchover.drain_timeout: must not be negative, not -1s`,
				`FILE:9: failover.lease: must be greater than zero`,
			},
		},
		{
			name:    "encrypt key of the wrong length",
			file:    "key.hcl",
			content: base + "encrypt = \"" + shortKey + "\"\n",
			want:    []string{"FILE:4: encrypt: key is 8 bytes; it must decode to 16, 24 or 32 bytes (generate one with `pgbattery keygen`)"},
		},
		{
			name:    "encrypt key not base64",
			file:    "key2.hcl",
			content: base + "encrypt = \"not base64!\"\n",
			want:    []string{"FILE:4: encrypt: is not valid base64: illegal base64 data at input byte 3 (generate a key with `pgbattery keygen`)"},
		},
		{
			name:    "bad replication mode",
			file:    "mode.hcl",
			content: base + "replication {\n  mode = \"sync\"\n  max_lag_on_failover = \"16 furlongs\"\n}\n",
			want: []string{
				`FILE:5: replication.mode: must be one of "quorum", "strict" or "async", not "sync"`,
				`FILE:6: replication.max_lag_on_failover: "16 furlongs" has an unknown unit "furlongs" (use B, kB, MB, GB or TB)`,
			},
		},
		{
			name:    "renew interval too long for the lease",
			file:    "lease.hcl",
			content: base + "failover {\n  lease = \"4s\"\n  lease_renew_interval = \"2s\"\n  hold_down = \"5s\"\n}\n",
			want:    []string{`FILE:6: failover.lease_renew_interval: lease_renew_interval (2s) must be less than half of lease (4s)`},
		},
		{
			name:    "hold_down shorter than the lease",
			file:    "hold.hcl",
			content: base + "failover {\n  lease = \"10s\"\n  hold_down = \"3s\"\n}\n",
			want:    []string{`FILE:6: failover.hold_down: hold_down (3s) must be at least lease (10s): a new primary may only be promoted after the old one's lease has run out`},
		},
		{
			name:    "bootstrap_expect without server",
			file:    "boot.hcl",
			content: base + "bootstrap_expect = 3\n",
			want:    []string{`FILE:4: bootstrap_expect: requires server = true: only servers (raft voters) bootstrap the cluster`},
		},
		{
			name:    "bad join addresses, each on its own line",
			file:    "join.hcl",
			content: base + "retry_join = [\n  \"127.0.0.3\",\n  \"[::1]:99999\",\n  \"a:b:c\",\n]\n",
			want: []string{
				`FILE:6: retry_join: "[::1]:99999": port must be 1..65535, not "99999"`,
				`FILE:7: retry_join: "a:b:c": not a host, host:port or [IPv6]:port`,
			},
		},
		{
			name:    "reserved and invalid parameters, bad hba",
			file:    "pg.hcl",
			content: base + "postgres {\n  parameters = {\n    shared_buffers = \"128MB\"\n    port = 5555\n  }\n  hba = [\n    \"host all all 10.0.0.0/8 scram-sha-256\",\n    \"hots all all 0.0.0.0/0 trust\",\n  ]\n}\n",
			want: []string{
				`FILE:7: postgres.parameters.port: is managed by pgbattery (set ports.postgres)`,
				`FILE:11: postgres.hba: "hots all all 0.0.0.0/0 trust": the first field must be local, host, hostssl, hostnossl, hostgssenc or hostnogssenc`,
			},
		},
		{
			name:    "tls cert without key, missing ca",
			file:    "tls.hcl",
			content: base + "tls {\n  ca_file = \"" + filepath.Join(dir, "ca.pem") + "\"\n  cert_file = \"" + certFile + "\"\n}\n",
			want: []string{
				`FILE:5: tls.ca_file: no such file or directory`,
				`FILE:6: tls.cert_file: is set but tls.key_file is not`,
			},
		},
		{
			name:    "client certificates without a CA or a certificate",
			file:    "clientcert.hcl",
			content: base + "tls {\n  gateway {\n    client_cert = \"verify-full\"\n  }\n}\n",
			want: []string{
				`FILE:6: tls.gateway.client_cert: "verify-full" requires tls.gateway.client_ca_file to verify client certificates against`,
				`FILE:6: tls.gateway.client_cert: "verify-full" requires TLS: set tls.gateway.cert_file/key_file or tls.cert_file/key_file`,
			},
		},
		{
			name:    "client certificate mode unknown, client CA missing",
			file:    "clientcert2.hcl",
			content: base + "tls {\n  gateway {\n    client_cert = \"required\"\n    client_ca_file = \"" + filepath.Join(dir, "nope.pem") + "\"\n  }\n}\n",
			want: []string{
				`FILE:6: tls.gateway.client_cert: must be one of "off", "verify-ca" or "verify-full", not "required"`,
				`FILE:7: tls.gateway.client_ca_file: no such file or directory`,
			},
		},
		{
			name:    "HTTP TLS without a certificate",
			file:    "httptls.hcl",
			content: base + "tls {\n  http {\n    enabled = true\n  }\n}\n",
			want:    []string{`FILE:6: tls.http.enabled: requires tls.cert_file and tls.key_file: the HTTP API serves the agent's certificate`},
		},
		{
			name:    "rate limits out of range and of the wrong type",
			file:    "limits.hcl",
			content: base + "limits {\n  http_max_rps = -1\n  http_burst = 0\n}\n",
			want: []string{
				`FILE:5: limits.http_max_rps: must be 0 (no limit) .. 1000000, not -1`,
				`FILE:6: limits.http_burst: must be 1..1048576, not 0`,
			},
		},
		{
			name:    "rate limit not a number",
			file:    "limits2.hcl",
			content: base + "limits {\n  http_max_rps = \"lots\"\n}\n",
			want:    []string{`FILE:5: limits.http_max_rps: wrong type: a number is required`},
		},
		{
			name:    "bad enum values and ranges",
			file:    "enums.hcl",
			content: base + "log_level = \"verbose\"\ngossip {\n  profile = \"fast\"\n  probe_interval = \"100ms\"\n  probe_timeout = \"200ms\"\n}\nraft {\n  multiplier = 11\n}\ngateway {\n  auth = \"md5\"\n}\n",
			want: []string{
				`FILE:4: log_level: must be one of "trace", "debug", "info", "warn" or "error", not "verbose"`,
				`FILE:6: gossip.profile: must be one of "lan", "local" or "wan", not "fast"`,
				`FILE:8: gossip.probe_timeout: must be shorter than gossip.probe_interval (100ms)`,
				`FILE:11: raft.multiplier: must be 1..10, not 11`,
				`FILE:14: gateway.auth: must be one of "scram" or "trust", not "md5"`,
			},
		},
		{
			name:    "json unknown key and bad port",
			file:    "bad.json",
			content: "{\n  \"data_dir\": \"/var/lib/pgbattery\",\n  \"bind_addr\": \"127.0.0.2\",\n  \"ports\": {\n    \"htp\": 1,\n    \"postgres\": 0\n  },\n  \"server\": \"maybe\"\n}\n",
			want: []string{
				`FILE:5: ports.htp: unknown key (did you mean "http"?)`,
				`FILE:6: ports.postgres: must be 1..65535, not 0`,
				`FILE:8: server: wrong type: a bool is required`,
			},
		},
		{
			name:    "json scalar where a block belongs",
			file:    "scalar.json",
			content: "{\n  \"data_dir\": \"/x\",\n  \"bind_addr\": \"127.0.0.2\",\n  \"ports\": 5,\n  \"tls\": {\"gateway\": \"x\"},\n  \"node_name\": {\"a\": 1}\n}\n",
			want: []string{
				`FILE:4: ports: must be a JSON object (a block), or an array of them`,
				`FILE:5: tls.gateway: must be a JSON object (a block), or an array of them`,
				`FILE:6: node_name: wrong type: string required, but have object`,
			},
		},
		{
			name:    "variables and functions are not allowed",
			file:    "expr.hcl",
			content: base + "node_name = var.x\nlog_level = upper(\"info\")\n",
			want: []string{
				`FILE:4: node_name: Variables not allowed: Variables may not be used here.`,
				`FILE:5: log_level: Function calls not allowed: Functions may not be called here.`,
			},
		},
		{
			name:    "json relative data_dir and bootstrap without server",
			file:    "bad2.json",
			content: "{\n  \"bind_addr\": \"127.0.0.2\",\n  \"data_dir\": \"./data\",\n  \"bootstrap_expect\": 1\n}\n",
			want: []string{
				`FILE:3: data_dir: must be an absolute path, not "./data"`,
				`FILE:4: bootstrap_expect: requires server = true: only servers (raft voters) bootstrap the cluster`,
			},
		},
		{
			name:    "huge number for a string, long value in a message",
			file:    "huge.hcl",
			content: base + "node_name = 1e100000000\ntags = { a = 1e300 }\nlog_level = \"" + strings.Repeat("x", 200) + "\"\n",
			want: []string{
				`FILE:4: node_name: number out of range`,
				`FILE:5: tags: number out of range`,
				`FILE:6: log_level: must be one of "trace", "debug", "info", "warn" or "error", not "` + strings.Repeat("x", 100) + `..."`,
			},
		},
		{
			name:    "reserved tag",
			file:    "tags.hcl",
			content: base + "tags = {\n  zone = \"a\"\n  role = \"primary\"\n}\n",
			want:    []string{`FILE:6: tags.role: "role" is a tag pgbattery sets itself`},
		},
		{
			name:    "bad addresses",
			file:    "addr.hcl",
			content: "data_dir = \"/x\"\nbind_addr = \"localhost\"\nadvertise_addr = \"0.0.0.0\"\n",
			want: []string{
				`FILE:2: bind_addr: "localhost" is not an IP address`,
				`FILE:3: advertise_addr: must be an address other nodes can reach, not 0.0.0.0`,
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, dir, tc.file, tc.content)
			got := loadErrors(t, LoadOpts{ConfigFiles: []string{path}})
			want := make([]string, len(tc.want))
			for i, w := range tc.want {
				want[i] = strings.ReplaceAll(w, "FILE", path)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("errors:\n got: %s\nwant: %s", strings.Join(got, "\n      "), strings.Join(want, "\n      "))
			}
		})
	}
}

func TestLoadErrorsAcrossFilesAndFlags(t *testing.T) {
	dir := t.TempDir()
	a := writeFile(t, dir, "a.hcl", base+"ports {\n  http = 99999\n}\n")
	b := writeFile(t, dir, "b.json", "{\n  \"log_level\": \"loud\"\n}\n")

	var opts LoadOpts
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	AddFlags(fs, &opts)
	if err := fs.Parse([]string{"-config-file", a, "-config-file", b,
		"-gateway-port", "0", "-bootstrap-expect", "3", "-retry-interval", "soon"}); err != nil {
		t.Fatal(err)
	}
	got := loadErrors(t, opts)
	want := []string{
		a + ":5: ports.http: must be 1..65535, not 99999",
		b + ":2: log_level: must be one of \"trace\", \"debug\", \"info\", \"warn\" or \"error\", not \"loud\"",
		"flag -bootstrap-expect: requires server = true: only servers (raft voters) bootstrap the cluster",
		"flag -retry-interval: \"soon\" is not a duration (use e.g. \"500ms\", \"5s\", \"1m\")",
		"flag -gateway-port: must be 1..65535, not 0",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("errors:\n got: %s\nwant: %s", strings.Join(got, "\n      "), strings.Join(want, "\n      "))
	}
}

// TestLoadUnreadableFile: a file that cannot be read is reported, with
// what the other files get wrong by themselves, but no missing keys: the
// unreadable file may well have set them.
func TestLoadUnreadableFile(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.hcl")
	other := writeFile(t, dir, "other.hcl", "ports {\n  htp = 1\n}\n")
	got := loadErrors(t, LoadOpts{ConfigFiles: []string{missing, other}})
	want := []string{
		missing + ": cannot read config file: no such file or directory",
		other + `:2: ports.htp: unknown key (did you mean "http"?)`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("errors:\n got: %q\nwant: %q", got, want)
	}
}

func TestLoadMissingDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nope")
	got := loadErrors(t, LoadOpts{ConfigDirs: []string{dir}})
	if got[0] != dir+": cannot read config directory: no such file or directory" {
		t.Fatalf("got %q", got)
	}
}

func TestDefaults(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "min.hcl", base)
	rt, warnings := mustLoad(t, LoadOpts{ConfigFiles: []string{path}})
	if len(warnings) != 0 {
		t.Errorf("warnings: %q", warnings)
	}
	host, _ := os.Hostname()
	want := &RuntimeConfig{
		NodeName:      host,
		DataDir:       "/var/lib/pgbattery",
		BindAddr:      "127.0.0.2",
		AdvertiseAddr: "127.0.0.2",
		Join:          []string{},
		RetryJoin:     []string{},
		RetryInterval: 5 * time.Second,
		LogLevel:      "info",
		Ports:         Ports{Gateway: 5432, GatewayReadOnly: 5434, Postgres: 5433, HTTP: 8432, Serf: 8301, Raft: 8300},
		Postgres:      PostgresConfig{Enabled: true, OSUser: "postgres", Parameters: map[string]string{}},
		Replication:   ReplicationConfig{Mode: "quorum", MaxLagOnFailover: 16 << 20},
		Gossip:        GossipConfig{Profile: "lan"},
		Raft:          RaftConfig{Multiplier: 1},
		Failover:      FailoverConfig{Lease: DefaultLease, LeaseRenewInterval: DefaultLeaseRenewInterval, HoldDown: DefaultHoldDown, PostgresHangTimeout: DefaultPostgresHangTimeout, MinFreeSpace: DefaultMinFreeSpace, FailoverPriority: 1},
		Gateway:       GatewayConfig{MaxConnections: 1000, HoldTimeout: 30 * time.Second, Auth: "scram", ReadOnlyMaxLag: 16 << 20, ReadOnlyBalance: "round-robin"},
		Switchover:    SwitchoverConfig{DrainTimeout: 5 * time.Second},
		Telemetry:     TelemetryConfig{PrometheusRetentionTime: time.Minute, MetricsPrefix: "pgbattery"},
		TLS:           TLSConfig{Gateway: TLSGatewayConfig{ClientCert: "off"}},
		Limits:        LimitsConfig{HTTPMaxRPS: DefaultHTTPMaxRPS, HTTPBurst: DefaultHTTPBurst},
		Tags:          map[string]string{},
		ConfigFiles:   []string{path},
	}
	if !reflect.DeepEqual(rt, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", rt, want)
	}
}

// TestAdvertiseFromUnspecifiedBind: with bind_addr 0.0.0.0 the advertise
// address is the first private IP, or an error naming the fix.
func TestAdvertiseFromUnspecifiedBind(t *testing.T) {
	path := writeFile(t, t.TempDir(), "any.hcl", "data_dir = \"/x\"\nbind_addr = \"0.0.0.0\"\n")
	ip, err := sockaddr.GetPrivateIP()
	if err != nil {
		t.Skipf("sockaddr cannot list interfaces here: %v", err)
	}
	rt, _, lerr := Load(LoadOpts{ConfigFiles: []string{path}})
	if ip == "" {
		if lerr == nil || !strings.Contains(lerr.Error(), "advertise_addr: not set, bind_addr is 0.0.0.0 and no private IPv4 address was found") {
			t.Fatalf("got %v", lerr)
		}
		return
	}
	if lerr != nil {
		t.Fatal(lerr)
	}
	if rt.AdvertiseAddr != ip {
		t.Fatalf("advertise %q, want %q", rt.AdvertiseAddr, ip)
	}
}

func TestMergeFilesDirAndFlags(t *testing.T) {
	dir := t.TempDir()
	first := writeFile(t, dir, "first.hcl", `
node_name  = "first"
data_dir   = "/data/first"
bind_addr  = "127.0.0.2"
join       = ["127.0.0.3"]
retry_join = ["127.0.0.4"]
tags = { rack = "r1", zone = "z1" }
ports {
  http = 9000
  serf = 9001
}
postgres {
  parameters = { shared_buffers = "128MB", work_mem = "4MB" }
  hba = ["host all all 10.0.0.0/8 scram-sha-256"]
}
`)
	second := writeFile(t, dir, "second.json", `{
  "node_name": "second",
  "retry_join": ["127.0.0.5:8301"],
  "tags": {"zone": "z2"},
  "ports": {"http": 9100},
  "postgres": {"parameters": {"work_mem": "8MB"}, "hba": ["hostssl all all 0.0.0.0/0 scram-sha-256"]}
}`)
	confDir := filepath.Join(dir, "conf.d")
	writeFile(t, confDir, "20-b.hcl", "log_level = \"debug\"\nretry_join = [\"[::1]:8301\"]\n")
	writeFile(t, confDir, "10-a.json", `{"log_level": "warn", "server": true}`)
	writeFile(t, confDir, "README.txt", "not config")
	writeFile(t, confDir, "sub/x.hcl", "this is ignored: subdirectories are not read")

	var opts LoadOpts
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	AddFlags(fs, &opts)
	err := fs.Parse([]string{
		"-config-file=" + first, "-config-file=" + second, "-config-dir=" + confDir,
		"-node=flagged", "-retry-join=127.0.0.6", "-http-port=9200", "-data-dir=rel/data",
	})
	if err != nil {
		t.Fatal(err)
	}
	rt, _ := mustLoad(t, opts)

	cwd, _ := os.Getwd()
	checks := []struct {
		name      string
		got, want any
	}{
		{"node_name (flag wins)", rt.NodeName, "flagged"},
		{"data_dir (flag, made absolute)", rt.DataDir, filepath.Join(cwd, "rel/data")},
		{"join", rt.Join, []string{"127.0.0.3"}},
		{"retry_join appends in order", rt.RetryJoin, []string{"127.0.0.4", "127.0.0.5:8301", "[::1]:8301", "127.0.0.6"}},
		{"tags merge", rt.Tags, map[string]string{"rack": "r1", "zone": "z2"}},
		{"ports.http (flag wins)", rt.Ports.HTTP, 9200},
		{"ports.serf (first file)", rt.Ports.Serf, 9001},
		{"parameters merge", rt.Postgres.Parameters, map[string]string{"shared_buffers": "128MB", "work_mem": "8MB"}},
		{"hba appends", rt.Postgres.HBA, []string{"host all all 10.0.0.0/8 scram-sha-256", "hostssl all all 0.0.0.0/0 scram-sha-256"}},
		{"log_level (dir, lexical order)", rt.LogLevel, "debug"},
		{"server (dir)", rt.Server, true},
		{"files", rt.ConfigFiles, []string{first, second, filepath.Join(confDir, "10-a.json"), filepath.Join(confDir, "20-b.hcl")}},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}

	// Loading again with the same options (what SIGHUP does) gives the
	// same result: Load does not alias or modify the flag config.
	again, _ := mustLoad(t, opts)
	if !reflect.DeepEqual(rt, again) {
		t.Errorf("second load differs:\n%+v\n%+v", rt, again)
	}
}

func TestBlockRepeatedInOneFileMerges(t *testing.T) {
	path := writeFile(t, t.TempDir(), "twice.hcl", base+"ports {\n  http = 9000\n}\nports {\n  serf = 9001\n}\n")
	rt, _ := mustLoad(t, LoadOpts{ConfigFiles: []string{path}})
	if rt.Ports.HTTP != 9000 || rt.Ports.Serf != 9001 {
		t.Fatalf("ports %+v", rt.Ports)
	}
}

func TestConfigFileEntryMayBeADirectory(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "a.hcl", base)
	writeFile(t, dir, "b.hcl", "node_name = \"from-dir\"\n")
	rt, _ := mustLoad(t, LoadOpts{ConfigFiles: []string{dir}})
	if rt.NodeName != "from-dir" {
		t.Fatalf("node_name %q", rt.NodeName)
	}
}

func TestWarnings(t *testing.T) {
	path := writeFile(t, t.TempDir(), "warn.hcl", base+"server = true\nbootstrap_expect = 4\n")
	_, warnings := mustLoad(t, LoadOpts{ConfigFiles: []string{path}})
	want := path + ":5: bootstrap_expect: 4 voters survive no more failures than 3 would: use an odd number"
	if len(warnings) != 1 || warnings[0] != want {
		t.Fatalf("warnings %q, want %q", warnings, want)
	}
}

func TestBinDirAndOSUser(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	writeFile(t, bin, "postgres", "#!/bin/sh\n")
	if err := os.Chmod(filepath.Join(bin, "postgres"), 0o755); err != nil {
		t.Fatal(err)
	}
	path := writeFile(t, dir, "pg.hcl", base+"postgres {\n  bin_dir = \""+bin+"\"\n  os_user = \"postgres\"\n}\n")
	rt, _ := mustLoad(t, LoadOpts{ConfigFiles: []string{path}})
	if rt.Postgres.BinDir != bin {
		t.Fatalf("bin_dir %q", rt.Postgres.BinDir)
	}

	bad := writeFile(t, dir, "user.hcl", base+"postgres {\n  os_user = \"no-such-user-pgbattery\"\n}\n")
	rt, warnings, err := Load(LoadOpts{ConfigFiles: []string{bad}})
	if os.Geteuid() == 0 {
		want := bad + `:5: postgres.os_user: no OS user "no-such-user-pgbattery": PostgreSQL refuses to run as root, so the agent runs it as this user`
		if err == nil || err.Error() != want {
			t.Fatalf("got %v, want %s", err, want)
		}
		return
	}
	if err != nil || rt == nil || len(warnings) != 1 || !strings.Contains(warnings[0], "postgres.os_user: ignored") {
		t.Fatalf("as non-root: err %v, warnings %q", err, warnings)
	}
}

// TestFullExample loads the example of docs/config.md, in HCL and in JSON,
// and checks every value arrives.
func TestFullExample(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	writeFile(t, bin, "postgres", "#!/bin/sh\n")
	if err := os.Chmod(filepath.Join(bin, "postgres"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"ca.pem", "cert.pem", "key.pem", "gw-cert.pem", "gw-key.pem"} {
		writeFile(t, dir, f, "x")
	}
	subst := strings.NewReplacer("@BIN@", bin, "@DIR@", dir)

	want := &RuntimeConfig{
		NodeName:        "node1",
		DataDir:         "/var/lib/pgbattery",
		BindAddr:        "127.0.0.2",
		AdvertiseAddr:   "127.0.0.2",
		Server:          true,
		BootstrapExpect: 3,
		Join:            []string{"127.0.0.3"},
		RetryJoin:       []string{"127.0.0.3", "127.0.0.4:8301", "[::1]:8301"},
		RetryInterval:   2 * time.Second,
		RetryMax:        10,
		Rejoin:          true,
		Encrypt:         "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
		EncryptKey:      []byte("0123456789abcdef0123456789abcdef"),
		LogLevel:        "debug",
		LogJSON:         true,
		Ports:           Ports{Gateway: 6432, GatewayReadOnly: -1, Postgres: 6433, HTTP: 9432, Serf: 9301, Raft: 9300},
		Postgres: PostgresConfig{
			Enabled:    true,
			BinDir:     bin,
			OSUser:     "postgres",
			Parameters: map[string]string{"shared_buffers": "256MB", "max_connections": "200", "log_min_duration_statement": "250ms", "pg_stat_statements.max": "5000"},
			HBA:        []string{"hostssl all all 10.0.0.0/8 scram-sha-256"},
		},
		Replication: ReplicationConfig{Mode: "strict", MaxLagOnFailover: 32 << 20},
		Gossip:      GossipConfig{Profile: "local", ProbeInterval: 200 * time.Millisecond, ProbeTimeout: 100 * time.Millisecond, SuspicionMult: 3, GossipInterval: 50 * time.Millisecond, RetransmitMult: 4},
		Raft:        RaftConfig{Multiplier: 2},
		Failover:    FailoverConfig{Lease: 8 * time.Second, LeaseRenewInterval: 2 * time.Second, HoldDown: 10 * time.Second, PostgresHangTimeout: DefaultPostgresHangTimeout, MinFreeSpace: 128 << 20, NoFailover: true, FailoverPriority: 5},
		Gateway:     GatewayConfig{MaxConnections: 500, HoldTimeout: 20 * time.Second, IdleTimeout: 10 * time.Minute, Auth: "trust", ReadOnlyMaxLag: 1 << 30, ReadOnlyBalance: "least-connections"},
		Switchover:  SwitchoverConfig{DrainTimeout: 15 * time.Second},
		Telemetry:   TelemetryConfig{PrometheusRetentionTime: 2 * time.Minute, StatsdAddress: "127.0.0.1:8125", StatsiteAddress: "127.0.0.1:8126", DisableHostname: true, MetricsPrefix: "pgb"},
		TLS: TLSConfig{
			CAFile: filepath.Join(dir, "ca.pem"), CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem"),
			VerifyIncoming: true,
			Gateway: TLSGatewayConfig{CertFile: filepath.Join(dir, "gw-cert.pem"), KeyFile: filepath.Join(dir, "gw-key.pem"), Required: true,
				ClientCAFile: filepath.Join(dir, "ca.pem"), ClientCert: "verify-full"},
			HTTP: TLSHTTPConfig{Enabled: true},
		},
		ACL:    ACLConfig{Token: "s3cret", ReadsRequireToken: true},
		Limits: LimitsConfig{HTTPMaxRPS: 50.5, HTTPBurst: 80},
		Tags:   map[string]string{"rack": "r1", "dc": "east"},
	}

	for _, name := range []string{"full.hcl", "full.json"} {
		t.Run(name, func(t *testing.T) {
			src, err := os.ReadFile(filepath.Join("testdata", name))
			if err != nil {
				t.Fatal(err)
			}
			path := writeFile(t, dir, name, subst.Replace(string(src)))
			rt, warnings := mustLoad(t, LoadOpts{ConfigFiles: []string{path}})
			if len(warnings) != 0 {
				t.Errorf("warnings: %q", warnings)
			}
			w := *want
			w.ConfigFiles = []string{path}
			if !reflect.DeepEqual(rt, &w) {
				t.Errorf("got\n%+v\nwant\n%+v", rt, &w)
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	good := map[string]int64{"0": 0, "1024": 1024, "16MB": 16 << 20, "16 MiB": 16 << 20, "1kB": 1024, "2GB": 2 << 30, "1TB": 1 << 40, "7B": 7}
	for in, want := range good {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("%q: %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "MB", "-1", "1.5MB", "16XB", "99999999999999999999", "9000000TB"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestCheckJoinAddress(t *testing.T) {
	for _, ok := range []string{"10.0.0.1", "10.0.0.1:8301", "node1", "node1.example.com:8301", "::1", "[::1]", "[fd00::2]:8301"} {
		if err := checkJoinAddress(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ":8301", "host:0", "host:x", "a:b:c", "[::1", "[zz]"} {
		if err := checkJoinAddress(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestSuggest(t *testing.T) {
	valid := []string{"data_dir", "node_name", "bind_addr"}
	if s := suggest("datadir", valid); s != "data_dir" {
		t.Errorf("datadir -> %q", s)
	}
	if s := suggest("xyzzy", valid); s != "" {
		t.Errorf("xyzzy -> %q", s)
	}
}

// FuzzLoad feeds arbitrary bytes as an HCL and as a JSON file: Load must
// return a config or errors, never panic.
func FuzzLoad(f *testing.F) {
	f.Add([]byte(base))
	f.Add([]byte("ports {\n  http = \n}\n"))
	f.Add([]byte(`{"ports": {"http": 1}, "tags": {"a": [1]}}`))
	f.Add([]byte("postgres {\n  parameters = { a = 1, b = true }\n  hba = [\"host\"]\n}\nretry_join = [null]\n"))
	f.Add([]byte("tls {\n  gateway {\n    required = true\n  }\n}\nx = y\n"))
	f.Add([]byte("replication { max_lag_on_failover = 18446744073709551616 }"))
	f.Add([]byte(`{"node_name": 1e999999, "gossip": [{"profile": "lan"}, {"profile": 1}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, json := range []bool{false, true} {
			rt, _, errs := build([]source{{name: "fuzz", data: data, json: json}}, nil, true)
			if len(errs) == 0 && rt == nil {
				t.Fatal("no config and no error")
			}
			for _, e := range errs {
				if e.Msg == "" {
					t.Fatalf("empty message: %+v", e)
				}
			}
		}
	})
}
