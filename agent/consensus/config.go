// Package consensus runs the agent's member of the cluster's single Raft
// group: hashicorp/raft over TCP (mutual TLS when configured), with the log
// and stable store in hashicorp/raft-wal and file snapshots, all under
// <data_dir>/raft, outside PGDATA.
//
// The package knows nothing about PostgreSQL or about what the FSM holds. A
// witness is simply a Server node whose agent runs no PostgreSQL.
package consensus

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	metrics "github.com/hashicorp/go-metrics"
	"github.com/hashicorp/raft"
)

// DefaultPort is the raft RPC port when an address names none.
const DefaultPort = 8300

// Base timings at Multiplier 1, chosen by measurement on loopback, 2 cores,
// under the load of other test suites (load average 10-20):
//
//	base (hb = election = lease)   election after leader kill   new terms in 30 s, healthy group
//	100 ms                         p50 235 ms, max 336 ms        1-2 (leader lease lapses under load)
//	150 ms                         p50 348 ms, max 409 ms        0 (another run: 1)
//	200 ms                         p50 430 ms, max 555 ms        0
//	200/200/100 ms (lease = hb/2)  p50 471 ms, max 1.59 s        3
//
// (BenchmarkElectionAfterLeaderKill and BenchmarkSpuriousElections, 30
// trials/seconds each, PGB_RAFT_BASE_MS=100,150,200; with 100 trials the
// chosen 150 ms gave p50 344 ms, p99 633 ms.) A follower notices a
// silent leader after HeartbeatTimeout..3×HeartbeatTimeout, and it cannot
// win before the other follower has noticed too (raft rejects votes while
// it knows a leader), hence ~2.3×base. Unneeded elections under load come
// from the leader lease: a leader that misses a quorum's heartbeat replies
// for LeaderLeaseTimeout steps down, so the lease is as long as raft allows
// (= HeartbeatTimeout). 150 ms is the fastest setting that kept a loaded
// machine free of unneeded elections.
const (
	baseHeartbeatTimeout   = 150 * time.Millisecond
	baseElectionTimeout    = 150 * time.Millisecond
	baseLeaderLeaseTimeout = 150 * time.Millisecond
	baseCommitTimeout      = 5 * time.Millisecond

	// MaxMultiplier bounds Multiplier as Consul's raft_multiplier does.
	MaxMultiplier = 10

	// DefaultMultiplier is used when Config.Multiplier is zero. pgbattery
	// defaults to the fastest setting because failover time is its product;
	// raise it on slow or overloaded machines.
	DefaultMultiplier = 1
)

// Timings are the raft timeouts a multiplier yields. The agent validates its
// primary lease and hold-down against them at start-up.
type Timings struct {
	// HeartbeatTimeout: a follower that hears nothing from the leader for a
	// random time between HeartbeatTimeout and twice that starts an election.
	HeartbeatTimeout time.Duration
	// ElectionTimeout: a candidate that has not won within a random time
	// between ElectionTimeout and twice that starts a new election.
	ElectionTimeout time.Duration
	// LeaderLeaseTimeout: a leader that has not heard from a quorum for this
	// long steps down.
	LeaderLeaseTimeout time.Duration
	// CommitTimeout: how soon an idle leader tells followers about a new
	// commit index.
	CommitTimeout time.Duration
}

// MaxElection is a pessimistic bound on how long the group may be without a
// leader after the leader dies, when one election round succeeds: a
// follower's heartbeat check runs every HeartbeatTimeout..2×HeartbeatTimeout
// and fires once contact is older than HeartbeatTimeout (so up to
// 3×HeartbeatTimeout), plus one election round (up to 2×ElectionTimeout).
// Split votes can take further rounds.
func (t Timings) MaxElection() time.Duration {
	return 3*t.HeartbeatTimeout + 2*t.ElectionTimeout
}

