// Package doctor evaluates a cluster's health for `pgbattery doctor`: a
// pre-deploy and run-time gate that checks what failover and rejoin rely on
// and explains what to do about each problem.
//
// The package is pure: the agent gathers every node's Report (through the
// agents' HTTP APIs, measuring clock offsets on the way) and the cluster's
// view (raft configuration, replicated state) into an Input, and Evaluate
// turns that into Checks. Tests feed it crafted inputs.
package doctor

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Status is a check's outcome.
type Status string

const (
	OK   Status = "ok"
	Warn Status = "warn"
	Fail Status = "fail"
)

func (s Status) rank() int {
	switch s {
	case Fail:
		return 2
	case Warn:
		return 1
	}
	return 0
}

// Check is one finding.
type Check struct {
	ID     string `json:"id"`
	Status Status `json:"status"`
	// Summary says what was found, in one line.
	Summary string `json:"summary"`
	// Details lists the findings per node, when there are several.
	Details []string `json:"details,omitempty"`
	// Advice explains why it matters and what to do (empty when ok).
	Advice string `json:"advice,omitempty"`
}

// Report is what one agent says about itself (GET /v1/internal/doctor).
type Report struct {
	Node    string `json:"node"`
	Version string `json:"version"`
	Server  bool   `json:"server"`
	// Time is the agent's wall clock when it wrote the answer.
	Time time.Time `json:"time"`

	GossipEncrypted bool `json:"gossip_encrypted"`
	RPCTLS          bool `json:"rpc_tls"`
	HTTPTLS         bool `json:"http_tls"`

	// Postgres is false on a witness; the fields below are then empty.
	Postgres  bool   `json:"postgres"`
	PGMajor   int    `json:"pg_major,omitempty"`
	PGVersion string `json:"pg_version,omitempty"`
	Running   bool   `json:"running"`
	// Role is "primary" or "standby" while running.
	Role string `json:"role,omitempty"`
	// Settings are the values of StandbySettings on the running server.
	Settings      map[string]string `json:"settings,omitempty"`
	DataChecksums *bool             `json:"data_checksums,omitempty"`
	WALLogHints   *bool             `json:"wal_log_hints,omitempty"`
	// WALDiskFree/Total: bytes available to PostgreSQL and in all on the
	// file system that holds pg_wal (0 when unknown).
	WALDiskFree  uint64 `json:"wal_disk_free,omitempty"`
	WALDiskTotal uint64 `json:"wal_disk_total,omitempty"`
	// Slots are the physical replication slots (meaningful on a primary).
	Slots []Slot `json:"slots,omitempty"`
	// Standbys are the connected standbys (pg_stat_replication) by
	// application name, on a primary.
	Standbys []Standby `json:"standbys,omitempty"`
	// Problems lists what the agent could not read about itself.
	Problems []string `json:"problems,omitempty"`
}

// Slot is a replication slot and the WAL it holds back.
type Slot struct {
	Name   string `json:"name"`
	Active bool   `json:"active"`
	// RetainedBytes is how far its restart position trails the primary's
	// current WAL position (-1 when unknown).
	RetainedBytes int64  `json:"retained_bytes"`
	WALStatus     string `json:"wal_status,omitempty"`
}

// Standby is a row of the primary's pg_stat_replication.
type Standby struct {
	Name      string `json:"name"`
	State     string `json:"state"`
	SyncState string `json:"sync_state"`
}

// StandbySettings are the settings a hot standby must have at least as
// high as its primary, or it refuses to start (or pauses recovery).
var StandbySettings = []string{
	"max_connections", "max_locks_per_transaction", "max_prepared_transactions",
	"max_wal_senders", "max_worker_processes",
}

// Member is a node as the cluster state records it.
type Member struct {
	Name    string `json:"name"`
	Voter   bool   `json:"voter"`
	Witness bool   `json:"witness"`
}

// NodeResult is what the asking agent learned from one member.
type NodeResult struct {
	Report *Report `json:"report,omitempty"`
	// Error says why there is no report.
	Error string `json:"error,omitempty"`
	// Offset is the member's clock minus the asker's at the midpoint of
	// the request; RTT the request's round trip. Zero for the asker.
	Offset time.Duration `json:"offset_ns"`
	RTT    time.Duration `json:"rtt_ns"`
}

