package consensus

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/hashicorp/go-hclog"
	metrics "github.com/hashicorp/go-metrics"
	"github.com/hashicorp/raft"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

// Layout under RaftDir(data_dir):
//
//	LOCK        flock(2) held while a Node owns the directory
//	wal/        raft-wal segments and wal-meta.db (log + stable store)
//	snapshots/  raft file snapshots (the newest snapshotsRetained)
const (
	lockFile          = "LOCK"
	walDir            = "wal"
	snapshotsRetained = 2
)

// CorruptError says the raft store cannot be trusted. The agent must not
// start: silently recreating the store would let this node vote and accept
// entries as if it had never promised anything to its peers.
type CorruptError struct {
	Path string
	Err  error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("raft store at %s is corrupt: %v; restore from a snapshot or remove the node's raft directory and re-join", e.Path, e.Err)
}

func (e *CorruptError) Unwrap() error { return e.Err }

// stores is what New opens before raft starts.
type stores struct {
	dir   string
	lock  *os.File
	wal   *raftwal.WAL
	snaps *raft.FileSnapshotStore
}

func (s *stores) close() error {
	var errs []error
	if s.wal != nil {
		errs = append(errs, s.wal.Close())
	}
	if s.lock != nil {
		errs = append(errs, s.lock.Close()) // closing releases the flock
	}
	return errors.Join(errs...)
}

// openStores opens (creating when absent) the raft directory, locks it,
// and opens and verifies the WAL and the snapshot store.
func openStores(dataDir string, logger hclog.Logger, m *metrics.Metrics, segmentSize int) (_ *stores, err error) {
	dir := RaftDir(dataDir)
	s := &stores{dir: dir}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if err := os.MkdirAll(filepath.Join(dir, walDir), 0o700); err != nil {
		return nil, fmt.Errorf("creating raft directory %s: %w", dir, err)
	}

	// Two agents on one data dir would each believe they are the same
	// member: refuse the second at once (bolt inside raft-wal would
	// otherwise block forever on its own lock).
	lock, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening raft lock file in %s: %w", dir, err)
	}
	s.lock = lock
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return nil, fmt.Errorf("raft store at %s is in use by another agent: %w", dir, err)
	}

	wdir := filepath.Join(dir, walDir)
	// Corruption is reported against the raft directory as a whole: the
	// log, the stable store and the snapshots only make sense together, and
	// that is the directory the operator removes to re-join.
	corrupt := func(err error) error {
		return &CorruptError{Path: dir, Err: fmt.Errorf("%s: %w", walDir, err)}
	}
	if err := checkMetaPresent(dir, wdir); err != nil {
		return nil, corrupt(err)
	}
	if err := checkSegmentHeaders(wdir); err != nil {
		return nil, corrupt(err)
	}
	w, err := openWAL(wdir, logger, m, segmentSize)
	if err != nil {
		if isFilesystemError(err) {
			return nil, fmt.Errorf("opening raft store at %s: %w", wdir, err)
		}
		// Anything else raft-wal reports at open time is about the
		// content of the files: bad headers, bad metadata, bad names.
		return nil, corrupt(err)
	}
	s.wal = w
	if err := verifyLog(w); err != nil {
		return nil, corrupt(err)
	}

	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, snapshotsRetained, logger.Named("snapshots"))
	if err != nil {
		return nil, fmt.Errorf("opening raft snapshot store in %s: %w", dir, err)
	}
	s.snaps = snaps
	return s, nil
}

// checkMetaPresent refuses a WAL directory that lost its metadata file
// while log segments or snapshots remain: raft-wal would create a fresh
// wal-meta.db and delete the segments it does not list, and raft would start
// with term 0 and no record of its vote.
func checkMetaPresent(dir, wdir string) error {
	if _, err := os.Stat(filepath.Join(wdir, metadb.FileName)); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return nil // present, or a filesystem error raft-wal will report
	}
	segs, _ := filepath.Glob(filepath.Join(wdir, "*.wal"))
	if len(segs) > 0 {
		return fmt.Errorf("%s is missing but %d log segment files remain", metadb.FileName, len(segs))
	}
	snaps, _ := os.ReadDir(filepath.Join(dir, "snapshots"))
	if len(snaps) > 0 {
		return fmt.Errorf("%s (holding the current term and vote) is missing but snapshots remain", metadb.FileName)
	}
	return nil
}

// raft-wal v0.4.1 segment file format, for checkSegmentHeaders.
const (
	segmentHeaderLen   = 32
	segmentMagic       = 0x58eb6b0d
	segmentNamePattern = "%020d-%016x.wal"
)

// checkSegmentHeaders checks every segment file's header against its name
// before raft-wal opens them. raft-wal checks sealed segments' headers
// itself, but a damaged header on the unsealed tail segment breaks the CRC
// of its first commit, which raft-wal takes for a torn write and silently
// drops, with every entry in that segment. The header is written with the
// first commit in one sector-aligned write, so a header that is present but
// wrong, or missing while frames follow it, is damage, not a torn write.
func checkSegmentHeaders(wdir string) error {
	names, err := filepath.Glob(filepath.Join(wdir, "*.wal"))
	if err != nil {
		return err
	}
	for _, path := range names {
		var base, id uint64
		if n, err := fmt.Sscanf(filepath.Base(path), segmentNamePattern, &base, &id); err != nil || n != 2 {
			return fmt.Errorf("unexpected segment file name %s", filepath.Base(path))
		}
		if err := checkSegmentHeader(path, base, id); err != nil {
			return fmt.Errorf("segment %s: %w", filepath.Base(path), err)
		}
	}
	return nil
}