// TimingsFor returns the raft timings for a multiplier (0 means
// DefaultMultiplier).
func TimingsFor(multiplier int) (Timings, error) {
	if multiplier == 0 {
		multiplier = DefaultMultiplier
	}
	if multiplier < 1 || multiplier > MaxMultiplier {
		return Timings{}, fmt.Errorf("raft multiplier %d out of range 1..%d", multiplier, MaxMultiplier)
	}
	m := time.Duration(multiplier)
	return Timings{
		HeartbeatTimeout:   m * baseHeartbeatTimeout,
		ElectionTimeout:    m * baseElectionTimeout,
		LeaderLeaseTimeout: m * baseLeaderLeaseTimeout,
		CommitTimeout:      m * baseCommitTimeout,
	}, nil
}

// Config configures one raft member.
type Config struct {
	// NodeID is the raft server ID. It must be stable across restarts of
	// the agent (it is stored in every peer's configuration) and unique in
	// the cluster.
	NodeID string
	// NodeName is the human name of the node, shown by list-peers.
	NodeName string

	// DataDir is the agent's data directory; raft keeps its log, stable
	// store and snapshots in DataDir/raft. It must not be inside PGDATA.
	DataDir string

	// BindAddr is the host:port the raft listener binds ("127.0.0.5:8300");
	// a bare host gets DefaultPort.
	BindAddr string
	// AdvertiseAddr is the host:port peers dial; defaults to BindAddr, and
	// is required when BindAddr is an unspecified address such as 0.0.0.0.
	AdvertiseAddr string

	// Server makes this node eligible to be a voter. Non-servers are added
	// by the leader as non-voters and only hold a replica of the FSM.
	Server bool
	// BootstrapExpect is how many servers must have met before the group
	// bootstraps itself (Consul's bootstrap_expect). 0 means never
	// bootstrap: this node waits to be added by an existing leader.
	BootstrapExpect int

	// Multiplier scales every raft timeout (TimingsFor); 0 means
	// DefaultMultiplier.
	Multiplier int

	// TLS, when not nil, makes every raft connection mutual TLS. It must
	// carry this node's certificate (Certificates or GetCertificate) and
	// the cluster CA in RootCAs; ClientCAs defaults to RootCAs. When
	// ServerName is empty, peers' certificates are verified against the CA
	// without a host name check (raft peers are addressed by IP and every
	// certificate the cluster CA issues is a cluster member's).
	TLS *tls.Config

	// Logger receives raft's and this package's logs; nil discards them.
	Logger hclog.Logger
	// Metrics receives the WAL's metrics (raft itself reports to the
	// go-metrics global, which the agent configures); nil means the global.
	Metrics *metrics.Metrics

	// ApplyTimeout bounds Apply, Barrier and membership changes whose
	// context has no deadline; 0 means 10 s.
	ApplyTimeout time.Duration

	// Test knobs.
	snapshotThreshold uint64
	trailingLogs      uint64
	snapshotInterval  time.Duration
	segmentSize       int
	baseTimings       *Timings // replaces the base timings (benchmarks)
}

// timings are the raft timeouts c runs with.
func (c Config) timings() Timings {
	t, _ := TimingsFor(c.Multiplier)
	if b := c.baseTimings; b != nil {
		m := time.Duration(c.Multiplier)
		if m == 0 {
			m = DefaultMultiplier
		}
		t = Timings{HeartbeatTimeout: m * b.HeartbeatTimeout, ElectionTimeout: m * b.ElectionTimeout, LeaderLeaseTimeout: m * b.LeaderLeaseTimeout, CommitTimeout: m * baseCommitTimeout}
	}
	return t
}

const defaultApplyTimeout = 10 * time.Second

// RaftDir is where raft keeps its state under a data dir.
func RaftDir(dataDir string) string { return filepath.Join(dataDir, "raft") }

