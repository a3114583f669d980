package pgctl

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgbattery/pgbattery/test/testutil"
)

func TestLSN(t *testing.T) {
	for _, c := range []struct {
		in   string
		want LSN
	}{
		{"0/3000060", 0x3000060},
		{"16/B374D848", 0x16B374D848},
		{"0/0", 0},
		{"FFFFFFFF/FFFFFFFF", ^LSN(0)},
	} {
		got, err := ParseLSN(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseLSN(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
		if got.String() != c.in {
			t.Errorf("LSN(%#x).String() = %q, want %q", uint64(c.want), got.String(), c.in)
		}
	}
	b, err := json.Marshal(struct{ L LSN }{0x16B374D848})
	if err != nil || string(b) != `{"L":"16/B374D848"}` {
		t.Fatalf("JSON: %s, %v", b, err)
	}
	var back struct{ L LSN }
	if err := json.Unmarshal(b, &back); err != nil || back.L != 0x16B374D848 {
		t.Fatalf("JSON round trip: %v, %v", back.L, err)
	}
	// The number form older agents wrote (Raft log, snapshots, probes) still reads.
	for in, want := range map[string]LSN{`{"L":97500059720}`: 0x16B374D848, `{"L":0}`: 0, `{"L":null}`: 7, `{}`: 7} {
		back := struct{ L LSN }{L: 7}
		if err := json.Unmarshal([]byte(in), &back); err != nil || back.L != want {
			t.Errorf("json.Unmarshal(%s) = %v, %v; want %v", in, back.L, err, want)
		}
	}
	for _, bad := range []string{`{"L":-1}`, `{"L":1.5}`, `{"L":true}`, `{"L":"3000060"}`, `{"L":18446744073709551616}`} {
		var back struct{ L LSN }
		if err := json.Unmarshal([]byte(bad), &back); err == nil {
			t.Errorf("json.Unmarshal(%s) accepted: %v", bad, back.L)
		}
	}
	for _, bad := range []string{"", "3000060", "0/", "/1", "G/1", "100000000/0", "0/100000000"} {
		if _, err := ParseLSN(bad); err == nil {
			t.Errorf("ParseLSN(%q) accepted", bad)
		}
	}
}

func TestParsePostgresVersion(t *testing.T) {
	for _, c := range []struct {
		out   string
		major int
		full  string
	}{
		{"postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n", 15, "15.18"},
		{"postgres (PostgreSQL) 17devel\n", 17, "17devel"},
		{"postgres (PostgreSQL) 16beta1", 16, "16beta1"},
		{"postgres (PostgreSQL) 9.6.24", 9, "9.6.24"},
	} {
		major, full, err := parsePostgresVersion(c.out)
		if err != nil || major != c.major || full != c.full {
			t.Errorf("parsePostgresVersion(%q) = %d, %q, %v", c.out, major, full, err)
		}
	}
	if _, _, err := parsePostgresVersion("bash: postgres: command not found"); err == nil {
		t.Error("garbage accepted")
	}
}

// fakeBinDir makes a directory whose postgres prints the given version and
// which holds the other programs pgctl requires.
func fakeBinDir(t *testing.T, root, ver string) string {
	t.Helper()
	dir := filepath.Join(root, ver, "bin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range requiredBinaries {
		script := "#!/bin/sh\nexit 0\n"
		if name == "postgres" {
			script = "#!/bin/sh\necho 'postgres (PostgreSQL) " + ver + "'\n"
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestFindBinaries(t *testing.T) {
	ctx := context.Background()
	t.Run("real", func(t *testing.T) {
		b, err := FindBinaries(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		if !majorSupported(b.Major) || b.Dir == "" {
			t.Fatalf("unexpected %+v", b)
		}
		b2, err := FindBinaries(ctx, b.Dir)
		if err != nil || *b2 != *b {
			t.Fatalf("explicit bin_dir: %+v, %v", b2, err)
		}
	})
	t.Run("bin_dir missing", func(t *testing.T) {
		_, err := FindBinaries(ctx, filepath.Join(t.TempDir(), "nope"))
		if err == nil || !strings.Contains(err.Error(), "no postgres binary") || !strings.Contains(err.Error(), "apt-get install postgresql-15") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("bin_dir relative", func(t *testing.T) {
		_, err := FindBinaries(ctx, "usr/lib/postgresql/15/bin")
		if err == nil || !strings.Contains(err.Error(), "absolute") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("bin_dir without postgres", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "initdb"), []byte("#!/bin/sh\n"), 0o755)
		_, err := FindBinaries(ctx, dir)
		if err == nil || !strings.Contains(err.Error(), "no postgres binary") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("unsupported major", func(t *testing.T) {
		dir := fakeBinDir(t, t.TempDir(), "9.6.24")
		_, err := FindBinaries(ctx, dir)
		if err == nil || !strings.Contains(err.Error(), "not supported") || !strings.Contains(err.Error(), "apt-get install") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("incomplete install", func(t *testing.T) {
		dir := fakeBinDir(t, t.TempDir(), "16.2")
		os.Remove(filepath.Join(dir, "pg_rewind"))
		_, err := FindBinaries(ctx, dir)
		if err == nil || !strings.Contains(err.Error(), "lacks pg_rewind") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("none found", func(t *testing.T) {
		t.Setenv("PATH", t.TempDir())
		_, err := findBinaries(ctx, "", filepath.Join(t.TempDir(), "*", "bin"))
		if err == nil || !strings.Contains(err.Error(), "no PostgreSQL server binaries found") || !strings.Contains(err.Error(), "apt-get install postgresql-15") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("newest in search path", func(t *testing.T) {
		t.Setenv("PATH", t.TempDir())
		root := t.TempDir()
		fakeBinDir(t, root, "14.1")
		want := fakeBinDir(t, root, "16.2")
		fakeBinDir(t, root, "9.6")
		os.MkdirAll(filepath.Join(root, "18", "bin"), 0o755) // no server in it
		b, err := findBinaries(ctx, "", filepath.Join(root, "*", "bin"))
		if err != nil || b.Dir != want || b.Major != 16 {
			t.Fatalf("got %+v, %v; want %s", b, err, want)
		}
	})
}

func TestSecrets(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "secrets")
	s1, err := LoadOrCreateSecret(dir, "replication")
	if err != nil {
		t.Fatal(err)
	}
	if len(s1) < 40 || validPassword(s1) != nil {
		t.Fatalf("weak or invalid secret %q", s1)
	}
	fi, err := os.Stat(filepath.Join(dir, "replication"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret file mode: %v %v", fi.Mode(), err)
	}
	if di, _ := os.Stat(dir); di.Mode().Perm() != 0o700 {
		t.Fatalf("secrets dir mode %v", di.Mode())
	}
	s2, err := LoadOrCreateSecret(dir, "replication")
	if err != nil || s2 != s1 {
		t.Fatalf("reload gave a different secret: %v", err)
	}
	if other, _ := LoadOrCreateSecret(dir, "superuser"); other == s1 {
		t.Fatal("two secrets are equal")
	}
	if err := StoreSecret(dir, "replication", "x"); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("overwrite: %v", err)
	}
	os.Chmod(filepath.Join(dir, "replication"), 0o644)
	if _, err := LoadSecret(dir, "replication"); err == nil || !strings.Contains(err.Error(), "0644") {
		t.Fatalf("world-readable secret accepted: %v", err)
	}
	if _, err := LoadSecret(dir, "../etc/passwd"); err == nil {
		t.Fatal("path traversal accepted")
	}
	c := Credentials{User: "u", Password: s1}
	for _, f := range []string{c.String(), c.GoString()} {
		if strings.Contains(f, s1) {
			t.Fatal("Credentials formatting leaks the password")
		}
	}
}

func TestScramVerifier(t *testing.T) {
	v, err := scramVerifier("secret-password-123")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(v, "SCRAM-SHA-256$4096:") || strings.Count(v, "$") != 2 || strings.Contains(v, "secret") {
		t.Fatalf("bad verifier %q", v)
	}
	// The real proof that PostgreSQL accepts it is that the replication
	// role, created with it, authenticates in TestReplication.
}

func TestConfQuoting(t *testing.T) {
	for _, v := range []string{"", "plain", `it's`, `back\slash`, `ANY 1 ("a b", "c""d")`, `host='x' passfile='/p'`} {
		got, _ := unquoteConfValue(quoteConfValue(v))
		if got != v {
			t.Errorf("round trip of %q gave %q", v, got)
		}
	}
	if got := FormatSynchronousStandbyNames(SyncAny, 1, []string{"node2", `we"ird`}); got != `ANY 1 ("node2", "we""ird")` {
		t.Errorf("got %s", got)
	}
	if got := FormatSynchronousStandbyNames(SyncFirst, 2, []string{"a", "b"}); got != `FIRST 2 ("a", "b")` {
		t.Errorf("got %s", got)
	}
	if got := FormatSynchronousStandbyNames(SyncAny, 0, []string{"a"}); got != "" {
		t.Errorf("k=0 gave %q", got)
	}
	if got := connString("host", "h", "password", `p'w\`, "empty", ""); got != `host='h' password='p\'w\\'` {
		t.Errorf("connString gave %s", got)
	}
}

func TestSlotNames(t *testing.T) {
	for _, n := range []string{"node-1", "Node.Two", strings.Repeat("x", 80), "ünï"} {
		s := SlotNameFor(n)
		if err := ValidateSlotName(s); err != nil {
			t.Errorf("SlotNameFor(%q) = %q: %v", n, s, err)
		}
	}
	for _, bad := range []string{"", "Upper", "with-dash", strings.Repeat("a", 64)} {
		if ValidateSlotName(bad) == nil {
			t.Errorf("ValidateSlotName(%q) accepted", bad)
		}
	}
}

func TestParseControlData(t *testing.T) {
	out := `pg_control version number:            1300
Catalog version number:               202209061
Database system identifier:           7311234567890123456
Database cluster state:               shut down
pg_control last modified:             Mon Nov 23 19:00:00 2026
Latest checkpoint location:           0/1734E90
Latest checkpoint's REDO location:    0/1734E90
Latest checkpoint's REDO WAL file:    000000010000000000000001
Latest checkpoint's TimeLineID:       1
Minimum recovery ending location:     0/0
Min recovery ending loc's timeline:   0
wal_log_hints setting:                on
Data page checksum version:           1
`
	cd, err := parseControlData(out)
	if err != nil {
		t.Fatal(err)
	}
	if cd.SystemIdentifier != 7311234567890123456 || cd.State != StateShutDown || cd.Timeline != 1 ||
		cd.CheckpointLSN != 0x1734E90 || !cd.DataChecksums || !cd.WALLogHints || !cd.CleanShutdown() || cd.ControlVersion != 1300 {
		t.Fatalf("parsed %+v", cd)
	}
	if _, err := parseControlData("garbage"); err == nil {
		t.Fatal("garbage accepted")
	}
}

func TestConfigValidation(t *testing.T) {
	bins := &Binaries{Dir: "/usr/lib/postgresql/15/bin", Major: 15}
	good := func() Config {
		return Config{
			Binaries: bins, Dir: "/var/lib/pgbattery/postgres", ListenAddr: "127.0.0.2",
			Superuser: testSuper, Replication: testRepl, OSUser: testutil.PostgresOSUser,
		}
	}
	if _, err := NewInstance(good()); err != nil {
		t.Fatalf("good config refused: %v", err)
	}
	for name, c := range map[string]struct {
		mod  func(*Config)
		want string
	}{
		"no dir":           {func(c *Config) { c.Dir = "" }, "Dir is required"},
		"relative dir":     {func(c *Config) { c.Dir = "var/pg" }, "absolute"},
		"no listen":        {func(c *Config) { c.ListenAddr = "" }, "ListenAddr"},
		"bad port":         {func(c *Config) { c.Port = 70000 }, "port 70000"},
		"short password":   {func(c *Config) { c.Replication.Password = "short" }, "at least 16"},
		"blank password":   {func(c *Config) { c.Superuser.Password = "has a blank in it 12345" }, "printable ASCII"},
		"same roles":       {func(c *Config) { c.Replication.User = c.Superuser.User }, "must differ"},
		"bad role":         {func(c *Config) { c.Superuser.User = "a'b" }, "superuser role"},
		"reserved param":   {func(c *Config) { c.Parameters = map[string]string{"port": "1"} }, "port cannot be set"},
		"reserved param 2": {func(c *Config) { c.Parameters = map[string]string{"Primary_Conninfo": "x"} }, "cannot be set"},
		"bad param name":   {func(c *Config) { c.Parameters = map[string]string{"a b": "1"} }, "not a valid setting name"},
		"multiline value":  {func(c *Config) { c.Parameters = map[string]string{"work_mem": "1\n2"} }, "single line"},
		"multiline hba":    {func(c *Config) { c.HBA = []string{"host all all all scram-sha-256\nlocal all all trust"} }, "hba[0]"},
		"long socket path": {func(c *Config) { c.Dir = "/" + strings.Repeat("d", 100) }, "too long"},
		"no binaries":      {func(c *Config) { c.Binaries = nil }, "Binaries"},
	} {
		cfg := good()
		c.mod(&cfg)
		_, err := NewInstance(cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error containing %q", name, err, c.want)
		}
	}
}

func TestManagedConfRoundTrip(t *testing.T) {
	n := newTestNode(t, "conf", true)
	if err := n.Follow(testCtx(t, 10e9), Peer{Host: "127.0.0.9", Port: 5433}, FollowOptions{Slot: "pgbattery_conf"}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.SetSynchronousStandbyNames(testCtx(t, 10e9), `ANY 1 ("a", "b")`); err != nil {
		t.Fatal(err)
	}
	if err := n.SetFenced(testCtx(t, 10e9), true); err != nil {
		t.Fatal(err)
	}
	if !n.IsStandbyConfigured() {
		t.Fatal("no standby.signal after Follow")
	}
	// A new Instance (a restarted agent) finds the state again.
	again, err := NewInstance(n.Config())
	if err != nil {
		t.Fatal(err)
	}
	ci, slot := again.FollowTarget()
	if !strings.Contains(ci, "host='127.0.0.9'") || !strings.Contains(ci, "application_name='conf'") || slot != "pgbattery_conf" {
		t.Fatalf("follow target lost: %q %q", ci, slot)
	}
	if strings.Contains(ci, "password") || !strings.Contains(ci, "passfile=") {
		t.Fatalf("primary_conninfo must name the passfile, not a password: %s", ci)
	}
	if !again.Fenced() || again.state.SynchronousStandbyNames != `ANY 1 ("a", "b")` {
		t.Fatalf("state lost: %+v", again.state)
	}
	// Managed keys set by ALTER SYSTEM are removed; others stay.
	auto := filepath.Join(n.DataDir(), autoConfFile)
	os.WriteFile(auto, []byte("# Do not edit this file manually!\nwork_mem = '8MB'\nprimary_conninfo = 'host=elsewhere'\n"), 0o600)
	if err := n.writeConfig(n.state); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(auto)
	if strings.Contains(string(b), "elsewhere") || !strings.Contains(string(b), "work_mem") {
		t.Fatalf("postgresql.auto.conf not sanitised: %s", b)
	}
	// pg_hba never trusts, and admits both agent roles.
	hba, _ := os.ReadFile(filepath.Join(n.DataDir(), "pg_hba.conf"))
	if strings.Contains(string(hba), "trust") || !strings.Contains(string(hba), `host    replication  "pgbattery_replication"  all  scram-sha-256`) {
		t.Fatalf("pg_hba.conf:\n%s", hba)
	}
	pc, _ := os.ReadFile(filepath.Join(n.DataDir(), "postgresql.conf"))
	if c := strings.Count(string(pc), "include 'postgresql.pgbattery.conf'"); c != 1 {
		t.Fatalf("include line appears %d times", c)
	}
}

func TestParseTimelineHistory(t *testing.T) {
	h := "1\t0/3000158\tno recovery target specified\n\n2\t0/5000000\tno recovery target specified\n"
	e, err := parseTimelineHistory(h)
	if err != nil || len(e) != 2 || e[0] != (HistoryEntry{1, 0x3000158}) || e[1] != (HistoryEntry{2, 0x5000000}) {
		t.Fatalf("parsed %+v, %v", e, err)
	}
	for _, bad := range []string{"x 0/1 r", "1 nolsn r", "1"} {
		if _, err := parseTimelineHistory(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}
