package pgctl

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// Cluster states as pg_controldata prints them ("Database cluster state").
const (
	StateInProduction       = "in production"
	StateShutDown           = "shut down"
	StateShutDownInRecovery = "shut down in recovery"
	StateShuttingDown       = "shutting down"
	StateInCrashRecovery    = "in crash recovery"
	StateInArchiveRecovery  = "in archive recovery"
	StateStartingUp         = "starting up"
)

// ControlData is what pg_controldata reports about a (normally stopped)
// data directory: enough to refuse foreign data (system identifier) and to
// choose between following, rewinding and re-cloning.
type ControlData struct {
	SystemIdentifier uint64
	// State is the raw "Database cluster state".
	State string
	// Timeline is the latest checkpoint's TimeLineID.
	Timeline uint32
	// CheckpointLSN and RedoLSN locate the latest checkpoint.
	CheckpointLSN LSN
	RedoLSN       LSN
	// MinRecoveryEndLSN/Timeline: how far a standby must replay to be
	// consistent (zero on a primary).
	MinRecoveryEndLSN      LSN
	MinRecoveryEndTimeline uint32
	DataChecksums          bool
	WALLogHints            bool
	ControlVersion         int
}

// CleanShutdown reports whether the cluster was shut down cleanly (as a
// primary or as a standby): pg_rewind's precondition.
func (c *ControlData) CleanShutdown() bool {
	return c.State == StateShutDown || c.State == StateShutDownInRecovery
}

// ReplayedAtLeast is the position a standby has replayed at least (its
// latest restartpoint) or, before it is consistent, must replay up to
// (minRecoveryPoint), whichever is further, with its timeline.
func (c *ControlData) ReplayedAtLeast() (uint32, LSN) {
	if c.MinRecoveryEndLSN > c.CheckpointLSN {
		return c.MinRecoveryEndTimeline, c.MinRecoveryEndLSN
	}
	return c.Timeline, c.CheckpointLSN
}

// ControlData runs pg_controldata on PGDATA. It works on a stopped cluster
// (its main use) and on a running one (values may lag).
func (i *Instance) ControlData(ctx context.Context) (*ControlData, error) {
	if !i.HasData() {
		return nil, fmt.Errorf("pg_controldata: %s: %w", i.cfg.DataDir, ErrNoData)
	}
	out, err := i.run(ctx, "pg_controldata", "-D", i.cfg.DataDir)
	if err != nil {
		return nil, err
	}
	cd, err := parseControlData(out)
	if err != nil {
		return nil, fmt.Errorf("pg_controldata %s: %w", i.cfg.DataDir, err)
	}
	return cd, nil
}

func parseControlData(out string) (*ControlData, error) {
	fields := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		fields[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	cd := &ControlData{}
	var err error
	need := func(key string) (string, error) {
		v, ok := fields[key]
		if !ok {
			return "", fmt.Errorf("output lacks %q", key)
		}
		return v, nil
	}
	v, err := need("Database system identifier")
	if err != nil {
		return nil, err
	}
	if cd.SystemIdentifier, err = strconv.ParseUint(v, 10, 64); err != nil {
		return nil, fmt.Errorf("system identifier %q: %w", v, err)
	}
	if cd.State, err = need("Database cluster state"); err != nil {
		return nil, err
	}
	if v, err = need("Latest checkpoint's TimeLineID"); err != nil {
		return nil, err
	}
	tli, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("timeline %q: %w", v, err)
	}
	cd.Timeline = uint32(tli)
	for key, dst := range map[string]*LSN{
		"Latest checkpoint location":        &cd.CheckpointLSN,
		"Latest checkpoint's REDO location": &cd.RedoLSN,
		"Minimum recovery ending location":  &cd.MinRecoveryEndLSN,
	} {
		if v, ok := fields[key]; ok {
			if *dst, err = ParseLSN(v); err != nil {
				return nil, fmt.Errorf("%s: %w", key, err)
			}
		}
	}
	if v, ok := fields["Min recovery ending loc's timeline"]; ok {
		t, _ := strconv.ParseUint(v, 10, 32)
		cd.MinRecoveryEndTimeline = uint32(t)
	}
	if v, ok := fields["Data page checksum version"]; ok {
		cd.DataChecksums = v != "0"
	}
	cd.WALLogHints = fields["wal_log_hints setting"] == "on"
	if v, ok := fields["pg_control version number"]; ok {
		cd.ControlVersion, _ = strconv.Atoi(v)
	}
	return cd, nil
}
