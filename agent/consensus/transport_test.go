package consensus

import (
	"net"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/pgbattery/pgbattery/test/testutil"
)

// Raft dials peers from the address it listens on, so peers and firewall
// rules see one address per node.
func TestDialsFromBindAddress(t *testing.T) {
	a, b := testutil.Addr(t), testutil.Addr(t)
	l, err := net.Listen("tcp", net.JoinHostPort(b, "8300"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	adv := &net.TCPAddr{IP: net.ParseIP(a), Port: 8300}
	s, err := newStreamLayer(adv.String(), adv, nil, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	got := make(chan net.Addr, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- nil
			return
		}
		got <- c.RemoteAddr()
		c.Close()
	}()
	c, err := s.Dial(raft.ServerAddress(l.Addr().String()), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case ra := <-got:
		if ra == nil || ra.(*net.TCPAddr).IP.String() != a {
			t.Fatalf("peer saw the connection from %v, want %s", ra, a)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted")
	}
	if s.Addr().String() != adv.String() {
		t.Fatalf("stream layer advertises %v, want %v", s.Addr(), adv)
	}
}
