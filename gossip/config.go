package gossip

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-metrics"
)

// DefaultPort is the gossip port (TCP and UDP) used when an address names no port.
const DefaultPort = 8301

// Profile names a set of timing defaults. See docs/gossip.md for how the
// numbers were measured.
const (
	ProfileLocal = "local" // every node on one host (loopback); demos and tests
	ProfileLAN   = "lan"   // one data centre; the default
	ProfileWAN   = "wan"   // nodes across regions
)

// DefaultProfile is the profile used when Config.Profile is empty.
const DefaultProfile = ProfileLAN

// Timing holds the failure detector's knobs. A zero field takes the
// profile's value, so a config file only names what it overrides.
type Timing struct {
	// ProbeInterval is memberlist's probe period: every node probes one
	// other node (round robin) this often.
	ProbeInterval time.Duration
	// ProbeTimeout is how long a ping waits for its ack, for memberlist's
	// probes and for ours alike.
	ProbeTimeout time.Duration
	// SuspicionMult scales memberlist's suspicion timeout: a suspected node
	// is declared dead after SuspicionMult * max(1, log10(N)) * ProbeInterval
	// unless it refutes.
	SuspicionMult int
	// SuspicionMaxMult bounds Lifeguard: in clusters big enough to expect
	// confirmations from other nodes (5+), a suspicion starts at
	// SuspicionMaxMult times the suspicion timeout and shrinks to it as
	// other nodes confirm. Our own confirmation (ConfirmWindow) guards
	// against a single slow observer, so the LAN profiles keep this small.
	SuspicionMaxMult int
	// GossipInterval is how often gossip (suspect/dead/alive broadcasts) is
	// sent to GossipNodes random peers.
	GossipInterval time.Duration
	// RetransmitMult: each broadcast is sent RetransmitMult * log10(N+1) times.
	RetransmitMult int

	// WatchInterval is how often our own prober pings each watched node
	// (the primary first of all). One ping that gets no ack within
	// ProbeTimeout makes the node Suspect.
	WatchInterval time.Duration
	// BackgroundInterval is how often our prober pings each node that is
	// not watched (up to BackgroundMaxNodes of them). Zero in an override
	// means the profile's value; a negative value disables it.
	BackgroundInterval time.Duration
	// ConfirmWindow is the second, independent check before serf's
	// "failed" is believed: we must have seen no ack from the node for at
	// least this long, and a fresh direct ping must fail too (or a TCP
	// connect to its gossip port must be refused, which proves the process
	// is gone).
	ConfirmWindow time.Duration
	// ReconnectInterval is how often serf retries a failed node, which is
	// how a healed partition is noticed when nothing else notices it.
	ReconnectInterval time.Duration
}

// timingProfiles are the measured defaults (docs/gossip.md, "Timing").
var timingProfiles = map[string]Timing{
	ProfileLocal: {
		ProbeInterval:      100 * time.Millisecond,
		ProbeTimeout:       50 * time.Millisecond,
		SuspicionMult:      4,
		SuspicionMaxMult:   2,
		GossipInterval:     20 * time.Millisecond,
		RetransmitMult:     4,
		WatchInterval:      50 * time.Millisecond,
		BackgroundInterval: 250 * time.Millisecond,
		ConfirmWindow:      800 * time.Millisecond,
		ReconnectInterval:  1 * time.Second,
	},
	ProfileLAN: {
		ProbeInterval:      100 * time.Millisecond,
		ProbeTimeout:       60 * time.Millisecond,
		SuspicionMult:      4,
		SuspicionMaxMult:   2,
		GossipInterval:     30 * time.Millisecond,
		RetransmitMult:     4,
		WatchInterval:      50 * time.Millisecond,
		BackgroundInterval: 300 * time.Millisecond,
		ConfirmWindow:      800 * time.Millisecond,
		ReconnectInterval:  2 * time.Second,
	},
	ProfileWAN: {
		ProbeInterval:      1 * time.Second,
		ProbeTimeout:       500 * time.Millisecond,
		SuspicionMult:      6,
		SuspicionMaxMult:   6,
		GossipInterval:     200 * time.Millisecond,
		RetransmitMult:     4,
		WatchInterval:      500 * time.Millisecond,
		BackgroundInterval: 2 * time.Second,
		ConfirmWindow:      5 * time.Second,
		ReconnectInterval:  10 * time.Second,
	},
}

