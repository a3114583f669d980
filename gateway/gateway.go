package gateway

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	metrics "github.com/hashicorp/go-metrics"
)

var (
	aLongTimeAgo = time.Unix(1, 0)
	noDeadline   time.Time
)

// metricsInterval is how often byte counters and gauges are pushed to the
// metrics sink; the hot path only bumps atomics.
const metricsInterval = 10 * time.Second

// maxStartupBacklog is how many connections beyond twice MaxConnections may
// be open at once (most of them waiting in start-up) before new ones are
// closed unanswered.
const maxStartupBacklog = 256

// Gateway is the PostgreSQL-protocol front door of one agent.
type Gateway struct {
	cfg     Config
	router  Router
	logger  hclog.Logger
	cancels *cancelRegistry
	// mockSecret seeds the fake salts of unknown users.
	mockSecret []byte

	listeners []*listener
	rr        atomic.Uint64 // round-robin position over standbys
	active    atomic.Int64  // sessions counted against MaxConnections
	open      atomic.Int64  // client connections, in start-up or not
	// untracked counts sessions that ended after the tracker lost track
	// of their protocol state (a tracker bug or an exotic client).
	untracked atomic.Int64
	nextID    atomic.Uint64

	// view is the router's latest view (watchRouter).
	view  atomic.Pointer[routeView]
	stats struct {
		migrated, held, pinned, rerun, aborted, unknown, failed atomic.Int64
		commitCommitted, commitAborted, commitUnknown           atomic.Int64
		maxHold, windowMaxHold                                  atomic.Int64 // nanoseconds
	}
	// commitHook is a test hook (see commitResultHook).
	commitHook commitResultHook

	// idleMoves bounds how many sessions with nothing to send move at
	// once (see moveIdle).
	idleMoves chan struct{}

	mu         sync.Mutex
	sessions   map[*session]struct{}
	perBackend map[string]int // sessions per back-end address
	closed     bool

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the gateway starts
}

// listener is one of the gateway's ports.
type listener struct {
	name     string // "rw" or "ro"
	readOnly bool
	ln       net.Listener
	labels   []metrics.Label

	connections atomic.Int64 // open client connections
	bytesIn     atomic.Int64 // client → server
	bytesOut    atomic.Int64 // server → client
	errors      atomic.Int64
	accepted    atomic.Int64
	// lastSample is when a request latency was last sampled (unix nanos;
	// requestDone).
	lastSample atomic.Int64

	// last reported values, owned by the metrics loop
	lastIn, lastOut, lastErr, lastAccepted int64
}

// New creates a gateway and binds its listeners; Serve accepts connections.
func New(cfg Config, router Router, logger hclog.Logger) (*Gateway, error) {
	if router == nil {
		return nil, errors.New("gateway: no router")
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	g := &Gateway{cfg: cfg, router: router, logger: logger.Named("gateway"),
		cancels: newCancelRegistry(cfg.NodeIndex), sessions: map[*session]struct{}{},
		perBackend: map[string]int{}, idleMoves: make(chan struct{}, idleMoveConcurrency)}
	g.mockSecret = make([]byte, 32)
	if _, err := rand.Read(g.mockSecret); err != nil {
		return nil, fmt.Errorf("gateway: random: %w", err)
	}
	g.ctx, g.cancel = context.WithCancel(context.Background())
	g.view.Store(g.loadView())
	for _, l := range []struct {
		name, addr string
		ro         bool
	}{{"rw", cfg.ReadWriteAddr, false}, {"ro", cfg.ReadOnlyAddr, true}} {
		if l.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			g.closeListeners()
			return nil, fmt.Errorf("gateway: listening on %s for %s connections: %w", l.addr, l.name, err)
		}
		g.listeners = append(g.listeners, &listener{name: l.name, readOnly: l.ro, ln: ln,
			labels: []metrics.Label{{Name: "listener", Value: l.name}}})
	}
	return g, nil
}

// ReadWriteAddr returns the bound read-write address, or nil.
func (g *Gateway) ReadWriteAddr() net.Addr { return g.addr(false) }

// ReadOnlyAddr returns the bound read-only address, or nil.
func (g *Gateway) ReadOnlyAddr() net.Addr { return g.addr(true) }

func (g *Gateway) addr(ro bool) net.Addr {
	for _, l := range g.listeners {
		if l.readOnly == ro {
			return l.ln.Addr()
		}
	}
	return nil
}

// Serve accepts client connections until ctx is done or Close is called, and
// then closes the gateway (every session ends). It returns nil on a normal
// stop.
func (g *Gateway) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { g.Close() })
	defer stop()

	if g.track(1) {
		go func() {
			defer g.wg.Done()
			g.metricsLoop()
		}()
	}
	if g.track(1) {
		go func() {
			defer g.wg.Done()
			g.watchRouter()
		}()
	}

	errc := make(chan error, len(g.listeners))
	var acceptors sync.WaitGroup
	for _, l := range g.listeners {
		acceptors.Add(1)
		go func() {
			defer acceptors.Done()
			errc <- g.acceptLoop(l)
		}()
	}
	acceptors.Wait()
	close(errc)
	var first error
	for err := range errc {
		if err != nil && first == nil {
			first = err
		}
	}
	g.Close()
	return first
}

