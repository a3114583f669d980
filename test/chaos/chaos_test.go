// Package chaos is pgbattery's fault-injection scenario catalogue: each
// TestChaos_<Scenario> starts a cluster of real agents (test/cluster), runs
// the workloads of test/workload through the gateways while it injects the
// scenario's faults, and judges the histories with test/checker. The
// scenarios, their pass criteria and how to run them are in docs/chaos.md.
//
// A plain `go test ./test/chaos` runs the short deterministic subset;
// -chaos.full runs every scenario. -seed and -rounds choose the schedule and
// the repetitions; -chaos.out appends one JSON line per round, which
// test/chaos/report turns into docs/chaos-report.md.
package chaos

import (
	"encoding/json"
	"flag"
	"fmt"
	"hash/fnv"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgbattery/pgbattery/test/checker"
	"github.com/pgbattery/pgbattery/test/cluster"
)

var (
	seedFlag      = flag.Int64("seed", 1, "seed of every random choice of the scenarios (fault targets, timings, workload mixes)")
	roundsFlag    = flag.Int("rounds", 1, "rounds of each scenario (each on the same cluster, settled in between)")
	outFlag       = flag.String("chaos.out", "", "append one JSON line per round to this file")
	fullFlag      = flag.Bool("chaos.full", false, "run the whole catalogue (default: the short subset only)")
	keepFlag      = flag.Bool("chaos.keep", false, "keep the histories of rounds that passed too (in -chaos.artifacts)")
	artifactsFlag = flag.String("chaos.artifacts", "", "directory for histories, porcupine visualizations and node logs of failed rounds (default: a temp dir, kept on failure)")
)

func TestMain(m *testing.M) {
	flag.Parse()
	if code, done := cluster.ReexecInPrivateNetns(); done {
		os.Exit(code)
	}
	// The agents run a binary of this tree: PGBATTERY_BINARY (make
	// chaos passes bin/pgbattery) or one built here, so that a stale
	// bin/pgbattery is never what gets tested.
	cleanup := func() {}
	if os.Getenv("PGBATTERY_BINARY") == "" {
		dir, err := os.MkdirTemp("", "pgbattery-chaos-bin")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Chmod(dir, 0o755)
		bin := filepath.Join(dir, "pgbattery")
		build := exec.Command("go", "build", "-o", bin, "github.com/pgbattery/pgbattery")
		build.Stdout, build.Stderr = os.Stdout, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building pgbattery:", err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
		os.Setenv("PGBATTERY_BINARY", bin)
		cleanup = func() { os.RemoveAll(dir) }
	}
	code := m.Run()
	cleanup()
	os.Exit(code)
}

// scenario is one entry of the catalogue.
type scenario struct {
	name  string
	nodes int
	// short scenarios run by default; the others need -chaos.full.
	short bool
	// opts adjusts the cluster's options.
	opts func(o *cluster.Options)
	// fault injects the round's faults while the load runs, and leaves
	// the cluster able to take writes again (it may leave nodes down:
	// the next round's settle restarts them).
	fault func(r *round)
	// warmup is the load before the first fault; default 3 s.
	warmup time.Duration
	// tail is the load after the faults, once writes go through again;
	// default 4 s.
	tail time.Duration
	// tolerateUncertain relaxes the split-brain checker to certain
	// overlaps only (see checker.SplitBrainOptions).
	tolerateUncertain bool
	// partitions: the scenario needs partition faults (skip without).
	partitions bool
}

// round is one round of a scenario on its cluster.
type round struct {
	t       *testing.T
	sc      *scenario
	c       *cluster.Cluster
	round   int
	start   time.Duration
	primary *cluster.Node // at the round's start
	leader  *cluster.Node // raft leader at the round's start
	// gapEvents are the faults the write gap is measured around
	// (failovers).
	gapEvents []checker.Event
	problems  []string
	notes     map[string]any
	// afterStop checks run on the load's results once it stopped.
	afterStop []func(res loadResult)
}

// gap marks the last recorded event as a failover to measure the write gap
// around.
func (r *round) gap() {
	evs := r.c.Events(r.start)
	if len(evs) > 0 {
		r.gapEvents = append(r.gapEvents, evs[len(evs)-1])
	}
}