// RaftServer is one entry of the raft configuration, by member name.
type RaftServer struct {
	Name  string `json:"name"`
	Voter bool   `json:"voter"`
}

// Input is everything Evaluate looks at.
type Input struct {
	Asker   string   `json:"asker"`
	Members []Member `json:"members"`
	Primary string   `json:"primary"`
	// Sync is the replicated synchronous replication rule.
	SyncMode     string   `json:"sync_mode"`
	SyncStandbys []string `json:"sync_standbys"`
	SyncK        int      `json:"sync_k"`
	// Raft is the raft configuration; RaftLeader the leader's member name
	// ("" when none is known).
	Raft       []RaftServer          `json:"raft"`
	RaftLeader string                `json:"raft_leader"`
	Nodes      map[string]NodeResult `json:"nodes"`
}

// Options are the thresholds of the checks.
type Options struct {
	// ClockThreshold: a clock further than this from the asker's fails.
	ClockThreshold time.Duration
	// MinFreeWAL: less free space than this where pg_wal lives fails.
	MinFreeWAL uint64
	// MaxSlotRetained: a slot holding back more WAL than this warns
	// (fails when the slot is inactive).
	MaxSlotRetained int64
}

// Defaults for Options.
const (
	DefaultClockThreshold  = 500 * time.Millisecond
	DefaultMinFreeWAL      = 1 << 30
	DefaultMaxSlotRetained = 1 << 30
)

// DefaultOptions returns the default thresholds.
func DefaultOptions() Options {
	return Options{ClockThreshold: DefaultClockThreshold, MinFreeWAL: DefaultMinFreeWAL, MaxSlotRetained: DefaultMaxSlotRetained}
}

// Result is the doctor's answer.
type Result struct {
	Asker   string    `json:"asker"`
	Time    time.Time `json:"time"`
	Status  Status    `json:"status"`
	Checks  []Check   `json:"checks"`
	Input   *Input    `json:"input,omitempty"`
	Options struct {
		ClockThresholdMs int64  `json:"clock_threshold_ms"`
		MinFreeWAL       uint64 `json:"min_free_wal"`
		MaxSlotRetained  int64  `json:"max_slot_retained"`
	} `json:"options"`
}

// Worst returns the most severe status among checks (OK when none).
func Worst(checks []Check) Status {
	w := OK
	for _, c := range checks {
		if c.Status.rank() > w.rank() {
			w = c.Status
		}
	}
	return w
}

// Check IDs, in the order Evaluate reports them.
const (
	IDReachable      = "agents.reachable"
	IDAgentVersion   = "version.agent"
	IDPostgresMajor  = "version.postgres"
	IDClock          = "clock.offset"
	IDRaftQuorum     = "raft.quorum"
	IDRaftVoters     = "raft.voters"
	IDGossipEncrypt  = "gossip.encryption"
	IDTLS            = "tls"
	IDStandbys       = "replication.standbys"
	IDSync           = "replication.sync"
	IDStandbySetting = "settings.standby"
	IDDiskWAL        = "disk.wal"
	IDRewind         = "postgres.rewind"
	IDSlots          = "replication.slots"
)

// Evaluate runs every check on in.
func Evaluate(in Input, o Options) []Check {
	if o.ClockThreshold <= 0 {
		o.ClockThreshold = DefaultClockThreshold
	}
	e := &eval{in: in, o: o}
	return []Check{
		e.reachable(), e.agentVersion(), e.postgresMajor(), e.clock(),
		e.raftQuorum(), e.raftVoters(), e.gossipEncryption(), e.tls(),
		e.standbys(), e.sync(), e.standbySettings(), e.diskWAL(), e.rewind(), e.slots(),
	}
}

type eval struct {
	in Input
	o  Options
}

