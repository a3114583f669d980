package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	metrics "github.com/hashicorp/go-metrics"
)

// Auth modes.
const (
	// AuthSCRAM authenticates clients with SCRAM-SHA-256 against the
	// verifiers in the primary's pg_authid.
	AuthSCRAM = "scram"
	// AuthTrust lets every client in as the user it names. For the local
	// demo only: the back end must then trust the gateway's connections.
	AuthTrust = "trust"
)

// Client certificate requirements (Config.ClientCert), named after
// pg_hba.conf's clientcert option.
const (
	ClientCertOff        = "off"
	ClientCertVerifyCA   = "verify-ca"
	ClientCertVerifyFull = "verify-full"
)

// Read-only balancing policies.
const (
	BalanceRoundRobin       = "round-robin"
	BalanceLeastConnections = "least-connections"
)

// Credentials are what the gateway logs in to PostgreSQL with for its own
// queries (reading pg_authid). They belong to the agent's control role and
// are never used for a client session.
type Credentials struct {
	User     string
	Password string
	Database string
}

// Config configures a Gateway. The zero value of every optional field means
// the default noted on it.
type Config struct {
	// ReadWriteAddr is the host:port of the read-write listener, routed to
	// the primary. Empty disables it.
	ReadWriteAddr string
	// ReadOnlyAddr is the host:port of the read-only listener, routed to a
	// standby (round robin), falling back to the primary. Empty disables it.
	ReadOnlyAddr string

	// ReadOnlyBalance picks a standby for a read-only session:
	// BalanceRoundRobin (default) or BalanceLeastConnections (the standby
	// with the fewest sessions from this gateway).
	ReadOnlyBalance string

	// NodeIndex identifies this gateway among its peers (0-255). It is
	// encoded in every BackendKeyData process id the gateway hands out, so a
	// CancelRequest that reaches another node's gateway can be routed here.
	NodeIndex uint8
	// ForwardCancel, if set, is called for a CancelRequest whose key belongs
	// to another gateway (a different node index). It should deliver the
	// request to that gateway; the raw request bytes are what to send.
	ForwardCancel func(ctx context.Context, nodeIndex uint8, request []byte) error

	// TLS returns the server TLS configuration for client connections, or
	// nil when TLS is off. It is called for every new connection, so the
	// caller can swap certificates (SIGHUP) without dropping sessions.
	TLS func() *tls.Config
	// TLSRequired refuses clients that do not use TLS (tls.gateway.required).
	TLSRequired bool

	// AuthMode is AuthSCRAM (default) or AuthTrust.
	AuthMode string
	// ClientCert asks clients for a TLS client certificate in addition to
	// AuthMode: ClientCertOff (default), ClientCertVerifyCA (a certificate
	// that verifies against the TLS configuration's ClientCAs) or
	// ClientCertVerifyFull (and its subject CN is the user name). Clients
	// without one get FATAL 28000, plaintext clients too. TLS must then
	// return a configuration with ClientCAs and ClientAuth
	// tls.VerifyClientCertIfGiven (or stricter): the gateway checks the
	// verified chain, so a configuration that does not verify lets nobody
	// in. A certificate never replaces SCRAM: the gateway needs the
	// client's SCRAM proof to log in to PostgreSQL as that user (see
	// doc.go, "Client certificates").
	ClientCert string
	// Verifiers supplies SCRAM verifiers; required for AuthSCRAM. See
	// NewAuthidVerifiers for the pg_authid-backed one.
	Verifiers VerifierSource

	// BackendTLS returns the TLS client configuration for connections to
	// PostgreSQL, or nil for plaintext (loopback, a private network).
	BackendTLS func() *tls.Config
	// Dial opens back-end connections. Default: net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// DialTimeout bounds opening and authenticating a back-end connection.
	// Default 10s.
	DialTimeout time.Duration

	// MaxConnections caps concurrent client sessions per gateway; clients
	// beyond it get FATAL 53300. Default 1000.
	MaxConnections int
	// IdleTimeout closes a session idle outside a transaction for this
	// long. Zero (the default) never does.
	IdleTimeout time.Duration
	// StartupTimeout bounds the start-up phase: TLS handshake, start-up
	// packet, authentication and the back-end connection. Default 30s.
	StartupTimeout time.Duration
	// MaxMessageSize caps one client message in bytes; larger ones get
	// 08P01 and the session ends. Default 256 MiB.
	MaxMessageSize int
	// HoldTimeout is how long a new session waits for a fresh primary when
	// the router's view is stale or names none, how long a request of an
	// existing session is held while the primary is in doubt, and how long
	// a session whose back end was lost waits for a new primary to accept
	// it. Default 0: fail at once with 57P03 (and a session whose back end
	// is lost gets one attempt at the current primary).
	HoldTimeout time.Duration

	// Metrics receives the gateway's metrics. Default: a private instance
	// with a blackhole sink.
	Metrics *metrics.Metrics
}

