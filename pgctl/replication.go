package pgctl

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// SyncMethod is the method of a synchronous_standby_names list.
type SyncMethod string

const (
	// SyncAny is quorum commit: any k of the listed standbys.
	SyncAny SyncMethod = "ANY"
	// SyncFirst is priority commit: the first k listed that are connected.
	SyncFirst SyncMethod = "FIRST"
)

// FormatSynchronousStandbyNames renders a synchronous_standby_names value,
// e.g. ANY 1 ("node2", "node3"). Names are double-quoted (so any
// application_name works, including mixed case and spaces); an empty list
// or k ≤ 0 renders "" (asynchronous replication).
func FormatSynchronousStandbyNames(method SyncMethod, k int, names []string) string {
	if len(names) == 0 || k <= 0 {
		return ""
	}
	quoted := make([]string, len(names))
	for j, n := range names {
		quoted[j] = `"` + strings.ReplaceAll(n, `"`, `""`) + `"`
	}
	return fmt.Sprintf("%s %d (%s)", method, k, strings.Join(quoted, ", "))
}

// SetSynchronousStandbyNames writes synchronous_standby_names to the
// managed file and, when PostgreSQL runs, reloads and waits (bounded by
// ctx) until a new session sees the value. It returns the effective value
// (the written one when stopped). Commits already waiting re-evaluate at
// once: PostgreSQL releases or keeps them under the new rule.
func (i *Instance) SetSynchronousStandbyNames(ctx context.Context, value string) (string, error) {
	if strings.ContainsAny(value, "\r\n\x00") {
		return "", fmt.Errorf("synchronous_standby_names must be a single line")
	}
	i.opMu.Lock()
	defer i.opMu.Unlock()
	i.mu.Lock()
	old := i.state.SynchronousStandbyNames
	i.state.SynchronousStandbyNames = value
	st := i.state
	i.mu.Unlock()
	if err := i.writeConfig(st); err != nil {
		return "", fmt.Errorf("setting synchronous_standby_names: %w", err)
	}
	if !i.isRunning() {
		return value, nil
	}
	i.log.Info("setting synchronous_standby_names", "old", old, "new", value)
	if err := i.applySetting(ctx, "synchronous_standby_names", value); err != nil {
		return "", err
	}
	return value, nil
}

// SynchronousStandbyNames returns the running server's effective value.
func (i *Instance) SynchronousStandbyNames(ctx context.Context) (string, error) {
	return i.currentSetting(ctx, "synchronous_standby_names")
}

// SetFenced sets or lifts the fence: default_transaction_read_only in the
// managed file, then a reload, then a wait (bounded by ctx) until a new
// session sees it. Existing sessions pick the new default up at their next
// transaction only after they process the reload; to cut off writers at
// once, follow with TerminateClientBackends.
func (i *Instance) SetFenced(ctx context.Context, fenced bool) error {
	i.opMu.Lock()
	defer i.opMu.Unlock()
	i.mu.Lock()
	i.state.Fenced = fenced
	st := i.state
	i.mu.Unlock()
	if err := i.writeConfig(st); err != nil {
		return fmt.Errorf("setting the fence: %w", err)
	}
	if !i.isRunning() {
		return nil
	}
	want := "off"
	if fenced {
		want = "on"
	}
	i.log.Info("setting the fence", "default_transaction_read_only", want)
	return i.applySetting(ctx, "default_transaction_read_only", want)
}

// Fenced reports whether the managed configuration fences the instance.
func (i *Instance) Fenced() bool {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.state.Fenced
}

// applySetting reloads and waits until a fresh session shows name = want.
func (i *Instance) applySetting(ctx context.Context, name, want string) error {
	err := i.withControl(ctx, func(conn *pgx.Conn) error { return configErrors(ctx, conn) })
	if err != nil {
		return fmt.Errorf("applying %s: %w", name, err)
	}
	if err := i.sighup(); err != nil {
		return err
	}
	backoff := 2 * time.Millisecond
	var got string
	for {
		got, err = i.currentSetting(ctx, name)
		if err == nil && got == want {
			return nil
		}
		if !i.isRunning() {
			// Died meanwhile (killed for a late lease, crashed): nothing
			// will ever show the value, and a caller on the failover
			// path must not wait out its whole context for it.
			return fmt.Errorf("applying %s = %q: PostgreSQL is not running: %v", name, want, err)
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("still %q (is it set in postgresql.auto.conf, or per role/database?)", got)
			}
			return fmt.Errorf("applying %s = %q: %w: %v", name, want, ctx.Err(), err)
		case <-time.After(backoff):
		}
		// Short and flat: the fence and the synchronous set are applied on
		// the failover path, and a reload usually lands within tens of
		// milliseconds; doubling up to 50 ms overshot it by up to 30 ms.
		backoff = min(backoff+time.Millisecond, 5*time.Millisecond)
	}
}

func (i *Instance) currentSetting(ctx context.Context, name string) (string, error) {
	// The control connection's backend sees a reload only after the
	// postmaster has re-read the files and signalled it, so a new value
	// here means new sessions get it too.
	var v string
	err := i.withControl(ctx, func(conn *pgx.Conn) error {
		return conn.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v)
	})
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", name, err)
	}
	return v, nil
}