func checkSegmentHeader(path string, base, id uint64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var hdr [segmentHeaderLen]byte
	n, err := io.ReadFull(f, hdr[:])
	if n == 0 && errors.Is(err, io.EOF) {
		return nil // created, never written
	}
	if err != nil {
		return fmt.Errorf("reading header: %w", err)
	}
	if allZero(hdr[:]) {
		// Never written (segments are preallocated with zeros) — unless
		// frames follow.
		buf := make([]byte, 64<<10)
		for {
			n, err := f.Read(buf)
			if !allZero(buf[:n]) {
				return errors.New("header is zeroed but the segment holds frames")
			}
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return fmt.Errorf("reading: %w", err)
			}
		}
	}
	if binary.LittleEndian.Uint32(hdr[0:4]) != segmentMagic {
		return errors.New("header has no segment magic number")
	}
	if got := binary.LittleEndian.Uint64(hdr[8:16]); got != base {
		return fmt.Errorf("header base index %d does not match the file name's %d", got, base)
	}
	if got := binary.LittleEndian.Uint64(hdr[16:24]); got != id {
		return fmt.Errorf("header segment ID %d does not match the file name's %d", got, id)
	}
	return nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// openWAL opens raft-wal, turning a panic from the metadata database on
// damaged pages into an error. raft-wal leaves its metadata database open
// (and so flock'ed) when Open fails; we own it and close it, so that a
// later attempt in the same process does not block on that lock forever.
func openWAL(wdir string, logger hclog.Logger, m *metrics.Metrics, segmentSize int) (w *raftwal.WAL, err error) {
	meta := &metadb.BoltMetaDB{}
	defer func() {
		if r := recover(); r != nil {
			w, err = nil, fmt.Errorf("reading the store panicked: %v", r)
		}
		if err != nil {
			meta.Close()
		}
	}()
	if segmentSize <= 0 {
		segmentSize = raftwal.DefaultSegmentSize
	}
	return raftwal.Open(wdir,
		raftwal.WithLogger(logger.Named("wal")),
		raftwal.WithMetricsCollector(walMetrics{m: m}),
		raftwal.WithSegmentSize(segmentSize),
		raftwal.WithMetaStore(meta),
	)
}

// isFilesystemError tells permission problems, missing files and full
// disks (which the operator fixes without losing data) apart from content
// that does not parse.
func isFilesystemError(err error) bool {
	var pe *fs.PathError
	var se syscall.Errno
	return errors.As(err, &pe) || errors.As(err, &se)
}

// verifyLog reads every entry once. raft-wal validates segment headers and
// the metadata at open, and the tail segment's last batch by CRC, but it
// reads sealed segments through their index without checking what it
// reads; raft would trip over a damaged entry only when it next needs it,
// perhaps as leader replicating it. Reading the whole log (bounded by
// TrailingLogs plus SnapshotThreshold entries) at start-up turns damage that
// breaks an entry's framing or numbering into a refusal to start.
func verifyLog(w *raftwal.WAL) (err error) {
	defer func() {
		// raft-wal's decoder can index out of range on garbage.
		if r := recover(); r != nil {
			err = fmt.Errorf("decoding the log panicked: %v", r)
		}
	}()
	first, err := w.FirstIndex()
	if err != nil {
		return fmt.Errorf("reading first log index: %w", err)
	}
	last, err := w.LastIndex()
	if err != nil {
		return fmt.Errorf("reading last log index: %w", err)
	}
	currentTerm, err := w.GetUint64([]byte("CurrentTerm"))
	if err != nil {
		return fmt.Errorf("reading current term: %w", err)
	}
	if last == 0 {
		return nil
	}
	if first == 0 || first > last {
		return fmt.Errorf("log bounds first=%d last=%d are inconsistent", first, last)
	}
	var prevTerm uint64
	var entry raft.Log
	for i := first; i <= last; i++ {
		if err := w.GetLog(i, &entry); err != nil {
			return fmt.Errorf("reading log entry %d of %d..%d: %w", i, first, last, err)
		}
		if entry.Index != i {
			return fmt.Errorf("log entry at position %d claims index %d", i, entry.Index)
		}
		if entry.Term < prevTerm {
			return fmt.Errorf("log entry %d has term %d, lower than the previous entry's %d", i, entry.Term, prevTerm)
		}
		// A member persists a term before it appends entries of that term.
		if currentTerm > 0 && entry.Term > currentTerm {
			return fmt.Errorf("log entry %d has term %d, beyond the stored current term %d", i, entry.Term, currentTerm)
		}
		prevTerm = entry.Term
	}
	return nil
}

// walMetrics hands raft-wal's counters to hashicorp/go-metrics: raft-wal
// v0.4.1 would otherwise report to armon/go-metrics' global, where no sink
// of ours listens.
type walMetrics struct{ m *metrics.Metrics }

func (c walMetrics) IncrementCounter(name string, delta uint64) {
	key := []string{"raft", "wal", name}
	if c.m != nil {
		c.m.IncrCounter(key, float32(delta))
		return
	}
	metrics.IncrCounter(key, float32(delta))
}

func (c walMetrics) SetGauge(name string, val uint64) {
	key := []string{"raft", "wal", name}
	if c.m != nil {
		c.m.SetGauge(key, float32(val))
		return
	}
	metrics.SetGauge(key, float32(val))
}