// ProfileTiming returns the defaults of a named profile.
func ProfileTiming(profile string) (Timing, error) {
	if profile == "" {
		profile = DefaultProfile
	}
	t, ok := timingProfiles[profile]
	if !ok {
		return Timing{}, fmt.Errorf("unknown gossip profile %q (want %q, %q or %q)", profile, ProfileLocal, ProfileLAN, ProfileWAN)
	}
	return t, nil
}

// merged returns t with every zero field taken from def.
func (t Timing) merged(def Timing) Timing {
	pick := func(v, d time.Duration) time.Duration {
		if v == 0 {
			return d
		}
		return v
	}
	out := Timing{
		ProbeInterval:      pick(t.ProbeInterval, def.ProbeInterval),
		ProbeTimeout:       pick(t.ProbeTimeout, def.ProbeTimeout),
		GossipInterval:     pick(t.GossipInterval, def.GossipInterval),
		WatchInterval:      pick(t.WatchInterval, def.WatchInterval),
		BackgroundInterval: pick(t.BackgroundInterval, def.BackgroundInterval),
		ConfirmWindow:      pick(t.ConfirmWindow, def.ConfirmWindow),
		ReconnectInterval:  pick(t.ReconnectInterval, def.ReconnectInterval),
		SuspicionMult:      t.SuspicionMult,
		SuspicionMaxMult:   t.SuspicionMaxMult,
		RetransmitMult:     t.RetransmitMult,
	}
	if out.SuspicionMult == 0 {
		out.SuspicionMult = def.SuspicionMult
	}
	if out.SuspicionMaxMult == 0 {
		out.SuspicionMaxMult = def.SuspicionMaxMult
	}
	if out.RetransmitMult == 0 {
		out.RetransmitMult = def.RetransmitMult
	}
	return out
}

// Validate reports the first knob that cannot work.
func (t Timing) Validate() error {
	switch {
	case t.ProbeInterval <= 0:
		return fmt.Errorf("probe_interval must be positive, got %s", t.ProbeInterval)
	case t.ProbeTimeout <= 0:
		return fmt.Errorf("probe_timeout must be positive, got %s", t.ProbeTimeout)
	case t.ProbeTimeout >= t.ProbeInterval:
		// memberlist waits for indirect acks until the end of the probe
		// interval; a timeout that eats the interval leaves them no time.
		return fmt.Errorf("probe_timeout (%s) must be shorter than probe_interval (%s)", t.ProbeTimeout, t.ProbeInterval)
	case t.SuspicionMult < 1:
		return fmt.Errorf("suspicion_mult must be at least 1, got %d", t.SuspicionMult)
	case t.SuspicionMaxMult < 1:
		return fmt.Errorf("suspicion_max_mult must be at least 1, got %d", t.SuspicionMaxMult)
	case t.GossipInterval <= 0:
		return fmt.Errorf("gossip_interval must be positive, got %s", t.GossipInterval)
	case t.RetransmitMult < 1:
		return fmt.Errorf("retransmit_mult must be at least 1, got %d", t.RetransmitMult)
	case t.WatchInterval <= 0:
		return fmt.Errorf("watch_interval must be positive, got %s", t.WatchInterval)
	case t.ConfirmWindow <= 0:
		return fmt.Errorf("confirm_window must be positive, got %s", t.ConfirmWindow)
	case t.ReconnectInterval <= 0:
		return fmt.Errorf("reconnect_interval must be positive, got %s", t.ReconnectInterval)
	}
	return nil
}

// SuspicionTimeout is how long memberlist keeps a node suspect before it
// declares it dead, for a cluster of n nodes (no Lifeguard confirmations,
// which small clusters never get).
func (t Timing) SuspicionTimeout(n int) time.Duration {
	scale := 1.0
	if n >= 10 {
		// memberlist: max(1, log10(n)).
		scale = log10(float64(n))
	}
	return time.Duration(float64(t.SuspicionMult) * scale * float64(t.ProbeInterval))
}

