package pgctl

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// HistoryEntry is a line of a timeline history file: timeline Parent
// ended, and its child began, at SwitchPoint.
type HistoryEntry struct {
	Parent      uint32
	SwitchPoint LSN
}

// parseTimelineHistory parses a NNNNNNNN.history file.
func parseTimelineHistory(s string) ([]HistoryEntry, error) {
	var out []HistoryEntry
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			return nil, fmt.Errorf("malformed timeline history line %q", line)
		}
		tli, err := strconv.ParseUint(f[0], 10, 32)
		if err != nil {
			return nil, fmt.Errorf("malformed timeline history line %q", line)
		}
		lsn, err := ParseLSN(f[1])
		if err != nil {
			return nil, fmt.Errorf("malformed timeline history line %q: %w", line, err)
		}
		out = append(out, HistoryEntry{Parent: uint32(tli), SwitchPoint: lsn})
	}
	return out, nil
}

// NeedsRewind tells whether this node can follow primary as it is, or must
// be rewound first because its WAL went past the point where primary's
// history forked off this node's timeline. It answers conservatively: a
// node that was a primary (or crashed, so its end of WAL is unknown) is
// reported as needing a rewind unless it is on primary's timeline and
// behind it — pg_rewind is cheap when there turns out to be nothing to do.
// The reason says why, for the agent's decision record.
func (i *Instance) NeedsRewind(ctx context.Context, primary Peer) (bool, string, error) {
	local, err := i.walPosition(ctx)
	if err != nil {
		return false, "", err
	}
	if local.unclean != "" {
		return true, local.unclean, nil
	}

	conn, err := i.ConnectPeer(ctx, primary)
	if err != nil {
		return false, "", err
	}
	defer conn.Close(context.Background())
	var inRecovery bool
	var walfile, flush *string
	if err := conn.QueryRow(ctx, `SELECT pg_is_in_recovery(),
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_flush_lsn()::text END`).Scan(&inRecovery, &walfile, &flush); err != nil {
		return false, "", fmt.Errorf("asking %s for its timeline: %w", primary, err)
	}
	if inRecovery {
		return false, "", fmt.Errorf("%s is not a primary", primary)
	}
	ptli64, err := strconv.ParseUint((*walfile)[:8], 16, 32)
	if err != nil {
		return false, "", fmt.Errorf("reading %s's timeline from %q: %w", primary, *walfile, err)
	}
	ptli := uint32(ptli64)
	pflush, err := parseNullLSN(flush)
	if err != nil {
		return false, "", err
	}
	var history []HistoryEntry
	if local.tli < ptli {
		var text string
		err = conn.QueryRow(ctx, "SELECT convert_from(pg_read_binary_file($1), 'UTF8')",
			fmt.Sprintf("pg_wal/%08X.history", ptli)).Scan(&text)
		if err != nil {
			return false, "", fmt.Errorf("reading %s's timeline history: %w", primary, err)
		}
		if history, err = parseTimelineHistory(text); err != nil {
			return false, "", fmt.Errorf("%s's timeline %d history: %w", primary, ptli, err)
		}
	}
	need, why := rewindVerdict(local, ptli, pflush, history)
	return need, why, nil
}

// localWAL is how far a data directory's WAL goes, as far as NeedsRewind
// can tell without reading it.
type localWAL struct {
	tli uint32
	lsn LSN
	// standby: the position is what a standby replayed (or must replay),
	// not the end of a primary's WAL.
	standby bool
	// unclean, when set, says why the end of WAL is unknown.
	unclean string
}

// walPosition reads the local end of WAL: from the running server, from
// the control file of one that runs but is not consistent yet (it answers
// no query), or from the control file of a stopped one.
func (i *Instance) walPosition(ctx context.Context) (localWAL, error) {
	if i.isRunning() {
		st, err := i.Status(ctx)
		if err == nil {
			return localWAL{tli: st.Timeline, lsn: st.WALPosition(), standby: st.Role == RoleStandby}, nil
		}
		if !NotYetAccepting(err) || !i.IsStandbyConfigured() {
			return localWAL{}, err
		}
		// A standby short of its consistent point must replay up to
		// minRecoveryPoint, on that point's timeline: WAL the primary
		// has only if its history passes there.
		cd, cerr := i.ControlData(ctx)
		if cerr != nil {
			return localWAL{}, fmt.Errorf("reading the control file of a standby that is not consistent yet: %w", cerr)
		}
		tli, lsn := cd.ReplayedAtLeast()
		return localWAL{tli: tli, lsn: lsn, standby: true}, nil
	}
	cd, err := i.ControlData(ctx)
	if err != nil {
		return localWAL{}, err
	}
	switch cd.State {
	case StateShutDownInRecovery:
		tli, lsn := cd.ReplayedAtLeast()
		return localWAL{tli: tli, lsn: lsn, standby: true}, nil
	case StateInArchiveRecovery:
		// Crashed while in recovery: it may have received more than
		// minRecoveryPoint says; pg_rewind will tell.
		return localWAL{unclean: "standby did not shut down cleanly; its end of WAL is unknown"}, nil
	case StateShutDown:
		return localWAL{tli: cd.Timeline, lsn: cd.CheckpointLSN}, nil
	}
	return localWAL{unclean: fmt.Sprintf("data directory was not shut down cleanly (%s)", cd.State)}, nil
}

// rewindVerdict decides NeedsRewind from the local end of WAL and the
// primary's timeline ptli, flush position and history (needed only when
// local is on an older timeline).
func rewindVerdict(local localWAL, ptli uint32, pflush LSN, history []HistoryEntry) (bool, string) {
	switch {
	case local.tli == ptli:
		if local.lsn > pflush {
			return true, fmt.Sprintf("on the primary's timeline %d but ahead of it (%s > %s)", ptli, local.lsn, pflush)
		}
		return false, fmt.Sprintf("on the primary's timeline %d at %s, primary at %s", ptli, local.lsn, pflush)
	case local.tli > ptli:
		return true, fmt.Sprintf("local timeline %d is newer than the primary's %d", local.tli, ptli)
	}
	for _, e := range history {
		if e.Parent != local.tli {
			continue
		}
		if !local.standby {
			return true, fmt.Sprintf("former primary on timeline %d; the primary forked at %s", local.tli, e.SwitchPoint)
		}
		if local.lsn > e.SwitchPoint {
			return true, fmt.Sprintf("replayed to %s on timeline %d, past the fork at %s", local.lsn, local.tli, e.SwitchPoint)
		}
		return false, fmt.Sprintf("at %s on timeline %d, before the fork at %s", local.lsn, local.tli, e.SwitchPoint)
	}
	return true, fmt.Sprintf("timeline %d is not in the primary's history", local.tli)
}
