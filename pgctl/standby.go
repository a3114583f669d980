package pgctl

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// CloneOptions tune Clone.
type CloneOptions struct {
	// Slot streams the backup's WAL through this physical slot and makes
	// the new standby follow through it too.
	Slot string
	// CreateSlot creates Slot on the primary as part of the backup
	// (pg_basebackup --create-slot); it fails if the slot exists.
	CreateSlot bool
}

// Clone fills an empty PGDATA with pg_basebackup from a running primary
// (WAL streamed alongside, fast checkpoint) and configures the result to
// follow that primary. The password comes from the 0600 passfile, never
// from the command line. PostgreSQL is left stopped.
func (i *Instance) Clone(ctx context.Context, from Peer, opts CloneOptions) error {
	i.opMu.Lock()
	defer i.opMu.Unlock()
	if i.isRunning() {
		return fmt.Errorf("cloning from %s: %w", from, ErrRunning)
	}
	empty, err := i.dataDirEmpty()
	if err != nil {
		return fmt.Errorf("cloning from %s: %w", from, err)
	}
	if !empty {
		return fmt.Errorf("cloning from %s into %s: %w (RemoveData first to re-clone)", from, i.cfg.DataDir, ErrDataExists)
	}
	if opts.Slot != "" {
		if err := ValidateSlotName(opts.Slot); err != nil {
			return fmt.Errorf("cloning from %s: %w", from, err)
		}
	}
	if err := i.prepareDirs(); err != nil {
		return fmt.Errorf("cloning from %s: %w", from, err)
	}
	if err := i.user.mkdir(i.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("cloning from %s: %w", from, err)
	}
	args := []string{
		"--pgdata=" + i.cfg.DataDir,
		"--dbname=" + i.passfileConnInfo(from, i.cfg.Replication.User, "", i.appName()),
		"--wal-method=stream",
		"--checkpoint=fast",
		"--no-password",
		"--label=pgbattery clone " + i.appName(),
	}
	if opts.Slot != "" {
		args = append(args, "--slot="+opts.Slot)
		if opts.CreateSlot {
			args = append(args, "--create-slot")
		}
	}
	start := time.Now()
	i.log.Info("cloning from primary with pg_basebackup", "from", from.String(), "slot", opts.Slot)
	if _, err := i.run(ctx, "pg_basebackup", args...); err != nil {
		// pg_basebackup cleans up after itself, but not if it was killed.
		if rerr := i.clearDataDir(); rerr != nil {
			i.log.Error("cleaning up after a failed clone", "error", rerr)
		}
		return fmt.Errorf("cloning from %s: %w", from, err)
	}
	i.log.Info("clone complete", "from", from.String(), "took", time.Since(start).Round(time.Millisecond))
	if err := i.ensureDataDirMode(); err != nil {
		return err
	}
	return i.followStopped(from, opts.Slot)
}

