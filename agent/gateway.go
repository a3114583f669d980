package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-metrics"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgbattery/pgbattery/agent/config"
	"github.com/pgbattery/pgbattery/agent/fsm"
	"github.com/pgbattery/pgbattery/gateway"
	"github.com/pgbattery/pgbattery/gossip"
	"github.com/pgbattery/pgbattery/pgctl"
)

// routeStaleAfter is how long after its last contact with the raft leader a
// follower still vouches for its view of the primary. Past it the node may be
// on the minority side of a partition, and the gateway holds new sessions
// instead of sending them to a primary that may have been replaced.
const routeStaleAfter = 2 * time.Second

// router implements gateway.Router from the replicated state and gossip: the
// primary is the FSM's, once it has taken office (its fence is recorded) and
// while its lease stands; standbys are the members that gossip reports as
// running replicas.
type router struct {
	c *cluster

	mu      sync.Mutex
	changed chan struct{}
	suspect map[string]bool

	lastPrimary atomic.Value // string, for change detection

	// Read-only routing: the standbys' lag as last read from the primary
	// (watchLag), the bound, and the agent role's credentials to read it.
	lag    atomic.Pointer[lagReading]
	maxLag int64 // bytes; negative: no bound
	creds  func() gateway.Credentials
	logger hclog.Logger
}

func newRouter(c *cluster) *router {
	return &router{c: c, changed: make(chan struct{}), suspect: map[string]bool{},
		creds: func() gateway.Credentials { return gateway.Credentials{} }, logger: hclog.NewNullLogger()}
}

// Primary implements gateway.Router.
func (r *router) Primary() (gateway.Target, bool) {
	st := r.c.fsm.State()
	if st.Primary == "" || !st.PrimaryReady() || st.Lease.Released {
		return gateway.Target{}, false
	}
	m := st.Member(st.Primary)
	if m == nil || m.Addrs["postgres"] == "" {
		return gateway.Target{}, false
	}
	t := gateway.Target{Epoch: st.Epoch, Node: st.Primary, Addr: m.Addrs["postgres"], Draining: switchoverPending(st)}
	r.mu.Lock()
	suspected := r.suspect[st.Primary]
	r.mu.Unlock()
	fresh := !suspected && (r.c.raft.IsLeader() || time.Since(r.c.raft.LastContact()) < routeStaleAfter)
	if fresh && st.Primary == r.c.a.config().NodeName && !r.c.localPrimaryServes() {
		// This node is the primary, but its lease lapsed or its
		// PostgreSQL is fenced (or being fenced): sending it work would
		// only earn 25006, or 57P01 when the fence ends the sessions. The
		// gateway holds until the outcome is known.
		fresh = false
	}
	return t, fresh
}

// Standbys implements gateway.Router: the standbys a read-only session may
// use, sorted by name so round robin is stable. See qualifyingStandbys.
func (r *router) Standbys() []gateway.Target {
	st := r.c.fsm.State()
	members := r.c.a.gossip.Members()
	r.mu.Lock()
	suspect := make(map[string]bool, len(r.suspect))
	for k, v := range r.suspect {
		suspect[k] = v
	}
	r.mu.Unlock()
	return qualifyingStandbys(st, members, suspect, r.lag.Load(), r.maxLag, time.Now())
}

