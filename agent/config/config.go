// Package config loads the agent's configuration: HCL and JSON files, a
// directory of them, and command-line flags, merged in that order, with
// defaults applied and every value checked.
//
// There are two layers, as in Consul. Config is what one source says: every
// field is a pointer, slice or map so that "not set" differs from "set to
// the zero value", and sources can be merged. RuntimeConfig is the result the
// agent runs with: defaults filled in, durations and sizes parsed, addresses
// resolved, everything validated.
//
// Every error names where the offending value came from, as
// "FILE:LINE: KEY.PATH: message" or "flag -NAME: message", and Load reports
// all of them at once rather than stopping at the first.
package config

// Config is the raw configuration of one source (a file, or the flags).
// Field tags are the HCL/JSON key names. See docs/config.md for meanings
// and defaults.
type Config struct {
	NodeName        *string           `hcl:"node_name,optional"`
	DataDir         *string           `hcl:"data_dir,optional"`
	BindAddr        *string           `hcl:"bind_addr,optional"`
	AdvertiseAddr   *string           `hcl:"advertise_addr,optional"`
	Server          *bool             `hcl:"server,optional"`
	BootstrapExpect *int              `hcl:"bootstrap_expect,optional"`
	Join            []string          `hcl:"join,optional"`
	RetryJoin       []string          `hcl:"retry_join,optional"`
	RetryInterval   *string           `hcl:"retry_interval,optional"`
	RetryMax        *int              `hcl:"retry_max,optional"`
	Rejoin          *bool             `hcl:"rejoin,optional"`
	Encrypt         *string           `hcl:"encrypt,optional"`
	LogLevel        *string           `hcl:"log_level,optional"`
	LogJSON         *bool             `hcl:"log_json,optional"`
	Tags            map[string]string `hcl:"tags,optional"`

	Ports       *PortsRaw       `hcl:"ports,block"`
	Postgres    *PostgresRaw    `hcl:"postgres,block"`
	Replication *ReplicationRaw `hcl:"replication,block"`
	Gossip      *GossipRaw      `hcl:"gossip,block"`
	Raft        *RaftRaw        `hcl:"raft,block"`
	Failover    *FailoverRaw    `hcl:"failover,block"`
	Gateway     *GatewayRaw     `hcl:"gateway,block"`
	Switchover  *SwitchoverRaw  `hcl:"switchover,block"`
	Telemetry   *TelemetryRaw   `hcl:"telemetry,block"`
	TLS         *TLSRaw         `hcl:"tls,block"`
	ACL         *ACLRaw         `hcl:"acl,block"`
	Limits      *LimitsRaw      `hcl:"limits,block"`
	Debug       *DebugRaw       `hcl:"debug,block"`
}

// PortsRaw is the raw `ports { }` block.
type PortsRaw struct {
	Gateway         *int `hcl:"gateway,optional"`
	GatewayReadOnly *int `hcl:"gateway_read_only,optional"`
	Postgres        *int `hcl:"postgres,optional"`
	HTTP            *int `hcl:"http,optional"`
	Serf            *int `hcl:"serf,optional"`
	Raft            *int `hcl:"raft,optional"`
}

// PostgresRaw is the raw `postgres { }` block.
type PostgresRaw struct {
	Enabled    *bool             `hcl:"enabled,optional"`
	BinDir     *string           `hcl:"bin_dir,optional"`
	OSUser     *string           `hcl:"os_user,optional"`
	Parameters map[string]string `hcl:"parameters,optional"`
	HBA        []string          `hcl:"hba,optional"`
}

// ReplicationRaw is the raw `replication { }` block.
type ReplicationRaw struct {
	Mode             *string `hcl:"mode,optional"`
	MaxLagOnFailover *string `hcl:"max_lag_on_failover,optional"` // size: 16MB or bytes
}

