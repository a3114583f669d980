package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-metrics"
	"github.com/jackc/pgx/v5"

	"github.com/pgbattery/pgbattery/agent/config"
	"github.com/pgbattery/pgbattery/agent/controller"
	"github.com/pgbattery/pgbattery/agent/fsm"
	"github.com/pgbattery/pgbattery/gossip"
	"github.com/pgbattery/pgbattery/pgctl"
)

// Reconciler pacing. The loop also runs at once on every FSM change and
// when the postmaster exits, so the tick only bounds how stale the local
// observation may get.
const (
	reconcileTick = 250 * time.Millisecond
	// A standby whose WAL receiver has not streamed for this long is taken
	// to have diverged from its primary (a timeline fork it cannot follow)
	// and is rewound; pg_rewind is a no-op when it has not.
	divergedAfter = 10 * time.Second
	// A standby start waits this long for PostgreSQL to answer; one still
	// short of its consistent point then is left running and watched by
	// the loop (observeRecovering), which may have to re-point or rewind
	// it: the WAL it waits for may never come from where it looks.
	standbyReadyWait = 5 * time.Second
	// How often a standby that is not consistent yet asks the primary
	// whether it can ever get there by following (recoveringDiverged).
	recoveringCheckEvery = 2 * time.Second
	// How long a primary about to serve waits at a time for its
	// synchronous standbys to flush its WAL (awaitSyncQuorum).
	syncCatchUpWait = 2 * time.Second
	actionTimeout   = 5 * time.Minute
	// A failed action is retried after actionRetryMin, doubling up to
	// actionRetryMax while it keeps failing.
	actionRetryMin = 200 * time.Millisecond
	actionRetryMax = 5 * time.Second
	statusTimeout  = 2 * time.Second
)

// reconciler makes the local PostgreSQL do what controller.Desired says,
// given the FSM and what it observes locally. It is the only code that
// starts, stops, promotes, fences or re-points the node's PostgreSQL.
type reconciler struct {
	c      *cluster
	logger hclog.Logger
	self   string
	cfg    *config.RuntimeConfig

	instMu sync.Mutex
	inst   *pgctl.Instance
	creds  clusterCreds

	mu             sync.Mutex
	died           bool // the postmaster died and was not restarted since
	diedPID        int  // the postmaster whose death set died, counted once
	rewindFailures int
	lastLogged     string
	notStreaming   time.Time // since when a running standby is not streaming
	// wasDiskFull: the last diskFull answer (for logging its changes; the
	// probe handler and the loop both ask).
	wasDiskFull atomic.Bool
	// stalledReplay is the replay position of a standby on an older
	// timeline than the cluster's when notStreaming was last reset.
	stalledReplay pgctl.LSN
	// streamedTLI is the highest timeline this standby's WAL receiver has
	// reported (see standbyTimeline).
	streamedTLI uint32
	role, state string
	writable    bool // a running primary that accepts writes
	// failures counts consecutive failures of the same action, which is
	// retried after a growing pause (a clone while the primary is still
	// starting, say) instead of in a tight loop.
	failures   int
	failedAct  string
	retryAfter time.Time
	// slotsApplied is the slot set last made to match on this primary;
	// lastFlush the WAL flush position last observed on it.
	slotsApplied string
	// standbySlots: slots were created while a standby, ahead of a
	// promotion; a standby that is told to follow again drops them.
	standbySlots bool
	// releaseLogged is the epoch whose lease release was last logged
	// (touched by the reconcile loop only).
	releaseLogged uint64
	// unresponsiveSince is when the running PostgreSQL stopped answering
	// the status query (zero while it answers; reconcile loop only).
	unresponsiveSince time.Time
	observeTimedOut   bool // the last failed status query timed out
	handOverOnce      sync.Once
	stepMu            sync.Mutex  // one step or handOver at a time
	fenceMu           sync.Mutex  // Fence and liftFence exclude each other
	stopping          atomic.Bool // the agent is leaving: no more actions
	fenceRead         fenceReading
	lastFlush         fsm.LSN
	kick              chan struct{}
	// reinit tracks the operator's reinit request this agent carries out
	// (reconcile loop only; see reinit.go).
	reinit reinitProgress
	// recovering is the last verdict on a standby that is not consistent
	// yet (reconcile loop only; see recoveringDiverged).
	recovering recoveringVerdict
}

// gatewayHBA lets the gateways (on every node of the cluster, normally on
// one network) open client sessions with SCRAM. It comes after the
// operator's postgres.hba lines, so those can reject or narrow first.
const gatewayHBA = "host all all samenet scram-sha-256"

// clusterCreds are the agent's PostgreSQL role passwords. They are the same
// on every node (pg_basebackup copies pg_authid), so the first primary's
// agent generates them and the cluster state carries them to the others.
type clusterCreds struct {
	Superuser, Replication string
}

func newReconciler(c *cluster, cfg *config.RuntimeConfig, logger hclog.Logger) (*reconciler, error) {
	r := &reconciler{
		c:      c,
		logger: logger,
		self:   cfg.NodeName,
		cfg:    cfg,
		role:   gossip.RoleUnknown,
		state:  pgStateStopped,
		kick:   make(chan struct{}, 1),
	}
	creds, err := r.loadCreds()
	if err != nil {
		return nil, err
	}
	if err := r.newInstance(creds); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *reconciler) secretsDir() string { return filepath.Join(r.cfg.DataDir, secretsSubdir) }

// loadCreds reads the role passwords stored under data_dir/secrets,
// generating them on a node that has none yet (a future first primary).
func (r *reconciler) loadCreds() (clusterCreds, error) {
	su, err := pgctl.LoadOrCreateSecret(r.secretsDir(), "superuser")
	if err != nil {
		return clusterCreds{}, fmt.Errorf("loading the agent's PostgreSQL secret: %w", err)
	}
	repl, err := pgctl.LoadOrCreateSecret(r.secretsDir(), "replication")
	if err != nil {
		return clusterCreds{}, fmt.Errorf("loading the replication secret: %w", err)
	}
	return clusterCreds{Superuser: su, Replication: repl}, nil
}