// TerminateClientBackends ends every client session except the caller's
// own (walsenders and background workers are left alone) and returns how
// many it signalled. A fencing primary uses it after SetFenced so that no
// session that began read-write can go on writing.
//
// Sessions whose COMMIT waits for a synchronous standby go last, once the
// others have exited (or after terminateWait): ending such a session makes
// its commit visible locally although no standby acknowledged it, and no
// session still running may read it (the next primary may not have it).
func (i *Instance) TerminateClientBackends(ctx context.Context) (int, error) {
	var n, waiting int64
	err := i.withControl(ctx, func(conn *pgx.Conn) error {
		if err := conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)),
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND wait_event = 'SyncRep')
FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
  AND wait_event IS DISTINCT FROM 'SyncRep'`).Scan(&n, &waiting); err != nil {
			return err
		}
		if waiting == 0 {
			return nil
		}
		// Wait for the others to exit: those still running after the wait
		// have been signalled and answer nothing more before they exit.
		for deadline := time.Now().Add(terminateWait); time.Now().Before(deadline); {
			var left int64
			if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'
  AND pid <> pg_backend_pid() AND wait_event IS DISTINCT FROM 'SyncRep'`).Scan(&left); err != nil {
				return err
			}
			if left == 0 {
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Millisecond):
			}
		}
		var m int64
		if err := conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()`).Scan(&m); err != nil {
			return err
		}
		n += m
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("terminating client backends: %w", err)
	}
	if n > 0 {
		i.log.Info("terminated client backends", "count", n, "waiting_for_standby", waiting)
	}
	return int(n), nil
}

// terminateWait bounds how long TerminateClientBackends waits for the other
// sessions to exit before it ends those waiting for a synchronous standby.
const terminateWait = 500 * time.Millisecond

// ReplicationSlot is a row of pg_replication_slots (physical slots).
type ReplicationSlot struct {
	Name       string
	Active     bool
	ActivePID  int
	RestartLSN LSN
	// WALStatus: reserved, extended, unreserved, lost.
	WALStatus string
}

var slotNameRe = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// ValidateSlotName checks PostgreSQL's rule for slot names: lower-case
// letters, digits and underscores, at most 63 bytes.
func ValidateSlotName(name string) error {
	if !slotNameRe.MatchString(name) {
		return fmt.Errorf("invalid replication slot name %q: use 1-63 lower-case letters, digits or underscores (see SlotNameFor)", name)
	}
	return nil
}

// SlotNameFor derives a valid slot name from a node name: lower-cased,
// every other character replaced by '_', prefixed so it never collides with
// slots that are not pgbattery's, and cut to 63 bytes.
func SlotNameFor(node string) string {
	var b strings.Builder
	b.WriteString("pgbattery_")
	for _, r := range strings.ToLower(node) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	s := b.String()
	if len(s) > 63 {
		s = s[:63]
	}
	return s
}

// CreateReplicationSlot creates a physical slot that reserves WAL at once.
// It reports false (and no error) when the slot already exists.
func (i *Instance) CreateReplicationSlot(ctx context.Context, name string) (bool, error) {
	if err := ValidateSlotName(name); err != nil {
		return false, err
	}
	err := i.withControl(ctx, func(conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, "SELECT pg_create_physical_replication_slot($1, true)", name)
		return err
	})
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42710" { // duplicate_object
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("creating slot %s: %w", name, err)
	}
	i.log.Info("created replication slot", "slot", name)
	return true, nil
}

// DropReplicationSlot drops a slot. It reports false (and no error) when
// there is none. A slot in use by a connected standby cannot be dropped:
// the error says so; disconnect the standby (or stop following) first.
func (i *Instance) DropReplicationSlot(ctx context.Context, name string) (bool, error) {
	if err := ValidateSlotName(name); err != nil {
		return false, err
	}
	err := i.withControl(ctx, func(conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, "SELECT pg_drop_replication_slot($1)", name)
		return err
	})
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42704" { // undefined_object
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("dropping slot %s: %w", name, err)
	}
	i.log.Info("dropped replication slot", "slot", name)
	return true, nil
}

// ReplicationSlots lists the physical replication slots.
func (i *Instance) ReplicationSlots(ctx context.Context) ([]ReplicationSlot, error) {
	var slots []ReplicationSlot
	err := i.withControl(ctx, func(conn *pgx.Conn) error {
		rows, err := conn.Query(ctx, `SELECT slot_name::text, active, coalesce(active_pid, 0), restart_lsn::text, coalesce(wal_status, '')
FROM pg_replication_slots WHERE slot_type = 'physical' ORDER BY slot_name`)
		if err != nil {
			return err
		}
		slots, err = pgx.CollectRows(rows, scanSlot)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listing slots: %w", err)
	}
	return slots, nil
}

func scanSlot(r pgx.CollectableRow) (ReplicationSlot, error) {
	var s ReplicationSlot
	var pid int32
	var restart *string
	if err := r.Scan(&s.Name, &s.Active, &pid, &restart, &s.WALStatus); err != nil {
		return s, err
	}
	s.ActivePID = int(pid)
	var err error
	s.RestartLSN, err = parseNullLSN(restart)
	return s, err
}
