package consensus

import (
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// LeadershipEvent is the raft view a watcher is told about whenever the
// term, this node's state or the known leader changes.
type LeadershipEvent struct {
	// Term is the current raft term. The controller re-arms its hold-down
	// on every new term: a new term may mean a new leader whose view of
	// leases starts now.
	Term uint64
	// State is this node's raft state ("Follower", "Candidate", "Leader",
	// "Shutdown").
	State string
	// IsLeader is State == "Leader".
	IsLeader bool
	// LeaderID and LeaderAddr name the leader this node knows; empty while
	// there is none.
	LeaderID   string
	LeaderAddr string
}

// WatchLeadership returns a channel that carries the latest
// LeadershipEvent, starting with the current one, and a function that stops
// the subscription (it does not close the channel). The channel holds one
// event and a newer event replaces an unread one, so a slow reader always
// finds the latest view and never blocks raft.
//
// Every change of term is reported: raft's own leader notification misses a
// new term in which the same node leads again, so the watcher also samples
// the term every HeartbeatTimeout/10.
func (n *Node) WatchLeadership() (<-chan LeadershipEvent, func()) {
	return n.watch.subscribe()
}

type leadershipWatch struct {
	r      *raft.Raft
	logger hclog.Logger
	obsCh  chan raft.Observation
	obs    *raft.Observer
	stopCh chan struct{}
	doneCh chan struct{}

	mu     sync.Mutex
	last   LeadershipEvent
	subs   map[int]chan LeadershipEvent
	nextID int
}

func newLeadershipWatch(r *raft.Raft, every time.Duration, logger hclog.Logger) *leadershipWatch {
	w := &leadershipWatch{
		r:      r,
		logger: logger,
		obsCh:  make(chan raft.Observation, 16),
		stopCh: make(chan struct{}),
		doneCh: make(chan struct{}),
		subs:   map[int]chan LeadershipEvent{},
	}
	w.obs = raft.NewObserver(w.obsCh, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.LeaderObservation, raft.RaftState:
			return true
		}
		return false
	})
	r.RegisterObserver(w.obs)
	w.last = w.sample()
	if every < time.Millisecond {
		every = time.Millisecond
	}
	go w.run(every)
	return w
}

func (w *leadershipWatch) sample() LeadershipEvent {
	addr, id := w.r.LeaderWithID()
	st := w.r.State()
	return LeadershipEvent{
		Term:       w.r.CurrentTerm(),
		State:      st.String(),
		IsLeader:   st == raft.Leader,
		LeaderID:   string(id),
		LeaderAddr: string(addr),
	}
}

func (w *leadershipWatch) run(every time.Duration) {
	defer close(w.doneCh)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-w.stopCh:
			return
		case <-w.obsCh:
		case <-t.C:
		}
		w.publish(w.sample())
	}
}

// publish sends ev to every subscriber if it differs from the last event.
func (w *leadershipWatch) publish(ev LeadershipEvent) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ev == w.last {
		return
	}
	if ev.Term != w.last.Term || ev.LeaderID != w.last.LeaderID || ev.State != w.last.State {
		w.logger.Debug("raft leadership changed", "term", ev.Term, "state", ev.State, "leader", ev.LeaderID)
	}
	w.last = ev
	for _, ch := range w.subs {
		offerLatest(ch, ev)
	}
}

// offerLatest puts ev in ch (capacity 1), replacing an unread event. Only
// publish sends, under w.mu, so the send after the drain cannot block.
func offerLatest(ch chan LeadershipEvent, ev LeadershipEvent) {
	select {
	case <-ch:
	default:
	}
	ch <- ev
}

func (w *leadershipWatch) subscribe() (<-chan LeadershipEvent, func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ch := make(chan LeadershipEvent, 1)
	id := w.nextID
	w.nextID++
	w.subs[id] = ch
	ch <- w.last
	return ch, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		delete(w.subs, id)
	}
}

func (w *leadershipWatch) stop() {
	select {
	case <-w.stopCh:
		return
	default:
	}
	w.r.DeregisterObserver(w.obs)
	close(w.stopCh)
	<-w.doneCh
	// Subscribers learn of the shutdown.
	w.publish(w.sample())
}