func (r *reconciler) newInstance(creds clusterCreds) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bins, err := pgctl.FindBinaries(ctx, r.cfg.Postgres.BinDir)
	if err != nil {
		return err
	}
	inst, err := pgctl.NewInstance(pgctl.Config{
		NodeName:    r.cfg.NodeName,
		Binaries:    bins,
		Dir:         filepath.Join(r.cfg.DataDir, postgresSubdir),
		ListenAddr:  r.cfg.BindAddr,
		Port:        r.cfg.Ports.Postgres,
		OSUser:      r.cfg.Postgres.OSUser,
		Parameters:  r.cfg.Postgres.Parameters,
		HBA:         append(append([]string{}, r.cfg.Postgres.HBA...), gatewayHBA),
		Superuser:   pgctl.Credentials{Password: creds.Superuser},
		Replication: pgctl.Credentials{Password: creds.Replication},
		Logger:      r.logger,
		OnExit:      r.onExit,
	})
	if err != nil {
		return fmt.Errorf("configuring PostgreSQL: %w", err)
	}
	r.instMu.Lock()
	r.inst, r.creds = inst, creds
	r.instMu.Unlock()
	return nil
}

func (r *reconciler) instance() *pgctl.Instance {
	r.instMu.Lock()
	defer r.instMu.Unlock()
	return r.inst
}

func (r *reconciler) wake() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Position is the WAL flush position last observed while primary, for the
// lease renewals (async mode bounds a failover's loss against it).
func (r *reconciler) Position() fsm.LSN {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastFlush
}

// Ready reports whether PostgreSQL serves its role: a primary that accepts
// writes, or a running standby.
func (r *reconciler) Ready() (bool, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.state != pgStateRunning:
		return false, "postgres is " + r.state
	case r.role == gossip.RolePrimary && !r.writable:
		return false, "postgres is a primary that does not accept writes yet (fenced)"
	case r.role == gossip.RoleUnknown:
		return false, "postgres role is not known yet"
	}
	return true, ""
}

// State is the last observed role and state (readiness, gossip tags).
func (r *reconciler) State() (role, state string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.role, r.state
}

func (r *reconciler) setState(role, state string) {
	r.mu.Lock()
	changed := r.role != role || r.state != state
	r.role, r.state = role, state
	r.mu.Unlock()
	if !changed {
		return
	}
	metrics.SetGauge([]string{"postgres", "running"}, boolGauge(state == pgStateRunning))
	metrics.SetGauge([]string{"postgres", "is_primary"}, boolGauge(state == pgStateRunning && role == gossip.RolePrimary))
	r.c.a.pgStateChanged(role, state)
}

// Run reconciles until ctx ends, then stops PostgreSQL.
func (r *reconciler) Run(ctx context.Context) {
	changes, cancel := r.c.fsm.Subscribe()
	defer cancel()
	tick := time.NewTicker(reconcileTick)
	defer tick.Stop()
	for {
		var pmDone <-chan struct{}
		if pm := r.instance().Postmaster(); pm != nil && !pm.Exited() {
			pmDone = pm.Done()
		}
		select {
		case <-ctx.Done():
			r.shutdown()
			return
		case <-changes:
		case <-r.kick:
		case <-pmDone:
		case <-tick.C:
		}
		// An action usually leads straight to the next one (promote,
		// record the fence, serve): look again at once rather than on the
		// next tick, a bounded number of times.
		for i := 0; i < 8 && r.step(ctx) && ctx.Err() == nil; i++ {
		}
	}
}

// shutdown stops PostgreSQL as the agent stops. A primary then gives its
// lease up at once, with its final WAL position, so that the cluster fails
// over without waiting out the hold-down; the raft node is still up at this
// point (the agent shuts raft down after its goroutines).
func (r *reconciler) shutdown() {
	r.handOver()
	r.stop(pgctl.StopFast)
	r.setState(gossip.RoleUnknown, pgStateStopped)
}

// handOver is the first thing a stopping agent does when it runs the
// primary: fence PostgreSQL (read-only, sessions ended) and give the lease
// up with the final WAL position, so the cluster promotes a standby while
// this node is still leaving. PostgreSQL keeps running, fenced, until
// shutdown stops it. Later calls do nothing.
func (r *reconciler) handOver() {
	r.handOverOnce.Do(func() {
		// From now on the loop acts no more: a leaving node must not
		// start a rewind or a clone that its stop would cut short, nor
		// lift a fence. A step under way is waited for.
		r.stopping.Store(true)
		if st := r.c.fsm.State(); st.Primary != r.self || r.c.lease == nil {
			return // a standby's step (a clone, say) is not waited for
		}
		r.stepMu.Lock()
		defer r.stepMu.Unlock()
		st := r.c.fsm.State()
		if st.Primary != r.self {
			return
		}
		var final fsm.LSN
		if r.instance().Running() {
			ctx, cancel := context.WithTimeout(context.Background(), statusTimeout)
			if err := r.Fence(ctx, "agent shutting down"); err == nil {
				if s, err := r.instance().Status(ctx); err == nil {
					final = s.WALPosition()
				}
			}
			cancel()
		}
		ctx, cancel := context.WithTimeout(context.Background(), forwardTimeout)
		defer cancel()
		if err := r.c.lease.Release(ctx, final, "agent shut down"); err != nil {
			r.logger.Warn("releasing the lease at shutdown", "error", err)
		} else {
			r.logger.Info("lease released at shutdown", "final_lsn", final.String())
		}
	})
}

// onExit records a postmaster's death the moment pgctl reaps it (OnExit),
// before the loop next observes: a step that saw the postmaster still
// running and then found it gone must not mistake a crash for "not started
// yet", or a primary would restart in place instead of releasing its lease.
func (r *reconciler) onExit(st pgctl.ExitStatus) {
	if !st.Expected {
		r.mu.Lock()
		if !r.died && r.diedPID != st.PID {
			r.died = true
			r.diedPID = st.PID
			metrics.IncrCounter([]string{"postgres", "crashes"}, 1)
			r.logger.Error("PostgreSQL died", "exit", st.String(), "noticed_after", time.Since(st.At))
		}
		r.mu.Unlock()
	}
	r.wake()
}

