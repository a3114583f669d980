package config

import "time"

// RuntimeConfig is the validated configuration the agent runs with. Every
// field has its default applied; docs/config.md documents each one under its
// HCL key.
type RuntimeConfig struct {
	NodeName        string        // node_name; default: the host name
	DataDir         string        // data_dir; required, absolute
	BindAddr        string        // bind_addr; an IP, default "0.0.0.0"
	AdvertiseAddr   string        // advertise_addr; an IP, never unspecified
	Server          bool          // server: a raft voter
	BootstrapExpect int           // bootstrap_expect; 0 = do not bootstrap
	Join            []string      // join: "host", "host:port", "[v6]:port"
	RetryJoin       []string      // retry_join
	RetryInterval   time.Duration // retry_interval; default 5s
	RetryMax        int           // retry_max; 0 = forever
	Rejoin          bool          // rejoin
	Encrypt         string        // encrypt: base64 of a 16, 24 or 32 byte key
	EncryptKey      []byte        // Encrypt decoded; nil when not set
	LogLevel        string        // log_level, lower case: trace|debug|info|warn|error
	LogJSON         bool          // log_json

	Ports       Ports
	Postgres    PostgresConfig
	Replication ReplicationConfig
	Gossip      GossipConfig
	Raft        RaftConfig
	Failover    FailoverConfig
	Gateway     GatewayConfig
	Switchover  SwitchoverConfig
	Telemetry   TelemetryConfig
	TLS         TLSConfig
	ACL         ACLConfig
	Limits      LimitsConfig
	Debug       DebugConfig
	Tags        map[string]string // tags: free-form node metadata; never nil

	// ConfigFiles lists the files that were read, in merge order.
	ConfigFiles []string
}

// Ports are the TCP (and for serf, UDP) ports the agent and its PostgreSQL
// listen on, all on BindAddr.
type Ports struct {
	Gateway         int // default 5432
	GatewayReadOnly int // default 5434; -1 = disabled
	Postgres        int // default 5433
	HTTP            int // default 8432
	Serf            int // default 8301
	Raft            int // default 8300
}

// PostgresConfig is the `postgres { }` block.
type PostgresConfig struct {
	Enabled    bool              // default true; false = a witness node without PostgreSQL
	BinDir     string            // absolute, contains `postgres`; "" = discover
	OSUser     string            // default "postgres"; used when the agent runs as root
	Parameters map[string]string // postgresql.conf settings; never nil
	HBA        []string          // extra pg_hba.conf lines for client access
}

// ReplicationConfig is the `replication { }` block.
type ReplicationConfig struct {
	Mode             string // "quorum" (default), "strict" or "async"
	MaxLagOnFailover int64  // bytes; default 16 MiB
}

// Replication modes.
const (
	ReplicationQuorum = "quorum"
	ReplicationStrict = "strict"
	ReplicationAsync  = "async"
)

// GossipConfig is the `gossip { }` block. Zero durations and multipliers
// mean "take the value from Profile"; the gossip package owns the profiles.
type GossipConfig struct {
	Profile        string // "lan" (default), "local" or "wan"
	ProbeInterval  time.Duration
	ProbeTimeout   time.Duration
	SuspicionMult  int
	GossipInterval time.Duration
	RetransmitMult int
}

// RaftConfig is the `raft { }` block.
type RaftConfig struct {
	Multiplier int // 1..10, default 1: scales raft's timeouts
}

// FailoverConfig is the `failover { }` block.
type FailoverConfig struct {
	Lease              time.Duration // default 5s
	LeaseRenewInterval time.Duration // default 1s; < Lease/2
	HoldDown           time.Duration // default 6s; >= Lease
	// PostgresHangTimeout: a running PostgreSQL that has not answered the
	// agent's status query for this long is killed and handled as a crash.
	PostgresHangTimeout time.Duration
	// MinFreeSpace: a primary whose data directory or pg_wal has less free
	// space than this steps down (0 = off). Bytes; default 64 MiB.
	MinFreeSpace     int64
	NoFailover       bool // never promote this node
	FailoverPriority int  // default 1; higher is preferred among equals
}