// Config configures one gossip member.
type Config struct {
	// NodeName is this node's unique name (letters, digits, '-' and '.').
	NodeName string

	// BindAddr/BindPort is where the gossip listener (TCP and UDP) binds.
	// BindPort 0 means DefaultPort. BindAddr must be set: we never bind
	// every interface by accident.
	BindAddr string
	BindPort int
	// AdvertiseAddr/AdvertisePort is the address other nodes use to reach
	// this node; empty/zero means the bind address/port.
	AdvertiseAddr string
	AdvertisePort int

	// EncryptKey, when set, encrypts all gossip (AES, 16, 24 or 32 bytes).
	// Use DecodeKey for the base64 form of the `encrypt` setting.
	EncryptKey []byte

	// Profile is "local", "lan" (default) or "wan"; Timing overrides it
	// field by field.
	Profile string
	Timing  Timing

	// SnapshotPath is serf's snapshot file (members and clocks), normally
	// <data_dir>/serf/local.snapshot. With it a restarted node rejoins the
	// peers it knew. Empty disables snapshots.
	SnapshotPath string
	// RejoinAfterLeave (the agent's -rejoin) makes a node rejoin from the
	// snapshot even after it left gracefully.
	RejoinAfterLeave bool

	// Tags are the initial node metadata (see the Tag* constants).
	Tags map[string]string
	// TagInterval is the least time between two tag broadcasts that carry
	// no urgent change (see UrgentTags); such updates are coalesced.
	// Zero means 1s.
	TagInterval time.Duration

	// Primary and Watch name the nodes that matter: they are pinged on
	// Timing.WatchInterval. Both can be changed at runtime.
	Primary string
	Watch   []string

	// EventBuffer is the capacity of the Events channel. Zero means 1024.
	EventBuffer int

	// Logger receives our logs and serf's and memberlist's (as named
	// sub-loggers). Nil means hclog.NewNullLogger().
	Logger hclog.Logger
	// Metrics receives our metrics; nil means go-metrics' global instance,
	// which is also where serf and memberlist report.
	Metrics *metrics.Metrics
}

func (c *Config) bindPort() int {
	if c.BindPort == 0 {
		return DefaultPort
	}
	return c.BindPort
}

func (c *Config) validate() error {
	if c.NodeName == "" {
		return errors.New("gossip: node name is required")
	}
	if c.BindAddr == "" {
		return errors.New("gossip: bind address is required")
	}
	if net.ParseIP(c.BindAddr) == nil {
		return fmt.Errorf("gossip: bind address %q is not an IP address", c.BindAddr)
	}
	if c.AdvertiseAddr != "" && net.ParseIP(c.AdvertiseAddr) == nil {
		return fmt.Errorf("gossip: advertise address %q is not an IP address", c.AdvertiseAddr)
	}
	for what, p := range map[string]int{"bind port": c.BindPort, "advertise port": c.AdvertisePort} {
		if p < 0 || p > 65535 {
			return fmt.Errorf("gossip: %s %d is out of range", what, p)
		}
	}
	if n := len(c.EncryptKey); n != 0 && n != 16 && n != 24 && n != 32 {
		return fmt.Errorf("gossip: encryption key is %d bytes; it must be 16, 24 or 32", n)
	}
	if c.TagInterval < 0 {
		return fmt.Errorf("gossip: tag interval must not be negative, got %s", c.TagInterval)
	}
	if c.EventBuffer < 0 {
		return fmt.Errorf("gossip: event buffer must not be negative, got %d", c.EventBuffer)
	}
	return nil
}

// GenerateKey returns a new random 32-byte gossip key in the base64 form
// the `encrypt` setting takes (what `pgbattery keygen` prints).
func GenerateKey() (string, error) {
	key := make([]byte, 32)
	if _, err := randRead(key); err != nil {
		return "", fmt.Errorf("reading random bytes for a gossip key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(key), nil
}

// DecodeKey decodes the base64 `encrypt` setting and checks its length.
func DecodeKey(s string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("decoding encrypt key: not valid base64: %w", err)
	}
	if n := len(key); n != 16 && n != 24 && n != 32 {
		return nil, fmt.Errorf("decoding encrypt key: it is %d bytes; it must be 16, 24 or 32 (use `pgbattery keygen`)", n)
	}
	return key, nil
}
