package gossip

import (
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
)

// boundTransport is memberlist's NetTransport with one change: outgoing
// TCP connections (push/pull, join, the fallback ping) leave from the bind
// address. memberlist dials with no local address, so on a multi-homed
// host (or with several 127.0.0.N nodes on one machine) its streams would
// come from whatever address the route picks, and a firewall rule about
// this node's address would miss them: a partition would be half a
// partition.
type boundTransport struct {
	*memberlist.NetTransport
	local *net.TCPAddr // nil when bound to the unspecified address
}

func newBoundTransport(bindAddr string, port int, logger hclog.Logger) (*boundTransport, error) {
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{bindAddr},
		BindPort:  port,
		Logger:    logger.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	})
	if err != nil {
		return nil, fmt.Errorf("binding gossip listener on %s: %w", net.JoinHostPort(bindAddr, fmt.Sprint(port)), err)
	}
	t := &boundTransport{NetTransport: nt}
	if ip := net.ParseIP(bindAddr); ip != nil && !ip.IsUnspecified() {
		t.local = &net.TCPAddr{IP: ip}
	}
	return t, nil
}

func (t *boundTransport) dialer(timeout time.Duration) *net.Dialer {
	d := &net.Dialer{Timeout: timeout}
	if t.local != nil {
		d.LocalAddr = t.local
	}
	return d
}

// DialTimeout implements memberlist.Transport.
func (t *boundTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.dialer(timeout).Dial("tcp", addr)
}

// DialAddressTimeout implements memberlist.NodeAwareTransport.
func (t *boundTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.dialer(timeout).Dial("tcp", a.Addr)
}
