// Package gateway is pgbattery's PostgreSQL wire-protocol front door. Every
// agent runs one: clients connect to it instead of to PostgreSQL, and it
// routes each session to the current primary (read-write port) or to a
// standby (read-only port), authenticates clients itself, forwards bytes in
// bulk and keeps track of exactly as much session state as it needs to move
// a session to another server later.
//
// # Wiring
//
// The agent implements Router from its replicated state and hands it to New
// together with a Config; Serve runs the listeners until its context ends or
// Close is called. The gateway never imports the agent.
//
//	gw, err := gateway.New(gateway.Config{
//		ReadWriteAddr: "10.0.0.5:5432",
//		ReadOnlyAddr:  "10.0.0.5:5434",
//		NodeIndex:     3,
//		TLS:           certs.ServerConfig, // called per connection: reload on SIGHUP
//		Verifiers:     gateway.NewAuthidVerifiers(router, controlCreds, 5*time.Second, logger),
//		Metrics:       sink,
//	}, router, logger)
//	go gw.Serve(ctx)
//
// # Start-up
//
// The gateway answers SSLRequest ('S' with TLS configured, else 'N'), direct
// TLS (a ClientHello as the first byte, ALPN "postgresql", as PostgreSQL 17
// does), GSSENCRequest ('N'), and CancelRequest. It speaks protocol 3.0 and
// 3.2 with clients: 3.2 differs only in the cancel key length, and the
// gateway issues its own keys, so it offers 3.2 whatever the back end speaks
// (back ends are always spoken to in 3.0). A newer minor version or "_pq_."
// options get a NegotiateProtocolVersion. Replication connections are
// refused (0A000); Config.TLSRequired refuses plaintext (28000). The whole
// start-up, back-end connection included, is bounded by StartupTimeout;
// malformed packets get 08P01.
//
// # Authentication
//
// In scram mode the gateway runs SCRAM-SHA-256 as the server, against the
// verifier in the primary's pg_authid (read with the agent's control role,
// cached for a few seconds; AuthidVerifiers). Unknown users, roles without
// LOGIN or past VALID UNTIL, and roles whose secret is not SCRAM go through a
// mock exchange with a stable fake salt and fail with the same 28P01
// "password authentication failed for user" as a wrong password.
//
// Over TLS the gateway also offers SCRAM-SHA-256-PLUS with the
// tls-server-end-point channel binding (the hash of the gateway's own
// certificate), so clients with channel_binding=require work; tls-unique and
// tls-exporter are not supported (libpq only uses tls-server-end-point).
// Ed25519 certificates cannot be bound (no single hash), so PLUS is not
// offered with them — as in PostgreSQL.
//
// The back end is logged in with the ClientKey recovered from the client's
// proof (ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage)), the
// scheme PgBouncer uses: the back end holds the same verifier, so the gateway
// can answer any later SCRAM challenge for this user — a new back end after
// a failover — without knowing the password. The gateway also checks the
// back end's ServerSignature against the ServerKey it read. See scram.go for
// the limits (a password change invalidates re-authentication but not the
// current back-end connection). The back end must use scram-sha-256 for the
// gateway's address in pg_hba.conf; it never needs trust. The gateway never
// connects a client as the agent's role and never uses SET ROLE.
//
// Trust mode (demo only) lets clients in without a password; the back end
// must then trust the gateway for those users.
//
// # Cancel keys
//
// Clients get the gateway's own BackendKeyData: bits 30-23 of the process
// id carry Config.NodeIndex, the rest is random; the secret is random (4
// bytes in 3.0, 32 in 3.2). A cancel for this node is forwarded to the
// session's current back end with the back end's real key; one for another
// node goes to Config.ForwardCancel, and the receiving gateway serves it
// with HandleCancelRequest. Keys survive a change of back end.
//
// # Forwarding and tracking
//
// Each session has two goroutines, client→server and server→client. They
// read message headers from a bufio.Reader, decode only what tracking needs
// (client: Query, Parse, Bind names, Execute, Close, Sync, FunctionCall,
// Terminate; server: ParseComplete, BindComplete, CloseComplete,
// CommandComplete, EmptyQueryResponse, PortalSuspended, ErrorResponse,
// ReadyForQuery, ParameterStatus, Copy*Response) and copy every message
// through the reader's buffer without allocating, flushing the writer only
// when the reader would block, so pipelined requests leave in one write.
//
// The tracker matches responses to requests with a queue of expectations,
// which makes it exact for pipelining and for errors (an ErrorResponse
// discards what the back end skips until Sync). It keeps, as SessionState:
// transaction status, requests in flight, COPY in progress, named prepared
// statements (text and parameter OIDs), SQL-level PREPAREs, committed
// session SETs (SETs in a transaction or implicit transaction that rolls
// back are dropped), ParameterStatus values, LISTEN channels (applied at
// commit, as PostgreSQL does) and pins. The sqlclass package classifies
// statements with a lexer that handles comments, quoting, dollar quotes and
// BEGIN ATOMIC bodies.
//
// A session is pinned (sqlclass.Pin) by temporary objects, session advisory
// locks, WITH HOLD cursors, LOAD or set_config(), any statement the
// classifier does not recognise, and any response the tracker cannot match
// (it then stops tracking: the session stays usable, but must not be moved).
// Known blind spots: functions and DO blocks that create temp tables or take
// advisory locks inside; SETs rolled back by ROLLBACK TO SAVEPOINT; CREATE
// TEMP ... ON COMMIT DROP pins even though it vanishes at commit.
//
// # Failover: holding and moving sessions (issue 6, phase 1)
//
// The gateway keeps the Router's view (watchRouter, refreshed on Changed).
// A session on the read-write port checks it whenever a new request arrives
// at a quiet point (transaction status I, nothing in flight, no COPY):
//
//   - view stale, or a new epoch not yet fresh: the request stays unread in
//     the client's socket (so it costs no gateway memory and has no size
//     limit) for up to Config.HoldTimeout; past it the request is consumed
//     and answered 57P03, and the session stays.
//   - fresh, same epoch as the session's back end: the suspicion was
//     refuted; the request goes to the same back end.
//   - fresh, new epoch: the session moves, then the request runs there.
//
// Quiet sessions that send nothing are moved as soon as a new epoch is
// named (they are woken out of their client read), so LISTEN sessions
// resume. A move dials the new primary with the session's start-up
// parameters and SCRAM ClientKey, refuses a server that reports
// in_hot_standby=on, replays committed SETs, SQL PREPAREs, LISTENs and
// named protocol prepared statements (Parse with the same name, text and
// parameter OIDs), sends the client ParameterStatus for values that differ,
// and moves the per-back-end session count. The cancel key is unchanged.
//
// A lost back end (EOF, reset, or a FATAL 57P01/57P02 shutdown or crash
// message, which is kept from the client) is answered per design.md §6:
// idle → moved silently; idle in a transaction → the next statement gets
// 40001, later ones 25P02, and ROLLBACK (or COMMIT after the error) is
// answered by the gateway, after which the session moves; statement in a
// transaction → 40001 and status E, then the same; autocommit write →
// 40003; a single read-only autocommit request of which nothing reached the
// client yet → sent again on the new primary (recorded, up to 64 KiB),
// otherwise 40001; COPY → 40001, after consuming the client's COPY data up
// to CopyDone/CopyFail; COMMIT in flight → 08007 (phase 1: not resolved);
// pinned or untracked sessions → FATAL 57P01 saying why. While no primary
// accepts the session the gateway retries (and follows Changed) until
// HoldTimeout, then closes it with FATAL 57P03.
//
// "terminating connection due to administrator command" is both a fast
// shutdown and pg_terminate_backend; it is hidden (and the session moved)
// only while the view is stale or names a new epoch, so an administrator's
// terminate on a healthy primary still ends the session.
//
// Not yet (later phases): COMMIT resolution with pg_xact_status, draining
// for a planned switchover, cutting in-flight work on an old primary that
// stays reachable after a new epoch (such sessions move at their next quiet
// point), extended-protocol ROLLBACK while orphaned (simple Query only:
// libpq, pgx and psycopg2 send ROLLBACK that way).
package gateway
