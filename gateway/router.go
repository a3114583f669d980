package gateway

// Target is one PostgreSQL server the gateway can route a session to.
type Target struct {
	// Epoch is the cluster's primary epoch the target was named in (grows by
	// one at every primary change). Sessions remember the epoch of the
	// primary they are attached to, so a change is noticed even when the
	// new primary happens to live at the same address.
	Epoch uint64
	// Node is the agent's node name, for logs and metrics.
	Node string
	// Addr is the host:port of the node's PostgreSQL.
	Addr string
	// Draining is set (on the primary only) while a planned switchover
	// drains it: transactions already running on it go on and may commit,
	// but new transactions wait at their first statement, as they do on a
	// stale view, until the new primary is named. Sessions may still be
	// opened on a draining primary (they are moved with the others).
	Draining bool
}

// Router is the gateway's view of the cluster. The agent implements it from
// its replicated state (the Raft FSM) and its health checks; the gateway
// never imports the agent.
//
// All methods must be safe for concurrent use and cheap: Primary is called
// for every new session.
type Router interface {
	// Primary returns the current writable primary, and whether this view is
	// fresh: false when the agent cannot vouch for it (lost contact with the
	// Raft majority, primary suspected, election in progress). The gateway
	// does not start sessions on a stale view; it waits for Changed (up to
	// Config.HoldTimeout) and asks again. A fresh primary with
	// Target.Draining set is being switched over: see Target.
	Primary() (Target, bool)
	// Standbys returns the healthy standbys within the configured
	// replication lag, for the read-only port. It may be empty.
	Standbys() []Target
	// Changed returns a channel that is closed when the routing view
	// changes. Callers take a fresh channel after every close (a "broadcast
	// by close" pattern: each view has its own channel).
	Changed() <-chan struct{}
	// Fence returns the fence transaction id the primary of epoch recorded
	// when it took office, before it accepted any write
	// (pg_snapshot_xmax(pg_current_snapshot()) on it, as a 64-bit xid8):
	// every transaction id at or above it was assigned after the timeline
	// switch, so a transaction of an older epoch with such an id did not
	// commit on this timeline. ok is false when no fence is known for the
	// epoch (no primary took office in it, or it is too old to be kept).
	// Commit resolution (see package doc) depends on it.
	Fence(epoch uint64) (xid uint64, ok bool)
}
