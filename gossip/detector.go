package gossip

import (
	"context"
	"errors"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"
)

// backgroundMaxNodes caps how many unwatched nodes our prober pings, so
// the cost stays bounded in a large cluster (memberlist still probes all).
const backgroundMaxNodes = 32

// leftGrace is how long after a node left its acks are not taken to mean
// it came back: a leaving node keeps answering while its leave propagates
// (serf's LeavePropagateDelay, 1s).
const leftGrace = 3 * time.Second

// detector keeps our view of every peer and publishes the event stream.
//
// Suspicion is ours: memberlist keeps its own suspect state to itself
// (memberlist#266). We ping watched nodes every WatchInterval and others
// every BackgroundInterval with Memberlist.Ping, and count every ack we
// see, ours and memberlist's own probes' (through the PingDelegate). A
// ping without an ack makes an alive node Suspect; any ack refutes it
// (Alive). Failure is memberlist's (serf's EventMemberFailed after its
// suspicion timeout), believed only after a second, independent check of
// our own: no ack from the node for ConfirmWindow and a fresh direct ping
// failing, or its gossip port refusing TCP connections.
type detector struct {
	g  *Gossip
	ml *memberlist.Memberlist // set once serf is created

	events  chan Event   // nil once closed
	out     <-chan Event // what Events returns, for the life of the Gossip
	dropped atomic.Uint64

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // probers, confirmers, rejoiners

	mu      sync.Mutex
	closed  bool
	peers   map[string]*peer
	primary string
	watched map[string]bool
}

type peer struct {
	member     serf.Member
	serf       serf.MemberStatus
	view       Status // what we last published; "" before the first event
	lastAck    time.Time
	misses     int
	stopProbe  context.CancelFunc // nil when not probed
	confirming bool
	rejoining  bool
	lastRejoin time.Time
	leftAt     time.Time
}

func newDetector(g *Gossip, buffer int) *detector {
	ctx, cancel := context.WithCancel(context.Background())
	events := make(chan Event, buffer)
	return &detector{
		g:       g,
		events:  events,
		out:     events,
		ctx:     ctx,
		cancel:  cancel,
		peers:   map[string]*peer{},
		watched: map[string]bool{},
	}
}

func (d *detector) self() string { return d.g.cfg.NodeName }

// close stops every goroutine the detector owns; no event is emitted after.
func (d *detector) close() {
	d.mu.Lock()
	d.closed = true
	for _, p := range d.peers {
		if p.stopProbe != nil {
			p.stopProbe()
			p.stopProbe = nil
		}
	}
	d.mu.Unlock()
	d.cancel()
	d.wg.Wait()
}

func (d *detector) closeEvents() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	select {
	case <-d.ctx.Done():
	default:
		d.cancel()
	}
	if d.events != nil {
		close(d.events)
		d.events = nil
	}
}

func (d *detector) setWatch(primary string, names []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.primary = primary
	d.watched = map[string]bool{}
	for _, n := range names {
		d.watched[n] = true
	}
	d.reconcileLocked()
}

func (d *detector) setPrimary(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.primary = name
	d.reconcileLocked()
}

func (d *detector) setWatched(names []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.watched = map[string]bool{}
	for _, n := range names {
		d.watched[n] = true
	}
	d.reconcileLocked()
}

func (d *detector) isWatchedLocked(name string) bool {
	return name == d.primary || d.watched[name]
}

// emitLocked publishes an event without ever blocking: gossip's own
// goroutines call us and must not wait for a slow consumer.
func (d *detector) emitLocked(t EventType, p *peer) {
	if d.closed || d.events == nil {
		return
	}
	ev := Event{Type: t, Node: p.member.Name, Member: memberFromSerf(p.member, p.view), At: time.Now()}
	d.g.sink.incr(p.member.Name, "event", t.String())
	select {
	case d.events <- ev:
	default:
		n := d.dropped.Add(1)
		d.g.sink.incr(p.member.Name, "event", "dropped")
		if n == 1 || n%100 == 0 {
			d.g.logger.Warn("event consumer is slow; dropping gossip events", "dropped_total", n, "event", t.String(), "node", p.member.Name)
		}
	}
	d.g.logger.Debug("member event", "event", t.String(), "node", p.member.Name)
}