// reports returns the members' reports that arrived, by name, sorted.
func (e *eval) reports() []*Report {
	var out []*Report
	for _, m := range e.members() {
		if r := e.in.Nodes[m.Name].Report; r != nil {
			out = append(out, r)
		}
	}
	return out
}

func (e *eval) members() []Member {
	ms := append([]Member(nil), e.in.Members...)
	sort.Slice(ms, func(i, j int) bool { return ms[i].Name < ms[j].Name })
	return ms
}

func (e *eval) pgReports() []*Report {
	var out []*Report
	for _, r := range e.reports() {
		if r.Postgres {
			out = append(out, r)
		}
	}
	return out
}

func (e *eval) report(name string) *Report { return e.in.Nodes[name].Report }

func check(id string, st Status, summary, advice string, details []string) Check {
	if st == OK {
		advice = ""
	}
	return Check{ID: id, Status: st, Summary: summary, Details: details, Advice: advice}
}

func (e *eval) reachable() Check {
	var missing, details []string
	for _, m := range e.members() {
		nr, ok := e.in.Nodes[m.Name]
		if ok && nr.Report != nil {
			continue
		}
		missing = append(missing, m.Name)
		why := "not asked"
		if ok && nr.Error != "" {
			why = nr.Error
		}
		details = append(details, m.Name+": "+why)
	}
	if len(missing) == 0 {
		var problems []string
		for _, r := range e.reports() {
			for _, p := range r.Problems {
				problems = append(problems, r.Node+": "+p)
			}
		}
		if len(problems) > 0 {
			return check(IDReachable, Warn, fmt.Sprintf("all %d agents answered, some could not read all about themselves", len(e.in.Members)),
				"An agent could not ask its own PostgreSQL everything (it may be starting, stopping or overloaded); the checks "+
					"that need what is missing may be incomplete. Run doctor again, and look at that node's agent log if it persists.",
				problems)
		}
		return check(IDReachable, OK, fmt.Sprintf("all %d agents answered", len(e.in.Members)), "", nil)
	}
	return check(IDReachable, Fail, fmt.Sprintf("%d of %d agents did not answer: %s", len(missing), len(e.in.Members), strings.Join(missing, ", ")),
		"An agent that does not answer its HTTP API cannot be checked, and may be down or cut off. Start it (or fix the network "+
			"or the firewall between the nodes on ports.http), or, if the node is gone for good, remove it with "+
			"`pgbattery force-leave NODE` and `pgbattery operator raft remove-peer -id ID`. The checks below only cover the nodes that answered.",
		details)
}

// distinct groups nodes by a value and describes the groups.
func distinct(rs []*Report, value func(*Report) (string, bool)) (map[string][]string, []string) {
	groups := map[string][]string{}
	for _, r := range rs {
		if v, ok := value(r); ok {
			groups[v] = append(groups[v], r.Node)
		}
	}
	var details []string
	for v, nodes := range groups {
		details = append(details, fmt.Sprintf("%s: %s", v, strings.Join(nodes, ", ")))
	}
	sort.Strings(details)
	return groups, details
}

func (e *eval) agentVersion() Check {
	groups, details := distinct(e.reports(), func(r *Report) (string, bool) { return r.Version, r.Version != "" })
	switch len(groups) {
	case 0:
		return check(IDAgentVersion, Warn, "no agent reported its version", "Upgrade the agents: they are too old to report their version.", nil)
	case 1:
		for v := range groups {
			return check(IDAgentVersion, OK, "every agent runs pgbattery "+v, "", nil)
		}
	}
	return check(IDAgentVersion, Warn, fmt.Sprintf("the agents run %d different pgbattery versions", len(groups)),
		"Mixed versions are expected during a rolling upgrade and only then: finish it, one node at a time (standbys first, "+
			"then switch over and upgrade the old primary), so that every agent applies the replicated state the same way.",
		details)
}