// step observes, asks Desired, and acts once. It reports whether it carried
// out an action that may have changed what Desired says next.
func (r *reconciler) step(ctx context.Context) bool {
	// One step at a time with handOver: a step that began before the
	// agent started leaving must not lift the fence handOver puts up.
	r.stepMu.Lock()
	defer r.stepMu.Unlock()
	if r.stopping.Load() {
		return false
	}
	if pm := r.instance().Postmaster(); pm != nil && pm.Exited() {
		r.onExit(pm.ExitStatus())
	}
	st := r.c.fsm.State()
	local, status, ok := r.observe(ctx)
	if !ok {
		// PostgreSQL was running but did not answer: it may be dying this
		// very moment. Acting on a half observation could restart a crashed
		// primary in place instead of releasing its lease; look again once
		// pgctl has reaped it or it answers.
		r.checkHung()
		return false
	}
	r.unresponsiveSince = time.Time{}
	act := controller.Desired(st, r.self, local)
	reinit, isReinit := r.reinitAction(ctx, st)
	if isReinit {
		act = reinit
	}
	if s := act.String(); s != r.lastLogged {
		r.logger.Info("reconciling", "action", s, "epoch", act.Epoch)
		r.lastLogged = s
	}
	key := act.String()
	if act.Kind == controller.ActWait || act.Kind == controller.ActRefuse {
		return false
	}
	if key == r.failedAct && time.Now().Before(r.retryAfter) {
		return false
	}
	actx, cancel := context.WithTimeout(ctx, actionTimeout)
	defer cancel()
	err := r.execute(actx, st, act, local, status)
	switch {
	case err == nil:
		r.failures, r.failedAct = 0, ""
		if isReinit {
			r.reinitCloned(ctx, st)
		}
		return act.Kind != controller.ActServe && act.Kind != controller.ActFollow
	case ctx.Err() == nil:
		if key != r.failedAct {
			r.failures = 0
		}
		r.failures++
		r.failedAct = key
		pause := min(actionRetryMin<<min(r.failures-1, 6), actionRetryMax)
		r.retryAfter = time.Now().Add(pause)
		var w waitingError
		if errors.As(err, &w) {
			// Waiting on another node is the normal course of a start-up
			// or a failover, not a failure of this one.
			r.logger.Debug("action waiting", "action", key, "attempt", r.failures, "retry_in", pause, "reason", err)
		} else {
			r.logger.Error("action failed", "action", key, "attempt", r.failures, "retry_in", pause, "error", err)
			metrics.IncrCounter([]string{"postgres", "action_errors"}, 1)
		}
	}
	return false
}

// checkHung kills a PostgreSQL that has stopped answering for longer than
// failover.postgres_hang_timeout (stopped with SIGSTOP, stuck on a dead
// disk): a primary in that state would keep its lease, through the agent,
// and writes would stop for good. Killed, it is a crash: a primary releases
// its lease and the cluster fails over; a standby is restarted.
func (r *reconciler) checkHung() {
	limit := r.cfg.Failover.PostgresHangTimeout
	if limit <= 0 || !r.observeTimedOut {
		// An answer that says "not now" (starting up, crash recovery,
		// shutting down) is not a hang, however long it lasts.
		r.unresponsiveSince = time.Time{}
		return
	}
	if r.unresponsiveSince.IsZero() {
		// The failed status query itself waited up to statusTimeout.
		r.unresponsiveSince = time.Now().Add(-statusTimeout)
		return
	}
	if hung := time.Since(r.unresponsiveSince); hung >= limit {
		metrics.IncrCounter([]string{"postgres", "hangs"}, 1)
		if err := r.instance().Kill(fmt.Sprintf("no answer to the status query for %s (failover.postgres_hang_timeout = %s)", hung.Round(time.Millisecond), limit)); err != nil {
			r.logger.Error("killing a hung PostgreSQL", "error", err)
		}
		r.unresponsiveSince = time.Time{}
	}
}

// observe reads the local PostgreSQL into controller.Local.
func (r *reconciler) observe(ctx context.Context) (controller.Local, *pgctl.Status, bool) {
	inst := r.instance()
	r.mu.Lock()
	l := controller.Local{Died: r.died, RewindFailures: r.rewindFailures}
	r.mu.Unlock()
	l.HasData = inst.HasData()
	if r.c.lease != nil {
		l.LeaseValid = r.c.lease.Valid()
	}
	if !inst.Running() {
		l.InRecovery = inst.IsStandbyConfigured()
		if l.HasData {
			cctx, cancel := context.WithTimeout(ctx, statusTimeout)
			if cd, err := inst.ControlData(cctx); err == nil {
				l.SystemID = cd.SystemIdentifier
				l.Timeline = cd.Timeline
			}
			cancel()
		}
		r.mu.Lock()
		r.writable = false
		r.mu.Unlock()
		if l.Died {
			r.setState(gossip.RoleUnknown, pgStateCrashed)
		} else {
			r.setState(gossip.RoleUnknown, pgStateStopped)
		}
		return l, nil, true
	}
	sctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	st, err := inst.Status(sctx)
	if err != nil && pgctl.NotYetAccepting(err) && inst.IsStandbyConfigured() {
		return r.observeRecovering(ctx, l), nil, true
	}
	r.recovering = recoveringVerdict{}
	if err != nil {
		// Running but not answering: not usable as primary; the controller
		// sees the same through its probe.
		r.logger.Warn("reading PostgreSQL status", "error", err)
		r.observeTimedOut = errors.Is(err, context.DeadlineExceeded)
		r.setState(gossip.RoleUnknown, gossip.PGStarting)
		l.InRecovery = inst.IsStandbyConfigured()
		return l, nil, false
	}
	l.Running = true
	l.DiskFull = r.diskFull()
	l.SystemID = st.SystemIdentifier
	l.Timeline = r.standbyTimeline(st)
	l.InRecovery = st.Role == pgctl.RoleStandby
	l.Writable = !l.InRecovery && !st.ReadOnly
	l.Upstream = r.upstreamOf(st)
	if sc, ok := parseSyncNames(st.SynchronousStandbyNames); ok {
		l.SyncApplied = &sc
	}
	r.mu.Lock()
	r.writable = l.Writable
	r.mu.Unlock()
	if l.InRecovery {
		// A standby has diverged when it has not managed to stream for a
		// while although the cluster is on a newer timeline or a primary
		// serves: its WAL forked (it was ahead of the promoted node). A
		// standby that merely lost its primary is not rewound before a new
		// one serves (rewind waits for it).
		streaming := st.WALReceiver != nil && st.WALReceiver.Status == "streaming"
		fst := r.c.fsm.State()
		behind := fst.Timeline > l.Timeline
		// A standby that received WAL past the point where the new
		// timeline forked fetches the new timeline's history, so its
		// timeline looks current, yet it can never stream again. Not
		// streaming for divergedAfter while a primary serves is the sign
		// either way; rewinding a standby that had not diverged costs a
		// restart ("no rewind required").
		stuck := behind || (fst.PrimaryReady() && !fst.Lease.Released)
		r.mu.Lock()
		// A standby has no slots of its own (a clone or rewind drops
		// them): when it is promoted again they must be created afresh,
		// not skipped because this node applied the same set in an
		// earlier term as primary.
		r.slotsApplied = ""
		// Behind on the timeline, the receiver may still look "streaming"
		// at each retry: it reconnects (every wal_retrieve_retry_interval),
		// streams the old timeline up to the fork and stops again, while
		// replay never moves (TestChaos_MinorityPartitionPrimary5: stuck
		// for 5 minutes). There, only replay progress counts.
		progressing := streaming
		if behind {
			progressing = st.ReplayLSN > r.stalledReplay
		}
		switch {
		case progressing || !stuck:
			r.notStreaming = time.Time{}
			r.stalledReplay = st.ReplayLSN
		case r.notStreaming.IsZero():
			r.notStreaming = time.Now()
		case time.Since(r.notStreaming) > divergedAfter:
			l.Diverged = true
		}
		r.mu.Unlock()
		r.setState(gossip.RoleReplica, pgStateRunning)
	} else {
		r.mu.Lock()
		r.lastFlush = st.FlushLSN
		r.mu.Unlock()
		r.setState(gossip.RolePrimary, pgStateRunning)
	}
	return l, st, true
}

