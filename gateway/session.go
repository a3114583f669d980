package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5/pgproto3"
)

// Buffer sizes: big enough that typical messages are handled in place and
// results stream in few system calls, small enough that 500 idle sessions
// stay far below the agent's memory budget (24 KiB per session, all four
// buffers; PgBouncer's default is 4 KiB each).
const (
	clientReadBuffer  = 4 << 10
	clientWriteBuffer = 8 << 10
)

// maxRetainedScratch is the largest scratch buffer a session keeps after a
// message too large for its read buffer.
const maxRetainedScratch = 16 << 10

// session is one client connection and the back end serving it.
//
// Two goroutines move its bytes: clientToServer (the connection's own
// goroutine) and serverToClient. The back end is swapped only while both are
// stopped at a message boundary, which is where session migration (issue 6)
// plugs in: everything it needs — the ClientKey to re-authenticate, the
// start-up parameters, and the tracker's SessionState — lives here.
type session struct {
	id       uint64
	g        *Gateway
	l        *listener
	logger   hclog.Logger
	client   net.Conn
	cr       *bufio.Reader
	cw       *bufio.Writer
	user     string
	database string
	// params are the start-up parameters passed to every back end.
	params map[string]string
	// protoMinor is the protocol minor version agreed with the client.
	protoMinor uint16
	auth       backendAuth
	key        cancelKey
	track      *tracker

	mu sync.Mutex
	be *backend // current back end
	// stopping is set once the session is ending (back end gone, gateway
	// closing), so deadline errors are not mistaken for idle timeouts.
	stopping atomic.Bool

	// reqStart is when the oldest unanswered request was sent (unix nanos),
	// for the latency sample; 0 when none.
	reqStart int64
	latMu    sync.Mutex

	scratch []byte // reused for messages larger than the read buffer

	// Migration (migrate.go). ctl guards the interrupt state shared by
	// the forwarding goroutines and the router watcher.
	ctl         sync.Mutex
	intr        uint8         // intr* reasons
	waiting     bool          // clientToServer is blocked reading the client
	movePending atomic.Bool   // intrMove is set (read on every ReadyForQuery)
	s2cDone     chan struct{} // closed when serverToClient of this back end ends
	// The current autocommit request as sent, while recOK, for a re-run
	// after a lost back end (clientToServer only; see record). Messages
	// that came through the read buffer are copied into rec; the first
	// message too large for it is not copied: recBig is where readMessage
	// put it (the scratch buffer, set aside until the next request, while
	// spare takes its place), logically at offset recBigAt of rec.
	rec      []byte
	recBig   []byte
	recBigAt int
	spare    []byte
	recOK    bool
	// sinceReady counts back-end messages forwarded since the last
	// ReadyForQuery (serverToClient only; read after it stopped).
	sinceReady int
	// held is the start of an answer serverToClient keeps back (at most
	// maxHeldPrelude bytes; serverToClient only).
	held []byte
	// roleReadOnly: the session is read-only by its role's or database's
	// setting (notServing), which asksReadOnly counts as the client's.
	roleReadOnly bool
	// fenceRefusal is the message of the 25006 serverToClient kept from the
	// client (hidesFenceRejection), for recoverLost; "" otherwise.
	fenceRefusal string
}

// handleConn runs one client connection from accept to close.
func (g *Gateway) handleConn(l *listener, conn net.Conn) {
	l.connections.Add(1)
	defer l.connections.Add(-1)
	defer conn.Close()

	s := &session{id: g.nextID.Add(1), g: g, l: l, client: conn, track: newTracker()}
	s.track.resolveCommits = !l.readOnly
	s.logger = g.logger.With("session", s.id, "client", conn.RemoteAddr().String())
	stop := context.AfterFunc(g.ctx, func() { conn.SetDeadline(aLongTimeAgo) })
	defer stop()

	counted, err := s.startup()
	if counted {
		defer g.active.Add(-1)
	}
	if err != nil {
		if !isDisconnect(err) {
			l.errors.Add(1)
			s.logger.Debug("session start-up failed", "error", err)
		}
		return
	}
	defer g.cancels.unregister(s.key.pid)
	if !g.addSession(s) {
		s.closeBackend()
		return
	}
	defer g.removeSession(s)
	s.forward()
	s.track.mu.Lock()
	lost := s.track.lost
	s.track.mu.Unlock()
	if lost {
		g.untracked.Add(1)
		g.cfg.Metrics.IncrCounterWithLabels([]string{"gateway", "sessions_untracked"}, 1, l.labels)
		s.logger.Debug("session ended with its protocol state untracked")
	}
}