func (e *eval) postgresMajor() Check {
	groups, details := distinct(e.pgReports(), func(r *Report) (string, bool) {
		return strconv.Itoa(r.PGMajor), r.PGMajor > 0
	})
	switch len(groups) {
	case 0:
		return check(IDPostgresMajor, OK, "no node runs PostgreSQL", "", nil)
	case 1:
		for v := range groups {
			return check(IDPostgresMajor, OK, "every node has PostgreSQL "+v, "", nil)
		}
	}
	return check(IDPostgresMajor, Fail, fmt.Sprintf("the nodes have %d different PostgreSQL major versions", len(groups)),
		"Physical replication, pg_basebackup and pg_rewind only work between servers of the same major version: a standby "+
			"on another major cannot follow the primary or be promoted in its place. Install the same major everywhere "+
			"(postgres.bin_dir on each node) and restart the odd agents; a major upgrade of the cluster needs pg_upgrade "+
			"or logical replication, not a rolling restart.",
		details)
}

func (e *eval) clock() Check {
	var bad, details []string
	for _, m := range e.members() {
		nr := e.in.Nodes[m.Name]
		if nr.Report == nil || m.Name == e.in.Asker {
			continue
		}
		// The answer was written somewhere within the round trip: only
		// the part of the offset beyond half of it is certain.
		certain := abs(nr.Offset) - nr.RTT/2
		line := fmt.Sprintf("%s: %+v (round trip %v)", m.Name, nr.Offset.Round(time.Millisecond), nr.RTT.Round(time.Millisecond))
		details = append(details, line)
		if certain > e.o.ClockThreshold {
			bad = append(bad, m.Name)
		}
	}
	if len(bad) == 0 {
		return check(IDClock, OK, fmt.Sprintf("every clock is within %v of %s's", e.o.ClockThreshold, e.in.Asker), "", details)
	}
	return check(IDClock, Fail, fmt.Sprintf("%s: clock more than %v off %s's", strings.Join(bad, ", "), e.o.ClockThreshold, e.in.Asker),
		"pgbattery's leases and hold-downs use monotonic clocks only, so failover safety does not depend on wall clocks; "+
			"but replication lag in seconds (the replica health check's max_lag as a duration), TLS certificate validity "+
			"and the timestamps in logs and history do. Run NTP (chrony or systemd-timesyncd) on every node and let it converge.",
		details)
}