func (g *Gateway) acceptLoop(l *listener) error {
	var backoff time.Duration
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			if g.ctx.Err() != nil {
				return nil
			}
			if !errors.Is(err, net.ErrClosed) {
				// Out of file descriptors and the like: back off.
				if backoff == 0 {
					backoff = 5 * time.Millisecond
				} else if backoff < time.Second {
					backoff *= 2
				}
				g.logger.Warn("accepting connection", "listener", l.name, "error", err, "retry_in", backoff)
				select {
				case <-time.After(backoff):
				case <-g.ctx.Done():
					return nil
				}
				continue
			}
			return fmt.Errorf("accepting on %s: %w", l.ln.Addr(), err)
		}
		backoff = 0
		l.accepted.Add(1)
		// Connections still in start-up do not hold a session slot yet;
		// cap them too, so a flood of half-open connections cannot pile
		// up goroutines until their start-up timeouts.
		if g.open.Add(1) > int64(2*g.cfg.MaxConnections+maxStartupBacklog) {
			g.open.Add(-1)
			l.errors.Add(1)
			conn.Close()
			continue
		}
		if !g.track(1) {
			g.open.Add(-1)
			conn.Close()
			return nil
		}
		go func() {
			defer g.wg.Done()
			defer g.open.Add(-1)
			g.handleConn(l, conn)
		}()
	}
}

// track adds n to the goroutine group unless the gateway is closed.
func (g *Gateway) track(n int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.wg.Add(n)
	return true
}

// Close stops the listeners, ends every session and waits for all the
// gateway's goroutines. It is safe to call more than once.
func (g *Gateway) Close() error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		g.wg.Wait()
		return nil
	}
	g.closed = true
	sessions := make([]*session, 0, len(g.sessions))
	for s := range g.sessions {
		sessions = append(sessions, s)
	}
	g.mu.Unlock()

	g.cancel()
	g.closeListeners()
	for _, s := range sessions {
		s.abort()
	}
	g.wg.Wait()
	return nil
}

func (g *Gateway) closeListeners() {
	for _, l := range g.listeners {
		l.ln.Close()
	}
}

func (g *Gateway) addSession(s *session) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.sessions[s] = struct{}{}
	g.perBackend[s.be.target.Addr]++
	return true
}

func (g *Gateway) removeSession(s *session) {
	g.mu.Lock()
	delete(g.sessions, s)
	if g.perBackend[s.be.target.Addr]--; g.perBackend[s.be.target.Addr] <= 0 {
		delete(g.perBackend, s.be.target.Addr)
	}
	g.mu.Unlock()
}

func metricsLabel(name, value string) metrics.Label {
	return metrics.Label{Name: name, Value: value}
}

// SessionInfo describes one client session, for status pages and for the
// migration logic.
type SessionInfo struct {
	ID       uint64
	Listener string // "rw" or "ro"
	User     string
	Database string
	Client   string // remote address
	Backend  Target
	State    SessionState
}

// Connections is how many client connections are open on all listeners.
func (g *Gateway) Connections() int64 {
	var n int64
	for _, l := range g.listeners {
		n += l.connections.Load()
	}
	return n
}

// Sessions lists the current sessions.
func (g *Gateway) Sessions() []SessionInfo {
	g.mu.Lock()
	list := make([]*session, 0, len(g.sessions))
	for s := range g.sessions {
		list = append(list, s)
	}
	g.mu.Unlock()
	out := make([]SessionInfo, 0, len(list))
	for _, s := range list {
		out = append(out, s.info())
	}
	return out
}

// metricsLoop pushes counters and gauges every metricsInterval.
func (g *Gateway) metricsLoop() {
	t := time.NewTicker(metricsInterval)
	defer t.Stop()
	for {
		select {
		case <-g.ctx.Done():
			g.emitMetrics()
			return
		case <-t.C:
			g.emitMetrics()
		}
	}
}

func (g *Gateway) emitMetrics() {
	m := g.cfg.Metrics
	for _, l := range g.listeners {
		m.SetGaugeWithLabels([]string{"gateway", "connections"}, float32(l.connections.Load()), l.labels)
		for _, c := range []struct {
			key  string
			cur  int64
			last *int64
		}{
			{"bytes_in", l.bytesIn.Load(), &l.lastIn},
			{"bytes_out", l.bytesOut.Load(), &l.lastOut},
			{"errors", l.errors.Load(), &l.lastErr},
			{"accepted", l.accepted.Load(), &l.lastAccepted},
		} {
			if d := c.cur - *c.last; d > 0 {
				m.IncrCounterWithLabels([]string{"gateway", c.key}, float32(d), l.labels)
			}
			*c.last = c.cur
		}
	}
}