// isDisconnect reports errors that just mean the peer went away.
func isDisconnect(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed)
}

// startup runs the start-up phase: negotiation, TLS, the start-up packet,
// authentication and the back-end connection. counted reports whether the
// session took a connection slot (the caller releases it).
func (s *session) startup() (counted bool, err error) {
	g := s.g
	s.client.SetDeadline(time.Now().Add(g.cfg.StartupTimeout))

	var conn net.Conn = s.client
	var tlsState *tls.ConnectionState
	var serverCert *tls.Certificate

	var first [4]byte
	if _, err := io.ReadFull(conn, first[:1]); err != nil {
		return false, err
	}
	if first[0] == 0x16 {
		// Direct TLS (PostgreSQL 17): a TLS ClientHello instead of an
		// SSLRequest. Without TLS configured we cannot even say no.
		tc := s.tlsConfig(&serverCert)
		if tc == nil {
			return false, errors.New("direct TLS connection, but TLS is not configured")
		}
		tc.NextProtos = []string{"postgresql"}
		tconn := tls.Server(&prefixConn{Conn: withSocketIO(conn), prefix: first[:1]}, tc)
		if err := tconn.Handshake(); err != nil {
			return false, fmt.Errorf("direct TLS handshake: %w", err)
		}
		st := tconn.ConnectionState()
		if st.NegotiatedProtocol != "postgresql" {
			writeFatal(tconn, codeProtocolViolation, "received direct SSL connection request without ALPN protocol negotiation extension")
			return false, errors.New("direct TLS without ALPN")
		}
		conn, tlsState = tconn, &st
		if _, err := io.ReadFull(conn, first[:]); err != nil {
			return false, err
		}
	} else if _, err := io.ReadFull(conn, first[1:]); err != nil {
		return false, err
	}

	var p *startupPacket
	negotiatedSSL, negotiatedGSS := tlsState != nil, false
	for {
		if p, err = readStartupPacketRest(conn, first); err != nil {
			writeFatal(conn, codeProtocolViolation, err.Error())
			return false, err
		}
		switch p.kind {
		case startupSSLRequest:
			if negotiatedSSL {
				writeFatal(conn, codeProtocolViolation, "SSLRequest after TLS was negotiated")
				return false, errors.New("second SSLRequest")
			}
			negotiatedSSL = true
			tc := s.tlsConfig(&serverCert)
			if tc == nil {
				if _, err := conn.Write([]byte{'N'}); err != nil {
					return false, err
				}
			} else {
				if _, err := conn.Write([]byte{'S'}); err != nil {
					return false, err
				}
				// readStartupPacket reads exactly one packet, so no
				// plaintext sent after the SSLRequest can sit in a buffer
				// and be mistaken for TLS-protected data.
				tconn := tls.Server(withSocketIO(conn), tc)
				if err := tconn.Handshake(); err != nil {
					return false, fmt.Errorf("TLS handshake: %w", err)
				}
				st := tconn.ConnectionState()
				conn, tlsState = tconn, &st
			}
		case startupGSSENCRequest:
			if negotiatedGSS || tlsState != nil {
				writeFatal(conn, codeProtocolViolation, "unexpected GSSENCRequest")
				return false, errors.New("unexpected GSSENCRequest")
			}
			negotiatedGSS = true
			if _, err := conn.Write([]byte{'N'}); err != nil {
				return false, err
			}
		case startupCancel:
			g.handleCancel(g.ctx, p)
			return false, io.EOF
		case startupMessage:
		}
		if p.kind == startupMessage {
			break
		}
		if _, err := io.ReadFull(conn, first[:]); err != nil {
			return false, err
		}
	}
	s.client = conn
	sio := newSocketIO(conn)
	s.cr = bufio.NewReaderSize(sio, clientReadBuffer)
	s.cw = bufio.NewWriterSize(clientWriter{sio}, clientWriteBuffer)

	// Protocol version: 3.0 and 3.2; a newer minor or _pq_ options get a
	// NegotiateProtocolVersion, as from PostgreSQL 18.
	s.protoMinor = p.minor
	if s.protoMinor > protocolMinorLatest {
		s.protoMinor = protocolMinorLatest
	}
	if p.minor > protocolMinorLatest || len(p.pqOptions) > 0 {
		s.cw.Write(negotiateProtocolVersion(s.protoMinor, p.pqOptions))
	}

	s.user = p.params["user"]
	s.database = p.params["database"]
	if s.database == "" {
		s.database = s.user
	}
	s.logger = s.logger.With("user", s.user, "database", s.database)

	if g.cfg.TLSRequired && tlsState == nil {
		return false, s.fatal(codeInvalidAuthSpec, "TLS is required by the pgbattery gateway for all connections (connect with sslmode=require or stronger)")
	}
	if err := s.checkClientCert(tlsState); err != nil {
		return false, err
	}
	if isReplication(p.params) {
		return false, s.fatal(codeFeatureUnsupported, "replication connections are not supported through the pgbattery gateway; connect to the node's PostgreSQL port")
	}
	if n := g.active.Add(1); n > int64(g.cfg.MaxConnections) {
		return true, s.fatal(codeTooManyConnections,
			fmt.Sprintf("sorry, too many clients already (too many connections: the gateway's max_connections is %d)", g.cfg.MaxConnections))
	}

	// Authenticate.
	switch g.cfg.AuthMode {
	case AuthSCRAM:
		var cb []byte
		if tlsState != nil && serverCert != nil {
			if d, ok := tlsServerEndPoint(serverCert); ok {
				cb = d
			}
		}
		if err := s.authenticateSCRAM(cb); err != nil {
			return true, err
		}
	case AuthTrust:
	}

	// Start-up parameters for the back end: everything the client sent,
	// except what only concerns the gateway.
	s.params = make(map[string]string, len(p.params)+1)
	for k, v := range p.params {
		switch k {
		case "replication":
			continue
		}
		s.params[k] = v
	}
	s.params["database"] = s.database

	be, err := s.connectBackend(g.ctx)
	if err != nil {
		var berr *backendError
		if errors.As(err, &berr) {
			writeMessages(s.cw, berr.msg)
			s.cw.Flush()
			return true, err
		}
		return true, s.fatal(codeCannotConnectNow, fmt.Sprintf("the pgbattery gateway could not connect to PostgreSQL: %v", err))
	}
	s.be = be

	secretLen := secretLen30
	if s.protoMinor >= 2 {
		secretLen = secretLen32
	}
	if _, err = g.cancels.register(s, secretLen); err != nil {
		s.closeBackend()
		return true, s.fatal(codeTooManyConnections, "could not issue a cancel key")
	}

	buf, _ := (&pgproto3.AuthenticationOk{}).Encode(nil)
	s.cw.Write(buf)
	for name, value := range be.params {
		buf, _ = (&pgproto3.ParameterStatus{Name: name, Value: value}).Encode(buf[:0])
		s.cw.Write(buf)
		s.track.server('S', append(append(append([]byte(name), 0), value...), 0))
	}
	s.cw.Write(backendKeyData(s.key.pid, s.key.secret))
	buf, _ = (&pgproto3.ReadyForQuery{TxStatus: 'I'}).Encode(buf[:0])
	s.cw.Write(buf)
	if err := s.cw.Flush(); err != nil {
		s.closeBackend()
		s.g.cancels.unregister(s.key.pid)
		return true, err
	}
	s.client.SetDeadline(noDeadline)
	return true, nil
}

