// Package pgctl controls one node's PostgreSQL: it finds the server
// binaries, initialises, starts and stops the cluster, reports its state,
// and performs the standby operations failover needs (clone, follow,
// promote, rewind), synchronous replication settings, replication slots and
// fencing. It knows nothing about Raft, gossip or the agent: it is handed a
// Config (with an hclog.Logger) and does what it is asked, with every wait
// bounded by a context.
//
// # Data layout
//
// An Instance owns one directory, Config.Dir (the agent passes
// <data_dir>/postgres):
//
//	Dir/                     0700, owned by the PostgreSQL OS user
//	  data/                  PGDATA (Config.DataDir), 0700
//	    postgresql.conf      initdb's, plus one last line:
//	                         include 'postgresql.pgbattery.conf'
//	    postgresql.pgbattery.conf  the managed settings (see below)
//	    pg_hba.conf          written by pgctl on every start
//	    standby.signal       present while the node is (to be) a standby
//	  run/                   unix_socket_directories (Config.SocketDir)
//	  pgpass                 0600 libpq passfile for the agent's roles
//	  postgresql.log         the postmaster's stderr (Config.LogFile)
//
// The socket lives in the node's own directory, never /tmp or
// /var/run/postgresql, so instances on one machine never collide.
//
// # Managed configuration
//
// pgctl writes everything it manages into PGDATA/postgresql.pgbattery.conf,
// included from the last line of postgresql.conf, and rewrites it (and
// pg_hba.conf) before every start and on every change: node identity
// (listen_addresses, port, unix_socket_directories, cluster_name),
// pgbattery's replication defaults overlaid with postgres.parameters, and
// the run-time state the agent changes: synchronous_standby_names, the
// fence (default_transaction_read_only), primary_conninfo,
// primary_slot_name and recovery_target_timeline='latest'. Changes take
// effect with a reload (SIGHUP); pgctl then waits until a new session sees
// the value.
//
// Why a file of our own rather than ALTER SYSTEM (postgresql.auto.conf):
// pg_basebackup and pg_rewind copy postgresql.auto.conf from the source
// node, so node-specific values (the follow target, the fence, the port)
// written there would travel to other nodes and be wrong there. Our file is
// copied too, but pgctl rewrites it from the Instance's own state after
// every clone and rewind and before every start, so it always says what
// this node's agent decided. ALTER SYSTEM remains for operators' cluster-
// wide tuning; pgctl removes from postgresql.auto.conf only the settings it
// manages (it is read after our file and would silently override them).
// The run-time state is read back from the file by NewInstance, so a
// restarted agent finds the follow target and fence it last wrote.
//
// primary_conninfo and the pg_basebackup/pg_rewind connection strings name
// the 0600 passfile; no password is ever on a command line, in a
// configuration file or in a log line. Roles are created with a
// SCRAM-SHA-256 verifier computed client-side, so the clear-text password
// does not reach the server either. pg_hba.conf admits the agent's roles
// (control superuser and replication role) locally and from
// Config.AgentHosts with scram-sha-256 only, then the configured client
// rules; pgctl never writes trust.
//
// Roles live in the catalog, which streams to every standby: the agent's
// secrets are per cluster, not per node. Every node must be configured with
// the same Superuser and Replication credentials.
//
// # Processes, root and non-root
//
// The postmaster is started directly ("postgres -D PGDATA", not pg_ctl,
// which daemonises), as a child of the agent in its own process group, so
// its death is seen at once through wait(2): Postmaster.Done closes and
// Config.OnExit is called. It is started from a goroutine locked to its OS
// thread for the child's whole life, with Pdeathsig=SIGKILL: Linux sends
// the parent-death signal when the forking thread ends, and Go would
// otherwise be free to retire that thread. So PostgreSQL dies with the
// agent and an orphaned primary cannot stay writable. Helper programs
// (initdb, pg_basebackup, pg_rewind, pg_controldata) run the same way.
//
// When the agent runs as root, every PostgreSQL program runs as
// Config.OSUser (default "postgres") through SysProcAttr.Credential with
// supplementary groups cleared, and pgctl chowns what PostgreSQL writes
// (Dir, PGDATA, the socket dir, the passfile, the log, the files it writes
// into PGDATA) to that user. Every ancestor of Dir must let that user
// traverse it; pgctl checks and says which one does not. When the agent is
// not root, PostgreSQL runs as the agent's own user, nothing is chowned and
// Config.OSUser is ignored: the whole lifecycle works unprivileged.
//
// Supported PostgreSQL majors are agent/version.SupportedPostgresMajors
// (13 and later, where primary_conninfo is reloadable and pg_rewind
// performs crash recovery itself).
package pgctl
