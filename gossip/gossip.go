package gossip

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"
)

// Gossip is one member of the cluster's gossip pool.
type Gossip struct {
	cfg    Config
	timing Timing
	logger hclog.Logger
	sink   sink

	serf *serf.Serf
	ml   *memberlist.Memberlist
	det  *detector
	tags *tagger

	serfEvents chan serf.Event
	transport  *boundTransport

	ctx    context.Context // cancelled by Shutdown
	cancel context.CancelFunc
	wg     sync.WaitGroup // event loop, retry-join and leave goroutines

	shutdownOnce sync.Once
	shutdownErr  error
}

// New starts a gossip member: it binds its listener at once and, with a
// snapshot from an earlier run, starts rejoining the peers it knew.
func New(cfg Config) (*Gossip, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	def, err := ProfileTiming(cfg.Profile)
	if err != nil {
		return nil, fmt.Errorf("gossip: %w", err)
	}
	timing := cfg.Timing.merged(def)
	if err := timing.Validate(); err != nil {
		return nil, fmt.Errorf("gossip timing: %w", err)
	}
	if cfg.Tags == nil {
		cfg.Tags = map[string]string{}
	}
	cfg.Tags = maps.Clone(cfg.Tags)
	if err := CheckTags(cfg.Tags); err != nil {
		return nil, fmt.Errorf("gossip: initial %w", err)
	}
	if cfg.TagInterval == 0 {
		cfg.TagInterval = time.Second
	}
	if cfg.EventBuffer == 0 {
		cfg.EventBuffer = 1024
	}
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}

	ctx, cancel := context.WithCancel(context.Background())
	g := &Gossip{
		cfg:        cfg,
		timing:     timing,
		logger:     logger,
		sink:       sink{m: cfg.Metrics},
		serfEvents: make(chan serf.Event, 2048),
		ctx:        ctx,
		cancel:     cancel,
	}
	g.det = newDetector(g, cfg.EventBuffer)
	g.det.setWatch(cfg.Primary, cfg.Watch)

	sc, err := g.serfConfig()
	if err != nil {
		cancel()
		return nil, err
	}
	s, err := serf.Create(sc)
	if err != nil {
		cancel()
		g.transport.Shutdown()
		return nil, fmt.Errorf("starting gossip on %s:%d: %w", cfg.BindAddr, cfg.bindPort(), err)
	}
	g.serf = s
	g.ml = s.Memberlist()
	g.det.mu.Lock()
	g.det.ml = g.ml
	g.det.mu.Unlock()
	g.tags = newTagger(cfg.Tags, cfg.TagInterval, s.SetTags, func(err error) {
		g.logger.Warn("coalesced tag update failed", "error", err)
	})

	g.wg.Add(1)
	go g.eventLoop()
	g.logger.Info("gossip started", "node", cfg.NodeName, "bind", fmt.Sprintf("%s:%d", cfg.BindAddr, cfg.bindPort()),
		"profile", profileName(cfg.Profile), "encrypted", len(cfg.EncryptKey) > 0,
		"probe_interval", timing.ProbeInterval, "probe_timeout", timing.ProbeTimeout,
		"suspicion_mult", timing.SuspicionMult, "watch_interval", timing.WatchInterval)
	return g, nil
}

func profileName(p string) string {
	if p == "" {
		return DefaultProfile
	}
	return p
}

func (g *Gossip) serfConfig() (*serf.Config, error) {
	cfg, t := g.cfg, g.timing

	mc := memberlist.DefaultLANConfig()
	switch profileName(cfg.Profile) {
	case ProfileWAN:
		mc = memberlist.DefaultWANConfig()
	case ProfileLocal:
		mc.TCPTimeout = 2 * time.Second
		mc.PushPullInterval = 15 * time.Second
	case ProfileLAN:
		mc.TCPTimeout = 5 * time.Second
	}
	mc.Name = cfg.NodeName
	mc.BindAddr = cfg.BindAddr
	mc.BindPort = cfg.bindPort()
	mc.AdvertiseAddr = cfg.AdvertiseAddr
	mc.AdvertisePort = cfg.AdvertisePort
	if mc.AdvertisePort == 0 {
		mc.AdvertisePort = mc.BindPort
	}
	mc.ProbeInterval = t.ProbeInterval
	mc.ProbeTimeout = t.ProbeTimeout
	mc.SuspicionMult = t.SuspicionMult
	mc.GossipInterval = t.GossipInterval
	mc.RetransmitMult = t.RetransmitMult
	mc.SuspicionMaxTimeoutMult = t.SuspicionMaxMult
	// Our own ack tracking. serf installs its coordinate delegate here
	// unless coordinates are disabled, which they are (below).
	mc.Ping = pingDelegate{d: g.det}
	mc.Logger = g.logger.Named("memberlist").StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true})
	if len(cfg.EncryptKey) > 0 {
		kr, err := memberlist.NewKeyring(nil, cfg.EncryptKey)
		if err != nil {
			return nil, fmt.Errorf("gossip: installing encryption key: %w", err)
		}
		mc.Keyring = kr
		mc.GossipVerifyIncoming = true
		mc.GossipVerifyOutgoing = true
	}

	sc := serf.DefaultConfig()
	sc.NodeName = cfg.NodeName
	sc.Tags = maps.Clone(cfg.Tags)
	sc.EventCh = g.serfEvents
	sc.MemberlistConfig = mc
	sc.Logger = g.logger.Named("serf").StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true})
	sc.LogOutput = nil
	sc.DisableCoordinates = true
	sc.ValidateNodeNames = true
	sc.ReconnectInterval = t.ReconnectInterval
	sc.SnapshotPath = cfg.SnapshotPath
	sc.RejoinAfterLeave = cfg.RejoinAfterLeave
	if cfg.SnapshotPath != "" {
		if err := os.MkdirAll(filepath.Dir(cfg.SnapshotPath), 0o700); err != nil {
			return nil, fmt.Errorf("gossip: creating snapshot directory: %w", err)
		}
	}
	// Last, so that nothing above can fail with the listener open.
	transport, err := newBoundTransport(cfg.BindAddr, mc.BindPort, g.logger.Named("memberlist"))
	if err != nil {
		return nil, err
	}
	mc.Transport = transport
	g.transport = transport
	return sc, nil
}