// tlsConfig returns a per-connection copy of the configured TLS settings
// that records which certificate the handshake chose (for channel binding),
// or nil when TLS is off.
func (s *session) tlsConfig(chosen **tls.Certificate) *tls.Config {
	if s.g.cfg.TLS == nil {
		return nil
	}
	base := s.g.cfg.TLS()
	if base == nil {
		return nil
	}
	tc := base.Clone()
	certs := tc.Certificates
	get := tc.GetCertificate
	// Without SNI crypto/tls would use Certificates[0] and never ask
	// GetCertificate; route every choice through it.
	tc.Certificates = nil
	tc.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		var c *tls.Certificate
		var err error
		if get != nil {
			c, err = get(hello)
		}
		if c == nil && err == nil {
			for i := range certs {
				if hello.SupportsCertificate(&certs[i]) == nil {
					c = &certs[i]
					break
				}
			}
			if c == nil && len(certs) > 0 {
				c = &certs[0]
			}
		}
		*chosen = c
		if c == nil && err == nil {
			err = errors.New("no TLS certificate configured")
		}
		return c, err
	}
	return tc
}

// fatal sends a FATAL error to the client and returns it as an error.
func (s *session) fatal(code, msg string) error {
	writeMessages(s.cw, errorMessage("FATAL", code, msg))
	s.cw.Flush()
	return fmt.Errorf("%s: %s", code, msg)
}

