package pgctl

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// standbyStreaming waits until primary's pg_stat_replication shows name
// streaming and returns its row.
func standbyStreaming(t *testing.T, primary *testNode, name string) StandbyState {
	t.Helper()
	var row StandbyState
	eventually(t, 30*time.Second, name+" streaming from "+primary.cfg.NodeName, func() error {
		st, err := primary.Status(testCtx(t, 10*time.Second))
		if err != nil {
			return err
		}
		for _, r := range st.Replication {
			if r.ApplicationName == name && r.State == "streaming" {
				row = r
				return nil
			}
		}
		return fmt.Errorf("pg_stat_replication: %+v", st.Replication)
	})
	return row
}

// rowArrives waits until SELECT count(*) FROM t WHERE id = id is 1 on n.
func rowArrives(t *testing.T, n *testNode, id int) {
	t.Helper()
	eventually(t, 30*time.Second, fmt.Sprintf("row %d on %s", id, n.cfg.NodeName), func() error {
		v, err := queryInt(t, n, "SELECT count(*) FROM t WHERE id = $1", id)
		if err != nil {
			return err
		}
		if v != 1 {
			return fmt.Errorf("count %d", v)
		}
		return nil
	})
}

// TestReplication walks a whole failover cycle on real PostgreSQL: clone
// two standbys, stream, synchronous quorum commit, promote one, re-point
// the other without a restart, and rewind the crashed, diverged old primary
// so it follows the new one on the new timeline.
func TestReplication(t *testing.T) {
	n1 := newTestNode(t, "n1", true)
	n2 := newTestNode(t, "n2", false)
	n3 := newTestNode(t, "n3", false)
	ctx := testCtx(t, 3*time.Minute)

	startNode(t, n1, StartOptions{})
	mustExec(t, n1, "CREATE TABLE t (id int PRIMARY KEY, origin text)")
	mustExec(t, n1, "INSERT INTO t VALUES (1, 'n1')")

	// Clone n2 with a slot pg_basebackup creates, n3 with one made first.
	if err := n2.Clone(ctx, n1.peer(), CloneOptions{Slot: SlotNameFor("n2"), CreateSlot: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := n1.CreateReplicationSlot(ctx, SlotNameFor("n3")); err != nil {
		t.Fatal(err)
	}
	if err := n3.Clone(ctx, n1.peer(), CloneOptions{Slot: SlotNameFor("n3")}); err != nil {
		t.Fatal(err)
	}
	if err := n2.Clone(ctx, n1.peer(), CloneOptions{}); !errors.Is(err, ErrDataExists) {
		t.Fatalf("clone over existing data: %v", err)
	}
	checkOwnership(t, n2)
	startNode(t, n2, StartOptions{})
	startNode(t, n3, StartOptions{})

	// Streaming: a row written on the primary appears on both standbys.
	mustExec(t, n1, "INSERT INTO t VALUES (2, 'n1')")
	rowArrives(t, n2, 2)
	rowArrives(t, n3, 2)
	row := standbyStreaming(t, n1, "n2")
	standbyStreaming(t, n1, "n3")
	if row.SyncState != "async" || row.ReplayLSN == 0 {
		t.Fatalf("n2 in pg_stat_replication: %+v", row)
	}
	st2, err := n2.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st1, err := n1.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st2.Role != RoleStandby || st2.ReceiveLSN == 0 || st2.ReplayLSN == 0 || st2.WALReceiver == nil ||
		st2.WALReceiver.SenderHost != n1.addr || st2.WALReceiver.SlotName != SlotNameFor("n2") ||
		st2.SystemIdentifier != st1.SystemIdentifier || st2.Timeline != 1 {
		t.Fatalf("standby status %+v (receiver %+v)", st2, st2.WALReceiver)
	}
	if slots, _ := n1.ReplicationSlots(ctx); len(slots) != 2 || !slots[0].Active || !slots[1].Active {
		t.Fatalf("slots on the primary: %+v", slots)
	}
	if _, err := n1.DropReplicationSlot(ctx, SlotNameFor("n2")); err == nil {
		t.Fatal("dropped a slot in use")
	}
	if err := n2.Follow(ctx, n1.peer(), FollowOptions{}); err != nil {
		t.Fatalf("re-following the same primary: %v", err)
	}
	if err := n1.Follow(ctx, n2.peer(), FollowOptions{}); !errors.Is(err, ErrIsPrimary) {
		t.Fatalf("Follow on a running primary: %v", err)
	}
	scanProcsForSecrets(t)

	// Synchronous quorum commit.
	ssn := FormatSynchronousStandbyNames(SyncAny, 1, []string{"n2"})
	got, err := n1.SetSynchronousStandbyNames(ctx, ssn)
	if err != nil || got != ssn {
		t.Fatalf("SetSynchronousStandbyNames: %q, %v", got, err)
	}
	if eff, err := n1.SynchronousStandbyNames(ctx); err != nil || eff != ssn {
		t.Fatalf("effective synchronous_standby_names %q, %v", eff, err)
	}
	eventually(t, 10*time.Second, "n2 in quorum", func() error {
		if r := standbyStreaming(t, n1, "n2"); r.SyncState != "quorum" {
			return fmt.Errorf("sync_state %s", r.SyncState)
		}
		return nil
	})
	mustExec(t, n1, "INSERT INTO t VALUES (3, 'n1')") // acknowledged by n2
	if err := n2.Stop(ctx, StopFast); err != nil {
		t.Fatal(err)
	}
	// With the only synchronous standby down, a commit waits.
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	conn, err := n1.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = conn.Exec(wctx, "INSERT INTO t VALUES (4, 'n1')")
	cancel()
	conn.Close(context.Background())
	if !pgconn.Timeout(err) {
		t.Fatalf("a commit with no synchronous standby returned %v, want it to wait until the timeout", err)
	}
	startNode(t, n2, StartOptions{})
	mustExec(t, n1, "INSERT INTO t VALUES (5, 'n1')") // n2 is back: commits flow
	rowArrives(t, n2, 5)
	if _, err := n1.SetSynchronousStandbyNames(ctx, ""); err != nil {
		t.Fatal(err)
	}

	// Planned switchover to n2: stop n1 cleanly (its shutdown checkpoint
	// reaches both standbys), promote n2, write there.
	if err := n1.Stop(ctx, StopFast); err != nil {
		t.Fatal(err)
	}
	// As the agent does: the slot of the standby that will re-point is
	// made on the candidate before its promotion (a standby may hold
	// physical slots), so the slot exists when that standby connects.
	if created, err := n2.CreateReplicationSlot(ctx, SlotNameFor("n3")); err != nil || !created {
		t.Fatalf("creating a slot on the standby before promotion: %v, %v", created, err)
	}
	if err := n2.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	if slots, err := n2.ReplicationSlots(ctx); err != nil || len(slots) != 1 || slots[0].Name != SlotNameFor("n3") || slots[0].RestartLSN == 0 {
		t.Fatalf("slots on the promoted node: %+v, %v", slots, err)
	}
	mustExec(t, n2, "INSERT INTO t VALUES (6, 'n2')")
	st2, err = n2.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st2.Role != RolePrimary || st2.Timeline != 2 || n2.IsStandbyConfigured() {
		t.Fatalf("after promotion: %+v", st2)
	}
	if ci, _ := n2.FollowTarget(); ci != "" {
		t.Fatalf("promoted node still follows %s", ci)
	}
	if err := n2.Promote(ctx); err != nil {
		t.Fatalf("promoting a primary: %v", err)
	}

	// n3 stopped receiving at n1's shutdown checkpoint, before n2's fork:
	// it can follow n2 without a rewind. The crashed-and-diverged n1 below
	// cannot.
	if need, why, err := n3.NeedsRewind(ctx, n2.peer()); err != nil || need {
		t.Fatalf("n3 NeedsRewind = %v (%s), %v", need, why, err)
	}

	// Re-point n3 to n2 without a restart, through the slot made before
	// the promotion.
	pid3 := n3.Postmaster().PID()
	if err := n3.Follow(ctx, n2.peer(), FollowOptions{Slot: SlotNameFor("n3")}); err != nil {
		t.Fatal(err)
	}
	rowArrives(t, n3, 6)
	if n3.Postmaster().PID() != pid3 {
		t.Fatal("n3 restarted to re-point")
	}
	eventually(t, 30*time.Second, "n3 receiving from n2 on timeline 2", func() error {
		st, err := n3.Status(ctx)
		if err != nil {
			return err
		}
		if st.WALReceiver == nil || st.WALReceiver.SenderHost != n2.addr || st.Timeline != 2 {
			return fmt.Errorf("status %+v receiver %+v", st, st.WALReceiver)
		}
		return nil
	})

	// The old primary comes back as a primary on timeline 1 (split brain),
	// takes a write the cluster never saw, and crashes.
	startNode(t, n1, StartOptions{})
	mustExec(t, n1, "INSERT INTO t VALUES (100, 'diverged')")
	if err := n1.Stop(ctx, StopImmediate); err != nil {
		t.Fatal(err)
	}
	cd, err := n1.ControlData(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cd.CleanShutdown() || cd.Timeline != 1 || cd.SystemIdentifier != st1.SystemIdentifier {
		t.Fatalf("old primary's control data: %+v", cd)
	}

	if need, why, err := n1.NeedsRewind(ctx, n2.peer()); err != nil || !need {
		t.Fatalf("diverged n1 NeedsRewind = %v (%s), %v", need, why, err)
	}

	// Rewind it against n2 (pg_rewind first finishes crash recovery), and
	// start it as a standby of n2 on the new timeline.
	if _, err := n2.CreateReplicationSlot(ctx, SlotNameFor("n1")); err != nil {
		t.Fatal(err)
	}
	if err := n1.Rewind(ctx, n2.peer(), FollowOptions{Slot: SlotNameFor("n1")}); err != nil {
		t.Fatal(err)
	}
	// The source's control file shows the new timeline (pg_rewind before
	// PostgreSQL 16 reads it there).
	if tli, err := queryInt(t, n2, "SELECT timeline_id FROM pg_control_checkpoint()"); err != nil || tli != 2 {
		t.Fatalf("source checkpoint timeline %d, %v", tli, err)
	}
	if err := n3.Rewind(ctx, n2.peer(), FollowOptions{}); !errors.Is(err, ErrRunning) {
		t.Fatalf("Rewind of a running instance: %v", err)
	}
	startNode(t, n1, StartOptions{Fenced: true})
	mustExec(t, n2, "INSERT INTO t VALUES (7, 'n2')")
	rowArrives(t, n1, 7)
	if v, err := queryInt(t, n1, "SELECT count(*) FROM t WHERE id = 100"); err != nil || v != 0 {
		t.Fatalf("the diverged row survived the rewind: %d, %v", v, err)
	}
	st1b, err := n1.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st1b.Role != RoleStandby || st1b.Timeline != 2 || st1b.WALReceiver == nil || st1b.WALReceiver.SenderHost != n2.addr {
		t.Fatalf("rewound node: %+v receiver %+v", st1b, st1b.WALReceiver)
	}
	standbyStreaming(t, n2, "n1")
	standbyStreaming(t, n2, "n3")
	if need, why, err := n1.NeedsRewind(ctx, n2.peer()); err != nil || need {
		t.Fatalf("rewound n1 NeedsRewind = %v (%s), %v", need, why, err)
	}

	// A standby that crashes is recovered in standby mode, not by
	// pg_rewind's single-user crash recovery, and follows again.
	if err := n3.Stop(ctx, StopImmediate); err != nil {
		t.Fatal(err)
	}
	if cd, err := n3.ControlData(ctx); err != nil || cd.State != StateInArchiveRecovery {
		t.Fatalf("crashed standby: %+v %v", cd, err)
	}
	if err := n3.Rewind(ctx, n2.peer(), FollowOptions{}); err != nil {
		t.Fatal(err)
	}
	startNode(t, n3, StartOptions{})
	mustExec(t, n2, "INSERT INTO t VALUES (8, 'n2')")
	rowArrives(t, n3, 8)
	rowArrives(t, n1, 8)
	// 1-5 from n1's time (4 was cancelled while waiting for the synchronous
	// standby, but its commit record was already in the WAL: PostgreSQL
	// keeps such a commit, which is why the gateway reports 08007 for it),
	// then 6, 7 and 8 from n2; not 100.
	if v, err := queryInt(t, n1, "SELECT count(*) FROM t"); err != nil || v != 8 {
		t.Fatalf("rows on the rewound node: %d, %v", v, err)
	}
	scanProcsForSecrets(t)
}