// observeRecovering reads a standby that runs but answers no query yet: it
// has not replayed up to its consistent point (after a rewind, a crash, or
// while the WAL of a clone is still to come). The WAL it needs may be on
// its way, may exist only on a primary it does not point at (its upstream
// was deposed meanwhile), or may exist nowhere because the current
// primary's history forked before that point. Desired must see such a
// standby to re-point it (ActFollow) or rewind it (Diverged), so it is
// observed from its control file instead of being waited for.
func (r *reconciler) observeRecovering(ctx context.Context, l controller.Local) controller.Local {
	l.Running, l.InRecovery = true, true
	cctx, cancel := context.WithTimeout(ctx, statusTimeout)
	cd, err := r.instance().ControlData(cctx)
	cancel()
	if err == nil {
		l.SystemID = cd.SystemIdentifier
		l.Timeline, _ = cd.ReplayedAtLeast()
	}
	r.mu.Lock()
	r.writable = false
	r.slotsApplied = ""
	r.mu.Unlock()
	r.setState(gossip.RoleReplica, pgStateStarting)
	l.Diverged = r.recoveringDiverged(ctx)
	return l
}

// recoveringVerdict is recoveringDiverged's last answer, for one epoch.
type recoveringVerdict struct {
	epoch    uint64
	primary  string
	at       time.Time
	diverged bool
}

// recoveringDiverged asks the serving primary, at most every
// recoveringCheckEvery, whether this standby, not consistent yet, must
// replay WAL past the point where the primary's history forked off its
// timeline (pgctl.NeedsRewind on the control file's minRecoveryPoint): it
// can then never become consistent by following, only by a rewind. A
// slow replay that is merely behind is left alone, however long it takes.
func (r *reconciler) recoveringDiverged(ctx context.Context) bool {
	st := r.c.fsm.State()
	if st.Primary == r.self || !st.PrimaryReady() || st.Lease.Released {
		return false
	}
	v := r.recovering
	if v.epoch == st.Epoch && v.primary == st.Primary && time.Since(v.at) < recoveringCheckEvery {
		return v.diverged
	}
	peer, err := r.peer(st, st.Primary)
	if err != nil {
		return false
	}
	cctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	need, why, err := r.instance().NeedsRewind(cctx, peer)
	r.recovering = recoveringVerdict{epoch: st.Epoch, primary: st.Primary, at: time.Now(), diverged: err == nil && need}
	switch {
	case err != nil:
		r.logger.Debug("asking whether a standby that is not consistent yet can follow the primary", "primary", st.Primary, "error", err)
	case need:
		r.logger.Warn("standby cannot become consistent by following the primary: it will be rewound", "primary", st.Primary, "reason", why)
	}
	return need
}

// standbyTimeline is the timeline a running PostgreSQL is on. For a
// standby without a WAL receiver (its primary just died) pgctl falls back to
// the last checkpoint's timeline, which stays behind a timeline switch that
// was followed by streaming until the next restartpoint: every standby would
// then look diverged and ineligible, and failover would block. The highest
// timeline the receiver has reported is remembered and used instead. It only
// grows: a rewind or a re-clone moves a standby to a newer timeline, never
// an older one. A diverged standby never streams the new timeline, so it
// still shows the old one.
func (r *reconciler) standbyTimeline(st *pgctl.Status) uint32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st.Role != pgctl.RoleStandby {
		return st.Timeline
	}
	if w := st.WALReceiver; w != nil && w.ReceivedTLI > r.streamedTLI {
		r.streamedTLI = w.ReceivedTLI
	}
	return max(st.Timeline, r.streamedTLI)
}

// upstreamOf maps the WAL receiver's sender to a member name.
func (r *reconciler) upstreamOf(st *pgctl.Status) string {
	if st.WALReceiver == nil || st.WALReceiver.SenderHost == "" {
		return ""
	}
	addr := net.JoinHostPort(st.WALReceiver.SenderHost, strconv.Itoa(st.WALReceiver.SenderPort))
	for name, m := range r.c.fsm.State().Members {
		if m.Addrs["postgres"] == addr {
			return name
		}
	}
	return ""
}