// GossipRaw is the raw `gossip { }` block.
type GossipRaw struct {
	Profile        *string `hcl:"profile,optional"`
	ProbeInterval  *string `hcl:"probe_interval,optional"`
	ProbeTimeout   *string `hcl:"probe_timeout,optional"`
	SuspicionMult  *int    `hcl:"suspicion_mult,optional"`
	GossipInterval *string `hcl:"gossip_interval,optional"`
	RetransmitMult *int    `hcl:"retransmit_mult,optional"`
}

// RaftRaw is the raw `raft { }` block.
type RaftRaw struct {
	Multiplier *int `hcl:"multiplier,optional"`
}

// FailoverRaw is the raw `failover { }` block.
type FailoverRaw struct {
	Lease               *string `hcl:"lease,optional"`
	LeaseRenewInterval  *string `hcl:"lease_renew_interval,optional"`
	HoldDown            *string `hcl:"hold_down,optional"`
	PostgresHangTimeout *string `hcl:"postgres_hang_timeout,optional"`
	MinFreeSpace        *string `hcl:"min_free_space,optional"` // size: 64MB or bytes; 0 = off
	NoFailover          *bool   `hcl:"no_failover,optional"`
	FailoverPriority    *int    `hcl:"failover_priority,optional"`
}

// GatewayRaw is the raw `gateway { }` block.
type GatewayRaw struct {
	MaxConnections  *int    `hcl:"max_connections,optional"`
	HoldTimeout     *string `hcl:"hold_timeout,optional"`
	IdleTimeout     *string `hcl:"idle_timeout,optional"`
	Auth            *string `hcl:"auth,optional"`
	ReadOnlyMaxLag  *string `hcl:"read_only_max_lag,optional"` // size
	ReadOnlyBalance *string `hcl:"read_only_balance,optional"`
}

// SwitchoverRaw is the raw `switchover { }` block.
type SwitchoverRaw struct {
	DrainTimeout *string `hcl:"drain_timeout,optional"`
}

// TelemetryRaw is the raw `telemetry { }` block.
type TelemetryRaw struct {
	PrometheusRetentionTime *string `hcl:"prometheus_retention_time,optional"`
	StatsdAddress           *string `hcl:"statsd_address,optional"`
	StatsiteAddress         *string `hcl:"statsite_address,optional"`
	DisableHostname         *bool   `hcl:"disable_hostname,optional"`
	MetricsPrefix           *string `hcl:"metrics_prefix,optional"`
}

// TLSRaw is the raw `tls { }` block.
type TLSRaw struct {
	CAFile         *string        `hcl:"ca_file,optional"`
	CertFile       *string        `hcl:"cert_file,optional"`
	KeyFile        *string        `hcl:"key_file,optional"`
	VerifyIncoming *bool          `hcl:"verify_incoming,optional"`
	Gateway        *TLSGatewayRaw `hcl:"gateway,block"`
	HTTP           *TLSHTTPRaw    `hcl:"http,block"`
}

// TLSHTTPRaw is the raw `tls { http { } }` block.
type TLSHTTPRaw struct {
	Enabled *bool `hcl:"enabled,optional"`
}

// TLSGatewayRaw is the raw `tls { gateway { } }` block.
type TLSGatewayRaw struct {
	CertFile     *string `hcl:"cert_file,optional"`
	KeyFile      *string `hcl:"key_file,optional"`
	Required     *bool   `hcl:"required,optional"`
	ClientCAFile *string `hcl:"client_ca_file,optional"`
	ClientCert   *string `hcl:"client_cert,optional"` // off, verify-ca, verify-full
}

// LimitsRaw is the raw `limits { }` block.
type LimitsRaw struct {
	HTTPMaxRPS *float64 `hcl:"http_max_rps,optional"`
	HTTPBurst  *int     `hcl:"http_burst,optional"`
}

// DebugRaw is the raw `debug { }` block: switches for tests and
// development, never for production.
type DebugRaw struct {
	ClockControl *bool `hcl:"clock_control,optional"`
}

// ACLRaw is the raw `acl { }` block.
type ACLRaw struct {
	Token             *string `hcl:"token,optional"`
	ReadsRequireToken *bool   `hcl:"reads_require_token,optional"`
}
