package controller

import (
	"strings"
	"testing"

	"github.com/pgbattery/pgbattery/agent/fsm"
)

func desiredState(mutate func(*fsm.State)) *fsm.State {
	st := &fsm.State{
		ClusterID: "c", SystemID: 42, Primary: "a", Epoch: 3, Timeline: 2,
		Members: map[string]*fsm.Member{"a": {Name: "a"}, "b": {Name: "b"}, "w": {Name: "w", NoPostgres: true}},
		Lease:   fsm.Lease{Holder: "a", Epoch: 3, Version: 10},
		Sync:    fsm.SyncState{Epoch: 3, Mode: fsm.ModeQuorum, Standbys: []string{"b"}, K: 1, Voters: []string{"b"}, Quorum: 1},
		Fences:  []fsm.Fence{{Epoch: 3, Node: "a", XID: 100, Timeline: 2}},
	}
	if mutate != nil {
		mutate(st)
	}
	return st
}

func TestDesired(t *testing.T) {
	primaryServing := Local{HasData: true, SystemID: 42, Running: true, Writable: true, Timeline: 2, LeaseValid: true}
	standbyOK := Local{HasData: true, SystemID: 42, Running: true, InRecovery: true, Timeline: 2, Upstream: "a"}
	cases := []struct {
		name   string
		st     func(*fsm.State)
		self   string
		local  Local
		want   ActionKind
		upstrm string
	}{
		{"primary with lease serves", nil, "a", primaryServing, ActServe, ""},
		{"primary without lease fences", nil, "a", func() Local { l := primaryServing; l.LeaseValid = false; return l }(), ActFence, ""},
		{"primary without lease, read-only, waits", nil, "a", func() Local { l := primaryServing; l.LeaseValid, l.Writable = false, false; return l }(), ActWait, ""},
		{"primary still in recovery promotes", nil, "a", func() Local { l := standbyOK; l.LeaseValid = true; return l }(), ActPromote, ""},
		{"standby named primary without lease waits", nil, "a", standbyOK, ActWait, ""},
		{"promoted, fence not recorded", func(s *fsm.State) { s.Fences = nil }, "a", func() Local { l := primaryServing; l.Writable = false; return l }(), ActRecordFence, ""},
		{"primary whose PostgreSQL died releases", nil, "a", Local{HasData: true, SystemID: 42, Died: true, LeaseValid: true}, ActReleaseLease, ""},
		{"primary not started yet starts fenced", nil, "a", Local{HasData: true, SystemID: 42}, ActStart, ""},
		{"released lease: fence", func(s *fsm.State) { s.Lease.Released = true }, "a", primaryServing, ActFence, ""},
		{"released lease, stopped: start fenced", func(s *fsm.State) { s.Lease.Released = true }, "a", Local{HasData: true, SystemID: 42}, ActStart, ""},
		{"primary with a full disk steps down", nil, "a", func() Local { l := primaryServing; l.DiskFull = true; return l }(), ActStepDown, ""},
		{"released lease, full disk: fence, no loop", func(s *fsm.State) { s.Lease.Released = true }, "a", func() Local { l := primaryServing; l.DiskFull = true; return l }(), ActFence, ""},
		{"switchover pending: step down", func(s *fsm.State) { s.Pending = &fsm.Operation{Kind: fsm.OpSwitchover, Epoch: 3, Target: "b"} }, "a", primaryServing, ActStepDown, ""},
		{"first primary without data inits", func(s *fsm.State) { s.Epoch, s.SystemID, s.Lease.Epoch = 1, 0, 1 }, "a", Local{}, ActInit, ""},
		{"standby follows", nil, "b", standbyOK, ActFollow, "a"},
		{"stopped standby follows (starts)", nil, "b", Local{HasData: true, SystemID: 42, InRecovery: true}, ActFollow, "a"},
		{"empty standby clones", nil, "b", Local{}, ActClone, "a"},
		{"old writable primary fences", nil, "b", primaryServing, ActFence, ""},
		{"old fenced primary rewinds", nil, "b", func() Local { l := primaryServing; l.Writable = false; return l }(), ActRewind, "a"},
		{"diverged standby rewinds", nil, "b", func() Local { l := standbyOK; l.Diverged = true; return l }(), ActRewind, "a"},
		{"rewind failing repeatedly re-clones", nil, "b", func() Local { l := standbyOK; l.Diverged, l.RewindFailures = true, MaxRewindAttempts; return l }(), ActClone, "a"},
		{"foreign data refused", nil, "b", Local{HasData: true, SystemID: 7, InRecovery: true}, ActRefuse, ""},
		{"witness waits", nil, "w", Local{}, ActWait, ""},
		{"non-member writable fences", nil, "zz", primaryServing, ActFence, ""},
		{"no primary yet: writable fences", func(s *fsm.State) { s.Primary, s.Epoch = "", 0 }, "b", primaryServing, ActFence, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := Desired(desiredState(c.st), c.self, c.local)
			if a.Kind != c.want || a.Upstream != c.upstrm {
				t.Fatalf("got %s, want %s %s", a, c.want, c.upstrm)
			}
			if a.Kind == ActServe && (a.Sync.K != 1 || len(a.Sync.Standbys) != 1) {
				t.Fatalf("serve without the sync configuration: %+v", a.Sync)
			}
			if a.Kind == ActServe && (len(a.Slots) != 1 || a.Slots[0] != "pgbattery_b") {
				t.Fatalf("slots %v, want [pgbattery_b] (not the witness, not itself)", a.Slots)
			}
		})
	}
}

// Only one node can ever be told to serve: the FSM primary with a valid
// lease; every other writable node is told to fence.
func TestDesiredOneServer(t *testing.T) {
	st := desiredState(nil)
	locals := []Local{
		{HasData: true, SystemID: 42, Running: true, Writable: true, LeaseValid: true},
		{HasData: true, SystemID: 42, Running: true, Writable: true, LeaseValid: false},
		{HasData: true, SystemID: 42, Running: true, InRecovery: true, LeaseValid: true},
	}
	for _, self := range []string{"a", "b", "zz", "w"} {
		for _, l := range locals {
			a := Desired(st, self, l)
			if a.Kind == ActServe && (self != "a" || !l.LeaseValid) {
				t.Fatalf("%s told to serve with %+v", self, l)
			}
			if self != "a" && l.Writable && !l.InRecovery && a.Kind != ActFence && self != "w" {
				t.Fatalf("writable %s not told to fence: %s", self, a)
			}
		}
	}
}

func TestSlotName(t *testing.T) {
	for in, want := range map[string]string{"node-1": "pgbattery_node_1", "DB.East": "pgbattery_db_east", "x_9": "pgbattery_x_9"} {
		if got := SlotName(in); got != want {
			t.Errorf("SlotName(%q) = %q, want %q", in, got, want)
		}
	}
	if got := SlotName(strings.Repeat("a", 100)); len(got) != 63 {
		t.Errorf("long name gives %d bytes", len(got))
	}
}