func abs(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

func (e *eval) voters() (voters, witnesses int, names []string) {
	witness := map[string]bool{}
	for _, m := range e.in.Members {
		witness[m.Name] = m.Witness
	}
	for _, s := range e.in.Raft {
		if s.Voter {
			voters++
			names = append(names, s.Name)
			if witness[s.Name] {
				witnesses++
			}
		}
	}
	sort.Strings(names)
	return voters, witnesses, names
}

func (e *eval) raftQuorum() Check {
	voters, _, names := e.voters()
	if voters == 0 {
		return check(IDRaftQuorum, Fail, "the raft configuration lists no voter",
			"The agent asked knows no raft configuration: it may not have joined the cluster yet, or the cluster was never "+
				"bootstrapped. Start the servers with bootstrap_expect set to their number and -join/-retry-join each other.", nil)
	}
	need := voters/2 + 1
	up := 0
	var down []string
	for _, n := range names {
		if e.in.Nodes[n].Report != nil {
			up++
		} else {
			down = append(down, n)
		}
	}
	details := []string{fmt.Sprintf("voters: %s", strings.Join(names, ", "))}
	if len(down) > 0 {
		details = append(details, "not answering: "+strings.Join(down, ", "))
	}
	switch {
	case e.in.RaftLeader == "":
		return check(IDRaftQuorum, Fail, "no raft leader is known",
			"Without a leader the cluster can change nothing: no failover, no switchover, no lease renewal (the primary fences "+
				"itself). Bring back enough voters for a majority ("+strconv.Itoa(need)+" of "+strconv.Itoa(voters)+"); "+
				"if they are lost for good, see docs/ARCHITECTURE.md on recovering from the loss of quorum.", details)
	case up < need:
		return check(IDRaftQuorum, Fail, fmt.Sprintf("only %d of %d voters answer; a majority is %d", up, voters, need),
			"The cluster is about to lose (or has lost) its raft majority: bring the missing voters back.", details)
	case up == need && voters > 1:
		return check(IDRaftQuorum, Warn, fmt.Sprintf("quorum held by the minimum: %d of %d voters answer", up, voters),
			"One more voter lost stops every change to the cluster (and fences the primary): bring the missing voters back.", details)
	}
	return check(IDRaftQuorum, OK, fmt.Sprintf("leader %s, %d of %d voters answer (majority %d)", e.in.RaftLeader, up, voters, need), "", details)
}

func (e *eval) raftVoters() Check {
	voters, witnesses, names := e.voters()
	details := []string{"voters: " + strings.Join(names, ", ")}
	desc := fmt.Sprintf("%d voters", voters)
	if witnesses > 0 {
		desc += fmt.Sprintf(" (%d a witness)", witnesses)
	}
	switch {
	case voters == 0:
		return check(IDRaftVoters, Fail, "no raft voters", "Run 3 or 5 agents with server = true.", nil)
	case voters == 1:
		return check(IDRaftVoters, Warn, "a single raft voter",
			"With one voter nothing fails over: if it dies the cluster stops. Run 3 or 5 servers (server = true), or two "+
				"PostgreSQL nodes and a witness (postgres { enabled = false }).", details)
	case voters%2 == 0:
		return check(IDRaftVoters, Fail, desc+": an even number",
			fmt.Sprintf("%d voters survive no more failures than %d, and a network split in two halves leaves neither side a "+
				"majority. Add a voter (a witness, postgres { enabled = false }, is enough) or make one a non-voter (server = false) "+
				"so that the count is odd: 3 or 5.", voters, voters-1), details)
	case voters > 7:
		return check(IDRaftVoters, Warn, desc+": more than needed",
			"Every write to the cluster state waits for a majority of the voters: beyond 5 they add latency, not safety. "+
				"Make the extra agents non-voters (server = false).", details)
	}
	return check(IDRaftVoters, OK, desc+": an odd number, tolerates "+strconv.Itoa((voters-1)/2)+" failure(s)", "", details)
}

func (e *eval) gossipEncryption() Check {
	rs := e.reports()
	var off []string
	for _, r := range rs {
		if !r.GossipEncrypted {
			off = append(off, r.Node)
		}
	}
	switch {
	case len(off) == 0 && len(rs) > 0:
		return check(IDGossipEncrypt, OK, "gossip is encrypted on every node", "", nil)
	case len(off) < len(rs):
		return check(IDGossipEncrypt, Fail, "gossip is encrypted on some nodes only: "+strings.Join(off, ", ")+" without",
			"Nodes with and without a gossip key cannot talk to each other: set the same `encrypt` key (from `pgbattery keygen`) "+
				"on every node.", nil)
	}
	return check(IDGossipEncrypt, Warn, "gossip is not encrypted",
		"Without `encrypt`, anyone on the network can read the membership traffic and join the cluster's gossip. Generate a "+
			"key with `pgbattery keygen`, set `encrypt` to it on every node, and restart the agents one at a time.", nil)
}

func (e *eval) tls() Check {
	rs := e.reports()
	var noRPC, noHTTP []string
	for _, r := range rs {
		if !r.RPCTLS {
			noRPC = append(noRPC, r.Node)
		}
		if !r.HTTPTLS {
			noHTTP = append(noHTTP, r.Node)
		}
	}
	var details []string
	if len(noRPC) > 0 {
		details = append(details, "raft RPC without TLS: "+strings.Join(noRPC, ", "))
	}
	if len(noHTTP) > 0 {
		details = append(details, "HTTP API without TLS: "+strings.Join(noHTTP, ", "))
	}
	switch {
	case len(rs) == 0:
		return check(IDTLS, Warn, "no agent reported its TLS settings", "See agents.reachable.", nil)
	case len(noRPC) > 0 && len(noRPC) < len(rs):
		return check(IDTLS, Fail, "raft TLS is configured on some nodes only",
			"Raft RPC is mutual TLS when the tls block names ca_file, cert_file and key_file; a node without it cannot reach "+
				"the ones with it. Give every node the same CA and its own certificate.", details)
	case len(details) > 0:
		return check(IDTLS, Warn, "TLS is not on everywhere",
			"Without TLS, raft traffic (which carries the agents' PostgreSQL role secrets) and the HTTP API (with its ACL "+
				"token) cross the network in clear. Set tls { ca_file, cert_file, key_file } on every node; the HTTP API "+
				"follows unless tls { http { enabled = false } }. Clients then use https:// and PGBATTERY_CACERT.", details)
	}
	return check(IDTLS, OK, "raft RPC and the HTTP API use TLS on every node", "", nil)
}

// primaryReport returns the primary's report, if it answered as a running
// primary.
func (e *eval) primaryReport() *Report {
	r := e.report(e.in.Primary)
	if r == nil || !r.Running || r.Role != "primary" {
		return nil
	}
	return r
}

func (e *eval) standbys() Check {
	if e.in.Primary == "" {
		return check(IDStandbys, Fail, "the cluster has no primary",
			"No node holds the primary office: see `pgbattery status` for what the controller is waiting for.", nil)
	}
	p := e.primaryReport()
	if p == nil {
		return check(IDStandbys, Fail, "the primary "+e.in.Primary+" did not report as a running primary",
			"The standbys cannot be checked against a primary that is down or unreachable; see `pgbattery status`.", nil)
	}
	streaming := map[string]string{}
	for _, s := range p.Standbys {
		streaming[s.Name] = s.State
	}
	var missing, details []string
	n := 0
	for _, m := range e.members() {
		if m.Witness || m.Name == e.in.Primary {
			continue
		}
		n++
		r := e.report(m.Name)
		var why string
		switch {
		case r == nil:
			why = "did not answer"
		case !r.Running:
			why = "PostgreSQL is not running"
		case r.Role != "standby":
			why = "PostgreSQL runs as " + r.Role + ", not as a standby"
		case streaming[m.Name] == "":
			why = "not connected to the primary (absent from its pg_stat_replication)"
		case streaming[m.Name] != "streaming":
			why = "connected to the primary but " + streaming[m.Name]
		default:
			continue
		}
		missing = append(missing, m.Name)
		details = append(details, m.Name+": "+why)
	}
	if len(missing) == 0 {
		return check(IDStandbys, OK, fmt.Sprintf("every PostgreSQL node other than the primary (%d) streams from %s", n, e.in.Primary), "", nil)
	}
	return check(IDStandbys, Fail, fmt.Sprintf("%d of %d standbys missing: %s", len(missing), n, strings.Join(missing, ", ")),
		"A standby that does not stream cannot take over without losing data and does not count towards synchronous "+
			"replication. Look at the node's agent log: it says why it cannot follow (primary unreachable, a rewind that "+
			"keeps failing, foreign data). A standby that cannot be mended otherwise can be re-cloned with `pgbattery reinit NODE`.",
		details)
}

func (e *eval) sync() Check {
	mode := e.in.SyncMode
	if mode == "async" {
		return check(IDSync, Warn, "replication is asynchronous",
			"By choice (replication.mode = \"async\"): a failover may lose up to replication.max_lag_on_failover of acknowledged "+
				"writes. Use \"quorum\" (the default) unless that loss is acceptable.", nil)
	}
	promotable := 0
	for _, m := range e.in.Members {
		if !m.Witness && m.Name != e.in.Primary {
			promotable++
		}
	}
	if promotable == 0 {
		return check(IDSync, Warn, "no standby: every commit waits or nothing protects it",
			"A single PostgreSQL node has no copy of its data anywhere else. Add standbys.", nil)
	}
	if len(e.in.SyncStandbys) == 0 || e.in.SyncK < 1 {
		return check(IDSync, Fail, "mode "+mode+" but no synchronous standby is set: commits wait",
			"The controller has found no standby fit to be synchronous, so the primary holds every commit (as "+mode+" mode "+
				"promises) until one is. Mend the standbys (see replication.standbys).", nil)
	}
	p := e.primaryReport()
	if p == nil {
		return check(IDSync, Fail, "the primary did not report as a running primary", "See replication.standbys.", nil)
	}
	state := map[string]Standby{}
	for _, s := range p.Standbys {
		state[s.Name] = s
	}
	acking := 0
	var details []string
	for _, name := range e.in.SyncStandbys {
		s, ok := state[name]
		switch {
		case !ok:
			details = append(details, name+": not connected")
		case s.State == "streaming" && (s.SyncState == "sync" || s.SyncState == "quorum"):
			acking++
			details = append(details, name+": "+s.SyncState)
		default:
			details = append(details, fmt.Sprintf("%s: %s, %s", name, s.State, s.SyncState))
		}
	}
	summary := fmt.Sprintf("mode %s: ANY %d of %s, %d acknowledging", mode, e.in.SyncK, strings.Join(e.in.SyncStandbys, ", "), acking)
	switch {
	case acking < e.in.SyncK:
		return check(IDSync, Fail, summary+": commits wait",
			"Fewer synchronous standbys stream than the rule needs, so commits on the primary wait. Mend the standbys "+
				"(see replication.standbys); in quorum mode the controller narrows the set to the healthy ones by itself.", details)
	case len(e.in.SyncStandbys) < promotable:
		return check(IDSync, Warn, summary+fmt.Sprintf(": %d of %d standbys in the set", len(e.in.SyncStandbys), promotable),
			"A standby outside the synchronous set is not guaranteed to hold every acknowledged commit, so it is not "+
				"a failover candidate. Either it is unhealthy (see replication.standbys) or tagged nofailover.", details)
	}
	return check(IDSync, OK, summary, "", details)
}

func (e *eval) standbySettings() Check {
	p := e.primaryReport()
	if p == nil || len(p.Settings) == 0 {
		return check(IDStandbySetting, Warn, "the primary's settings are not known",
			"The primary did not report its settings; see replication.standbys.", nil)
	}
	worst := OK
	var details []string
	for _, r := range e.pgReports() {
		if r.Node == p.Node || !r.Running {
			continue
		}
		for _, name := range StandbySettings {
			pv, sv := p.Settings[name], r.Settings[name]
			if pv == sv || pv == "" || sv == "" {
				continue
			}
			pn, err1 := strconv.ParseInt(pv, 10, 64)
			sn, err2 := strconv.ParseInt(sv, 10, 64)
			if err1 == nil && err2 == nil && sn < pn {
				worst = Fail
				details = append(details, fmt.Sprintf("%s: %s = %s, lower than the primary's %s", r.Node, name, sv, pv))
			} else {
				if worst == OK {
					worst = Warn
				}
				details = append(details, fmt.Sprintf("%s: %s = %s, the primary has %s", r.Node, name, sv, pv))
			}
		}
	}
	switch worst {
	case Fail:
		return check(IDStandbySetting, Fail, "a standby has a setting lower than the primary's",
			"A hot standby needs max_connections, max_worker_processes, max_wal_senders, max_prepared_transactions and "+
				"max_locks_per_transaction at least as high as its primary's; with less, PostgreSQL stops replaying (or refuses "+
				"to start) as soon as the primary's value arrives in the WAL. Set the same values in postgres.parameters on every "+
				"node (raise the standbys first, lower the primary last) and restart.", details)
	case Warn:
		return check(IDStandbySetting, Warn, "the nodes' standby-critical settings differ",
			"Standbys have higher values than the primary, which works, but after a failover to a node with higher values "+
				"the others would be lower than their new primary. Use the same values on every node.", details)
	}
	return check(IDStandbySetting, OK, "every standby matches the primary on "+strings.Join(StandbySettings, ", "), "", nil)
}

func (e *eval) diskWAL() Check {
	worst := OK
	var details []string
	for _, r := range e.pgReports() {
		if r.WALDiskTotal == 0 {
			continue
		}
		pct := float64(r.WALDiskFree) * 100 / float64(r.WALDiskTotal)
		line := fmt.Sprintf("%s: %s free of %s (%.0f%%)", r.Node, bytesHuman(r.WALDiskFree), bytesHuman(r.WALDiskTotal), pct)
		details = append(details, line)
		switch {
		case r.WALDiskFree < e.o.MinFreeWAL:
			worst = Fail
		case pct < 10 && worst == OK:
			worst = Warn
		}
	}
	switch worst {
	case Fail:
		return check(IDDiskWAL, Fail, fmt.Sprintf("a node has less than %s free for WAL", bytesHuman(e.o.MinFreeWAL)),
			"When the file system that holds pg_wal fills up, PostgreSQL stops (a PANIC on the primary). Free space, grow "+
				"the volume, or look for a replication slot that retains WAL (replication.slots).", details)
	case Warn:
		return check(IDDiskWAL, Warn, "a node has less than 10% free for WAL",
			"Free space or grow the volume before WAL, a slot or a burst of writes fills it.", details)
	}
	if len(details) == 0 {
		return check(IDDiskWAL, Warn, "no node reported its disk space", "See agents.reachable.", nil)
	}
	return check(IDDiskWAL, OK, "every node has room for WAL", "", details)
}

func (e *eval) rewind() Check {
	var off, details []string
	for _, r := range e.pgReports() {
		if r.DataChecksums == nil && r.WALLogHints == nil {
			details = append(details, r.Node+": unknown (no data yet)")
			continue
		}
		if (r.DataChecksums != nil && *r.DataChecksums) || (r.WALLogHints != nil && *r.WALLogHints) {
			continue
		}
		off = append(off, r.Node)
		details = append(details, r.Node+": data_checksums off and wal_log_hints off")
	}
	if len(off) == 0 {
		return check(IDRewind, OK, "pg_rewind can work on every node (data checksums or wal_log_hints on)", "", details)
	}
	return check(IDRewind, Fail, "pg_rewind cannot work on "+strings.Join(off, ", "),
		"pg_rewind needs data checksums or wal_log_hints = on. Without them an old primary cannot be rewound after a "+
			"failover and must be re-cloned in full, which takes long on a large database. pgbattery's initdb enables "+
			"checksums; for data made elsewhere set wal_log_hints = \"on\" in postgres.parameters (or remove it if you "+
			"turned it off) and restart, or enable checksums offline with pg_checksums.", details)
}

func (e *eval) slots() Check {
	p := e.primaryReport()
	if p == nil {
		return check(IDSlots, Warn, "the primary's replication slots are not known", "See replication.standbys.", nil)
	}
	worst := OK
	var details []string
	for _, s := range p.Slots {
		line := fmt.Sprintf("%s: %s retained, active=%v", s.Name, bytesHumanSigned(s.RetainedBytes), s.Active)
		if s.WALStatus != "" {
			line += ", wal_status=" + s.WALStatus
		}
		switch {
		case s.WALStatus == "lost":
			worst = Fail
		case s.RetainedBytes > e.o.MaxSlotRetained && !s.Active:
			worst = Fail
		case s.RetainedBytes > e.o.MaxSlotRetained && worst == OK:
			worst = Warn
		case s.WALStatus == "unreserved" && worst == OK:
			worst = Warn
		default:
			continue
		}
		details = append(details, line)
	}
	switch worst {
	case Fail:
		return check(IDSlots, Fail, "a replication slot retains too much WAL or has lost it",
			"An inactive slot keeps every WAL file since its restart position until the disk fills; a lost slot can no "+
				"longer feed its standby. pgbattery's own slots (pgbattery_*) belong to members: mend or reinit the member, or "+
				"remove a departed one (force-leave), and the controller drops its slot. Drop other slots that nothing "+
				"uses with pg_drop_replication_slot().", details)
	case Warn:
		return check(IDSlots, Warn, fmt.Sprintf("a replication slot retains more than %s of WAL", bytesHuman(uint64(e.o.MaxSlotRetained))),
			"Its standby is far behind or slow: watch it, and see disk.wal.", details)
	}
	return check(IDSlots, OK, fmt.Sprintf("%d slot(s) on the primary, none retains more than %s", len(p.Slots), bytesHuman(uint64(e.o.MaxSlotRetained))), "", nil)
}

func bytesHumanSigned(n int64) string {
	if n < 0 {
		return "unknown"
	}
	return bytesHuman(uint64(n))
}

func bytesHuman(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