// qualifyingStandbys is the read-only port's filter. A standby qualifies
// when gossip sees it alive and running PostgreSQL as a replica, nothing
// suspects it, the current primary's pg_stat_replication lists it as
// streaming (so it follows this primary, not an old one), and its replay
// position is at most maxLag bytes behind the primary's flush position in
// a reading no older than lagStaleAfter. Without such a reading of the
// current primary and epoch no standby qualifies, and the gateway falls
// back to the primary.
func qualifyingStandbys(st *fsm.State, members []gossip.Member, suspect map[string]bool,
	lag *lagReading, maxLag int64, now time.Time) []gateway.Target {
	if st == nil || st.Primary == "" || lag == nil || lag.primary != st.Primary || lag.epoch != st.Epoch ||
		now.Sub(lag.at) > lagStaleAfter {
		return nil
	}
	var out []gateway.Target
	for _, m := range members {
		if m.Name == st.Primary || m.Status != gossip.StatusAlive || suspect[m.Name] ||
			m.Tags[gossip.TagRole] != gossip.RoleReplica || m.Tags[gossip.TagPG] != gossip.PGRunning {
			continue
		}
		replay, streaming := lag.replay[m.Name]
		if !streaming {
			continue
		}
		var behind uint64
		if lag.flush > replay {
			behind = lag.flush - replay
		}
		if maxLag >= 0 && behind > uint64(maxLag) {
			continue
		}
		fm := st.Member(m.Name)
		if fm == nil || fm.Addrs["postgres"] == "" {
			continue
		}
		out = append(out, gateway.Target{Epoch: st.Epoch, Node: m.Name, Addr: fm.Addrs["postgres"]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
}

// authidRouter is the view the gateway's verifier source reads pg_authid
// through. pg_authid is the same on every member, so any running replica
// will do when no primary is named, however far behind: clients can still
// log in (and be held) during a failover, when no standby qualifies for
// the read-only port.
type authidRouter struct{ *router }

// Standbys lists the running replicas gossip sees alive, lag or not.
func (a authidRouter) Standbys() []gateway.Target {
	st := a.c.fsm.State()
	var out []gateway.Target
	for _, m := range a.c.a.gossip.Members() {
		if m.Name == st.Primary || m.Status != gossip.StatusAlive ||
			m.Tags[gossip.TagRole] != gossip.RoleReplica || m.Tags[gossip.TagPG] != gossip.PGRunning {
			continue
		}
		if fm := st.Member(m.Name); fm != nil && fm.Addrs["postgres"] != "" {
			out = append(out, gateway.Target{Epoch: st.Epoch, Node: m.Name, Addr: fm.Addrs["postgres"]})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
}

// How the router learns the standbys' lag: every lagInterval it asks the
// primary for its WAL flush position and pg_stat_replication's replay
// position of every streaming standby, in one query on one kept
// connection. That is the primary's own view of who streams from it, and
// replay_lsn is what each standby last reported (after every write it
// receives, and at least every wal_receiver_status_interval), so the lag
// it gives is never smaller than the truth at the time of the reading.
const (
	lagInterval   = time.Second
	lagStaleAfter = 5 * time.Second
	lagTimeout    = 2 * time.Second
)

// lagReading is one answer of the primary about its standbys.
type lagReading struct {
	at      time.Time
	primary string // node the reading came from
	epoch   uint64
	flush   uint64            // the primary's WAL flush position
	replay  map[string]uint64 // streaming standby (application_name) → replay position
}

// lagQuery reads the flush position (the row with an empty name) and the
// replay position of each streaming standby, as numbers of bytes.
const lagQuery = `SELECT '', (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::text
UNION ALL
SELECT coalesce(application_name, ''), (replay_lsn - '0/0'::pg_lsn)::text
  FROM pg_stat_replication WHERE state = 'streaming' AND replay_lsn IS NOT NULL AND application_name <> ''`

// watchLag keeps r.lag fresh until ctx ends.
func (r *router) watchLag(ctx context.Context) {
	var conn *pgconn.PgConn
	var connAddr string
	defer func() {
		if conn != nil {
			cctx, cancel := context.WithTimeout(context.Background(), time.Second)
			conn.Close(cctx)
			cancel()
		}
	}()
	t := time.NewTicker(lagInterval)
	defer t.Stop()
	failures := 0
	for {
		primary, _ := r.Primary()
		var reading *lagReading
		var err error
		if primary.Addr != "" {
			if conn != nil && (connAddr != primary.Addr || conn.IsClosed()) {
				conn.Close(ctx)
				conn = nil
			}
			if conn == nil {
				conn, err = r.connectLag(ctx, primary.Addr)
				connAddr = primary.Addr
			}
			if err == nil {
				reading, err = readLag(ctx, conn)
			}
			if err != nil && conn != nil {
				conn.Close(ctx)
				conn = nil
			}
			if reading != nil {
				reading.primary, reading.epoch = primary.Node, primary.Epoch
			}
		}
		r.lag.Store(reading)
		if err != nil && ctx.Err() == nil {
			// One line per outage, not one a second.
			if failures == 0 {
				r.logger.Warn("reading standby lag from the primary", "primary", primary.Node, "error", err)
			}
			failures++
		} else if err == nil && failures > 0 {
			r.logger.Info("reading standby lag from the primary again", "primary", primary.Node)
			failures = 0
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *router) connectLag(ctx context.Context, addr string) (*pgconn.PgConn, error) {
	cr := r.creds()
	if cr.User == "" {
		return nil, errors.New("no credentials for the agent's role yet")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("bad address %q: %w", addr, err)
	}
	cfg, err := pgconn.ParseConfig(fmt.Sprintf("host=%s port=%s sslmode=disable", host, port))
	if err != nil {
		return nil, err
	}
	cfg.User, cfg.Password, cfg.Database = cr.User, cr.Password, cr.Database
	cfg.ConnectTimeout = lagTimeout
	cfg.RuntimeParams["application_name"] = "pgbattery-router"
	cctx, cancel := context.WithTimeout(ctx, lagTimeout)
	defer cancel()
	conn, err := pgconn.ConnectConfig(cctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", addr, err)
	}
	return conn, nil
}

func readLag(ctx context.Context, conn *pgconn.PgConn) (*lagReading, error) {
	qctx, cancel := context.WithTimeout(ctx, lagTimeout)
	defer cancel()
	res := conn.ExecParams(qctx, lagQuery, nil, nil, nil, nil).Read()
	if res.Err != nil {
		return nil, res.Err
	}
	out := &lagReading{at: time.Now(), replay: make(map[string]uint64, len(res.Rows))}
	for _, row := range res.Rows {
		if len(row) != 2 || row[1] == nil {
			continue
		}
		pos, err := strconv.ParseUint(string(row[1]), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("parsing WAL position %q: %w", row[1], err)
		}
		if name := string(row[0]); name == "" {
			out.flush = pos
		} else {
			out.replay[name] = max(out.replay[name], pos)
		}
	}
	return out, nil
}

// switchoverPending reports a planned switchover of the current epoch: the
// primary is draining (its agent waits for running transactions before it
// steps down), so gateways hold new transactions.
func switchoverPending(st *fsm.State) bool {
	return st.Pending != nil && st.Pending.Kind == fsm.OpSwitchover && st.Pending.Epoch == st.Epoch
}

// Fence implements gateway.Router from the fences the FSM keeps (the last
// fsm.MaxFences epochs).
func (r *router) Fence(epoch uint64) (uint64, bool) {
	f, ok := r.c.fsm.State().FenceFor(epoch)
	if !ok {
		return 0, false
	}
	return f.XID, true
}

// Changed implements gateway.Router (broadcast by close).
func (r *router) Changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

func (r *router) notify() {
	r.mu.Lock()
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

// onGossipEvent tracks suspicion of nodes: a suspected primary makes the
// view stale, so new sessions wait for the outcome rather than hit a node
// that may be dead.
func (r *router) onGossipEvent(ev gossip.Event) {
	r.mu.Lock()
	switch ev.Type {
	case gossip.EventSuspect, gossip.EventFailed, gossip.EventLeave:
		r.suspect[ev.Node] = true
	case gossip.EventAlive, gossip.EventJoin:
		delete(r.suspect, ev.Node)
	default:
		r.mu.Unlock()
		return
	}
	r.mu.Unlock()
	r.notify()
}

// run notifies the gateway of every change of primary, epoch or readiness.
//
// Freshness also depends on when this agent last heard from the raft
// leader, which no FSM change or gossip event announces: the loop looks at
// it every routeFreshnessPoll too. Without that, a view that went stale
// while this node was cut off stayed stale after the heal until the next
// change of cluster state, and the gateway held every session meanwhile.
func (r *router) run(ctx context.Context) {
	changes, cancel := r.c.fsm.Subscribe()
	defer cancel()
	tick := time.NewTicker(routeFreshnessPoll)
	defer tick.Stop()
	last := ""
	for {
		st := r.c.fsm.State()
		_, fresh := r.Primary()
		key := fmt.Sprintf("%s/%d/%t/%t/%t/%t", st.Primary, st.Epoch, st.PrimaryReady(), st.Lease.Released, switchoverPending(st), fresh)
		if key != last {
			last = key
			r.notify()
		}
		select {
		case <-ctx.Done():
			return
		case <-changes:
		case <-tick.C:
		}
	}
}

// routeFreshnessPoll is how often the router re-checks its contact with
// the raft leader.
const routeFreshnessPoll = 100 * time.Millisecond

// startGateway binds the gateway's listeners and serves them under the
// agent's ownership.
func (a *Agent) startGateway(cfg *config.RuntimeConfig) error {
	r := newRouter(a.cluster)
	a.router = r
	creds := func() gateway.Credentials {
		st := a.cluster.fsm.State()
		if st.Secrets == nil {
			return gateway.Credentials{}
		}
		return gateway.Credentials{User: pgctl.DefaultSuperuser, Password: st.Secrets.Superuser, Database: "postgres"}
	}
	r.creds, r.maxLag, r.logger = creds, cfg.Gateway.ReadOnlyMaxLag, a.logger.Named("router")
	tlsFn, err := gatewayTLS(cfg)
	if err != nil {
		return err
	}
	gcfg := gateway.Config{
		ReadWriteAddr:   net.JoinHostPort(cfg.BindAddr, strconv.Itoa(cfg.Ports.Gateway)),
		ReadOnlyBalance: cfg.Gateway.ReadOnlyBalance,
		NodeIndex:       nodeIndex(cfg.NodeName),
		TLS:             tlsFn,
		TLSRequired:     cfg.TLS.Gateway.Required,
		AuthMode:        cfg.Gateway.Auth,
		ClientCert:      cfg.TLS.Gateway.ClientCert,
		MaxConnections:  cfg.Gateway.MaxConnections,
		IdleTimeout:     cfg.Gateway.IdleTimeout,
		HoldTimeout:     cfg.Gateway.HoldTimeout,
		Metrics:         metrics.Default(),
	}
	if cfg.Ports.GatewayReadOnly > 0 {
		gcfg.ReadOnlyAddr = net.JoinHostPort(cfg.BindAddr, strconv.Itoa(cfg.Ports.GatewayReadOnly))
	}
	if gcfg.AuthMode == gateway.AuthSCRAM {
		gcfg.Verifiers = gateway.NewAuthidVerifiers(authidRouter{r}, creds, 5*time.Second, a.logger.Named("gateway"))
	}
	g, err := gateway.New(gcfg, r, a.logger)
	if err != nil {
		return err
	}
	a.gateway = g
	a.goRun("router", r.run)
	if gcfg.ReadOnlyAddr != "" {
		a.goRun("router-lag", r.watchLag)
	}
	a.goRun("gateway", func(ctx context.Context) {
		if err := g.Serve(ctx); err != nil {
			a.logger.Error("gateway stopped", "error", err)
		}
	})
	return nil
}

// gatewayTLS loads the gateway's certificate: tls.gateway's pair, else the
// agent's, and with tls.gateway.client_cert the CA that client
// certificates must verify against. The returned function hands out the
// current configuration, so a reload can swap the certificate without
// dropping sessions.
func gatewayTLS(cfg *config.RuntimeConfig) (func() *tls.Config, error) {
	certFile, keyFile := cfg.TLS.Gateway.CertFile, cfg.TLS.Gateway.KeyFile
	if certFile == "" {
		certFile, keyFile = cfg.TLS.CertFile, cfg.TLS.KeyFile
	}
	if certFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading the gateway's TLS certificate %s: %w", certFile, err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if mode := cfg.TLS.Gateway.ClientCert; mode != "" && mode != gateway.ClientCertOff {
		pem, err := os.ReadFile(cfg.TLS.Gateway.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("reading the gateway's client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("reading the gateway's client CA %s: no PEM certificate in it", cfg.TLS.Gateway.ClientCAFile)
		}
		// Verify a certificate when one is offered; the gateway refuses a
		// client without one with a PostgreSQL error rather than a TLS
		// alert the client would report as a handshake failure.
		tc.ClientCAs, tc.ClientAuth = pool, tls.VerifyClientCertIfGiven
	}
	var cur atomic.Pointer[tls.Config]
	cur.Store(tc)
	return cur.Load, nil
}

// nodeIndex is the gateway's index among its peers, encoded in the cancel
// keys it hands out. It is derived from the node name so that every agent
// computes the same one without coordination; two names that collide only
// lose cross-node cancel routing between those two nodes.
func nodeIndex(name string) uint8 {
	h := fnv.New32a()
	h.Write([]byte(name))
	return uint8(h.Sum32())
}
