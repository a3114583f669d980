package pgctl

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Role is what a running PostgreSQL is.
type Role string

const (
	RolePrimary Role = "primary"
	RoleStandby Role = "standby"
)

// Status is a running PostgreSQL's state, read in one round of queries.
type Status struct {
	PID              int
	Role             Role
	ServerVersionNum int
	SystemIdentifier uint64
	// Timeline is the current timeline: on a primary the timeline WAL is
	// written on; on a standby the timeline it receives (or, with no
	// receiver, the latest replayed checkpoint's).
	Timeline uint32

	// Primary: the WAL insert and flush positions.
	CurrentLSN LSN
	FlushLSN   LSN
	// Standby: the last WAL received (flushed to disk by the walreceiver)
	// and replayed. Zero when unknown (never streamed).
	ReceiveLSN LSN
	ReplayLSN  LSN
	// ReplayTimestamp is the commit time of the last replayed transaction.
	ReplayTimestamp time.Time
	// WALReceiver is the standby's connection to its upstream, if any.
	WALReceiver *WALReceiver

	// Replication lists connected standbys (pg_stat_replication).
	Replication []StandbyState

	SynchronousStandbyNames string
	// ReadOnly is default_transaction_read_only: the fence.
	ReadOnly bool
}

// WALReceiver is a row of pg_stat_wal_receiver.
type WALReceiver struct {
	Status      string
	SenderHost  string
	SenderPort  int
	ReceivedTLI uint32
	FlushedLSN  LSN
	SlotName    string
}

// StandbyState is a row of pg_stat_replication.
type StandbyState struct {
	PID             int
	ApplicationName string
	ClientAddr      string
	// State: startup, catchup, streaming, backup, stopping.
	State string
	// SyncState: async, potential, sync, quorum.
	SyncState    string
	SyncPriority int
	SentLSN      LSN
	WriteLSN     LSN
	FlushLSN     LSN
	ReplayLSN    LSN
	WriteLag     time.Duration
	FlushLag     time.Duration
	ReplayLag    time.Duration
}