// eventLoop turns serf's member events into ours. It must never block
// for long: serf's own state updates wait on this channel.
func (g *Gossip) eventLoop() {
	defer g.wg.Done()
	for {
		select {
		case e := <-g.serfEvents:
			if me, ok := e.(serf.MemberEvent); ok {
				g.det.onSerfEvent(me)
			}
		case <-g.serf.ShutdownCh():
			return
		}
	}
}

// Events is the one stream of membership changes. It is closed by
// Shutdown. A consumer that falls behind by more than Config.EventBuffer
// loses events (counted by Dropped and logged); Members is always current.
func (g *Gossip) Events() <-chan Event { return g.det.out }

// Dropped is how many events were dropped because the consumer was slow.
func (g *Gossip) Dropped() uint64 { return g.det.dropped.Load() }

// Timing is the effective timing (profile plus overrides).
func (g *Gossip) Timing() Timing { return g.timing }

// Join contacts the given addresses and joins their cluster. It returns
// how many were contacted; the error is nil when at least one was.
// ignoreOld skips user events that happened before the join.
func (g *Gossip) Join(addrs []string, ignoreOld bool) (int, error) {
	if len(addrs) == 0 {
		return 0, errors.New("join: no addresses given")
	}
	norm := make([]string, 0, len(addrs))
	for _, a := range addrs {
		n, err := NormalizeJoinAddr(a)
		if err != nil {
			return 0, fmt.Errorf("join: %w", err)
		}
		norm = append(norm, n)
	}
	n, err := g.serf.Join(norm, ignoreOld)
	if n > 0 {
		if err != nil {
			g.logger.Warn("joined some but not all addresses", "joined", n, "error", err)
		}
		return n, nil
	}
	if err == nil {
		err = errors.New("no address answered")
	}
	return 0, fmt.Errorf("joining %s: %w", strings.Join(norm, ", "), explainJoinError(err, len(g.cfg.EncryptKey) > 0))
}

// explainJoinError names the likely cause when memberlist's error is terse:
// a peer that cannot decrypt our push/pull closes the connection without a
// word, which we see as EOF or a reset.
func explainJoinError(err error, encrypted bool) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "remote state is encrypted and encryption is not configured"):
		return fmt.Errorf("the cluster encrypts gossip and this node has no encrypt key: %w", err)
	case strings.Contains(msg, "encryption is configured but remote state is not encrypted"):
		return fmt.Errorf("this node encrypts gossip but the cluster does not (remove encrypt or set it on every node): %w", err)
	case strings.Contains(strings.ToLower(msg), "no installed keys could decrypt"):
		return fmt.Errorf("encrypt key mismatch: the cluster's messages cannot be decrypted with this node's key: %w", err)
	case strings.Contains(msg, "EOF") || strings.Contains(msg, "connection reset"):
		if encrypted {
			return fmt.Errorf("the peer closed the connection without answering; most likely its encrypt key differs from ours (it logs \"No installed keys could decrypt the message\"): %w", err)
		}
		return fmt.Errorf("the peer closed the connection without answering; most likely the cluster encrypts gossip and this node has no encrypt key: %w", err)
	}
	return err
}