// execute carries an action out. Every action is idempotent: the loop
// repeats it until the observation changes.
func (r *reconciler) execute(ctx context.Context, st *fsm.State, act controller.Action, l controller.Local, status *pgctl.Status) error {
	inst := r.instance()
	switch act.Kind {
	case controller.ActWait:
		return nil
	case controller.ActRefuse:
		// Logged by step when the action first appears; nothing else to do:
		// the data is another cluster's and must not be touched.
		return nil
	case controller.ActInit:
		if err := r.adoptCreds(st); err != nil {
			return err
		}
		if err := inst.InitDB(ctx, pgctl.InitDBOptions{}); err != nil {
			return fmt.Errorf("initdb: %w", err)
		}
		if err := r.start(ctx, true); err != nil {
			return err
		}
		return r.publishSystemID(ctx, st)
	case controller.ActClone:
		if err := r.upstreamServing(st, act.Upstream); err != nil {
			return err
		}
		if err := r.adoptCreds(st); err != nil {
			return err
		}
		inst = r.instance()
		peer, err := r.peer(st, act.Upstream)
		if err != nil {
			return err
		}
		r.stop(pgctl.StopFast)
		if inst.HasData() {
			if err := r.setAsideData(act.Reason); err != nil {
				return err
			}
		}
		r.logger.Info("cloning from the primary", "primary", act.Upstream, "addr", peer.String())
		if err := inst.Clone(ctx, peer, pgctl.CloneOptions{Slot: controller.SlotName(r.self)}); err != nil {
			return fmt.Errorf("cloning from %s: %w", act.Upstream, err)
		}
		r.mu.Lock()
		r.rewindFailures = 0
		r.mu.Unlock()
		return r.start(ctx, true)
	case controller.ActStart:
		return r.start(ctx, true)
	case controller.ActReleaseLease:
		if r.c.lease == nil {
			return nil
		}
		if err := r.c.lease.Release(ctx, 0, "postgres died"); err != nil {
			return fmt.Errorf("releasing the lease: %w", err)
		}
		// Desired repeats the action until this node's replica has
		// applied the release: say it once.
		if r.releaseLogged != act.Epoch {
			r.releaseLogged = act.Epoch
			r.logger.Warn("PostgreSQL died while primary: lease released so a new primary can be chosen at once")
		}
		return nil
	case controller.ActFence:
		return r.Fence(ctx, act.Reason)
	case controller.ActStepDown:
		// A planned switchover first lets running transactions finish
		// (agent/drain.go); gateways hold new ones meanwhile.
		r.drainForSwitchover(ctx, st, act.Epoch)
		if err := r.Fence(ctx, act.Reason); err != nil {
			return err
		}
		var final fsm.LSN
		if s, err := inst.Status(ctx); err == nil {
			final = s.WALPosition()
		}
		if err := r.c.lease.Release(ctx, final, "stepped down: "+act.Reason); err != nil {
			return fmt.Errorf("releasing the lease after stepping down: %w", err)
		}
		r.logger.Info("stepped down", "final_lsn", final.String(), "reason", act.Reason)
		return nil
	case controller.ActPromote:
		if !inst.Fenced() {
			// Promoted, it must not take a write before ActServe.
			if err := inst.SetFenced(ctx, true); err != nil {
				return fmt.Errorf("fencing before promotion: %w", err)
			}
		}
		if err := r.prepareOffice(ctx, st, act, status); err != nil {
			return err
		}
		start := time.Now()
		if err := inst.Promote(ctx); err != nil {
			return fmt.Errorf("promoting: %w", err)
		}
		r.logger.Info("promoted", "epoch", act.Epoch, "took", time.Since(start))
		return nil
	case controller.ActRecordFence:
		return r.recordFence(ctx, st, act)
	case controller.ActServe:
		if err := r.prepareOffice(ctx, st, act, status); err != nil {
			return err
		}
		if r.fenced(status) {
			// Fenced during its term (the lease lapsed) and serving
			// again: see awaitSyncQuorum.
			if err := r.awaitSyncQuorum(ctx, act.Epoch); err != nil {
				return err
			}
		}
		return r.liftFence(ctx, act, status)
	case controller.ActFollow:
		return r.follow(ctx, st, act, l)
	case controller.ActRewind:
		return r.rewind(ctx, st, act)
	}
	return fmt.Errorf("unknown action %q", act.Kind)
}

// prepareOffice puts in place what a primary needs before it accepts
// writes: synchronous_standby_names and the members' replication slots.
// Done before the promotion too, where the standby ignores the setting.
func (r *reconciler) prepareOffice(ctx context.Context, st *fsm.State, act controller.Action, status *pgctl.Status) error {
	want := r.syncNames(st, act)
	if status == nil || status.SynchronousStandbyNames != want {
		if _, err := r.instance().SetSynchronousStandbyNames(ctx, want); err != nil {
			return fmt.Errorf("setting synchronous_standby_names: %w", err)
		}
		r.logger.Info("synchronous standbys set", "synchronous_standby_names", want)
	}
	if status != nil && status.Role == pgctl.RoleStandby {
		r.mu.Lock()
		r.standbySlots = true
		r.mu.Unlock()
	}
	return r.ensureSlots(ctx, act.Slots)
}

// dropStandbySlots drops the slots a standby created for a promotion that
// did not happen: on a standby nothing consumes them, and they would keep
// its WAL forever.
func (r *reconciler) dropStandbySlots(ctx context.Context) error {
	r.mu.Lock()
	pending := r.standbySlots
	r.mu.Unlock()
	if !pending {
		return nil
	}
	inst := r.instance()
	have, err := inst.ReplicationSlots(ctx)
	if err != nil {
		return err
	}
	for _, sl := range have {
		if strings.HasPrefix(sl.Name, controller.SlotPrefix) && !sl.Active {
			if _, err := inst.DropReplicationSlot(ctx, sl.Name); err != nil {
				return fmt.Errorf("dropping replication slot %s: %w", sl.Name, err)
			}
			r.logger.Info("dropped a replication slot made for a promotion that did not happen", "slot", sl.Name)
		}
	}
	r.mu.Lock()
	r.standbySlots = false
	r.mu.Unlock()
	return nil
}

// noStandby is a synchronous standby name no node carries. In a
// synchronous mode with no standby in the set yet, the primary lists it so
// that commits wait (for a standby to join the set) instead of being
// acknowledged with no copy on a promotable node.
const noStandby = "pgbattery_none"

// syncNames is the synchronous_standby_names the primary must run.
func (r *reconciler) syncNames(st *fsm.State, act controller.Action) string {
	if len(act.Sync.Standbys) > 0 && act.Sync.K > 0 {
		return pgctl.FormatSynchronousStandbyNames(pgctl.SyncAny, act.Sync.K, act.Sync.Standbys)
	}
	mode := st.Sync.Mode
	if mode == "" {
		mode = r.cfg.Replication.Mode
	}
	others := 0
	for name, m := range st.Members {
		if name != r.self && !m.NoPostgres {
			others++
		}
	}
	if mode == fsm.ModeAsync || others == 0 {
		// Asynchronous by choice, or a single-node cluster: no standby
		// could ever hold a copy.
		return ""
	}
	return pgctl.FormatSynchronousStandbyNames(pgctl.SyncAny, 1, []string{noStandby})
}

// ensureSlots makes the primary's physical replication slots match want:
// one per other member, created before it streams; pgbattery's slots for
// members that are gone are dropped, other slots are never touched.
func (r *reconciler) ensureSlots(ctx context.Context, want []string) error {
	key := strings.Join(want, ",")
	r.mu.Lock()
	done := r.slotsApplied == key
	r.mu.Unlock()
	if done {
		return nil
	}
	inst := r.instance()
	have, err := inst.ReplicationSlots(ctx)
	if err != nil {
		return err
	}
	wanted := map[string]bool{}
	for _, name := range want {
		wanted[name] = true
		if _, err := inst.CreateReplicationSlot(ctx, name); err != nil {
			return fmt.Errorf("creating replication slot %s: %w", name, err)
		}
	}
	for _, sl := range have {
		if strings.HasPrefix(sl.Name, controller.SlotPrefix) && !wanted[sl.Name] && !sl.Active {
			if _, err := inst.DropReplicationSlot(ctx, sl.Name); err != nil {
				return fmt.Errorf("dropping replication slot %s: %w", sl.Name, err)
			}
			r.logger.Info("dropped the replication slot of a departed member", "slot", sl.Name)
		}
	}
	r.mu.Lock()
	r.slotsApplied = key
	r.mu.Unlock()
	return nil
}

