package doctor

import (
	"strings"
	"testing"
	"time"
)

func on(b bool) *bool { return &b }

var stdSettings = map[string]string{
	"max_connections": "100", "max_locks_per_transaction": "64", "max_prepared_transactions": "0",
	"max_wal_senders": "10", "max_worker_processes": "8",
}

func settings(over map[string]string) map[string]string {
	s := map[string]string{}
	for k, v := range stdSettings {
		s[k] = v
	}
	for k, v := range over {
		s[k] = v
	}
	return s
}

func pgReport(name, role string) *Report {
	return &Report{
		Node: name, Version: "0.1.0", Server: true, GossipEncrypted: true, RPCTLS: true, HTTPTLS: true,
		Postgres: true, PGMajor: 15, PGVersion: "15.8", Running: true, Role: role,
		Settings: settings(nil), DataChecksums: on(true), WALLogHints: on(true),
		WALDiskFree: 50 << 30, WALDiskTotal: 100 << 30,
	}
}

// healthy is a 3-node cluster where every check passes.
func healthy() Input {
	p := pgReport("n1", "primary")
	p.Standbys = []Standby{{Name: "n2", State: "streaming", SyncState: "quorum"}, {Name: "n3", State: "streaming", SyncState: "quorum"}}
	p.Slots = []Slot{{Name: "pgbattery_n2", Active: true, RetainedBytes: 1 << 20}, {Name: "pgbattery_n3", Active: true, RetainedBytes: 2 << 20}}
	return Input{
		Asker:   "n1",
		Members: []Member{{Name: "n1", Voter: true}, {Name: "n2", Voter: true}, {Name: "n3", Voter: true}},
		Primary: "n1", SyncMode: "quorum", SyncStandbys: []string{"n2", "n3"}, SyncK: 1,
		Raft:       []RaftServer{{Name: "n1", Voter: true}, {Name: "n2", Voter: true}, {Name: "n3", Voter: true}},
		RaftLeader: "n1",
		Nodes: map[string]NodeResult{
			"n1": {Report: p},
			"n2": {Report: pgReport("n2", "standby"), Offset: 3 * time.Millisecond, RTT: 2 * time.Millisecond},
			"n3": {Report: pgReport("n3", "standby"), Offset: -4 * time.Millisecond, RTT: 2 * time.Millisecond},
		},
	}
}

func byID(checks []Check) map[string]Check {
	m := map[string]Check{}
	for _, c := range checks {
		m[c.ID] = c
	}
	return m
}

func TestHealthyClusterAllOK(t *testing.T) {
	checks := Evaluate(healthy(), DefaultOptions())
	if len(checks) != 14 {
		t.Fatalf("%d checks, want 14", len(checks))
	}
	for _, c := range checks {
		if c.Status != OK {
			t.Errorf("%s: %s: %s", c.ID, c.Status, c.Summary)
		}
		if c.Advice != "" {
			t.Errorf("%s is ok but carries advice", c.ID)
		}
	}
	if w := Worst(checks); w != OK {
		t.Errorf("worst %s", w)
	}
}