// clearDataDir empties PGDATA but keeps the directory.
func (i *Instance) clearDataDir() error {
	ents, err := os.ReadDir(i.cfg.DataDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(i.cfg.DataDir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func (i *Instance) appName() string {
	if i.cfg.NodeName != "" {
		return i.cfg.NodeName
	}
	return "pgbattery"
}

// FollowOptions tune Follow.
type FollowOptions struct {
	// Slot is primary_slot_name; empty streams without a slot.
	Slot string
}

// Follow makes this node a standby of primary: standby.signal,
// primary_conninfo (application_name = NodeName, password from the
// passfile), primary_slot_name and recovery_target_timeline='latest' in
// the managed file. A stopped instance starts as a standby next time. A
// running standby is re-pointed with a reload, without a restart (PostgreSQL
// 13+ restarts the walreceiver with the new primary_conninfo). A running
// primary is refused with ErrIsPrimary: stop it (and Rewind) first.
func (i *Instance) Follow(ctx context.Context, primary Peer, opts FollowOptions) error {
	i.opMu.Lock()
	defer i.opMu.Unlock()
	if opts.Slot != "" {
		if err := ValidateSlotName(opts.Slot); err != nil {
			return fmt.Errorf("following %s: %w", primary, err)
		}
	}
	if !i.HasData() {
		return fmt.Errorf("following %s: %w", primary, ErrNoData)
	}
	if !i.isRunning() {
		if pid, ok := i.foreignPostmaster(); ok {
			return fmt.Errorf("following %s: a postmaster (pid %d) not started by this agent runs on %s", primary, pid, i.cfg.DataDir)
		}
		return i.followStopped(primary, opts.Slot)
	}
	conn, err := i.Connect(ctx)
	if err != nil {
		if NotYetAccepting(err) && i.IsStandbyConfigured() {
			// A standby short of its consistent point answers no query,
			// yet it is the one that most needs a new upstream: the WAL
			// it waits for may exist only there. primary_conninfo is
			// reloadable; the WAL receiver reconnects with it.
			if err := i.writeFollow(primary, opts.Slot); err != nil {
				return err
			}
			i.log.Info("re-pointing standby that is not consistent yet", "primary", primary.String(), "slot", opts.Slot)
			return i.sighup()
		}
		return fmt.Errorf("following %s: %w", primary, err)
	}
	defer conn.Close(context.Background())
	var inRecovery bool
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil {
		return fmt.Errorf("following %s: %w", primary, err)
	}
	if !inRecovery {
		return fmt.Errorf("following %s: %w; stop it and rewind before it can follow", primary, ErrIsPrimary)
	}
	if err := i.writeFollow(primary, opts.Slot); err != nil {
		return err
	}
	if err := configErrors(ctx, conn); err != nil {
		return fmt.Errorf("following %s: %w", primary, err)
	}
	i.log.Info("re-pointing standby", "primary", primary.String(), "slot", opts.Slot)
	return i.sighup()
}

func (i *Instance) followStopped(primary Peer, slot string) error {
	if err := i.writeFollow(primary, slot); err != nil {
		return err
	}
	i.log.Info("configured to follow", "primary", primary.String(), "slot", slot)
	return nil
}

// writeFollow records the follow target and writes standby.signal.
func (i *Instance) writeFollow(primary Peer, slot string) error {
	i.mu.Lock()
	i.state.PrimaryConnInfo = i.passfileConnInfo(primary, i.cfg.Replication.User, "", i.appName())
	i.state.PrimarySlotName = slot
	st := i.state
	i.mu.Unlock()
	if err := i.writeConfig(st); err != nil {
		return fmt.Errorf("following %s: %w", primary, err)
	}
	os.Remove(filepath.Join(i.cfg.DataDir, recoverySignal))
	if err := i.user.writeFile(filepath.Join(i.cfg.DataDir, standbySignal), nil, 0o600); err != nil {
		return fmt.Errorf("following %s: %w", primary, err)
	}
	return nil
}

// FollowTarget returns the primary_conninfo and slot the instance follows
// ("" when it is configured as a primary). The conninfo carries no
// password.
func (i *Instance) FollowTarget() (conninfo, slot string) {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.state.PrimaryConnInfo, i.state.PrimarySlotName
}

// IsStandbyConfigured reports whether standby.signal is present, i.e. a
// start brings the node up as a standby.
func (i *Instance) IsStandbyConfigured() bool {
	_, err := os.Stat(filepath.Join(i.cfg.DataDir, standbySignal))
	return err == nil
}

// Promote promotes the running standby and waits, bounded by ctx, until it
// is writable: out of recovery and a read-write transaction commits. A
// running primary is left as it is. The follow settings are cleared.
// Promote does not lift a fence: see SetFenced.
func (i *Instance) Promote(ctx context.Context) error {
	i.opMu.Lock()
	defer i.opMu.Unlock()
	if !i.isRunning() {
		return fmt.Errorf("promoting: %w", ErrNotRunning)
	}
	err := i.withControl(ctx, func(conn *pgx.Conn) error {
		var inRecovery bool
		if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil {
			return err
		}
		if inRecovery {
			start := time.Now()
			i.log.Info("promoting standby")
			// pg_promote(wait => true) looks every 100 ms; promotion
			// itself takes tens of milliseconds, so ask and then look
			// often.
			var signalled bool
			if err := conn.QueryRow(ctx, "SELECT pg_promote(false)").Scan(&signalled); err != nil {
				return err
			}
			if !signalled {
				return errors.New("PostgreSQL refused the promotion request")
			}
			if err := waitOutOfRecovery(ctx, conn); err != nil {
				return err
			}
			i.log.Info("promoted", "took", time.Since(start).Round(time.Millisecond))
		}
		return waitWritable(ctx, conn)
	})
	if err != nil {
		return fmt.Errorf("promoting: %w", err)
	}
	i.mu.Lock()
	i.state.PrimaryConnInfo, i.state.PrimarySlotName = "", ""
	st := i.state
	i.mu.Unlock()
	return i.writeConfig(st)
}

// waitOutOfRecovery polls until PostgreSQL has left recovery, bounded by
// ctx.
func waitOutOfRecovery(ctx context.Context, conn *pgx.Conn) error {
	const poll = 5 * time.Millisecond
	for {
		var inRecovery bool
		if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil {
			return err
		}
		if !inRecovery {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the end of recovery: %w", ctx.Err())
		case <-time.After(poll):
		}
	}
}

// waitWritable waits until a read-write transaction can run and see the WAL
// insert position (which fails while recovery is in progress).
// synchronous_commit=local keeps the probe from waiting for synchronous
// standbys that may not be there yet. The probe must not take a
// transaction id: the new primary's fence xid (recorded after promotion,
// before any write) would otherwise lie above a transaction of this node,
// and a COMMIT lost on the old primary with that same id would be resolved
// as committed (the xid reuse hazard, gateway commit resolution).
func waitWritable(ctx context.Context, conn *pgx.Conn) error {
	backoff := 5 * time.Millisecond
	for {
		err := pgx.BeginTxFunc(ctx, conn, pgx.TxOptions{AccessMode: pgx.ReadWrite}, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SET LOCAL synchronous_commit = local"); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "SELECT pg_current_wal_insert_lsn()")
			return err
		})
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting until writable: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}

// Rewind runs pg_rewind against a running source (the new primary) so this
// stopped former primary can follow it on the new timeline, then configures
// it to follow source (standby.signal, primary_conninfo, slot). A target
// that was not shut down cleanly is first brought to a clean shutdown: a
// crashed primary by pg_rewind itself (PostgreSQL 13+ runs crash recovery
// in single-user mode, as Patroni does), a crashed standby by starting it
// as a standby on the unix socket only and stopping it (single-user crash
// recovery would end its recovery and write WAL of its own). A source
// whose control file still shows the old timeline right after promotion
// is checkpointed first (pg_rewind < 16 would otherwise see no
// divergence). Rewind is cheap when nothing diverged ("no rewind
// required"), so it is the safe choice when in doubt. On failure
// (WAL needed for the rewind already gone, say) the caller re-clones.
// The data directory's configuration files are copied from the source by
// pg_rewind; pgctl rewrites its own afterwards.
func (i *Instance) Rewind(ctx context.Context, source Peer, opts FollowOptions) error {
	i.opMu.Lock()
	defer i.opMu.Unlock()
	if i.isRunning() {
		return fmt.Errorf("rewinding against %s: %w", source, ErrRunning)
	}
	if pid, ok := i.foreignPostmaster(); ok {
		return fmt.Errorf("rewinding against %s: a postmaster (pid %d) not started by this agent runs on %s", source, pid, i.cfg.DataDir)
	}
	if err := i.checkDataMajor(); err != nil {
		return fmt.Errorf("rewinding against %s: %w", source, err)
	}
	if opts.Slot != "" {
		if err := ValidateSlotName(opts.Slot); err != nil {
			return fmt.Errorf("rewinding against %s: %w", source, err)
		}
	}
	if err := i.prepareDirs(); err != nil {
		return fmt.Errorf("rewinding against %s: %w", source, err)
	}
	cd, err := i.ControlData(ctx)
	if err != nil {
		return fmt.Errorf("rewinding against %s: %w", source, err)
	}
	if cd.State == StateInArchiveRecovery {
		// A standby that crashed. pg_rewind would run crash recovery in
		// single-user mode, which ends recovery and writes a checkpoint of
		// its own into WAL the source may not share. Recover it the way
		// it was running, as a standby, and shut it down cleanly instead.
		if err := i.recoverAsStandby(ctx); err != nil {
			return fmt.Errorf("rewinding against %s: %w", source, err)
		}
	}
	// Single-user crash recovery refuses standby mode; the signal files are
	// written again by the follow below.
	os.Remove(filepath.Join(i.cfg.DataDir, standbySignal))
	os.Remove(filepath.Join(i.cfg.DataDir, recoverySignal))
	// The single-user postgres pg_rewind may run reads the managed file:
	// make sure it is there and sane.
	i.mu.Lock()
	st := i.state
	i.mu.Unlock()
	if err := i.writeConfig(st); err != nil {
		return fmt.Errorf("rewinding against %s: %w", source, err)
	}
	if err := i.sourceCheckpoint(ctx, source); err != nil {
		return fmt.Errorf("rewinding against %s: %w", source, err)
	}
	start := time.Now()
	i.log.Info("rewinding with pg_rewind", "source", source.String())
	out, err := i.run(ctx, "pg_rewind",
		"--target-pgdata="+i.cfg.DataDir,
		"--source-server="+i.passfileConnInfo(source, i.cfg.Superuser.User, "postgres", i.appName()+"_rewind"),
	)
	if err != nil {
		return fmt.Errorf("rewinding against %s: %w", source, err)
	}
	i.log.Info("rewind complete", "source", source.String(), "took", time.Since(start).Round(time.Millisecond), "result", lastLines(out, 1))
	if err := i.ensureDataDirMode(); err != nil {
		return err
	}
	return i.followStopped(source, opts.Slot)
}

// sourceCheckpoint makes sure the source's control file shows its current
// timeline. Right after a promotion the end-of-recovery checkpoint may not
// have finished, and pg_rewind before PostgreSQL 16 reads the source's
// timeline from its control file: it would wrongly report "no rewind
// required" and leave the target diverged. A CHECKPOINT on the source
// closes that window (Patroni does the same).
func (i *Instance) sourceCheckpoint(ctx context.Context, source Peer) error {
	conn, err := i.ConnectPeer(ctx, source)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var inRecovery bool
	var ckptTLI int64
	var walfile *string
	err = conn.QueryRow(ctx, `SELECT pg_is_in_recovery(), (pg_control_checkpoint()).timeline_id,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END`).Scan(&inRecovery, &ckptTLI, &walfile)
	if err != nil {
		return fmt.Errorf("checking the source's timeline: %w", err)
	}
	if inRecovery {
		return fmt.Errorf("the source %s is a standby; rewind against the primary", source)
	}
	tli, err := strconv.ParseUint((*walfile)[:8], 16, 32)
	if err != nil {
		return fmt.Errorf("reading the source's timeline from %q: %w", *walfile, err)
	}
	if int64(tli) == ckptTLI {
		return nil
	}
	i.log.Info("checkpointing the rewind source so its control file shows the new timeline", "source", source.String(), "checkpoint_timeline", ckptTLI, "timeline", tli)
	if _, err := conn.Exec(ctx, "CHECKPOINT"); err != nil {
		return fmt.Errorf("checkpointing the source: %w", err)
	}
	return nil
}

// recoverAsStandby brings a crashed standby to a clean "shut down in
// recovery" state: it starts it in standby mode, streaming from nobody and
// listening on the unix socket only, waits until it is consistent, and
// stops it.
func (i *Instance) recoverAsStandby(ctx context.Context) error {
	i.mu.Lock()
	st := i.state
	i.mu.Unlock()
	st.PrimaryConnInfo, st.PrimarySlotName, st.Fenced = "", "", true
	if err := i.writeConfig(st); err != nil {
		return err
	}
	os.Remove(filepath.Join(i.cfg.DataDir, recoverySignal))
	if err := i.user.writeFile(filepath.Join(i.cfg.DataDir, standbySignal), nil, 0o600); err != nil {
		return err
	}
	i.log.Info("crashed standby: recovering it in standby mode before pg_rewind")
	pm, err := i.startWithRetry(ctx, []string{"-c", "listen_addresses="})
	stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if pm != nil {
		if serr := i.stop(stopCtx, StopFast); serr != nil && err == nil {
			err = serr
		}
	}
	if err != nil {
		return fmt.Errorf("recovering the crashed standby: %w", err)
	}
	cd, err := i.ControlData(ctx)
	if err != nil {
		return err
	}
	if !cd.CleanShutdown() {
		return fmt.Errorf("recovering the crashed standby: state %q after a clean stop", cd.State)
	}
	return nil
}