// statusOf is a member's status as we publish it.
func (d *detector) statusOf(sm serf.Member) Status {
	if sm.Name == d.self() {
		return serfStatus(sm.Status)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.peers[sm.Name]
	switch {
	case sm.Status == serf.StatusLeaving || sm.Status == serf.StatusLeft:
		return serfStatus(sm.Status)
	case p == nil || p.view == "":
		return serfStatus(sm.Status)
	case sm.Status == serf.StatusFailed && p.view == StatusAlive:
		// memberlist says dead, our check has not confirmed it.
		return StatusSuspect
	}
	return p.view
}

func (d *detector) onSerfEvent(me serf.MemberEvent) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, m := range me.Members {
		if m.Name == d.self() {
			continue
		}
		p := d.peers[m.Name]
		if p == nil {
			if me.Type == serf.EventMemberReap {
				continue
			}
			p = &peer{}
			d.peers[m.Name] = p
		}
		p.member = m
		p.serf = m.Status
		switch me.Type {
		case serf.EventMemberJoin:
			p.serf = serf.StatusAlive
			p.misses = 0
			// memberlist just heard the node say it is alive: as good as
			// an ack for the silence the confirmation measures.
			p.lastAck = time.Now()
			switch p.view {
			case StatusAlive:
			case StatusSuspect:
				p.view = StatusAlive
				d.emitLocked(EventAlive, p)
			default:
				p.view = StatusAlive
				d.emitLocked(EventJoin, p)
			}
		case serf.EventMemberUpdate:
			p.lastAck = time.Now() // new tags come in the node's own alive message
			if p.view == StatusAlive || p.view == StatusSuspect {
				d.emitLocked(EventUpdate, p)
			}
		case serf.EventMemberLeave:
			p.leftAt = time.Now()
			if p.view != StatusLeft {
				p.view = StatusLeft
				d.emitLocked(EventLeave, p)
			}
		case serf.EventMemberFailed:
			p.serf = serf.StatusFailed
			if p.view == StatusAlive || p.view == "" {
				// Every Failed is preceded by a Suspect, also for nodes
				// our prober does not watch.
				p.view = StatusSuspect
				d.emitLocked(EventSuspect, p)
			}
			d.startConfirmLocked(m.Name, p)
		case serf.EventMemberReap:
			if p.stopProbe != nil {
				p.stopProbe()
			}
			delete(d.peers, m.Name)
		}
	}
	d.reconcileLocked()
}

// reconcileLocked starts and stops probers: watched nodes that are alive
// or failed (a failed primary is pinged so that we notice it come back),
// and up to backgroundMaxNodes other nodes, failed and left ones included:
// a node that answers after it failed or left is back, and rejoining it
// at once tells it to refute the death we remember (memberlist ignores a
// restarted node's alive messages while it remembers a higher incarnation,
// until a push/pull happens to tell the node).
func (d *detector) reconcileLocked() {
	if d.closed || d.ml == nil {
		return
	}
	background := 0
	// In name order, so that which nodes get a background prober is
	// stable when there are more than backgroundMaxNodes.
	for _, name := range slices.Sorted(maps.Keys(d.peers)) {
		p := d.peers[name]
		want := false
		switch {
		case d.isWatchedLocked(name):
			want = p.serf == serf.StatusAlive || p.serf == serf.StatusFailed
		case d.g.timing.BackgroundInterval > 0 && p.serf != serf.StatusLeaving && background < backgroundMaxNodes:
			want = true
			background++
		}
		switch {
		case want && p.stopProbe == nil:
			ctx, cancel := context.WithCancel(d.ctx)
			p.stopProbe = cancel
			d.wg.Add(1)
			go d.probeLoop(ctx, name)
		case !want && p.stopProbe != nil:
			p.stopProbe()
			p.stopProbe = nil
		}
	}
}

// probeTarget returns what a prober needs, or ok=false when it should stop.
func (d *detector) probeTarget(name string) (addr *net.UDPAddr, interval time.Duration, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.peers[name]
	if d.closed || p == nil || p.stopProbe == nil {
		return nil, 0, false
	}
	interval = d.g.timing.BackgroundInterval
	if d.isWatchedLocked(name) {
		interval = d.g.timing.WatchInterval
	}
	return &net.UDPAddr{IP: p.member.Addr, Port: int(p.member.Port)}, interval, true
}

