package consensus

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pgbattery/pgbattery/test/testutil"
)

// Offsets in a raft-wal v0.4.1 segment file: a 32-byte file header, then
// frames with an 8-byte header; an entry's payload starts with its index as
// a varint.
const (
	segFileHeaderLen  = 32
	segFrameHeaderLen = 8
)

// writeStore makes a single-server store with entries spread over several
// small segments, the last (unsealed) one holding some too, and stops the
// node. It returns how many keys it wrote.
func writeStore(t *testing.T) (*testNode, int) {
	t.Helper()
	tn := newTestNode(t, "s1", expect(1), tweak(func(c *Config) { c.segmentSize = 1024 }))
	ok, err := tn.node.MaybeBootstrap(nil)
	if err != nil || !ok {
		t.Fatalf("bootstrapping a single server: %v %v", ok, err)
	}
	nodes := []*testNode{tn}
	n := 0
	for ; n < 100; n++ {
		apply(t, nodes, fmt.Sprintf("key%03d=value-%d", n, n))
		if n == 50 {
			if err := tn.node.Snapshot(ctxTimeout(t, 10*time.Second)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// raft-wal rotates segments in the background; only a stopped store
	// shows its final shape. Add entries until the tail holds some.
	for attempt := 0; ; attempt++ {
		tn.stop()
		if tailHasData(t, tn.cfg.DataDir) {
			return tn, n
		}
		if attempt == 20 {
			t.Fatal("the tail segment stayed empty")
		}
		tn.start()
		apply(t, nodes, fmt.Sprintf("key%03d=value-%d", n, n))
		n++
	}
}

// tailHasData reports whether the newest segment holds a frame (segments
// are preallocated with zeros).
func tailHasData(t *testing.T, dataDir string) bool {
	segs := segmentsNoCheck(dataDir)
	if len(segs) == 0 {
		return false
	}
	b, err := os.ReadFile(segs[len(segs)-1])
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range b[segFileHeaderLen:] {
		if c != 0 {
			return true
		}
	}
	return false
}

func segments(t *testing.T, dataDir string) []string {
	t.Helper()
	segs, err := filepath.Glob(filepath.Join(RaftDir(dataDir), walDir, "*.wal"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(segs) // by base index: oldest (sealed) first, the tail last
	if len(segs) < 3 {
		t.Fatalf("want several segments to corrupt, have %d", len(segs))
	}
	return segs
}

func overwrite(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptStoreRefused(t *testing.T) {
	cases := []struct {
		name    string
		corrupt func(t *testing.T, dataDir string)
	}{
		{"sealed segment header", func(t *testing.T, d string) {
			overwrite(t, segments(t, d)[0], 0, []byte("garbage!"))
		}},
		{"tail segment header", func(t *testing.T, d string) {
			segs := segments(t, d)
			overwrite(t, segs[len(segs)-1], 0, []byte("garbage!"))
		}},
		{"entry inside a sealed segment", func(t *testing.T, d string) {
			// Renumber the segment's first entry.
			overwrite(t, segments(t, d)[1], segFileHeaderLen+segFrameHeaderLen, []byte{0x7f})
		}},
		{"undecodable entry inside a sealed segment", func(t *testing.T, d string) {
			overwrite(t, segments(t, d)[1], segFileHeaderLen+segFrameHeaderLen, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		}},
		{"metadata missing", func(t *testing.T, d string) {
			if err := os.Remove(filepath.Join(RaftDir(d), walDir, "wal-meta.db")); err != nil {
				t.Fatal(err)
			}
		}},
		{"every snapshot", func(t *testing.T, d string) {
			snaps, err := filepath.Glob(filepath.Join(RaftDir(d), "snapshots", "*", "state.bin"))
			if err != nil || len(snaps) == 0 {
				t.Fatalf("no snapshot to corrupt: %v", err)
			}
			for _, s := range snaps {
				overwrite(t, s, 0, []byte("garbage!"))
			}
		}},
		{"metadata garbage", func(t *testing.T, d string) {
			overwrite(t, filepath.Join(RaftDir(d), walDir, "wal-meta.db"), 0, []byte(strings.Repeat("x", 8192)))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tn, _ := writeStore(t)
			before := segmentsNoCheck(tn.cfg.DataDir)
			tc.corrupt(t, tn.cfg.DataDir)

			err := tn.tryStart()
			if err == nil {
				t.Fatalf("a node started on a corrupt store (it applied %d entries)", tn.fsm.len())
			}
			var ce *CorruptError
			if !errors.As(err, &ce) {
				t.Fatalf("error %v is not a CorruptError", err)
			}
			want := fmt.Sprintf("raft store at %s is corrupt: ", RaftDir(tn.cfg.DataDir))
			if !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "restore from a snapshot or remove the node's raft directory and re-join") {
				t.Fatalf("error %q, want %q… naming what to do", err, want)
			}
			t.Logf("refused: %v", err)
			// Nothing was recreated or deleted.
			if after := segmentsNoCheck(tn.cfg.DataDir); strings.Join(after, ",") != strings.Join(before, ",") {
				t.Fatalf("segments changed by the refused start: before %v after %v", before, after)
			}
			// And it stays refused.
			if err := tn.tryStart(); !errors.As(err, &ce) {
				t.Fatalf("second start: %v", err)
			}
		})
	}
}

func segmentsNoCheck(dataDir string) []string {
	segs, _ := filepath.Glob(filepath.Join(RaftDir(dataDir), walDir, "*.wal"))
	sort.Strings(segs)
	return segs
}

// The uncorrupted store of the same shape opens and replays, so the cases
// above fail for their damage and not for the setup.
func TestIntactStoreReopens(t *testing.T) {
	tn, n := writeStore(t)
	tn.start()
	waitFor(t, 10*time.Second, "the reopened store to replay", func() bool { return tn.fsm.len() == n })
	if v, _ := tn.fsm.get("key099"); v != "value-99" {
		t.Fatalf("key099=%q", v)
	}
}

func newTestNodeAddr(t *testing.T) string { return testutil.Addr(t) }