// GatewayConfig is the `gateway { }` block.
type GatewayConfig struct {
	MaxConnections  int           // default 1000
	HoldTimeout     time.Duration // default 30s; 0 = fail at once when no primary
	IdleTimeout     time.Duration // default 0 = off
	Auth            string        // "scram" (default) or "trust"
	ReadOnlyMaxLag  int64         // bytes; default 16 MiB
	ReadOnlyBalance string        // "round-robin" (default) or "least-connections"
}

// SwitchoverConfig is the `switchover { }` block.
type SwitchoverConfig struct {
	DrainTimeout time.Duration // default 5s
}

// TelemetryConfig is the `telemetry { }` block.
type TelemetryConfig struct {
	PrometheusRetentionTime time.Duration // default 1m; 0 = no Prometheus sink
	StatsdAddress           string        // host:port; "" = off
	StatsiteAddress         string        // host:port; "" = off
	DisableHostname         bool
	MetricsPrefix           string // default "pgbattery"
}

// TLSConfig is the `tls { }` block. Paths are absolute and exist.
type TLSConfig struct {
	CAFile         string
	CertFile       string
	KeyFile        string
	VerifyIncoming bool
	Gateway        TLSGatewayConfig
	HTTP           TLSHTTPConfig
}

// TLSHTTPConfig is the `tls { http { } }` block.
type TLSHTTPConfig struct {
	// Enabled serves the HTTP API over TLS with tls.cert_file/key_file;
	// default: on when they are set. Agents then reach each other's API
	// over https, verified against tls.ca_file.
	Enabled bool
}

// TLSGatewayConfig is the `tls { gateway { } }` block. When CertFile and
// KeyFile are empty the gateway uses the TLSConfig's pair (if any).
type TLSGatewayConfig struct {
	CertFile string
	KeyFile  string
	Required bool // refuse clients that do not use TLS
	// ClientCAFile verifies client certificates; ClientCert says what the
	// gateway asks of them, as pg_hba's clientcert option: "off" (default),
	// "verify-ca" (a certificate signed by the CA) or "verify-full" (and
	// its CN is the user name). Either is in addition to gateway.auth.
	ClientCAFile string
	ClientCert   string
}

// LimitsConfig is the `limits { }` block: the HTTP API's request rate per
// client IP (a token bucket). Health endpoints and agent-to-agent calls are
// not limited.
type LimitsConfig struct {
	HTTPMaxRPS float64 // default 100; 0 = no limit
	HTTPBurst  int     // default 200
}

// DebugConfig is the `debug { }` block: switches for fault tests and
// development that no production cluster should turn on.
type DebugConfig struct {
	// ClockControl serves PUT /v1/agent/debug/clock-jump, which moves the
	// agent's monotonic clock (lease and hold-down) forward. Default false.
	ClockControl bool
}

// ACLConfig is the `acl { }` block.
type ACLConfig struct {
	Token             string // required on every write API call when set
	ReadsRequireToken bool
}

// Defaults, exported for the docs and for tests of other packages.
const (
	DefaultBindAddr            = "0.0.0.0"
	DefaultRetryInterval       = 5 * time.Second
	DefaultLogLevel            = "info"
	DefaultPortGateway         = 5432
	DefaultPortGatewayRO       = 5434
	DefaultPortPostgres        = 5433
	DefaultPortHTTP            = 8432
	DefaultPortSerf            = 8301
	DefaultPortRaft            = 8300
	DefaultOSUser              = "postgres"
	DefaultMaxLagOnFailover    = 16 << 20
	DefaultGossipProfile       = "lan"
	DefaultRaftMultiplier      = 1
	DefaultLease               = 1200 * time.Millisecond
	DefaultLeaseRenewInterval  = 200 * time.Millisecond
	DefaultHoldDown            = 1250 * time.Millisecond
	DefaultPostgresHangTimeout = 4 * time.Second
	DefaultMinFreeSpace        = 64 << 20
	DefaultFailoverPriority    = 1
	DefaultMaxConnections      = 1000
	DefaultHoldTimeout         = 30 * time.Second
	DefaultGatewayAuth         = "scram"
	DefaultReadOnlyMaxLag      = 16 << 20
	DefaultReadOnlyBalance     = "round-robin"
	DefaultClientCert          = "off"
	DefaultDrainTimeout        = 5 * time.Second
	DefaultPrometheusRetain    = time.Minute
	DefaultMetricsPrefix       = "pgbattery"
	DefaultHTTPMaxRPS          = 100
	DefaultHTTPBurst           = 200
)