// followOpts streams through this node's own slot on the primary.
func (r *reconciler) followOpts() pgctl.FollowOptions {
	return pgctl.FollowOptions{Slot: controller.SlotName(r.self)}
}

// start starts PostgreSQL fenced (read-only): only ActServe lifts the
// fence, after the FSM says this node may write.
func (r *reconciler) start(ctx context.Context, fenced bool) error {
	inst := r.instance()
	if inst.Running() {
		return nil
	}
	r.setState(gossip.RoleUnknown, pgStateStarting)
	sctx := ctx
	standby := inst.IsStandbyConfigured()
	if standby {
		var cancel context.CancelFunc
		sctx, cancel = context.WithTimeout(ctx, standbyReadyWait)
		defer cancel()
	}
	if pm, err := inst.Start(sctx, pgctl.StartOptions{Fenced: fenced}); err != nil {
		if !standby || pm == nil || pm.Exited() || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("starting PostgreSQL: %w", err)
		}
		r.logger.Info("standby started but not consistent yet: replaying, watched by the loop", "waited", standbyReadyWait)
	}
	r.mu.Lock()
	wasDead := r.died
	r.died = false
	r.notStreaming = time.Time{}
	r.stalledReplay = 0
	r.mu.Unlock()
	r.recovering = recoveringVerdict{}
	if wasDead {
		r.logger.Info("PostgreSQL restarted after a crash")
	}
	return nil
}

func (r *reconciler) stop(mode pgctl.StopMode) {
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if err := r.instance().Stop(ctx, mode); err != nil {
		r.logger.Error("stopping PostgreSQL", "error", err)
	}
}

// Fence implements lease.Fencer: no more writes on this node, now.
// Read-only first (new transactions), then the sessions that may hold a
// write transaction open are terminated; if either fails PostgreSQL is
// stopped, which certainly ends writes.
func (r *reconciler) Fence(ctx context.Context, reason string) error {
	r.fenceMu.Lock()
	defer r.fenceMu.Unlock()
	inst := r.instance()
	if !inst.Running() {
		return nil
	}
	r.logger.Warn("fencing PostgreSQL", "reason", reason)
	metrics.IncrCounter([]string{"postgres", "fenced"}, 1)
	err := inst.SetFenced(ctx, true)
	if rt := r.c.a.router; rt != nil {
		// The local gateway must see the primary in doubt before the
		// sessions are ended, so it keeps their 57P01 from the clients
		// and holds them (localPrimaryServes is false from SetFenced on).
		rt.notify()
	}
	if err == nil {
		_, err = inst.TerminateClientBackends(ctx)
	}
	if err != nil {
		r.logger.Error("fencing failed: stopping PostgreSQL", "error", err)
		r.stop(pgctl.StopImmediate)
		return nil
	}
	return nil
}

// Kill implements lease.Killer: PostgreSQL is killed at once (a thawed
// primary whose lease lapsed while it was frozen) and handled as a crash.
func (r *reconciler) Kill(reason string) error {
	metrics.IncrCounter([]string{"postgres", "fenced"}, 1)
	return r.instance().Kill(reason)
}

// recordFence proposes the fence xid of a newly promoted primary: any
// transaction id at or above it did not commit before this epoch.
//
// The fence is read once per epoch, while PostgreSQL is still read-only,
// and the read-only default is lifted right after, before the record goes
// through raft: every transaction id assigned from then on is at or above
// the fence, which is all commit resolution needs, and the gateways, which
// route to the new primary only once the fence is in the FSM, find it
// already accepting writes. Reading it again after the lift could give a
// larger value, under which a new transaction's xid would pass for a lost
// one of the old timeline; so a retry reuses the first reading.
func (r *reconciler) recordFence(ctx context.Context, st *fsm.State, act controller.Action) error {
	if f, ok := st.FenceFor(act.Epoch); ok && f.Node == r.self {
		return nil // recorded; the FSM change that says so is on its way
	}
	fr := r.fenceRead
	if fr.epoch != act.Epoch {
		var lsn string
		fr = fenceReading{epoch: act.Epoch}
		err := r.instance().WithConn(ctx, func(conn *pgx.Conn) error {
			return conn.QueryRow(ctx, `SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint,
		(SELECT timeline_id FROM pg_control_checkpoint())::int, pg_current_wal_lsn()::text`).Scan(&fr.xid, &fr.tli, &lsn)
		})
		if err != nil {
			return fmt.Errorf("reading the fence xid: %w", err)
		}
		fr.lsn, _ = pgctl.ParseLSN(lsn)
		if s, err := r.instance().Status(ctx); err == nil && s.Timeline > fr.tli {
			fr.tli = s.Timeline
		}
		r.fenceRead = fr
	}
	status, err := r.instance().Status(ctx)
	if err != nil {
		return fmt.Errorf("reading PostgreSQL's status before lifting the fence: %w", err)
	}
	if err := r.prepareOffice(ctx, st, act, status); err != nil {
		return err
	}
	if err := r.liftFence(ctx, act, status); err != nil {
		return err
	}
	cmd := &fsm.RecordFence{Node: r.self, Epoch: act.Epoch, Timeline: fr.tli, XID: fr.xid, SwitchLSN: fr.lsn}
	if err := r.c.fwd.apply(ctx, cmd); err != nil {
		if f, ok := r.c.fsm.State().FenceFor(act.Epoch); ok && f.Node == r.self {
			return nil // an earlier attempt committed
		}
		return fmt.Errorf("recording the fence: %w", err)
	}
	r.logger.Info("fence recorded", "epoch", act.Epoch, "xid", fr.xid, "timeline", fr.tli)
	return nil
}

// fenceReading is a new primary's fence, read once per epoch.
type fenceReading struct {
	epoch uint64
	xid   uint64
	tli   uint32
	lsn   fsm.LSN
}

