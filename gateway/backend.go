package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/jackc/pgx/v5/pgproto3"
)

// backendAuth is how a session logs in to PostgreSQL.
type backendAuth struct {
	// clientKey and verifier, from the client's SCRAM exchange; nil in trust
	// mode, where the back end must not ask for a password.
	clientKey []byte
	verifier  *scramVerifier
}

// backend is one connection to PostgreSQL on behalf of a session.
type backend struct {
	target Target
	conn   net.Conn
	r      *bufio.Reader
	w      *bufio.Writer
	pid    uint32 // the back end's real key, for cancel
	secret uint32
	params map[string]string // ParameterStatus at start-up
}

// backendError is an ErrorResponse a back end sent during start-up; the
// gateway passes it to the client as is.
type backendError struct {
	msg *pgproto3.ErrorResponse
}

func (e *backendError) Error() string {
	return fmt.Sprintf("%s %s: %s", e.msg.Severity, e.msg.Code, e.msg.Message)
}

const (
	backendReadBuffer  = 8 << 10
	backendWriteBuffer = 4 << 10
	// maxStartupReply caps a back-end message during start-up.
	maxStartupReply = 1 << 20
)

// dialBackend opens and authenticates a back-end connection for a session.
// params are the client's start-up parameters to pass on (user and database
// included).
func (g *Gateway) dialBackend(ctx context.Context, target Target, params map[string]string, auth backendAuth) (*backend, error) {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.DialTimeout)
	defer cancel()
	conn, err := g.cfg.Dial(ctx, "tcp", target.Addr)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s (%s): %w", target.Node, target.Addr, err)
	}
	ok := false
	defer func() {
		if !ok {
			conn.Close()
		}
	}()
	if dl, has := ctx.Deadline(); has {
		conn.SetDeadline(dl)
	}
	// Stop blocking I/O when ctx is cancelled (gateway shutdown).
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(aLongTimeAgo) })
	defer stop()

	if g.cfg.BackendTLS != nil {
		if tc := g.cfg.BackendTLS(); tc != nil {
			if conn, err = startBackendTLS(conn, tc); err != nil {
				return nil, fmt.Errorf("starting TLS to %s: %w", target.Addr, err)
			}
		}
	}

	sio := newSocketIO(conn)
	be := &backend{target: target, conn: conn,
		r: bufio.NewReaderSize(sio, backendReadBuffer), w: bufio.NewWriterSize(&backendWriter{conn: conn, out: sio}, backendWriteBuffer),
		params: map[string]string{}}

	sm := &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: params}
	buf, err := sm.Encode(nil)
	if err != nil {
		return nil, fmt.Errorf("encoding start-up message: %w", err)
	}
	if _, err := conn.Write(buf); err != nil {
		return nil, fmt.Errorf("sending start-up message to %s: %w", target.Addr, err)
	}

	var sc *scramClient
	for {
		typ, body, err := readStartupReply(be.r)
		if err != nil {
			return nil, fmt.Errorf("starting session on %s: %w", target.Addr, err)
		}
		switch typ {
		case 'R':
			if len(body) < 4 {
				return nil, errors.New("malformed authentication request from back end")
			}
			switch code := binary.BigEndian.Uint32(body); code {
			case pgproto3.AuthTypeOk:
			case pgproto3.AuthTypeSASL:
				if auth.clientKey == nil {
					return nil, errors.New("back end asks for a password, but the gateway runs in trust mode and has none; configure the node to trust the gateway or use scram")
				}
				var m pgproto3.AuthenticationSASL
				if err := m.Decode(body); err != nil {
					return nil, fmt.Errorf("decoding SASL mechanisms from back end: %w", err)
				}
				found := false
				for _, mech := range m.AuthMechanisms {
					found = found || mech == scramMechanism
				}
				if !found {
					return nil, fmt.Errorf("back end does not offer %s (offers %v)", scramMechanism, m.AuthMechanisms)
				}
				sc = &scramClient{clientKey: auth.clientKey, v: auth.verifier}
				msg := &pgproto3.SASLInitialResponse{AuthMechanism: scramMechanism, Data: sc.clientFirst()}
				if err := writeFrontend(conn, msg); err != nil {
					return nil, err
				}
			case pgproto3.AuthTypeSASLContinue:
				if sc == nil {
					return nil, errors.New("back end sent SASL continue without SASL")
				}
				final, err := sc.serverFirst(body[4:])
				if err != nil {
					return nil, err
				}
				if err := writeFrontend(conn, &pgproto3.SASLResponse{Data: final}); err != nil {
					return nil, err
				}
			case pgproto3.AuthTypeSASLFinal:
				if sc == nil {
					return nil, errors.New("back end sent SASL final without SASL")
				}
				if err := sc.serverFinal(body[4:]); err != nil {
					return nil, err
				}
			default:
				return nil, fmt.Errorf("back end %s asks for authentication method %d; the gateway only answers SCRAM-SHA-256 (set password_encryption = scram-sha-256 and scram-sha-256 in pg_hba.conf)", target.Addr, code)
			}
		case 'S':
			name, rest, ok := cutCStringBytes(body)
			value, _, ok2 := cutCStringBytes(rest)
			if ok && ok2 {
				be.params[string(name)] = string(value)
			}
		case 'K':
			if len(body) != 8 {
				return nil, errors.New("malformed BackendKeyData from back end")
			}
			be.pid = binary.BigEndian.Uint32(body)
			be.secret = binary.BigEndian.Uint32(body[4:])
		case 'E':
			var m pgproto3.ErrorResponse
			if err := m.Decode(body); err != nil {
				return nil, fmt.Errorf("decoding error from back end: %w", err)
			}
			return nil, &backendError{msg: &m}
		case 'N':
			// Notices during start-up are dropped.
		case 'v':
			// NegotiateProtocolVersion: we ask for 3.0 and no options, so
			// this does not happen; tolerate it.
		case 'Z':
			conn.SetDeadline(noDeadline)
			ok = true
			return be, nil
		default:
			return nil, fmt.Errorf("unexpected message %q from back end during start-up", typ)
		}
	}
}