// withDefaults validates c and returns a copy with defaults filled in and
// the resolved advertise address.
func (c Config) withDefaults() (Config, *net.TCPAddr, error) {
	if c.NodeID == "" {
		return c, nil, errors.New("raft: node ID is empty")
	}
	if c.NodeName == "" {
		c.NodeName = c.NodeID
	}
	if c.DataDir == "" {
		return c, nil, errors.New("raft: data dir is empty")
	}
	if c.BootstrapExpect < 0 {
		return c, nil, fmt.Errorf("raft: bootstrap_expect %d is negative", c.BootstrapExpect)
	}
	if c.BootstrapExpect > 0 && !c.Server {
		return c, nil, errors.New("raft: bootstrap_expect is set on a node that is not a server")
	}
	if _, err := TimingsFor(c.Multiplier); err != nil {
		return c, nil, fmt.Errorf("raft: %w", err)
	}
	if c.Multiplier == 0 {
		c.Multiplier = DefaultMultiplier
	}
	if c.ApplyTimeout <= 0 {
		c.ApplyTimeout = defaultApplyTimeout
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}

	var err error
	if c.BindAddr, err = withPort(c.BindAddr); err != nil {
		return c, nil, fmt.Errorf("raft: bind address: %w", err)
	}
	if c.AdvertiseAddr == "" {
		c.AdvertiseAddr = c.BindAddr
	}
	if c.AdvertiseAddr, err = withPort(c.AdvertiseAddr); err != nil {
		return c, nil, fmt.Errorf("raft: advertise address: %w", err)
	}
	adv, err := net.ResolveTCPAddr("tcp", c.AdvertiseAddr)
	if err != nil {
		return c, nil, fmt.Errorf("raft: advertise address %q: %w", c.AdvertiseAddr, err)
	}
	if adv.IP == nil || adv.IP.IsUnspecified() {
		return c, nil, fmt.Errorf("raft: advertise address %q is not an address peers can dial; set the advertise address", c.AdvertiseAddr)
	}
	if c.TLS != nil {
		if len(c.TLS.Certificates) == 0 && c.TLS.GetCertificate == nil {
			return c, nil, errors.New("raft: TLS is configured without a certificate for this node")
		}
		if c.TLS.RootCAs == nil {
			return c, nil, errors.New("raft: TLS is configured without the cluster CA (RootCAs)")
		}
	}
	return c, adv, nil
}

// withPort appends DefaultPort to a bare host.
func withPort(addr string) (string, error) {
	if addr == "" {
		return "", errors.New("empty")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		// A bare host (or IPv6 literal) without port.
		if ip := net.ParseIP(addr); ip != nil || !strings.Contains(addr, ":") {
			return net.JoinHostPort(addr, strconv.Itoa(DefaultPort)), nil
		}
		return "", fmt.Errorf("%q: %w", addr, err)
	}
	if port == "" {
		port = strconv.Itoa(DefaultPort)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return "", fmt.Errorf("%q: bad port %q", addr, port)
	}
	return net.JoinHostPort(host, port), nil
}

// raftConfig builds hashicorp/raft's configuration.
func (c Config) raftConfig() *raft.Config {
	t := c.timings()
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(c.NodeID)
	rc.HeartbeatTimeout = t.HeartbeatTimeout
	rc.ElectionTimeout = t.ElectionTimeout
	rc.LeaderLeaseTimeout = t.LeaderLeaseTimeout
	// A follower learns that an entry committed only with the leader's
	// next AppendEntries: after CommitTimeout..2×CommitTimeout when no
	// other entry follows. The failover path is a chain of such entries
	// (new primary, its lease, its fence), each to be seen by another
	// node, so raft's 50 ms default would cost up to 100 ms per link. An
	// empty AppendEntries every few milliseconds is cheap.
	rc.CommitTimeout = t.CommitTimeout
	// Pre-vote keeps a node that was cut off (and kept raising its term)
	// from deposing a healthy leader when it comes back: every deposition
	// re-arms the controller's hold-down and so delays failovers.
	rc.PreVoteDisabled = false
	// A removed node stays up and keeps its replica until the agent decides
	// what to do (as Consul does); raft shutting itself down would leave
	// the agent with a dead Node.
	rc.ShutdownOnRemove = false
	rc.Logger = c.Logger.Named("raft")
	if c.snapshotThreshold > 0 {
		rc.SnapshotThreshold = c.snapshotThreshold
	}
	if c.trailingLogs > 0 {
		rc.TrailingLogs = c.trailingLogs
	}
	if c.snapshotInterval > 0 {
		rc.SnapshotInterval = c.snapshotInterval
	}
	return rc
}
