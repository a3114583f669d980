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
	var (
		localTLI   uint32
		localLSN   LSN
		wasStandby bool
	)
	if i.isRunning() {
		st, err := i.Status(ctx)
		if err != nil {
			return false, "", err
		}
		localTLI, localLSN, wasStandby = st.Timeline, st.WALPosition(), st.Role == RoleStandby
	} else {
		cd, err := i.ControlData(ctx)
		if err != nil {
			return false, "", err
		}
		switch cd.State {
		case StateShutDownInRecovery, StateInArchiveRecovery:
			// A standby: it has replayed at least to minRecoveryPoint.
			wasStandby = true
			localTLI, localLSN = cd.Timeline, cd.CheckpointLSN
			if cd.MinRecoveryEndLSN > localLSN {
				localTLI, localLSN = cd.MinRecoveryEndTimeline, cd.MinRecoveryEndLSN
			}
			if cd.State == StateInArchiveRecovery {
				// Crashed while in recovery: it may have received more
				// than minRecoveryPoint says; pg_rewind will tell.
				return true, "standby did not shut down cleanly; its end of WAL is unknown", nil
			}
		case StateShutDown:
			localTLI, localLSN = cd.Timeline, cd.CheckpointLSN
		default:
			return true, fmt.Sprintf("data directory was not shut down cleanly (%s)", cd.State), nil
		}
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

	switch {
	case localTLI == ptli:
		if localLSN > pflush {
			return true, fmt.Sprintf("on the primary's timeline %d but ahead of it (%s > %s)", ptli, localLSN, pflush), nil
		}
		return false, fmt.Sprintf("on the primary's timeline %d at %s, primary at %s", ptli, localLSN, pflush), nil
	case localTLI > ptli:
		return true, fmt.Sprintf("local timeline %d is newer than the primary's %d", localTLI, ptli), nil
	}

	var history string
	err = conn.QueryRow(ctx, "SELECT convert_from(pg_read_binary_file($1), 'UTF8')",
		fmt.Sprintf("pg_wal/%08X.history", ptli)).Scan(&history)
	if err != nil {
		return false, "", fmt.Errorf("reading %s's timeline history: %w", primary, err)
	}
	entries, err := parseTimelineHistory(history)
	if err != nil {
		return false, "", fmt.Errorf("%s's timeline %d history: %w", primary, ptli, err)
	}
	for _, e := range entries {
		if e.Parent != localTLI {
			continue
		}
		if !wasStandby {
			return true, fmt.Sprintf("former primary on timeline %d; the primary forked at %s", localTLI, e.SwitchPoint), nil
		}
		if localLSN > e.SwitchPoint {
			return true, fmt.Sprintf("replayed to %s on timeline %d, past the fork at %s", localLSN, localTLI, e.SwitchPoint), nil
		}
		return false, fmt.Sprintf("at %s on timeline %d, before the fork at %s", localLSN, localTLI, e.SwitchPoint), nil
	}
	return true, fmt.Sprintf("timeline %d is not in the primary's history", localTLI), nil
}