// authenticateSCRAM runs the SCRAM-SHA-256 exchange with the client.
func (s *session) authenticateSCRAM(cbData []byte) error {
	g := s.g
	ctx, cancel := context.WithTimeout(g.ctx, g.cfg.StartupTimeout)
	defer cancel()

	failed := func() error {
		return s.fatal(codeInvalidPassword, fmt.Sprintf("password authentication failed for user %q", s.user))
	}

	var v *scramVerifier
	text, err := g.cfg.Verifiers.Verifier(ctx, s.user)
	switch {
	case err == nil:
		if v, err = parseSCRAMVerifier(text); err != nil {
			s.logger.Debug("user has no usable SCRAM secret", "error", err)
			v = nil
		}
	case errors.Is(err, ErrNoVerifier):
	default:
		s.logger.Warn("looking up SCRAM verifier", "error", err)
		return s.fatal(codeCannotConnectNow, "the pgbattery gateway cannot check passwords right now: no primary reachable")
	}
	known := v != nil
	if !known {
		v = mockVerifier(g.mockSecret, s.user)
	}
	srv := &scramServer{v: v, cbData: cbData}

	buf, _ := (&pgproto3.AuthenticationSASL{AuthMechanisms: srv.mechanisms()}).Encode(nil)
	s.cw.Write(buf)
	if err := s.cw.Flush(); err != nil {
		return err
	}

	typ, body, err := s.readAuthMessage()
	if err != nil {
		return err
	}
	if typ == 'X' {
		return io.EOF // the client gave up (e.g. psql asking for a password)
	}
	if typ != 'p' {
		return s.fatal(codeProtocolViolation, fmt.Sprintf("expected SASL response, got message type %q", typ))
	}
	var initial pgproto3.SASLInitialResponse
	if err := initial.Decode(body); err != nil {
		return s.fatal(codeProtocolViolation, "malformed SASLInitialResponse")
	}
	serverFirst, err := srv.clientFirst(initial.AuthMechanism, initial.Data)
	if err != nil {
		return s.fatal(codeProtocolViolation, err.Error())
	}
	buf, _ = (&pgproto3.AuthenticationSASLContinue{Data: serverFirst}).Encode(buf[:0])
	s.cw.Write(buf)
	if err := s.cw.Flush(); err != nil {
		return err
	}

	typ, body, err = s.readAuthMessage()
	if err != nil {
		return err
	}
	if typ != 'p' {
		return s.fatal(codeProtocolViolation, fmt.Sprintf("expected SASL response, got message type %q", typ))
	}
	serverFinal, err := srv.clientFinal(body)
	if errors.Is(err, errSCRAMFailed) || err == nil && !known {
		return failed()
	}
	if err != nil {
		return s.fatal(codeProtocolViolation, err.Error())
	}
	s.auth = backendAuth{clientKey: srv.clientKey, verifier: v}
	buf, _ = (&pgproto3.AuthenticationSASLFinal{Data: serverFinal}).Encode(buf[:0])
	s.cw.Write(buf)
	return nil // flushed with AuthenticationOk once the back end is up
}

// readAuthMessage reads one client message during authentication.
func (s *session) readAuthMessage() (byte, []byte, error) {
	hdr, err := s.cr.Peek(5)
	if err != nil {
		return 0, nil, err
	}
	typ := hdr[0]
	n := int(uint32(hdr[1])<<24|uint32(hdr[2])<<16|uint32(hdr[3])<<8|uint32(hdr[4])) - 4
	if n < 0 || n > scramMaxMessage {
		return 0, nil, s.fatal(codeProtocolViolation, fmt.Sprintf("invalid authentication message length %d", n+4))
	}
	s.cr.Discard(5)
	body := make([]byte, n)
	if _, err := io.ReadFull(s.cr, body); err != nil {
		return 0, nil, err
	}
	return typ, body, nil
}

// connectBackend picks a server for the session and connects to it.
func (s *session) connectBackend(ctx context.Context) (*backend, error) {
	g := s.g
	if s.l.readOnly {
		standbys := g.router.Standbys()
		if n := len(standbys); n > 0 {
			start := int(g.rr.Add(1) % uint64(n))
			if g.cfg.ReadOnlyBalance == BalanceLeastConnections {
				start = g.leastLoaded(standbys)
			}
			for i := 0; i < n; i++ {
				t := standbys[(start+i)%n]
				be, err := g.dialBackend(ctx, t, s.params, s.auth)
				if err == nil {
					return be, nil
				}
				var berr *backendError
				if errors.As(err, &berr) {
					return nil, err // the server answered: its verdict stands
				}
				s.logger.Warn("standby unreachable for read-only session, trying the next", "node", t.Node, "error", err)
			}
		}
	}
	return s.connectPrimary(ctx)
}

