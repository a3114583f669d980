package pgctl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pgbattery/pgbattery/test/testutil"
)

// TestStandbyNotYetConsistent: a standby short of its consistent point
// answers no query, yet it must be observable, re-pointable and judged for
// divergence. The agent otherwise waited on one for its whole action
// timeout (TestChaos_FlappingPartitions: a node rewound against a primary
// that was deposed two seconds later never got the WAL it needed).
//
// n1 is rewound against n2 and started without the timeline 2 WAL it must
// replay, pointed at an address where nothing listens. n3, stopped before
// n2's last writes, is then promoted: its history forks off timeline 2
// before the point n1 must reach.
func TestStandbyNotYetConsistent(t *testing.T) {
	n1 := newTestNode(t, "n1", true)
	n2 := newTestNode(t, "n2", false)
	n3 := newTestNode(t, "n3", false)
	ctx := testCtx(t, 3*time.Minute)
	nowhere := Peer{Host: testutil.Addr(t), Port: DefaultPort}

	startNode(t, n1, StartOptions{})
	mustExec(t, n1, "CREATE TABLE t (id int PRIMARY KEY, origin text)")
	for _, n := range []*testNode{n2, n3} {
		if err := n.Clone(ctx, n1.peer(), CloneOptions{Slot: SlotNameFor(n.cfg.NodeName), CreateSlot: true}); err != nil {
			t.Fatal(err)
		}
		startNode(t, n, StartOptions{})
	}
	mustExec(t, n1, "INSERT INTO t VALUES (1, 'n1')")
	rowArrives(t, n2, 1)
	rowArrives(t, n3, 1)

	// n1 stops; n2 is promoted, n3 follows it; n1 comes back on its own,
	// takes a write the cluster never sees, and crashes.
	if err := n1.Stop(ctx, StopFast); err != nil {
		t.Fatal(err)
	}
	for _, slot := range []string{SlotNameFor("n1"), SlotNameFor("n3")} {
		if _, err := n2.CreateReplicationSlot(ctx, slot); err != nil {
			t.Fatal(err)
		}
	}
	if err := n2.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n3.Follow(ctx, n2.peer(), FollowOptions{Slot: SlotNameFor("n3")}); err != nil {
		t.Fatal(err)
	}
	mustExec(t, n2, "INSERT INTO t VALUES (2, 'n2')")
	rowArrives(t, n3, 2)
	startNode(t, n1, StartOptions{})
	mustExec(t, n1, "INSERT INTO t VALUES (-1, 'diverged')")
	if err := n1.Stop(ctx, StopImmediate); err != nil {
		t.Fatal(err)
	}

	// n3 stops at row 2; n2 writes on; n1 is rewound against n2, which
	// makes it replay up to where n2 is now before it is consistent.
	if err := n3.Stop(ctx, StopFast); err != nil {
		t.Fatal(err)
	}
	mustExec(t, n2, "INSERT INTO t SELECT g, 'n2' FROM generate_series(3, 20000) g")
	if err := n1.Rewind(ctx, n2.peer(), FollowOptions{Slot: SlotNameFor("n1")}); err != nil {
		t.Fatal(err)
	}
	cd, err := n1.ControlData(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if tli, lsn := cd.ReplayedAtLeast(); tli != 2 || lsn != cd.MinRecoveryEndLSN {
		t.Fatalf("rewound n1 must replay to %d/%s; control data %+v", tli, lsn, cd)
	}
	segment := regexp.MustCompile(`^00000002[0-9A-F]{16}$`)
	walDir := filepath.Join(n1.DataDir(), "pg_wal")
	ents, err := os.ReadDir(walDir)
	if err != nil {
		t.Fatal(err)
	}
	removed := 0
	for _, e := range ents {
		if segment.MatchString(e.Name()) {
			if err := os.Remove(filepath.Join(walDir, e.Name())); err != nil {
				t.Fatal(err)
			}
			removed++
		}
	}
	if removed == 0 {
		t.Fatal("pg_rewind copied no timeline 2 WAL segment: the test does not make the standby wait")
	}
	if err := n1.Follow(ctx, nowhere, FollowOptions{}); err != nil {
		t.Fatal(err)
	}

	// Start gives up waiting and leaves it running.
	sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	pm, err := n1.Start(sctx, StartOptions{Fenced: true})
	cancel()
	if pm == nil || pm.Exited() || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("starting a standby that cannot become consistent: postmaster %v, error %v", pm, err)
	}
	if _, err := n1.Status(ctx); !NotYetAccepting(err) {
		t.Fatalf("status of a standby that is not consistent: %v, want SQLSTATE 57P03", err)
	}

	// n3 is promoted on its own: timeline 3 forks at row 2.
	if err := n3.Follow(ctx, nowhere, FollowOptions{}); err != nil {
		t.Fatal(err)
	}
	startNode(t, n3, StartOptions{})
	if err := n3.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	if need, why, err := n1.NeedsRewind(ctx, n3.peer()); err != nil || !need {
		t.Fatalf("NeedsRewind against a primary that forked before n1's consistent point = %v (%s), %v", need, why, err)
	}
	if need, why, err := n1.NeedsRewind(ctx, n2.peer()); err != nil || need {
		t.Fatalf("NeedsRewind against the primary that has n1's WAL = %v (%s), %v", need, why, err)
	}

	// Re-pointed at n2 without a restart, it gets the WAL and serves.
	if err := n1.Follow(ctx, n2.peer(), FollowOptions{Slot: SlotNameFor("n1")}); err != nil {
		t.Fatalf("re-pointing a standby that is not consistent yet: %v", err)
	}
	if err := n1.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if n1.Postmaster() != pm {
		t.Fatal("n1 restarted to re-point")
	}
	rowArrives(t, n1, 20000)
	if v, err := queryInt(t, n1, "SELECT count(*) FROM t WHERE id = -1"); err != nil || v != 0 {
		t.Fatalf("the diverged row survived the rewind: %d, %v", v, err)
	}
}