// problem records a scenario-specific failure (the round fails).
func (r *round) problem(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.t.Errorf("%s", msg)
	r.problems = append(r.problems, msg)
}

func (r *round) note(k string, v any) {
	if r.notes == nil {
		r.notes = map[string]any{}
	}
	r.notes[k] = v
}

func (r *round) sleep(d time.Duration) { time.Sleep(d) }

// standbys are the nodes other than the round's primary.
func (r *round) standbys() []*cluster.Node { return r.c.Others(r.primary) }

// pick chooses one node at random (seeded).
func (r *round) pick(ns []*cluster.Node) *cluster.Node { return ns[r.c.Rand.Intn(len(ns))] }

// between returns a random duration in [lo, hi) (seeded).
func (r *round) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(r.c.Rand.Int63n(int64(hi-lo)))
}

// scenarioSeed derives a scenario's seed from -seed and its name, so
// scenarios do not share schedules and each is reproducible alone.
func scenarioSeed(name string) int64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%d/%s", *seedFlag, name)
	return int64(h.Sum64() & (1<<62 - 1))
}

func artifactsDir(t *testing.T) string {
	if *artifactsFlag != "" {
		return *artifactsFlag
	}
	return filepath.Join(os.TempDir(), "pgbattery-chaos-artifacts")
}

// run runs a scenario for -rounds rounds on one cluster.
func run(t *testing.T, sc scenario) {
	if !sc.short && !*fullFlag {
		t.Skipf("scenario %s runs with -chaos.full (make chaos)", sc.name)
	}
	if sc.nodes == 0 {
		sc.nodes = 3
	}
	if sc.warmup == 0 {
		sc.warmup = 3 * time.Second
	}
	if sc.tail == 0 {
		sc.tail = 4 * time.Second
	}
	seed := scenarioSeed(sc.name)
	t.Logf("scenario %s: seed %d (from -seed=%d), %d rounds, %d nodes", sc.name, seed, *seedFlag, *roundsFlag, sc.nodes)
	opts := cluster.Options{Nodes: sc.nodes, Seed: seed, ArtifactsDir: artifactsDir(t)}
	if sc.opts != nil {
		sc.opts(&opts)
	}
	c := cluster.Start(t, opts)
	if sc.partitions && !c.CanPartition() {
		t.Skip("this scenario needs partitions: root, cgroup v2 at the hierarchy's root, and nftables")
	}
	for i := 1; i <= *roundsFlag; i++ {
		ok := t.Run(fmt.Sprintf("round%d", i), func(t *testing.T) {
			runRound(t, &sc, c, i, seed)
		})
		if !ok {
			break
		}
	}
}

