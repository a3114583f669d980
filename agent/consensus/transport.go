package consensus

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

const (
	// transportTimeout is raft's I/O deadline per RPC (InstallSnapshot
	// scales it with the snapshot size), as in Consul.
	transportTimeout = 10 * time.Second
	// transportMaxPool is how many idle connections to each peer are kept.
	transportMaxPool = 3
	// handshakeTimeout bounds a TLS handshake in either direction.
	handshakeTimeout = 5 * time.Second
)

// streamLayer is raft's StreamLayer over TCP, optionally mutual TLS.
type streamLayer struct {
	net.Listener
	advertise net.Addr
	local     *net.TCPAddr // source address for dials; nil: the kernel's choice
	server    *tls.Config  // nil: plain TCP
	client    *tls.Config
	logger    hclog.Logger
}

func newStreamLayer(bind string, advertise net.Addr, base *tls.Config, logger hclog.Logger) (*streamLayer, error) {
	l, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("listening for raft on %s: %w", bind, err)
	}
	s := &streamLayer{Listener: l, advertise: advertise, logger: logger}
	// Dial from the address we listen on, so that peers (and firewall
	// rules, such as the partition tests' nftables rules) see one address
	// per node rather than whatever source the kernel picks.
	if ta, ok := l.Addr().(*net.TCPAddr); ok && !ta.IP.IsUnspecified() {
		s.local = &net.TCPAddr{IP: ta.IP}
	}
	if base != nil {
		s.server, s.client = mutualTLS(base)
	}
	return s, nil
}

// mutualTLS derives the listener's and the dialer's configurations: both
// sides present their certificate and require one the cluster CA signed.
func mutualTLS(base *tls.Config) (server, client *tls.Config) {
	server = base.Clone()
	server.ClientAuth = tls.RequireAndVerifyClientCert
	if server.ClientCAs == nil {
		server.ClientCAs = base.RootCAs
	}
	if server.MinVersion < tls.VersionTLS12 {
		server.MinVersion = tls.VersionTLS12
	}

	client = base.Clone()
	if len(client.Certificates) == 0 && client.GetClientCertificate == nil && base.GetCertificate != nil {
		// One certificate source for both directions (it may reload).
		getCert := base.GetCertificate
		client.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return getCert(&tls.ClientHelloInfo{})
		}
	}
	if client.MinVersion < tls.VersionTLS12 {
		client.MinVersion = tls.VersionTLS12
	}
	if client.ServerName == "" {
		// Peers are dialled by IP and certificates need not name it: check
		// the chain against the cluster CA ourselves instead of the host
		// name. (InsecureSkipVerify only turns off Go's built-in check;
		// VerifyConnection below replaces it and rejects on any failure.)
		roots := base.RootCAs
		client.InsecureSkipVerify = true
		client.VerifyConnection = func(cs tls.ConnectionState) error {
			return verifyChain(cs, roots, x509.ExtKeyUsageServerAuth)
		}
	}
	return server, client
}

// verifyChain verifies the peer's certificate chain against roots.
func verifyChain(cs tls.ConnectionState, roots *x509.CertPool, usage x509.ExtKeyUsage) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("peer presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	})
	if err != nil {
		return fmt.Errorf("peer certificate %q is not from the cluster CA: %w", cs.PeerCertificates[0].Subject.CommonName, err)
	}
	return nil
}

// Addr is the advertised address: raft records it as ours in the
// configuration.
func (s *streamLayer) Addr() net.Addr { return s.advertise }

// Accept returns the next connection. With TLS the handshake is left to the
// connection's first read, on raft's per-connection goroutine, so one slow
// or hostile client cannot stall the accept loop.
func (s *streamLayer) Accept() (net.Conn, error) {
	c, err := s.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if s.server == nil {
		return c, nil
	}
	return &handshakeConn{Conn: tls.Server(c, s.server), logger: s.logger}, nil
}

// Dial opens a connection to a peer.
func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	if s.local != nil {
		d.LocalAddr = s.local
	}
	c, err := d.Dial("tcp", string(address))
	if err != nil {
		return nil, err
	}
	if s.client == nil {
		return c, nil
	}
	tc := tls.Client(c, s.client)
	hs := timeout
	if hs <= 0 || hs > handshakeTimeout {
		hs = handshakeTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), hs)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		tc.Close()
		s.logger.Error("raft TLS handshake with peer failed", "peer", address, "error", err)
		return nil, fmt.Errorf("TLS handshake with raft peer %s: %w", address, err)
	}
	return tc, nil
}

// handshakeConn completes the server-side TLS handshake on first use, with a
// deadline, and logs a failure clearly (raft would only report that it
// could not decode a command).
type handshakeConn struct {
	*tls.Conn
	logger hclog.Logger
	once   sync.Once
	err    error
}

func (c *handshakeConn) handshake() error {
	c.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
		defer cancel()
		if err := c.Conn.HandshakeContext(ctx); err != nil {
			c.err = fmt.Errorf("TLS handshake: %w", err)
			c.logger.Error("rejected raft connection: TLS handshake failed", "remote", c.RemoteAddr(), "error", err)
		}
	})
	return c.err
}

func (c *handshakeConn) Read(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

func (c *handshakeConn) Write(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}