// liftFence lets PostgreSQL accept writes (default_transaction_read_only
// off), if it does not already.
func (r *reconciler) liftFence(ctx context.Context, act controller.Action, status *pgctl.Status) error {
	// Lifting and fencing exclude each other, and the reasons to lift are
	// checked under the same lock: a lease that lapsed (the lease runner
	// fences from its own goroutine) or a leaving agent since this step
	// observed must not be undone by it.
	r.fenceMu.Lock()
	defer r.fenceMu.Unlock()
	if r.stopping.Load() {
		return errors.New("not lifting the fence: the agent is leaving")
	}
	if r.c.lease != nil && !r.c.lease.Valid() {
		return errors.New("not lifting the fence: the lease is not valid")
	}
	inst := r.instance()
	if r.fenced(status) {
		if err := inst.SetFenced(ctx, false); err != nil {
			return fmt.Errorf("lifting the fence: %w", err)
		}
		r.logger.Info("accepting writes", "epoch", act.Epoch)
	}
	return nil
}

// fenced reports whether PostgreSQL is read-only by default: fenced by
// this agent, or, as status shows, by a setting left from before.
func (r *reconciler) fenced(status *pgctl.Status) bool {
	return r.instance().Fenced() || (status != nil && status.ReadOnly)
}

// awaitSyncQuorum waits until the synchronous standbys PostgreSQL waits for
// (synchronous_standby_names) have flushed all of this primary's WAL, before
// a primary fenced during its term serves again. Its WAL may hold commits
// visible here that no standby has: a COMMIT that waited for its standby
// when the fence ended its session is committed locally all the same. A
// read served here would see them, and lose them if the next failover
// came before its standbys caught up; so it serves only once they have
// them (a write would wait for the same standbys anyway).
//
// A newly promoted primary does not wait (it would add the standbys'
// re-pointing to every failover): commits it received that its old
// primary never got acknowledged are lost only if it fails too before
// its standbys have them (docs/chaos.md, known gaps).
func (r *reconciler) awaitSyncQuorum(ctx context.Context, epoch uint64) error {
	inst := r.instance()
	st, err := inst.Status(ctx)
	if err != nil {
		return fmt.Errorf("reading the replication state before serving: %w", err)
	}
	sc, ok := parseSyncNames(st.SynchronousStandbyNames)
	if !ok || sc.K <= 0 || len(sc.Standbys) == 0 || slices.Equal(sc.Standbys, []string{noStandby}) {
		// Asynchronous, or no standby in the set yet (a new cluster):
		// no other node can have what this one has.
		return nil
	}
	target := st.FlushLSN
	start := time.Now()
	for {
		have := 0
		for _, s := range st.Replication {
			if slices.Contains(sc.Standbys, s.ApplicationName) && s.FlushLSN >= target {
				have++
			}
		}
		if have >= sc.K {
			if waited := time.Since(start); waited > 100*time.Millisecond {
				r.logger.Info("synchronous standbys caught up before serving", "waited", waited.Round(time.Millisecond), "lsn", target.String())
			}
			return nil
		}
		if r.c.fsm.State().Epoch != epoch || (r.c.lease != nil && !r.c.lease.Valid()) {
			return waitingError{"the epoch or the lease changed while waiting for the synchronous standbys"}
		}
		if time.Since(start) > syncCatchUpWait {
			return waitingError{fmt.Sprintf("waiting for %d of the synchronous standbys %v to flush %s before serving", sc.K, sc.Standbys, target)}
		}
		if !sleepCtx(ctx, 2*time.Millisecond) {
			return ctx.Err()
		}
		if st, err = inst.Status(ctx); err != nil {
			return fmt.Errorf("reading the replication state before serving: %w", err)
		}
	}
}

// publishSystemID records the new cluster's system identifier after initdb.
func (r *reconciler) publishSystemID(ctx context.Context, st *fsm.State) error {
	s, err := r.instance().Status(ctx)
	if err != nil {
		return fmt.Errorf("reading the system identifier: %w", err)
	}
	if err := r.c.fwd.apply(ctx, &fsm.SetSystemID{SystemID: s.SystemIdentifier}); err != nil {
		return fmt.Errorf("recording the system identifier: %w", err)
	}
	return nil
}

func (r *reconciler) follow(ctx context.Context, st *fsm.State, act controller.Action, l controller.Local) error {
	inst := r.instance()
	peer, err := r.peer(st, act.Upstream)
	if err != nil {
		return err
	}
	conninfo, slot := inst.FollowTarget()
	// pgctl writes host='H' port='P' (quoted libpq values).
	pointed := strings.Contains(conninfo, "host='"+peer.Host+"'") && strings.Contains(conninfo, "port='"+strconv.Itoa(peer.Port)+"'") &&
		slot == r.followOpts().Slot
	if inst.Running() {
		if err := r.dropStandbySlots(ctx); err != nil && !pgctl.NotYetAccepting(err) {
			// Not consistent yet: the slots go at a later step.
			return err
		}
	}
	if !pointed || !inst.IsStandbyConfigured() {
		r.logger.Info("following the primary", "primary", act.Upstream, "addr", peer.String())
		if err := inst.Follow(ctx, peer, r.followOpts()); err != nil {
			return fmt.Errorf("following %s: %w", act.Upstream, err)
		}
	}
	return r.start(ctx, true)
}

func (r *reconciler) rewind(ctx context.Context, st *fsm.State, act controller.Action) error {
	inst := r.instance()
	peer, err := r.peer(st, act.Upstream)
	if err != nil {
		return err
	}
	if err := r.upstreamServing(st, act.Upstream); err != nil {
		return err
	}
	r.logger.Info("rewinding to the primary's timeline", "primary", act.Upstream, "reason", act.Reason)
	r.stop(pgctl.StopFast)
	if err := inst.Rewind(ctx, peer, r.followOpts()); err != nil {
		r.mu.Lock()
		r.rewindFailures++
		n := r.rewindFailures
		r.mu.Unlock()
		return fmt.Errorf("pg_rewind from %s (attempt %d of %d): %w", act.Upstream, n, controller.MaxRewindAttempts, err)
	}
	r.mu.Lock()
	r.rewindFailures = 0
	r.notStreaming = time.Time{}
	r.stalledReplay = 0
	r.mu.Unlock()
	return r.start(ctx, true)
}

// waitingError is an action that cannot proceed until another node does
// something; it is retried like a failure but logged quietly.
type waitingError struct{ msg string }

func (e waitingError) Error() string { return e.msg }