func (d *detector) probeLoop(ctx context.Context, name string) {
	defer d.wg.Done()
	// Start at a random phase so that nodes do not ping in lockstep.
	_, interval, ok := d.probeTarget(name)
	if !ok {
		return
	}
	if !sleepCtx(ctx, rand.N(interval)) {
		return
	}
	for {
		addr, interval, ok := d.probeTarget(name)
		if !ok {
			return
		}
		start := time.Now()
		rtt, err := d.ml.Ping(name, addr)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			d.onAck(name, rtt)
		} else {
			d.onMiss(name, err)
		}
		if !sleepCtx(ctx, interval-time.Since(start)) {
			return
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// onAck records an ack from our prober or from memberlist's probes.
func (d *detector) onAck(name string, rtt time.Duration) {
	d.g.sink.rtt(name, rtt)
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.peers[name]
	if p == nil || d.closed {
		return
	}
	p.lastAck = time.Now()
	p.misses = 0
	if p.view == StatusSuspect {
		p.view = StatusAlive
		d.emitLocked(EventAlive, p)
	}
	switch {
	case p.serf == serf.StatusFailed:
		// It answers but serf still has it dead: a healed partition or a
		// false death. Rejoining makes it refute now rather than at serf's
		// next reconnect.
		d.rejoinLocked(name, p)
	case p.serf == serf.StatusLeft && time.Since(p.leftAt) > leftGrace:
		// It left and answers again: it was restarted.
		d.rejoinLocked(name, p)
	}
}

func (d *detector) onMiss(name string, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.peers[name]
	if p == nil || d.closed {
		return
	}
	p.misses++
	if p.view == StatusAlive && p.serf == serf.StatusAlive {
		p.view = StatusSuspect
		d.g.logger.Debug("no ack; node is suspect", "node", name, "error", err)
		d.emitLocked(EventSuspect, p)
	}
}

func (d *detector) rejoinLocked(name string, p *peer) {
	if p.rejoining || d.closed || time.Since(p.lastRejoin) < d.g.timing.ReconnectInterval/2 {
		return
	}
	p.rejoining = true
	p.lastRejoin = time.Now()
	addr := net.JoinHostPort(p.member.Addr.String(), strconv.Itoa(int(p.member.Port)))
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		_, err := d.g.serf.Join([]string{addr}, true)
		if err != nil && d.ctx.Err() == nil {
			d.g.logger.Debug("rejoining a node that answers again", "node", name, "error", err)
		}
		d.mu.Lock()
		p.rejoining = false
		d.mu.Unlock()
	}()
}

func (d *detector) startConfirmLocked(name string, p *peer) {
	if p.confirming || d.closed {
		return
	}
	p.confirming = true
	d.wg.Add(1)
	go d.confirmLoop(name)
}

// confirmLoop runs while serf has the node failed and we have not said so.
// Each round checks the node directly (a ping and a TCP connect at once):
// a refused connection proves the process gone and emits Failed at once;
// otherwise Failed needs ConfirmWindow without any ack and a fresh ping
// that fails too, so that a node (or an observer) that was only starved
// of CPU for a moment is not failed. If the node answers, it is asked to
// rejoin and refutes its death.
func (d *detector) confirmLoop(name string) {
	defer d.wg.Done()
	for {
		d.mu.Lock()
		p := d.peers[name]
		if p == nil || d.closed || p.serf != serf.StatusFailed || p.view == StatusFailed || p.view == StatusLeft {
			if p != nil {
				p.confirming = false
			}
			d.mu.Unlock()
			return
		}
		udp := &net.UDPAddr{IP: p.member.Addr, Port: int(p.member.Port)}
		d.mu.Unlock()

		refused, acked, rtt := d.directCheck(name, udp)
		if d.ctx.Err() != nil {
			return
		}
		if acked {
			d.onAck(name, rtt)
		}

		d.mu.Lock()
		p = d.peers[name]
		if p == nil || d.closed || p.serf != serf.StatusFailed || p.view == StatusFailed || p.view == StatusLeft {
			d.mu.Unlock()
			continue // the top of the loop cleans up
		}
		silence := time.Since(p.lastAck)
		if !acked && (refused || silence >= d.g.timing.ConfirmWindow) {
			p.view = StatusFailed
			p.confirming = false
			d.g.logger.Info("node failed: memberlist declared it dead and our check agrees", "node", name, "port_refused", refused, "silence", silence)
			d.emitLocked(EventFailed, p)
			d.mu.Unlock()
			return
		}
		// Next round: soon enough that its ping times out right when the
		// window closes, but at least one ProbeTimeout apart.
		wait := d.g.timing.ConfirmWindow - silence - d.g.timing.ProbeTimeout
		if acked || wait > d.g.timing.ProbeInterval {
			wait = d.g.timing.ProbeInterval
		}
		if wait < d.g.timing.ProbeTimeout/2 {
			wait = d.g.timing.ProbeTimeout / 2
		}
		d.mu.Unlock()
		if !sleepCtx(d.ctx, wait) {
			return
		}
	}
}

// directCheck pings the node and, at the same time, opens a TCP connection
// to its gossip port. A refused connection proves the process is gone (the
// host answered for it); a timeout proves nothing either way.
func (d *detector) directCheck(name string, addr *net.UDPAddr) (refused, acked bool, rtt time.Duration) {
	type pingResult struct {
		rtt time.Duration
		err error
	}
	pingCh := make(chan pingResult, 1)
	go func() {
		rtt, err := d.ml.Ping(name, addr)
		pingCh <- pingResult{rtt, err}
	}()
	conn, err := d.g.transport.dialer(d.g.timing.ProbeTimeout).DialContext(d.ctx, "tcp", addr.String())
	if err == nil {
		conn.Close()
	} else if errors.Is(err, syscall.ECONNREFUSED) {
		refused = true
	}
	pr := <-pingCh
	return refused, pr.err == nil, pr.rtt
}

// pingDelegate sees the acks of memberlist's own probes.
type pingDelegate struct{ d *detector }

func (pingDelegate) AckPayload() []byte { return nil }

func (p pingDelegate) NotifyPingComplete(other *memberlist.Node, rtt time.Duration, _ []byte) {
	if other == nil {
		return
	}
	p.d.onAck(other.Name, rtt)
}
