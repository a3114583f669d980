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
	// Config.HoldTimeout) and asks again.
	Primary() (Target, bool)
	// Standbys returns the healthy standbys within the configured
	// replication lag, for the read-only port. It may be empty.
	Standbys() []Target
	// Changed returns a channel that is closed when the routing view
	// changes. Callers take a fresh channel after every close (a "broadcast
	// by close" pattern: each view has its own channel).
	Changed() <-chan struct{}
}