// upstreamServing checks that node is the primary of the current epoch,
// serving, and that its PostgreSQL accepts connections. Clone and rewind
// wait for that: a failure against a primary that is down says nothing
// about this node's data and must not count towards giving it up.
func (r *reconciler) upstreamServing(st *fsm.State, node string) error {
	if node != st.Primary || !st.PrimaryReady() {
		return waitingError{fmt.Sprintf("waiting for %s to serve as primary", node)}
	}
	peer, err := r.peer(st, node)
	if err != nil {
		return err
	}
	conn, err := net.DialTimeout("tcp", peer.String(), time.Second)
	if err != nil {
		return waitingError{fmt.Sprintf("primary %s is not reachable yet: %v", node, err)}
	}
	conn.Close()
	return nil
}

// setAsideData moves PGDATA out of the way before a re-clone instead of
// deleting it: the last copy of a node's WAL is worth a rename. One set-aside
// copy is kept; an older one is removed.
func (r *reconciler) setAsideData(reason string) error {
	dir := r.instance().DataDir()
	old := dir + ".old"
	if err := os.RemoveAll(old); err != nil {
		return fmt.Errorf("removing the previous set-aside data %s: %w", old, err)
	}
	if err := os.Rename(dir, old); err != nil {
		return fmt.Errorf("setting aside PostgreSQL data before re-cloning: %w", err)
	}
	r.logger.Warn("set this node's PostgreSQL data aside to re-clone it", "moved_to", old, "reason", reason)
	return nil
}

// peer is a member's PostgreSQL address.
func (r *reconciler) peer(st *fsm.State, node string) (pgctl.Peer, error) {
	m := st.Member(node)
	if m == nil || m.Addrs["postgres"] == "" {
		return pgctl.Peer{}, fmt.Errorf("no PostgreSQL address known for %s", node)
	}
	host, port, err := net.SplitHostPort(m.Addrs["postgres"])
	if err != nil {
		return pgctl.Peer{}, fmt.Errorf("PostgreSQL address of %s: %w", node, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return pgctl.Peer{}, fmt.Errorf("PostgreSQL port of %s: %w", node, err)
	}
	return pgctl.Peer{Host: host, Port: p}, nil
}

// adoptCreds makes this node use the cluster's role passwords before it
// creates or copies PostgreSQL data: the first primary publishes its own,
// every other node takes them from the cluster state.
func (r *reconciler) adoptCreds(st *fsm.State) error {
	if st.Secrets == nil {
		if st.Primary != r.self {
			return waitingError{"the cluster's PostgreSQL secrets are not published yet"}
		}
		ctx, cancel := context.WithTimeout(context.Background(), forwardTimeout)
		defer cancel()
		return r.c.fwd.apply(ctx, &fsm.SetSecrets{Superuser: r.creds.Superuser, Replication: r.creds.Replication})
	}
	want := clusterCreds{Superuser: st.Secrets.Superuser, Replication: st.Secrets.Replication}
	if want == r.creds {
		return nil
	}
	dir := r.secretsDir()
	for name, v := range map[string]string{"superuser": want.Superuser, "replication": want.Replication} {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("replacing secret %s: %w", name, err)
		}
		if err := pgctl.StoreSecret(dir, name, v); err != nil {
			return fmt.Errorf("storing secret %s: %w", name, err)
		}
	}
	r.logger.Info("adopted the cluster's PostgreSQL role secrets")
	return r.newInstance(want)
}

// diskFull reports whether less than failover.min_free_space is left for
// PostgreSQL's data or WAL, and logs when that changes.
func (r *reconciler) diskFull() bool {
	limit := r.cfg.Failover.MinFreeSpace
	if limit <= 0 {
		return false
	}
	free, err := r.instance().FreeSpace()
	if err != nil {
		r.logger.Debug("reading free disk space", "error", err)
		return false
	}
	full := free < uint64(limit)
	if r.wasDiskFull.Swap(full) != full {
		if full {
			r.logger.Error("disk nearly full: a primary steps down, a standby is not promoted", "free_bytes", free, "min_free_space", limit)
		} else {
			r.logger.Info("disk space is back", "free_bytes", free, "min_free_space", limit)
		}
	}
	return full
}

// pgStatus answers the controller's probe (GET /v1/internal/pg-status).
func (r *reconciler) pgStatus(ctx context.Context) controller.PGStatus {
	inst := r.instance()
	ps := controller.PGStatus{HasData: inst.HasData()}
	if !inst.Running() {
		return ps
	}
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	st, err := inst.Status(ctx)
	if err != nil {
		return ps
	}
	ps.Running = true
	ps.InRecovery = st.Role == pgctl.RoleStandby
	ps.Writable = !ps.InRecovery && !st.ReadOnly
	ps.Timeline = r.standbyTimeline(st)
	ps.SystemID = st.SystemIdentifier
	ps.Upstream = r.upstreamOf(st)
	// Healthy means PostgreSQL answered its status queries within the
	// probe's deadline. A standby that is not streaming is still healthy:
	// when the primary is gone none is, and each is a failover candidate
	// judged by the WAL it holds.
	ps.Healthy = true
	if ps.DiskFull = r.diskFull(); ps.DiskFull {
		ps.Healthy = false
	}
	if ps.InRecovery {
		ps.ReceiveLSN = st.ReceiveLSN
		ps.ReplayLSN = st.ReplayLSN
	} else {
		ps.FlushLSN = st.FlushLSN
		if sc, ok := parseSyncNames(st.SynchronousStandbyNames); ok {
			ps.SyncApplied = &sc
		}
		ps.StandbyFlush = make(map[string]fsm.LSN, len(st.Replication))
		for _, s := range st.Replication {
			if s.State == "streaming" {
				ps.StandbyFlush[s.ApplicationName] = s.FlushLSN
			}
		}
	}
	return ps
}

var syncNamesRe = regexp.MustCompile(`^\s*ANY\s+(\d+)\s*\((.*)\)\s*$`)

// parseSyncNames reads back what FormatSynchronousStandbyNames wrote: ""
// (asynchronous) or ANY k ("a", "b"). Anything else is not ours.
func parseSyncNames(s string) (controller.SyncConfig, bool) {
	if strings.TrimSpace(s) == "" {
		return controller.SyncConfig{}, true
	}
	m := syncNamesRe.FindStringSubmatch(s)
	if m == nil {
		return controller.SyncConfig{}, false
	}
	k, _ := strconv.Atoi(m[1])
	var names []string
	for _, part := range strings.Split(m[2], ",") {
		n := strings.TrimSpace(part)
		if strings.HasPrefix(n, `"`) && strings.HasSuffix(n, `"`) && len(n) >= 2 {
			n = strings.ReplaceAll(n[1:len(n)-1], `""`, `"`)
		}
		if n != "" {
			names = append(names, n)
		}
	}
	return controller.SyncConfig{Standbys: names, K: k}, true
}
