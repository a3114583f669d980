package fsm

// Secrets are the passwords of the agent's own PostgreSQL roles. They must be
// the same on every node, because pg_basebackup copies pg_authid from the
// primary; the first primary's agent generates them and publishes them here
// so that every other agent can clone and stream. They never leave the raft
// log and snapshots (both under data_dir, 0700) except through the agents'
// internal use: the HTTP API redacts them.
type Secrets struct {
	Superuser   string `json:"superuser"`
	Replication string `json:"replication"`
}

// SetSecrets publishes the cluster's PostgreSQL role secrets. It applies
// once: a second, different set is refused, since the roles already carry
// the first one.
type SetSecrets struct {
	Superuser   string `json:"superuser"`
	Replication string `json:"replication"`
}

func (*SetSecrets) MessageType() MessageType { return SetSecretsType }

// String never prints the secrets (log lines render commands with %v).
func (*SetSecrets) String() string { return "SetSecrets{<redacted>}" }

func (c *SetSecrets) apply(s *State, _ applyCtx) error {
	if c.Superuser == "" || c.Replication == "" {
		return reject(SetSecretsType, "empty secret")
	}
	if s.Secrets != nil {
		if s.Secrets.Superuser == c.Superuser && s.Secrets.Replication == c.Replication {
			return nil
		}
		return reject(SetSecretsType, "the cluster's secrets are already set")
	}
	s.Secrets = &Secrets{Superuser: c.Superuser, Replication: c.Replication}
	return nil
}
