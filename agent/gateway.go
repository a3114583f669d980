package agent

import (
	"context"
	"crypto/tls"
	"fmt"
	"hash/fnv"
	"net"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-metrics"

	"github.com/pgbattery/pgbattery/agent/config"
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
}

func newRouter(c *cluster) *router {
	return &router{c: c, changed: make(chan struct{}), suspect: map[string]bool{}}
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
	t := gateway.Target{Epoch: st.Epoch, Node: st.Primary, Addr: m.Addrs["postgres"]}
	r.mu.Lock()
	suspected := r.suspect[st.Primary]
	r.mu.Unlock()
	fresh := !suspected && (r.c.raft.IsLeader() || time.Since(r.c.raft.LastContact()) < routeStaleAfter)
	return t, fresh
}

// Standbys implements gateway.Router: running replicas that gossip sees
// alive, sorted by name so round robin is stable.
func (r *router) Standbys() []gateway.Target {
	st := r.c.fsm.State()
	var out []gateway.Target
	for _, m := range r.c.a.gossip.Members() {
		if m.Name == st.Primary || m.Status != gossip.StatusAlive ||
			m.Tags[gossip.TagRole] != gossip.RoleReplica || m.Tags[gossip.TagPG] != gossip.PGRunning {
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
func (r *router) run(ctx context.Context) {
	changes, cancel := r.c.fsm.Subscribe()
	defer cancel()
	last := ""
	for {
		st := r.c.fsm.State()
		key := fmt.Sprintf("%s/%d/%t/%t", st.Primary, st.Epoch, st.PrimaryReady(), st.Lease.Released)
		if key != last {
			last = key
			r.notify()
		}
		select {
		case <-ctx.Done():
			return
		case <-changes:
		}
	}
}

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
		MaxConnections:  cfg.Gateway.MaxConnections,
		IdleTimeout:     cfg.Gateway.IdleTimeout,
		HoldTimeout:     cfg.Gateway.HoldTimeout,
		Metrics:         metrics.Default(),
	}
	if cfg.Ports.GatewayReadOnly > 0 {
		gcfg.ReadOnlyAddr = net.JoinHostPort(cfg.BindAddr, strconv.Itoa(cfg.Ports.GatewayReadOnly))
	}
	if gcfg.AuthMode == gateway.AuthSCRAM {
		gcfg.Verifiers = gateway.NewAuthidVerifiers(r, creds, 5*time.Second, a.logger.Named("gateway"))
	}
	g, err := gateway.New(gcfg, r, a.logger)
	if err != nil {
		return err
	}
	a.gateway = g
	a.goRun("router", r.run)
	a.goRun("gateway", func(ctx context.Context) {
		if err := g.Serve(ctx); err != nil {
			a.logger.Error("gateway stopped", "error", err)
		}
	})
	return nil
}

// gatewayTLS loads the gateway's certificate: tls.gateway's pair, else the
// agent's. The returned function hands out the current configuration, so a
// reload can swap the certificate without dropping sessions.
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
	var cur atomic.Pointer[tls.Config]
	cur.Store(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
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