// RetryJoin joins in the background: it tries every interval until one
// address answers, max attempts are used up (0 = forever), ctx is done or
// Shutdown is called. The returned channel yields the outcome once: nil
// on success, else the last error.
func (g *Gossip) RetryJoin(ctx context.Context, addrs []string, interval time.Duration, max int) <-chan error {
	out := make(chan error, 1)
	if interval <= 0 {
		interval = 30 * time.Second
	}
	for _, a := range addrs {
		if _, err := NormalizeJoinAddr(a); err != nil {
			out <- fmt.Errorf("retry-join: %w", err)
			close(out)
			return out
		}
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		defer close(out)
		for attempt := 1; ; attempt++ {
			n, err := g.Join(addrs, true)
			if err == nil {
				g.logger.Info("retry-join succeeded", "joined", n, "attempt", attempt)
				out <- nil
				return
			}
			if max > 0 && attempt >= max {
				g.logger.Error("retry-join giving up", "attempts", attempt, "error", err)
				out <- fmt.Errorf("retry-join gave up after %d attempts: %w", attempt, err)
				return
			}
			g.logger.Warn("retry-join failed, will retry", "attempt", attempt, "retry_in", interval, "error", err)
			t := time.NewTimer(interval)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				out <- fmt.Errorf("retry-join stopped: %w", ctx.Err())
				return
			case <-g.ctx.Done():
				t.Stop()
				out <- errShutdown
				return
			}
		}
	}()
	return out
}

// Members is every node this node knows, itself included, with the status
// it sees (suspect included, which serf alone never reports).
func (g *Gossip) Members() []Member {
	sms := g.serf.Members()
	out := make([]Member, 0, len(sms))
	for _, sm := range sms {
		out = append(out, memberFromSerf(sm, g.det.statusOf(sm)))
	}
	return out
}

// LocalMember is this node.
func (g *Gossip) LocalMember() Member {
	sm := g.serf.LocalMember()
	return memberFromSerf(sm, serfStatus(sm.Status))
}

// NumAlive is how many members (this one included) are alive or suspect.
func (g *Gossip) NumAlive() int {
	n := 0
	for _, m := range g.Members() {
		if m.Status == StatusAlive || m.Status == StatusSuspect {
			n++
		}
	}
	return n
}

// Tags returns this node's tags as last set (published or pending).
func (g *Gossip) Tags() map[string]string { return g.tags.current() }

// SetTags replaces this node's tags. A change to role, pg, raft or cluster
// is broadcast before SetTags returns; any other change (the LSN mark,
// addresses) is coalesced to one broadcast per TagInterval. Tags that
// exceed MaxTagBytes are refused with an error.
func (g *Gossip) SetTags(tags map[string]string) error {
	return g.tags.set(tags)
}

// UpdateTags changes the given keys and keeps the others; an empty value
// deletes its key. Same broadcasting rules as SetTags.
func (g *Gossip) UpdateTags(changes map[string]string) error {
	tags := g.tags.current()
	for k, v := range changes {
		if v == "" {
			delete(tags, k)
		} else {
			tags[k] = v
		}
	}
	return g.tags.set(tags)
}

// SetPrimary names the node watched most closely (empty: none).
func (g *Gossip) SetPrimary(name string) { g.det.setPrimary(name) }

// WatchNodes replaces the set of watched nodes (the primary is watched in
// addition to these).
func (g *Gossip) WatchNodes(names ...string) { g.det.setWatched(names) }

// Leave leaves the cluster gracefully: peers see Leave, not Failed. Call
// Shutdown afterwards. If ctx ends first Leave returns its error, and the
// leave goes on in the background until Shutdown.
func (g *Gossip) Leave(ctx context.Context) error {
	_ = g.tags.flush() // best effort: the leave matters more
	done := make(chan error, 1)
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		done <- g.serf.Leave()
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("leaving the cluster: %w", err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("leaving the cluster: %w", ctx.Err())
	}
}

// ForceLeave marks a failed node as left, so that serf stops reconnecting
// to it; it is reaped after the tombstone timeout.
func (g *Gossip) ForceLeave(node string) error {
	found := false
	for _, m := range g.serf.Members() {
		if m.Name == node {
			found = true
			break
		}
	}
	if !found {
		return fmt.Errorf("force-leave: no member named %q", node)
	}
	if node == g.cfg.NodeName {
		return errors.New("force-leave: cannot force this node itself to leave; use leave")
	}
	if err := g.serf.RemoveFailedNode(node); err != nil {
		return fmt.Errorf("force-leave %s: %w", node, err)
	}
	return nil
}

// Shutdown stops everything this member runs and closes Events. Without
// a Leave first, peers will see this node as Failed.
func (g *Gossip) Shutdown() error {
	g.shutdownOnce.Do(func() {
		g.cancel()
		g.tags.close()
		g.det.close()
		if err := g.serf.Shutdown(); err != nil {
			g.shutdownErr = fmt.Errorf("shutting down serf: %w", err)
		}
		g.wg.Wait()
		g.det.closeEvents()
	})
	return g.shutdownErr
}