// TestRewindVerdict covers NeedsRewind's decision on the positions alone.
func TestRewindVerdict(t *testing.T) {
	history := []HistoryEntry{{Parent: 1, SwitchPoint: 0x3000100}, {Parent: 2, SwitchPoint: 0x5000000}}
	for _, tc := range []struct {
		name  string
		local localWAL
		ptli  uint32
		want  bool
	}{
		{"same timeline, behind", localWAL{tli: 3, lsn: 0x5000100, standby: true}, 3, false},
		{"same timeline, ahead", localWAL{tli: 3, lsn: 0x7000000, standby: true}, 3, true},
		{"newer timeline", localWAL{tli: 4, lsn: 0x100, standby: true}, 3, true},
		{"standby before the fork", localWAL{tli: 2, lsn: 0x4000000, standby: true}, 3, false},
		{"standby at the fork", localWAL{tli: 2, lsn: 0x5000000, standby: true}, 3, false},
		{"standby past the fork", localWAL{tli: 2, lsn: 0x5000001, standby: true}, 3, true},
		{"former primary before the fork", localWAL{tli: 2, lsn: 0x4000000}, 3, true},
		{"timeline not in the history", localWAL{tli: 7, lsn: 0x100, standby: true}, 9, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, why := rewindVerdict(tc.local, tc.ptli, 0x6000000, history)
			if got != tc.want || why == "" {
				t.Fatalf("rewindVerdict = %v (%q), want %v", got, why, tc.want)
			}
		})
	}
}

// TestTerminateCommitWaitingForStandbyLast: the fence ends a session whose
// COMMIT waits for a synchronous standby only after the others are gone.
// Ending it makes the commit visible locally though no standby has it, so
// no other session may still be there to read it.
func TestTerminateCommitWaitingForStandbyLast(t *testing.T) {
	n := newTestNode(t, "n1", true)
	ctx := testCtx(t, time.Minute)
	startNode(t, n, StartOptions{})
	mustExec(t, n, "CREATE TABLE t (id int PRIMARY KEY)")
	if _, err := n.SetSynchronousStandbyNames(ctx, FormatSynchronousStandbyNames(SyncAny, 1, []string{"absent"})); err != nil {
		t.Fatal(err)
	}
	writer, err := n.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close(context.Background())
	reader, err := n.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close(context.Background())
	committed := make(chan error, 1)
	go func() {
		_, err := writer.Exec(ctx, "INSERT INTO t VALUES (1)")
		committed <- err
	}()
	eventually(t, 10*time.Second, "the COMMIT waiting for its standby", func() error {
		v, err := queryInt(t, n, "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'")
		if err != nil {
			return err
		}
		if v != 1 {
			return fmt.Errorf("%d sessions wait for a standby", v)
		}
		return nil
	})
	if err := n.SetFenced(ctx, true); err != nil {
		t.Fatal(err)
	}
	killed, err := n.TerminateClientBackends(ctx)
	if err != nil || killed != 2 {
		t.Fatalf("TerminateClientBackends: %d, %v (want the writer and the reader)", killed, err)
	}
	if err := <-committed; err == nil {
		t.Fatal("the COMMIT waiting for its standby was answered as committed")
	}
	if _, err := reader.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("the reader still runs queries")
	}
	if !strings.Contains(n.logs.String(), "waiting_for_standby=1") {
		t.Fatalf("the fence did not end the waiting COMMIT in a second round:\n%s", n.logs.String())
	}
}