func startBackendTLS(conn net.Conn, tc *tls.Config) (net.Conn, error) {
	var req [8]byte
	binary.BigEndian.PutUint32(req[0:], 8)
	binary.BigEndian.PutUint32(req[4:], sslRequestCode)
	if _, err := conn.Write(req[:]); err != nil {
		return nil, err
	}
	var resp [1]byte
	if _, err := io.ReadFull(conn, resp[:]); err != nil {
		return nil, err
	}
	if resp[0] != 'S' {
		return nil, errors.New("server does not support TLS")
	}
	tconn := tls.Client(withSocketIO(conn), tc)
	if err := tconn.Handshake(); err != nil {
		return nil, err
	}
	return tconn, nil
}

func writeFrontend(w io.Writer, msg pgproto3.FrontendMessage) error {
	buf, err := msg.Encode(nil)
	if err != nil {
		return err
	}
	_, err = w.Write(buf)
	return err
}

// readStartupReply reads one whole back-end message during start-up.
func readStartupReply(r *bufio.Reader) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr[1:]))
	if n < 4 || n-4 > maxStartupReply {
		return 0, nil, fmt.Errorf("invalid message length %d from back end", n)
	}
	body := make([]byte, n-4)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, err
	}
	return hdr[0], body, nil
}

// backendWriter writes to a back end and swallows its write errors after
// recording the first: the client's message in progress is then consumed
// to its end (so the client stream stays in step) while the loss itself is
// reported by the read side, which sees the same broken connection.
type backendWriter struct {
	conn net.Conn
	out  io.Writer // conn, or its raw-syscall I/O (rawio.go)
	err  error
}

func (w *backendWriter) Write(b []byte) (int, error) {
	if w.err != nil {
		return len(b), nil
	}
	if _, err := w.out.Write(b); err != nil {
		w.err = err
		// Make sure the read side notices even if the peer never answers.
		w.conn.SetReadDeadline(aLongTimeAgo)
	}
	return len(b), nil
}

// clientWriter marks write errors as the client's, so a session can tell a
// client that went away from a back end that did.
type clientWriter struct{ out io.Writer }

func (w clientWriter) Write(b []byte) (int, error) {
	n, err := w.out.Write(b)
	if err != nil {
		err = &clientWriteError{err}
	}
	return n, err
}

type clientWriteError struct{ err error }

func (e *clientWriteError) Error() string { return "writing to client: " + e.err.Error() }
func (e *clientWriteError) Unwrap() error { return e.err }