func TestChecksDetectProblems(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(in *Input, o *Options)
		id     string
		want   Status
		says   string // in the summary or the details
	}{
		{"a node on another PostgreSQL major", func(in *Input, o *Options) { in.Nodes["n3"].Report.PGMajor = 16 }, IDPostgresMajor, Fail, "16: n3"},
		{"mixed agent versions", func(in *Input, o *Options) { in.Nodes["n2"].Report.Version = "0.2.0" }, IDAgentVersion, Warn, "0.2.0: n2"},
		{"a missing standby: not connected", func(in *Input, o *Options) {
			p := in.Nodes["n1"].Report
			p.Standbys = p.Standbys[:1]
		}, IDStandbys, Fail, "n3: not connected"},
		{"a missing standby: stopped", func(in *Input, o *Options) { in.Nodes["n2"].Report.Running = false }, IDStandbys, Fail, "n2: PostgreSQL is not running"},
		{"a missing standby: agent down", func(in *Input, o *Options) { in.Nodes["n3"] = NodeResult{Error: "connection refused"} }, IDStandbys, Fail, "n3: did not answer"},
		{"an agent down", func(in *Input, o *Options) { in.Nodes["n3"] = NodeResult{Error: "connection refused"} }, IDReachable, Fail, "connection refused"},
		{"an agent that could not read its PostgreSQL", func(in *Input, o *Options) {
			in.Nodes["n2"].Report.Problems = []string{"status: timeout"}
		}, IDReachable, Warn, "n2: status: timeout"},
		{"an agent down leaves quorum at the minimum", func(in *Input, o *Options) { in.Nodes["n3"] = NodeResult{Error: "timeout"} }, IDRaftQuorum, Warn, "2 of 3"},
		{"no raft leader", func(in *Input, o *Options) { in.RaftLeader = "" }, IDRaftQuorum, Fail, "no raft leader"},
		{"quorum lost", func(in *Input, o *Options) {
			in.Nodes["n2"] = NodeResult{Error: "x"}
			in.Nodes["n3"] = NodeResult{Error: "x"}
		}, IDRaftQuorum, Fail, "only 1 of 3"},
		{"an even number of voters (4)", func(in *Input, o *Options) {
			in.Members = append(in.Members, Member{Name: "n4", Voter: true})
			in.Raft = append(in.Raft, RaftServer{Name: "n4", Voter: true})
			in.Nodes["n4"] = NodeResult{Report: pgReport("n4", "standby")}
		}, IDRaftVoters, Fail, "even"},
		{"two voters", func(in *Input, o *Options) { in.Raft[2].Voter = false }, IDRaftVoters, Fail, "2 voters"},
		{"two plus a witness is fine", func(in *Input, o *Options) {
			in.Members[2].Witness = true
			in.Nodes["n3"] = NodeResult{Report: &Report{Node: "n3", Version: "0.1.0", GossipEncrypted: true, RPCTLS: true, HTTPTLS: true}}
			in.SyncStandbys = []string{"n2"}
			in.Nodes["n1"].Report.Standbys = in.Nodes["n1"].Report.Standbys[:1]
		}, IDRaftVoters, OK, "1 a witness"},
		{"a single voter", func(in *Input, o *Options) { in.Raft = in.Raft[:1] }, IDRaftVoters, Warn, "single"},
		{"a clock offset above the threshold", func(in *Input, o *Options) {
			nr := in.Nodes["n2"]
			nr.Offset = 900 * time.Millisecond
			in.Nodes["n2"] = nr
		}, IDClock, Fail, "n2: clock more than 500ms"},
		{"a negative clock offset above the threshold", func(in *Input, o *Options) {
			nr := in.Nodes["n3"]
			nr.Offset = -2 * time.Second
			in.Nodes["n3"] = nr
		}, IDClock, Fail, "n3"},
		{"an offset within the round trip's uncertainty", func(in *Input, o *Options) {
			nr := in.Nodes["n2"]
			nr.Offset, nr.RTT = 700*time.Millisecond, 600*time.Millisecond
			in.Nodes["n2"] = nr
		}, IDClock, OK, "within"},
		{"a lower threshold", func(in *Input, o *Options) { o.ClockThreshold = time.Millisecond }, IDClock, Fail, "more than 1ms"},
		{"wal_log_hints and checksums off", func(in *Input, o *Options) {
			r := in.Nodes["n2"].Report
			r.DataChecksums, r.WALLogHints = on(false), on(false)
		}, IDRewind, Fail, "n2"},
		{"checksums off, wal_log_hints on", func(in *Input, o *Options) { in.Nodes["n2"].Report.DataChecksums = on(false) }, IDRewind, OK, "can work"},
		{"gossip not encrypted", func(in *Input, o *Options) {
			for _, n := range in.Nodes {
				n.Report.GossipEncrypted = false
			}
		}, IDGossipEncrypt, Warn, "not encrypted"},
		{"gossip encrypted on some nodes", func(in *Input, o *Options) { in.Nodes["n2"].Report.GossipEncrypted = false }, IDGossipEncrypt, Fail, "some nodes"},
		{"no TLS", func(in *Input, o *Options) {
			for _, n := range in.Nodes {
				n.Report.RPCTLS, n.Report.HTTPTLS = false, false
			}
		}, IDTLS, Warn, "HTTP API without TLS: n1, n2, n3"},
		{"raft TLS on some nodes", func(in *Input, o *Options) { in.Nodes["n3"].Report.RPCTLS = false }, IDTLS, Fail, "some nodes"},
		{"no synchronous standby set", func(in *Input, o *Options) { in.SyncStandbys, in.SyncK = nil, 0 }, IDSync, Fail, "no synchronous standby"},
		{"fewer acknowledging than k", func(in *Input, o *Options) {
			in.SyncK = 2
			in.Nodes["n1"].Report.Standbys[1].SyncState = "async"
		}, IDSync, Fail, "commits wait"},
		{"a standby outside the set", func(in *Input, o *Options) { in.SyncStandbys = []string{"n2"} }, IDSync, Warn, "1 of 2"},
		{"async by choice", func(in *Input, o *Options) { in.SyncMode = "async" }, IDSync, Warn, "asynchronous"},
		{"a standby setting lower than the primary's", func(in *Input, o *Options) {
			in.Nodes["n3"].Report.Settings = settings(map[string]string{"max_connections": "50"})
		}, IDStandbySetting, Fail, "n3: max_connections = 50"},
		{"a standby setting higher than the primary's", func(in *Input, o *Options) {
			in.Nodes["n2"].Report.Settings = settings(map[string]string{"max_worker_processes": "16"})
		}, IDStandbySetting, Warn, "n2: max_worker_processes = 16"},
		{"disk nearly full", func(in *Input, o *Options) { in.Nodes["n2"].Report.WALDiskFree = 100 << 20 }, IDDiskWAL, Fail, "n2: 100.0 MiB free"},
		{"disk below 10%", func(in *Input, o *Options) {
			in.Nodes["n3"].Report.WALDiskFree = 5 << 30
		}, IDDiskWAL, Warn, "n3: 5.0 GiB free"},
		{"an active slot retaining much WAL", func(in *Input, o *Options) {
			in.Nodes["n1"].Report.Slots[0].RetainedBytes = 3 << 30
		}, IDSlots, Warn, "pgbattery_n2: 3.0 GiB retained"},
		{"an inactive slot retaining much WAL", func(in *Input, o *Options) {
			s := &in.Nodes["n1"].Report.Slots[1]
			s.RetainedBytes, s.Active = 2<<30, false
		}, IDSlots, Fail, "active=false"},
		{"a lost slot", func(in *Input, o *Options) { in.Nodes["n1"].Report.Slots[0].WALStatus = "lost" }, IDSlots, Fail, "wal_status=lost"},
		{"no primary", func(in *Input, o *Options) { in.Primary = "" }, IDStandbys, Fail, "no primary"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in, o := healthy(), DefaultOptions()
			c.mutate(&in, &o)
			got := byID(Evaluate(in, o))[c.id]
			text := got.Summary + "\n" + strings.Join(got.Details, "\n")
			if got.Status != c.want || !strings.Contains(text, c.says) {
				t.Fatalf("%s: %s %q, want %s mentioning %q", c.id, got.Status, text, c.want, c.says)
			}
			if got.Status != OK && len(got.Advice) < 40 {
				t.Errorf("%s is %s with no real advice: %q", c.id, got.Status, got.Advice)
			}
		})
	}
}

func TestWorst(t *testing.T) {
	if Worst(nil) != OK || Worst([]Check{{Status: Warn}, {Status: OK}}) != Warn || Worst([]Check{{Status: Warn}, {Status: Fail}}) != Fail {
		t.Fatal("Worst ranks fail > warn > ok")
	}
}