// connectPrimary connects a new session to the primary, holding it (within
// the hold timeout) while the primary is unknown, in doubt, or answers as
// a standby or fenced. A fenced old primary must get no session: besides
// answering writes with 25006, it may show reads a commit it never got
// acknowledged by its synchronous standbys (the fence ends the sessions,
// and a COMMIT waiting for its standby becomes visible locally when its
// session ends), which the next primary does not have.
func (s *session) connectPrimary(ctx context.Context) (*backend, error) {
	return s.holdForPrimary(time.Now(), func(t Target) (*backend, error) {
		be, err := s.g.dialBackend(ctx, t, s.params, s.auth)
		if err != nil {
			return nil, err
		}
		if err := s.notServing(be); err != nil {
			be.conn.Close()
			return nil, err
		}
		return be, nil
	}, nil)
}

// notServing says why be, connected as a primary, must not take the
// session: the server is still a standby, or a fenced primary (read-only
// by default) while the client did not ask for read-only transactions. A
// session read-only by its role's or database's own setting (ALTER ROLE or
// ALTER DATABASE ... SET default_transaction_read_only) is served like one
// whose client asked; neither is while the server is fenced
// (readOnlySourceQuery).
func (s *session) notServing(be *backend) error {
	if be.params["in_hot_standby"] == "on" {
		return fmt.Errorf("%s (%s) is still a standby", be.target.Node, be.target.Addr)
	}
	if be.params["default_transaction_read_only"] != "on" {
		s.roleReadOnly = false
		return nil
	}
	source, err := queryOneValue(s.g.ctx, be, s.g.cfg.DialTimeout, readOnlySourceQuery)
	if err != nil {
		return fmt.Errorf("%s (%s) is read-only, and asking why failed: %w", be.target.Node, be.target.Addr, err)
	}
	switch {
	case source == "fenced":
	case s.clientAsksReadOnly():
		return nil
	case source == "user" || source == "database" || source == "database user":
		s.roleReadOnly = true
		return nil
	}
	return fmt.Errorf("%s (%s) is fenced (read-only)", be.target.Node, be.target.Addr)
}

// readOnlySourceQuery asks where the session's default_transaction_read_only
// comes from: "configuration file" for the agent's fence, "user",
// "database" or "database user" for a role's or database's own. A role's
// own setting hides the server's, so a fence also sets pgbattery.fenced
// (pgctl.FenceMarker), which no role setting hides: then the answer is
// "fenced", and a fenced old primary, which may show reads of commits the
// next primary lacks (connectPrimary), gets no session of a read-only role
// either.
const readOnlySourceQuery = "SELECT CASE WHEN current_setting('pgbattery.fenced', true) = 'on' THEN 'fenced' " +
	"ELSE source END FROM pg_catalog.pg_settings WHERE name = 'default_transaction_read_only'"

// leastLoaded returns the index of the target with the fewest sessions on
// this gateway.
func (g *Gateway) leastLoaded(targets []Target) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	best, bestN := 0, -1
	for i, t := range targets {
		n := g.perBackend[t.Addr]
		if bestN < 0 || n < bestN {
			best, bestN = i, n
		}
	}
	return best
}

// cancelBackend cancels what the session's current back end is running.
func (s *session) cancelBackend(ctx context.Context) error {
	s.mu.Lock()
	be := s.be
	s.mu.Unlock()
	if be == nil {
		return nil
	}
	return s.g.sendCancel(ctx, be.target.Addr, be.pid, be.secret)
}

// abort ends the session from outside (gateway shutdown).
func (s *session) abort() {
	s.stopping.Store(true)
	s.mu.Lock()
	be := s.be
	s.mu.Unlock()
	s.client.SetDeadline(aLongTimeAgo)
	if be != nil {
		be.conn.SetDeadline(aLongTimeAgo)
	}
}

func (s *session) closeBackend() {
	s.mu.Lock()
	be := s.be
	s.mu.Unlock()
	if be != nil {
		be.conn.Close()
	}
}

func (s *session) info() SessionInfo {
	s.mu.Lock()
	var t Target
	if s.be != nil {
		t = s.be.target
	}
	s.mu.Unlock()
	return SessionInfo{ID: s.id, Listener: s.l.name, User: s.user, Database: s.database,
		Client: s.client.RemoteAddr().String(), Backend: t, State: s.track.State()}
}

// prefixConn replays bytes already read before reading from the connection.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(b []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(b, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}