// Status queries the running PostgreSQL over the unix socket.
func (i *Instance) Status(ctx context.Context) (*Status, error) {
	pm := i.Postmaster()
	if pm == nil || pm.Exited() {
		if _, ok := i.foreignPostmaster(); !ok {
			return nil, ErrNotRunning
		}
	}
	var st *Status
	err := i.withControl(ctx, func(conn *pgx.Conn) error {
		var err error
		st, err = queryStatus(ctx, conn)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	if pm != nil && !pm.Exited() {
		st.PID = pm.pid
	}
	return st, nil
}

// PeerStatus queries a peer's PostgreSQL as the control role: what the
// controller uses to ask candidates for their LSNs at decision time.
func (i *Instance) PeerStatus(ctx context.Context, peer Peer) (*Status, error) {
	conn, err := i.ConnectPeer(ctx, peer)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	st, err := queryStatus(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("status of %s: %w", peer, err)
	}
	return st, nil
}

func queryStatus(ctx context.Context, conn *pgx.Conn) (*Status, error) {
	st := &Status{}
	var (
		inRecovery                   bool
		sysid                        int64
		ckptTLI                      int64
		current, flush, recv, replay *string
		walfile                      *string
		replayTS                     *time.Time
		versionNum, readOnly, ssn    string
	)
	// One statement, one snapshot of the server's state. Functions that
	// fail in recovery (pg_current_wal_lsn) are guarded by CASE.
	err := conn.QueryRow(ctx, `
SELECT pg_is_in_recovery(),
       (pg_control_system()).system_identifier,
       (pg_control_checkpoint()).timeline_id,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_flush_lsn()::text END,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END,
       pg_last_wal_receive_lsn()::text,
       pg_last_wal_replay_lsn()::text,
       pg_last_xact_replay_timestamp(),
       current_setting('server_version_num'),
       current_setting('default_transaction_read_only'),
       current_setting('synchronous_standby_names')`).Scan(
		&inRecovery, &sysid, &ckptTLI, &current, &flush, &walfile, &recv, &replay, &replayTS,
		&versionNum, &readOnly, &ssn)
	if err != nil {
		return nil, fmt.Errorf("querying server state: %w", err)
	}
	st.Role = RolePrimary
	if inRecovery {
		st.Role = RoleStandby
	}
	st.SystemIdentifier = uint64(sysid)
	st.Timeline = uint32(ckptTLI)
	st.ServerVersionNum, _ = strconv.Atoi(versionNum)
	st.ReadOnly = readOnly == "on"
	st.SynchronousStandbyNames = ssn
	if replayTS != nil {
		st.ReplayTimestamp = *replayTS
	}
	for _, p := range []struct {
		dst *LSN
		src *string
	}{{&st.CurrentLSN, current}, {&st.FlushLSN, flush}, {&st.ReceiveLSN, recv}, {&st.ReplayLSN, replay}} {
		if *p.dst, err = parseNullLSN(p.src); err != nil {
			return nil, err
		}
	}
	if walfile != nil && len(*walfile) >= 8 {
		// The WAL file name starts with the timeline in hex.
		if tli, err := strconv.ParseUint((*walfile)[:8], 16, 32); err == nil {
			st.Timeline = uint32(tli)
		}
	}

	if inRecovery {
		var (
			status, host, slot *string
			port, tli          *int64
			flushed            *string
		)
		err := conn.QueryRow(ctx, `
SELECT status, sender_host, sender_port, received_tli, flushed_lsn::text, slot_name
FROM pg_stat_wal_receiver`).Scan(&status, &host, &port, &tli, &flushed, &slot)
		switch {
		case err == pgx.ErrNoRows:
		case err != nil:
			return nil, fmt.Errorf("querying pg_stat_wal_receiver: %w", err)
		default:
			w := &WALReceiver{}
			w.Status = deref(status)
			w.SenderHost = deref(host)
			w.SlotName = deref(slot)
			if port != nil {
				w.SenderPort = int(*port)
			}
			if tli != nil {
				w.ReceivedTLI = uint32(*tli)
			}
			if w.FlushedLSN, err = parseNullLSN(flushed); err != nil {
				return nil, err
			}
			st.WALReceiver = w
			if w.ReceivedTLI > st.Timeline {
				st.Timeline = w.ReceivedTLI
			}
		}
	}

	rows, err := conn.Query(ctx, `
SELECT pid, coalesce(application_name, ''), coalesce(host(client_addr), ''), coalesce(state, ''),
       coalesce(sync_state, ''), coalesce(sync_priority, 0),
       sent_lsn::text, write_lsn::text, flush_lsn::text, replay_lsn::text,
       coalesce(extract(epoch FROM write_lag), 0)::float8,
       coalesce(extract(epoch FROM flush_lag), 0)::float8,
       coalesce(extract(epoch FROM replay_lag), 0)::float8
FROM pg_stat_replication ORDER BY application_name, pid`)
	if err != nil {
		return nil, fmt.Errorf("querying pg_stat_replication: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			s                          StandbyState
			sent, write, flush, replay *string
			wl, fl, rl                 float64
			prio                       int32
			pid                        int32
		)
		if err := rows.Scan(&pid, &s.ApplicationName, &s.ClientAddr, &s.State, &s.SyncState, &prio,
			&sent, &write, &flush, &replay, &wl, &fl, &rl); err != nil {
			return nil, fmt.Errorf("reading pg_stat_replication: %w", err)
		}
		s.PID, s.SyncPriority = int(pid), int(prio)
		for _, p := range []struct {
			dst *LSN
			src *string
		}{{&s.SentLSN, sent}, {&s.WriteLSN, write}, {&s.FlushLSN, flush}, {&s.ReplayLSN, replay}} {
			if *p.dst, err = parseNullLSN(p.src); err != nil {
				return nil, err
			}
		}
		s.WriteLag = secondsToDuration(wl)
		s.FlushLag = secondsToDuration(fl)
		s.ReplayLag = secondsToDuration(rl)
		st.Replication = append(st.Replication, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading pg_stat_replication: %w", err)
	}
	return st, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func secondsToDuration(s float64) time.Duration {
	return time.Duration(s * float64(time.Second))
}

// WALPosition is the most advanced WAL position the node holds: the
// current LSN on a primary, the larger of receive and replay on a standby.
// This is what LSN-aware promotion compares.
func (s *Status) WALPosition() LSN {
	if s.Role == RolePrimary {
		return s.CurrentLSN
	}
	return max(s.ReceiveLSN, s.ReplayLSN)
}

// PendingRestart lists settings changed in the configuration files that
// take effect only after a restart.
func (i *Instance) PendingRestart(ctx context.Context) ([]string, error) {
	conn, err := i.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, "SELECT name FROM pg_settings WHERE pending_restart ORDER BY name")
	if err != nil {
		return nil, fmt.Errorf("querying pg_settings: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("querying pg_settings: %w", err)
	}
	return names, nil
}

// configErrors reports errors PostgreSQL finds in its configuration files
// (pg_file_settings re-reads them at query time), so a bad value in
// postgres.parameters is named instead of silently ignored on reload.
func configErrors(ctx context.Context, conn *pgx.Conn) error {
	rows, err := conn.Query(ctx, `SELECT coalesce(sourcefile,''), coalesce(sourceline,0), coalesce(name,''), error
FROM pg_file_settings WHERE error IS NOT NULL`)
	if err != nil {
		return fmt.Errorf("querying pg_file_settings: %w", err)
	}
	defer rows.Close()
	var msgs []string
	for rows.Next() {
		var file, name, msg string
		var line int32
		if err := rows.Scan(&file, &line, &name, &msg); err != nil {
			return err
		}
		msgs = append(msgs, fmt.Sprintf("%s:%d: %s: %s", file, line, name, msg))
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if len(msgs) > 0 {
		return fmt.Errorf("PostgreSQL configuration errors: %s", strings.Join(msgs, "; "))
	}
	return nil
}
