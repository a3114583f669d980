package agent

import (
	"context"
	"net/http"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgbattery/pgbattery/agent/config"
	"github.com/pgbattery/pgbattery/agent/doctor"
	"github.com/pgbattery/pgbattery/agent/version"
	"github.com/pgbattery/pgbattery/gossip"
)

// `pgbattery doctor`: the agent asked gathers every member's report through
// the agents' HTTP APIs (GET /v1/internal/doctor), measuring each peer's
// clock offset from the request's round trip on the way, adds the cluster's
// view (raft configuration, replicated state) and lets package doctor judge.

// doctorTimeout bounds the whole gathering; a peer that does not answer in
// time is reported as unreachable.
const doctorTimeout = 5 * time.Second

// handleDoctorReport is GET /v1/internal/doctor: this agent's own report.
func (a *Agent) handleDoctorReport(w http.ResponseWriter, r *http.Request) (any, error) {
	ctx, cancel := context.WithTimeout(r.Context(), forwardTimeout)
	defer cancel()
	return a.doctorReport(ctx), nil
}

// handleDoctor is GET /v1/agent/doctor[?clock_threshold=D][&min_free_wal=SIZE]
// [&max_slot_retained=SIZE][&input=1]: the checks over the whole cluster.
// The answer is 200 whatever the checks found; the status field says.
func (a *Agent) handleDoctor(w http.ResponseWriter, r *http.Request) (any, error) {
	q := r.URL.Query()
	o := doctor.DefaultOptions()
	if v := q.Get("clock_threshold"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, badRequest("clock_threshold must be a positive duration such as 500ms, not %q", v)
		}
		o.ClockThreshold = d
	}
	if v := q.Get("min_free_wal"); v != "" {
		n, err := config.ParseSize(v)
		if err != nil {
			return nil, badRequest("min_free_wal: %v", err)
		}
		o.MinFreeWAL = uint64(n)
	}
	if v := q.Get("max_slot_retained"); v != "" {
		n, err := config.ParseSize(v)
		if err != nil {
			return nil, badRequest("max_slot_retained: %v", err)
		}
		o.MaxSlotRetained = n
	}
	withInput, err := boolParam(q.Get("input"), "input")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), doctorTimeout)
	defer cancel()
	in := a.doctorInput(ctx)
	res := doctor.Result{Asker: in.Asker, Time: time.Now().UTC(), Checks: doctor.Evaluate(in, o)}
	res.Status = doctor.Worst(res.Checks)
	res.Options.ClockThresholdMs = o.ClockThreshold.Milliseconds()
	res.Options.MinFreeWAL = o.MinFreeWAL
	res.Options.MaxSlotRetained = o.MaxSlotRetained
	if withInput {
		res.Input = &in
	}
	return res, nil
}

// doctorInput gathers the reports of every member and the cluster's view.
func (a *Agent) doctorInput(ctx context.Context) doctor.Input {
	self := a.config().NodeName
	in := doctor.Input{Asker: self, Nodes: map[string]doctor.NodeResult{}}
	in.Nodes[self] = doctor.NodeResult{Report: a.doctorReport(ctx)}
	if a.cluster == nil {
		in.Members = []doctor.Member{{Name: self, Witness: !a.config().Postgres.Enabled}}
		return in
	}
	c := a.cluster
	st := c.fsm.State()
	in.Primary = st.Primary
	in.SyncMode, in.SyncStandbys, in.SyncK = st.Sync.Mode, st.Sync.Standbys, st.Sync.K
	byID := map[string]string{}
	for _, name := range st.MemberNames() {
		m := st.Member(name)
		in.Members = append(in.Members, doctor.Member{Name: name, Voter: m.Voter, Witness: m.NoPostgres})
		if m.ID != "" {
			byID[m.ID] = name
		}
	}
	// Members the replicated state does not list yet (before bootstrap,
	// or a cluster of witnesses only) are known from gossip.
	if a.gossip != nil {
		for _, gm := range a.gossip.Members() {
			if st.Member(gm.Name) != nil || gm.Status == gossip.StatusLeft || gm.Status == gossip.StatusLeaving {
				continue
			}
			in.Members = append(in.Members, doctor.Member{Name: gm.Name, Voter: gm.Tags[gossip.TagRaft] == gossip.RaftVoter,
				Witness: gm.Tags[gossip.TagRole] == gossip.RoleWitness})
			byID[gm.Name] = gm.Name
		}
	}
	nameOf := func(id string) string {
		if n, ok := byID[id]; ok {
			return n
		}
		return id
	}
	if c.raft != nil {
		if peers, err := c.raft.Peers(nil); err == nil {
			for _, p := range peers {
				in.Raft = append(in.Raft, doctor.RaftServer{Name: nameOf(p.ID), Voter: p.Voter})
			}
		}
		if _, id := c.raft.Leader(); id != "" {
			in.RaftLeader = nameOf(id)
		}
	}

	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, m := range in.Members {
		if m.Name == self {
			continue
		}
		wg.Add(1)
		go func(name string) {
			defer wg.Done()
			nr := a.askDoctor(ctx, name)
			mu.Lock()
			in.Nodes[name] = nr
			mu.Unlock()
		}(m.Name)
	}
	wg.Wait()
	return in
}

