// Package fsm is the replicated state machine of the cluster: what every
// agent knows about the cluster, changed only through the Raft log.
//
// Every log entry is one MessageType byte followed by the JSON encoding of a
// command. Each command has its own apply function; commands that decide
// something safety-relevant are conditional (compare-and-set on the epoch
// and on the lease), so a decision taken on stale information is rejected
// when it reaches the log instead of being applied.
//
// Readers get immutable snapshots of the state (State) and can subscribe to
// be told after every applied entry (Subscribe).
package fsm

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/hashicorp/go-hclog"
	metrics "github.com/hashicorp/go-metrics"
	"github.com/hashicorp/raft"
)

// SnapshotVersion is the version of the snapshot format this code writes.
// Restore refuses newer versions rather than guess at their meaning.
const SnapshotVersion = 1

// FSM implements raft.FSM.
type FSM struct {
	logger hclog.Logger

	mu    sync.RWMutex
	state *State

	subMu sync.Mutex
	subs  map[*subscription]struct{}
}

var _ raft.FSM = (*FSM)(nil)

type subscription struct {
	ch chan struct{}
}

// New returns an FSM with an empty state.
func New(logger hclog.Logger) *FSM {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &FSM{
		logger: logger,
		state:  &State{},
		subs:   make(map[*subscription]struct{}),
	}
}

// State returns the current state. It is immutable: callers must not
// modify it (Clone it to derive a changed copy).
func (f *FSM) State() *State {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state
}

// Subscribe returns a channel that receives a value after entries are
// applied (notifications coalesce: one value may stand for many entries, so
// read State after receiving), and a function that ends the subscription.
func (f *FSM) Subscribe() (<-chan struct{}, func()) {
	s := &subscription{ch: make(chan struct{}, 1)}
	f.subMu.Lock()
	f.subs[s] = struct{}{}
	f.subMu.Unlock()
	return s.ch, func() {
		f.subMu.Lock()
		delete(f.subs, s)
		f.subMu.Unlock()
	}
}

func (f *FSM) notify() {
	f.subMu.Lock()
	defer f.subMu.Unlock()
	for s := range f.subs {
		select {
		case s.ch <- struct{}{}:
		default:
		}
	}
}

// Apply applies one raft log entry. It returns nil on success, or an error:
// a *RejectedError when the command's condition did not hold, or a decoding
// error (unknown type, bad payload). It never panics on bad input.
func (f *FSM) Apply(l *raft.Log) interface{} {
	if l.Type != raft.LogCommand {
		return nil
	}
	return f.ApplyEntry(l.Index, l.Term, l.Data)
}

// ApplyEntry applies an encoded command at the given log position. Apply
// calls it for raft; the simulation calls it directly.
func (f *FSM) ApplyEntry(index, term uint64, data []byte) error {
	c, err := decode(data)
	if err != nil {
		f.logger.Error("refusing log entry", "index", index, "term", term, "error", err)
		metrics.IncrCounter([]string{"fsm", "apply", "undecodable"}, 1)
		f.advance(index, term)
		return err
	}
	f.mu.Lock()
	next := f.state.Clone()
	err = c.apply(next, applyCtx{index: index, term: term})
	if err == nil {
		next.Index, next.Term = index, term
		f.state = next
	} else {
		// A rejected command changes nothing but the applied position.
		cur := *f.state
		cur.Index, cur.Term = index, term
		f.state = &cur
	}
	f.mu.Unlock()
	if err != nil {
		f.logger.Debug("command rejected", "index", index, "type", c.MessageType().String(), "reason", err)
		metrics.IncrCounter([]string{"fsm", "apply", "rejected", c.MessageType().String()}, 1)
	}
	f.notify()
	return err
}

func (f *FSM) advance(index, term uint64) {
	f.mu.Lock()
	cur := *f.state
	cur.Index, cur.Term = index, term
	f.state = &cur
	f.mu.Unlock()
}

func decode(data []byte) (command, error) {
	c, err := Decode(data)
	if err != nil {
		return nil, err
	}
	return c.(command), nil
}

// snapshotFile is the on-disk snapshot format.
type snapshotFile struct {
	Version int    `json:"version"`
	State   *State `json:"state"`
}

// Snapshot returns a point-in-time snapshot; the state is immutable, so
// capturing the pointer is enough.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	return &fsmSnapshot{state: f.State()}, nil
}

type fsmSnapshot struct {
	state *State
}

// Persist writes the snapshot as versioned JSON.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := WriteSnapshot(sink, s.state); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}

// WriteSnapshot writes a state in the versioned snapshot format.
func WriteSnapshot(w io.Writer, st *State) error {
	if err := json.NewEncoder(w).Encode(snapshotFile{Version: SnapshotVersion, State: st}); err != nil {
		return fmt.Errorf("writing FSM snapshot: %w", err)
	}
	return nil
}

// ReadSnapshot reads a snapshot written by WriteSnapshot, refusing formats
// newer than this code understands.
func ReadSnapshot(r io.Reader) (*State, error) {
	var probe struct {
		Version *int            `json:"version"`
		State   json.RawMessage `json:"state"`
	}
	dec := json.NewDecoder(io.LimitReader(r, 1<<30))
	if err := dec.Decode(&probe); err != nil {
		return nil, fmt.Errorf("reading FSM snapshot: %w", err)
	}
	if probe.Version == nil {
		return nil, errors.New("reading FSM snapshot: no format version (not a pgbattery snapshot?)")
	}
	if v := *probe.Version; v > SnapshotVersion || v < 1 {
		return nil, fmt.Errorf("reading FSM snapshot: format version %d is not supported by this agent (it reads versions 1..%d); upgrade pgbattery on this node", v, SnapshotVersion)
	}
	st := &State{}
	if len(probe.State) > 0 && string(probe.State) != "null" {
		if err := json.Unmarshal(probe.State, st); err != nil {
			return nil, fmt.Errorf("reading FSM snapshot state: %w", err)
		}
	}
	return st, nil
}

// Restore replaces the state with a snapshot's.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	st, err := ReadSnapshot(rc)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.state = st
	f.mu.Unlock()
	f.logger.Info("restored FSM snapshot", "index", st.Index, "epoch", st.Epoch, "primary", st.Primary)
	f.notify()
	return nil
}