func runRound(t *testing.T, sc *scenario, c *cluster.Cluster, i int, seed int64) {
	began := time.Now()
	r := &round{t: t, sc: sc, c: c, round: i}
	rec := record{
		Scenario: sc.name, Round: i, Seed: *seedFlag, ScenarioSeed: seed, Nodes: sc.nodes,
		Started: began.UTC().Format(time.RFC3339),
	}
	written := false
	defer func() {
		// A round that stopped half-way (t.Fatal: a wait timed out, a
		// fault could not be injected) is recorded as failed too.
		if written {
			return
		}
		rec.OK = false
		rec.Problems = append(r.problems, "round aborted: "+lastFailure(t))
		rec.Notes = r.notes
		rec.Events = c.Events(r.start)
		rec.DurationS = time.Since(began).Seconds()
		rec.Transitions = transitions(c)
		writeRecord(t, rec)
	}()
	r.primary = c.Settle(t)
	r.leader = c.RaftLeader()
	r.start = c.Clock.Now()
	c.Event(fmt.Sprintf("round %d", i), fmt.Sprintf("primary %s, raft leader %v", r.primary.Name, r.leader))
	l := startLoad(r)
	r.sleep(sc.warmup)
	sc.fault(r)
	c.WaitWritable(t, 3*time.Minute)
	// Writes resumed for the clients that were there all along too: the
	// write-gap probe's session (held, moved or reconnected by the
	// gateway) has a write acknowledged after the last fault.
	last := c.Clock.Now()
	if evs := c.Events(r.start); len(evs) > 0 {
		last = evs[len(evs)-1].Start
	}
	if !cluster.Poll(3*time.Minute, func() bool { return l.gap.AckedAfter(last) }) {
		r.problem("the write-gap probe's session had no write acknowledged within 3 minutes of the last fault")
	}
	r.sleep(sc.tail)
	res := l.stop()
	rec.Notes = r.notes

	for _, err := range res.errs {
		r.problem("workload: %v", err)
	}
	for _, check := range r.afterStop {
		check(res)
	}
	events := c.Events(r.start)
	rec.Events = events
	dir := filepath.Join(artifactsDir(t), fmt.Sprintf("%s-seed%d-round%d", sc.name, *seedFlag, i))

	reg := checker.CheckRegister(res.register, checker.RegisterOptions{
		Initial:           0,
		Timeout:           2 * time.Minute,
		Events:            events,
		VisualizationPath: filepath.Join(dir, "register.html"),
	})
	bank := checker.CheckBank(res.bank, res.bankOpt)
	app := checker.CheckAppend(res.appends, res.appFinal)
	sb := checker.CheckSplitBrain(res.samples, checker.SplitBrainOptions{TolerateUncertain: sc.tolerateUncertain})
	wg := checker.CheckWriteGap(res.gapOps, checker.WriteGapOptions{Faults: r.gapEvents})
	results := []checker.Result{reg, bank, app, sb, wg}

	// Every acknowledged append must be on every node once the cluster
	// has settled again: the old primary rejoined without losing or
	// keeping diverged data.
	durable := checkAppendsEverywhere(t, c, res.appends)
	results = append(results, durable)

	for _, res := range results {
		t.Logf("%s", res.String())
		if !res.OK {
			r.problem("checker %s failed", res.Checker)
		}
	}
	acked := 0
	for _, op := range res.appends {
		if op.Outcome == checker.OutcomeOK {
			acked++
		}
	}
	if acked == 0 {
		r.problem("no append was acknowledged in the whole round")
	}
	rec.Checkers = results
	for _, ev := range r.gapEvents {
		rec.FailoverGapsMS = append(rec.FailoverGapsMS, failoverGap(res.gapOps, ev.Start).Seconds()*1000)
	}
	rec.ErrorsBySQLState = map[string]int{}
	for _, res := range results[:3] {
		for code, n := range res.Stats.ErrorsBySQLState {
			rec.ErrorsBySQLState[code] += n
		}
	}
	rec.Transitions = transitions(c)
	rec.Problems = r.problems
	rec.OK = len(r.problems) == 0 && !t.Failed()
	rec.DurationS = time.Since(began).Seconds()
	if !rec.OK || *keepFlag {
		// Keep the histories for a post-mortem.
		checker.WriteJSON(filepath.Join(dir, "register-history.json"), res.register)
		checker.WriteJSON(filepath.Join(dir, "bank-history.json"), res.bank)
		checker.WriteJSON(filepath.Join(dir, "append-history.json"), res.appends)
		checker.WriteJSON(filepath.Join(dir, "probe-samples.json"), res.samples)
		checker.WriteJSON(filepath.Join(dir, "events.json"), events)
		checker.WriteJSON(filepath.Join(dir, "writegap-history.json"), res.gapOps)
		t.Logf("histories kept in %s", dir)
	}
	written = true
	writeRecord(t, rec)
}

// transitions renders the cluster's failover history with the evidence of
// each decision.
func transitions(c *cluster.Cluster) []string {
	h, err := c.History()
	if err != nil {
		return []string{"history unavailable: " + err.Error()}
	}
	var out []string
	for _, tr := range h {
		line := fmt.Sprintf("epoch %d %s %s->%s (%s) promote_lsn=%s", tr.Epoch, tr.Kind, tr.From, tr.To, tr.Reason, tr.PromoteLSN)
		for _, cd := range tr.Candidates {
			line += fmt.Sprintf(" [%s reachable=%t tl=%d recv=%s replay=%s flush=%s rejected=%q]", cd.Node, cd.Reachable, cd.Timeline, cd.ReceiveLSN, cd.ReplayLSN, cd.FlushLSN, cd.Rejected)
		}
		out = append(out, line)
	}
	return out
}

// lastFailure says why a round stopped, as far as the record can: the
// details are in the test log.
func lastFailure(t *testing.T) string {
	if t.Failed() {
		return "the test failed (a wait timed out or a fault could not be injected; see the test log)"
	}
	return "the round stopped early"
}