// askDoctor fetches one peer's report and estimates its clock offset: the
// peer wrote its time somewhere within the round trip, most likely in the
// middle, so offset ≈ peer time − (t0 + t1)/2, uncertain by ±RTT/2.
func (a *Agent) askDoctor(ctx context.Context, name string) doctor.NodeResult {
	f := a.cluster.fwd
	if f == nil {
		return doctor.NodeResult{Error: "this agent cannot reach its peers"}
	}
	addr, err := f.apiAddr(name)
	if err != nil {
		return doctor.NodeResult{Error: err.Error()}
	}
	var rep doctor.Report
	t0 := time.Now()
	err = f.getJSON(ctx, addr, "/v1/internal/doctor", &rep)
	t1 := time.Now()
	if err != nil {
		return doctor.NodeResult{Error: err.Error()}
	}
	if rep.Node != name {
		return doctor.NodeResult{Error: "another agent (" + rep.Node + ") answers at " + addr}
	}
	rtt := t1.Sub(t0)
	mid := t0.Add(rtt / 2)
	return doctor.NodeResult{Report: &rep, RTT: rtt, Offset: rep.Time.Sub(mid.Round(0))}
}

// doctorReport is what this agent says about itself.
func (a *Agent) doctorReport(ctx context.Context) *doctor.Report {
	cfg := a.config()
	rep := &doctor.Report{
		Node:            cfg.NodeName,
		Version:         version.Short(),
		Server:          cfg.Server,
		GossipEncrypted: len(cfg.EncryptKey) > 0,
		RPCTLS:          cfg.TLS.CAFile != "" && cfg.TLS.CertFile != "",
		HTTPTLS:         httpTLSEnabled(cfg),
		Postgres:        cfg.Postgres.Enabled,
	}
	if a.cluster != nil && a.cluster.rec != nil {
		a.cluster.rec.doctorReport(ctx, rep)
	}
	// Last: the clock reading must be as close to the answer as possible.
	rep.Time = time.Now().UTC()
	return rep
}

// doctorReport adds what the node's PostgreSQL says.
func (r *reconciler) doctorReport(ctx context.Context, rep *doctor.Report) {
	inst := r.instance()
	if b := inst.Config().Binaries; b != nil {
		rep.PGMajor, rep.PGVersion = b.Major, b.Version
	}
	walDir := filepath.Join(inst.DataDir(), "pg_wal")
	for _, dir := range []string{walDir, inst.DataDir(), filepath.Dir(inst.DataDir())} {
		var fs syscall.Statfs_t
		if syscall.Statfs(dir, &fs) == nil {
			rep.WALDiskFree = fs.Bavail * uint64(fs.Bsize)
			rep.WALDiskTotal = fs.Blocks * uint64(fs.Bsize)
			break
		}
	}
	if !inst.Running() {
		if inst.HasData() {
			if cd, err := inst.ControlData(ctx); err == nil {
				rep.DataChecksums, rep.WALLogHints = &cd.DataChecksums, &cd.WALLogHints
			} else {
				rep.Problems = append(rep.Problems, "pg_controldata: "+err.Error())
			}
		}
		return
	}
	st, err := inst.Status(ctx)
	if err != nil {
		rep.Problems = append(rep.Problems, "status: "+err.Error())
		return
	}
	rep.Running = true
	rep.Role = string(st.Role)
	for _, s := range st.Replication {
		rep.Standbys = append(rep.Standbys, doctor.Standby{Name: s.ApplicationName, State: s.State, SyncState: s.SyncState})
	}
	err = inst.WithConn(ctx, func(conn *pgx.Conn) error {
		rep.Settings = map[string]string{}
		rows, err := conn.Query(ctx, `SELECT name, setting FROM pg_settings
			WHERE name = ANY($1) OR name IN ('data_checksums', 'wal_log_hints')`, doctor.StandbySettings)
		if err != nil {
			return err
		}
		for rows.Next() {
			var name, v string
			if err := rows.Scan(&name, &v); err != nil {
				return err
			}
			switch name {
			case "data_checksums":
				b := v == "on"
				rep.DataChecksums = &b
			case "wal_log_hints":
				b := v == "on"
				rep.WALLogHints = &b
			default:
				rep.Settings[name] = v
			}
		}
		if err := rows.Err(); err != nil {
			return err
		}
		slots, err := conn.Query(ctx, `SELECT slot_name::text, active, coalesce(wal_status, ''),
			coalesce(CASE WHEN pg_is_in_recovery() OR restart_lsn IS NULL THEN NULL
				ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) END, -1)::bigint
			FROM pg_replication_slots ORDER BY slot_name`)
		if err != nil {
			return err
		}
		rep.Slots, err = pgx.CollectRows(slots, func(row pgx.CollectableRow) (doctor.Slot, error) {
			var s doctor.Slot
			err := row.Scan(&s.Name, &s.Active, &s.WALStatus, &s.RetainedBytes)
			return s, err
		})
		return err
	})
	if err != nil {
		rep.Problems = append(rep.Problems, "reading settings and slots: "+err.Error())
	}
}