const (
	defaultMaxConnections = 1000
	defaultStartupTimeout = 30 * time.Second
	defaultDialTimeout    = 10 * time.Second
	defaultMaxMessageSize = 256 << 20
	// maxProtocolMessage is PostgreSQL's own cap for a message (MaxAllocSize).
	maxProtocolMessage = 0x3fffffff
)

// withDefaults returns a copy of c with defaults filled in, or an error that
// names the bad setting.
func (c Config) withDefaults() (Config, error) {
	if c.ReadWriteAddr == "" && c.ReadOnlyAddr == "" {
		return c, errors.New("gateway: neither a read-write nor a read-only listen address is configured")
	}
	switch c.AuthMode {
	case "":
		c.AuthMode = AuthSCRAM
	case AuthSCRAM, AuthTrust:
	default:
		return c, fmt.Errorf("gateway: auth mode %q is not one of %q, %q", c.AuthMode, AuthSCRAM, AuthTrust)
	}
	switch c.ClientCert {
	case "":
		c.ClientCert = ClientCertOff
	case ClientCertOff:
	case ClientCertVerifyCA, ClientCertVerifyFull:
		if c.TLS == nil {
			return c, fmt.Errorf("gateway: client certificates (%s) need a TLS configuration", c.ClientCert)
		}
	default:
		return c, fmt.Errorf("gateway: client certificate mode %q is not one of %q, %q, %q", c.ClientCert, ClientCertOff, ClientCertVerifyCA, ClientCertVerifyFull)
	}
	switch c.ReadOnlyBalance {
	case "":
		c.ReadOnlyBalance = BalanceRoundRobin
	case BalanceRoundRobin, BalanceLeastConnections:
	default:
		return c, fmt.Errorf("gateway: read-only balance %q is not one of %q, %q", c.ReadOnlyBalance, BalanceRoundRobin, BalanceLeastConnections)
	}
	if c.AuthMode == AuthSCRAM && c.Verifiers == nil {
		return c, errors.New("gateway: auth mode scram needs a verifier source")
	}
	if c.TLSRequired && c.TLS == nil {
		return c, errors.New("gateway: TLS is required but no TLS configuration is given")
	}
	if c.MaxConnections < 0 || c.MaxMessageSize < 0 || c.IdleTimeout < 0 || c.StartupTimeout < 0 ||
		c.HoldTimeout < 0 || c.DialTimeout < 0 {
		return c, errors.New("gateway: limits and timeouts must not be negative")
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = defaultMaxConnections
	}
	if c.StartupTimeout == 0 {
		c.StartupTimeout = defaultStartupTimeout
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = defaultDialTimeout
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = defaultMaxMessageSize
	}
	if c.MaxMessageSize > maxProtocolMessage {
		c.MaxMessageSize = maxProtocolMessage
	}
	if c.MaxMessageSize < 4096 {
		return c, fmt.Errorf("gateway: max message size %d is below the 4096 bytes any client needs", c.MaxMessageSize)
	}
	if c.Dial == nil {
		d := &net.Dialer{KeepAlive: 30 * time.Second}
		c.Dial = d.DialContext
	}
	if c.Metrics == nil {
		mc := metrics.DefaultConfig("pgbattery")
		mc.EnableRuntimeMetrics = false // no background goroutine for a sink nobody reads
		m, err := metrics.New(mc, &metrics.BlackholeSink{})
		if err != nil {
			return c, fmt.Errorf("gateway: creating metrics: %w", err)
		}
		c.Metrics = m
	}
	return c, nil
}
