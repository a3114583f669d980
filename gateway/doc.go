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
// # Client certificates
//
// Config.ClientCert (tls.gateway.client_cert) asks clients for a TLS client
// certificate, as pg_hba's clientcert option does: verify-ca wants one that
// verifies against the TLS configuration's ClientCAs, verify-full also
// wants its subject CN to be the user name. The check runs right after the
// start-up packet, before the password: a client without the certificate
// gets FATAL 28000 and no SCRAM exchange. The certificate is required in
// addition to the password, never instead of it: the gateway logs in to
// PostgreSQL as the user with the ClientKey it recovers from the client's
// SCRAM proof, and a certificate gives it nothing equivalent (it cannot
// present the client's certificate to PostgreSQL without the client's
// private key, and it never logs a client in as the agent's role or uses
// SET ROLE). A sound certificate-only mode would need back ends that trust
// a credential of the gateway for every user (a CA the agent signs
// per-user certificates with, trusted by PostgreSQL for the gateway's
// address); that is not built. With AuthTrust, whose back ends already
// trust the gateway, the certificate is the only credential.
//
// # Read-only port
//
// A session on the read-only listener goes to one of Router.Standbys() —
// round robin, or the one with the fewest sessions from this gateway
// (Config.ReadOnlyBalance) — trying the next when one is unreachable, and
// to the primary when the list is empty. The agent's router lists only
// standbys that stream from the current primary within
// gateway.read_only_max_lag (read from the primary's pg_stat_replication
// every second); the choice is made when the session starts, and a session
// stays on its standby if that standby falls behind later.
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
// Per-listener connections, bytes and errors are atomic counters pushed to
// the metrics sink every 10 s; request latency (gateway.request_ms) is
// sampled, at most one request per 5 ms per listener, because one go-metrics
// sample costs more than forwarding the request (BenchmarkForward*).
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
// # Failover: holding and moving sessions (issue 6)
//
// The gateway keeps the Router's view (watchRouter, refreshed on Changed).
// A session on the read-write port checks it whenever a new request arrives
// at a quiet point (transaction status I, nothing in flight, no COPY):
//
//   - view stale, a new epoch not yet fresh, or the primary draining for a
//     switchover (Target.Draining): the request stays unread in the
//     client's socket (so it costs no gateway memory and has no size
//     limit) for up to Config.HoldTimeout; past it the request is consumed
//     and answered 57P03, and the session stays.
//   - writable, same epoch as the session's back end: the suspicion was
//     refuted (or the switchover cancelled); the request goes to the same
//     back end.
//   - writable, new epoch: the session moves, then the request runs there.
//
// Quiet sessions that send nothing are moved as soon as a new epoch is
// named (they are woken out of their client read), so LISTEN sessions
// resume. A move dials the new primary with the session's start-up
// parameters (application_name among them) and SCRAM ClientKey, refuses a
// server that reports in_hot_standby=on, replays committed SETs, SQL
// PREPAREs, LISTENs and named protocol prepared statements (Parse with the
// same name, text and parameter OIDs), sends the client ParameterStatus for
// values that differ (a different TimeZone, say), and moves the
// per-back-end session count. The cancel key is unchanged and is mapped to
// the new back end's key.
//
// A lost back end (EOF, reset, or a FATAL 57P01/57P02 shutdown or crash
// message, which is kept from the client) is answered per design.md §6:
// idle → moved silently; idle in a transaction → the next statement gets
// 40001, later ones 25P02, and ROLLBACK (or COMMIT after the error) is
// answered by the gateway, in a simple Query or an extended-protocol batch,
// after which the session moves; statement in a transaction → 40001 and
// status E, then the same; autocommit write → 40003; a single read-only
// autocommit request of which nothing reached the client yet → sent again
// on the new primary (recorded, up to 64 KiB), otherwise 40001; COPY →
// 40001, after consuming the client's COPY data up to CopyDone/CopyFail;
// COMMIT in flight → resolved (below); pinned or untracked sessions → FATAL
// 57P01 saying why. While no primary accepts the session the gateway
// retries (and follows Changed) until HoldTimeout, then closes it with
// FATAL 57P03.
//
// "terminating connection due to administrator command" is both a fast
// shutdown and pg_terminate_backend; it is hidden (and the session moved)
// only while the view is stale, draining or names a new epoch, so an
// administrator's terminate on a healthy primary still ends the session.
//
// # Commit resolution
//
// When a session in a transaction block ('T', nothing else in flight) sends
// a lone COMMIT or END (not AND CHAIN), the gateway asks for the
// transaction's id in the same write, so it costs no round trip
// (capture.go): a Query "SELECT pg_catalog.pg_current_xact_id_if_assigned()"
// ahead of the client's Query, or, in the extended protocol, Parse/Bind/
// Execute/Close of that SELECT under a reserved name plus a Flush just
// before the COMMIT portal's Execute. The same goes right after the first
// write of a transaction block, and a COMMIT whose id is known is not
// captured again, so a COMMIT lost before its server answered anything is
// resolvable too. A request of its own (or the Flush) makes the
// server send the id before it starts the COMMIT; a statement in the same
// Query would wait in the server's buffer until the COMMIT finished. The
// answers are consumed by the gateway; the client and the tracker never
// see them (if the SELECT itself fails, a cancel say, its error is passed
// on as a notice and the COMMIT answers ROLLBACK). Other messages cost one
// atomic load.
//
// If the back end is lost after the id arrived and before the COMMIT's
// answer, the session is re-attached to the new primary and, before its
// state is replayed, the outcome is decided (resolve.go): no id → the
// transaction wrote nothing, "COMMIT"; an id at or above the fence xid of
// the new epoch (Router.Fence: the lowest fence of the epochs since the
// session's) → it was assigned on the old timeline after the fork, 40001
// (the number may since belong to a committed transaction of the new
// primary: the xid reuse hazard); otherwise pg_xact_status on the new
// primary: committed → CommandComplete "COMMIT" and ReadyForQuery 'I',
// exactly as PostgreSQL answers; aborted → 40001; anything else, no
// fence, or the same epoch (a restart records no fence) → 08007. A COMMIT
// of a failed transaction answers "ROLLBACK"; one whose CommandComplete
// already reached the client gets just its ReadyForQuery. In every case
// the transaction is over, the connection stays open and the session goes
// on on the new primary (with the SETs and LISTENs of a committed
// transaction replayed). A loss before the id arrived still gets 08007.
//
// # Switchover drain
//
// While the Router reports the primary Draining (a switchover of the
// current epoch is pending in the FSM), new transactions are held exactly
// as on a stale view, and requests of sessions inside a transaction go on,
// so running transactions can commit. The old primary's agent waits until
// pg_stat_activity shows no client backend in a transaction (at most
// switchover.drain_timeout), then fences and steps down; the sessions,
// idle by then, move to the new primary with no error, and the held
// requests run there. Transactions still open at the end of the drain are
// ended by the fence and answered as in a failover.
//
// # Observability
//
// Metrics (under the agent's prefix): gateway.sessions_migrated,
// gateway.sessions_held, gateway.sessions_pinned_closed,
// gateway.commits_resolved{outcome=committed|aborted|unknown},
// gateway.failover_errors{sqlstate}, gateway.hold_ms and
// gateway.migrate_ms samples. MigrationStats has the same counts. One INFO
// line per change of primary ("sessions moved to the new primary") sums up
// what it did on this gateway: moved, held, pinned_closed, re-run, commits
// by outcome, errors, max_hold.
//
// When a new epoch is named, a session with work in flight on the old
// primary has its back end treated as lost at once: the old primary can no
// longer commit by then, and behind a partition it might never answer.
//
// Not yet: a COMMIT pipelined behind other requests, in a multi-statement
// Query, or AND CHAIN is not captured (08007 if lost).
package gateway