// failoverGap is the write gap a fault at at caused: the longest time
// between two consecutive acknowledged writes of the write-gap probe that
// ends after at and begins less than failoverWindow after it. (A write
// acknowledged just after the fault, by a primary that did not yet know it
// was dying, must not hide the outage that follows it.)
func failoverGap(ops []checker.Op, at time.Duration) time.Duration {
	const failoverWindow = 10 * time.Second
	var acks []time.Duration
	for _, op := range ops {
		if op.Outcome == checker.OutcomeOK {
			acks = append(acks, op.Complete)
		}
	}
	sort.Slice(acks, func(i, j int) bool { return acks[i] < acks[j] })
	var longest time.Duration
	for i := 0; i+1 < len(acks); i++ {
		if acks[i+1] > at && acks[i] < at+failoverWindow {
			longest = max(longest, acks[i+1]-acks[i])
		}
	}
	return longest
}

// checkAppendsEverywhere settles the cluster, then waits until every node's
// PostgreSQL holds every acknowledged append.
func checkAppendsEverywhere(t *testing.T, c *cluster.Cluster, ops []checker.AppendOp) checker.Result {
	res := checker.Result{Checker: "durable-everywhere", OK: true, Stats: checker.Stats{Values: map[string]float64{}}}
	want := map[int64]bool{}
	for _, op := range ops {
		if op.Outcome == checker.OutcomeOK {
			want[op.ID] = true
		}
	}
	c.Settle(t)
	for _, n := range c.Nodes {
		var missing int
		var lastErr error
		ok := cluster.Poll(90*time.Second, func() bool {
			ids, err := cluster.QueryDirect[[]int64](n, "SELECT coalesce(array_agg(id), '{}') FROM chaos_append")
			if err != nil {
				lastErr = err
				return false
			}
			have := make(map[int64]bool, len(ids))
			for _, id := range ids {
				have[id] = true
			}
			missing = 0
			for id := range want {
				if !have[id] {
					missing++
				}
			}
			return missing == 0
		})
		res.Stats.Values["missing_"+n.Name] = float64(missing)
		if !ok {
			res.OK = false
			res.Problems = append(res.Problems, fmt.Sprintf("%s lacks %d of %d acknowledged appends after settling (last error %v)", n.Name, missing, len(want), lastErr))
		}
	}
	res.Stats.Values["acknowledged"] = float64(len(want))
	return res
}

// record is one JSON line of -chaos.out.
type record struct {
	Scenario         string           `json:"scenario"`
	Round            int              `json:"round"`
	Seed             int64            `json:"seed"`
	ScenarioSeed     int64            `json:"scenario_seed"`
	Nodes            int              `json:"nodes"`
	Started          string           `json:"started"`
	DurationS        float64          `json:"duration_s"`
	OK               bool             `json:"ok"`
	Problems         []string         `json:"problems,omitempty"`
	FailoverGapsMS   []float64        `json:"failover_gaps_ms,omitempty"`
	ErrorsBySQLState map[string]int   `json:"errors_by_sqlstate,omitempty"`
	Events           []checker.Event  `json:"events,omitempty"`
	Transitions      []string         `json:"transitions,omitempty"`
	Checkers         []checker.Result `json:"checkers"`
	Notes            map[string]any   `json:"notes,omitempty"`
}

var outMu sync.Mutex

func writeRecord(t *testing.T, rec record) {
	if *outFlag == "" {
		return
	}
	b, err := json.Marshal(rec)
	if err != nil {
		t.Errorf("encoding the round's record: %v", err)
		return
	}
	outMu.Lock()
	defer outMu.Unlock()
	if err := os.MkdirAll(filepath.Dir(*outFlag), 0o755); err != nil {
		t.Errorf("writing %s: %v", *outFlag, err)
		return
	}
	f, err := os.OpenFile(*outFlag, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Errorf("writing %s: %v", *outFlag, err)
		return
	}
	defer f.Close()
	f.Write(append(b, '\n'))
}

// names lists node names, for messages.
func names(ns []*cluster.Node) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = n.Name
	}
	sort.Strings(s)
	return strings.Join(s, ",")
}
