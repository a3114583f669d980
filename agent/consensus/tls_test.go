package consensus

import (
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pgbattery/pgbattery/test/testutil"
)

// nodeTLS issues a node certificate (server and client auth, the node's IP
// as SAN) and returns the node's raft TLS configuration.
func nodeTLS(t *testing.T, ca *testutil.CA, cn, ip string) *tls.Config {
	t.Helper()
	return &tls.Config{
		Certificates: []tls.Certificate{ca.Issue(t, cn, ip).TLS},
		RootCAs:      ca.Pool,
	}
}

// tlsNode starts a node whose certificate ca issued.
func tlsNode(t *testing.T, ca *testutil.CA, id string, opts ...nodeOpt) *testNode {
	t.Helper()
	addr := testutil.Addr(t)
	opts = append([]nodeOpt{
		tweak(func(c *Config) { c.BindAddr = addr }),
		withTLS(nodeTLS(t, ca, "node-"+id, addr)),
	}, opts...)
	return newTestNode(t, id, opts...)
}

func TestMutualTLS(t *testing.T) {
	cluster := testutil.NewCA(t, "cluster CA")
	other := testutil.NewCA(t, "some other CA")

	// s3 hands its certificate out through GetCertificate (as a reloading
	// agent would) rather than Certificates.
	viaCallback := tweak(func(c *Config) {
		cert := c.TLS.Certificates[0]
		c.TLS.Certificates = nil
		c.TLS.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert, nil }
	})
	nodes := []*testNode{tlsNode(t, cluster, "s1"), tlsNode(t, cluster, "s2"), tlsNode(t, cluster, "s3", viaCallback)}
	var servers []Server
	for _, tn := range nodes {
		servers = append(servers, tn.server())
	}
	for _, tn := range nodes {
		if ok, err := tn.node.MaybeBootstrap(servers); err != nil || !ok && !tn.node.HasExistingState() {
			t.Fatalf("bootstrapping %s: %v %v", tn.cfg.NodeID, ok, err)
		}
	}
	apply(t, nodes, "over=tls")

	// A member of the cluster with a cluster certificate joins.
	good := tlsNode(t, cluster, "c1", nonServer())
	// One whose certificate another CA issued, and one without TLS, do not.
	foreign := tlsNode(t, other, "x1", nonServer())
	plain := newTestNode(t, "x2", nonServer())

	leader := waitLeader(t, nodes, 10*time.Second)
	for _, tn := range []*testNode{good, foreign, plain} {
		if err := onLeader(nodes, 10*time.Second, func(n *Node) error {
			return n.AddNonvoter(ctxTimeout(t, 10*time.Second), tn.cfg.NodeID, tn.node.Address())
		}); err != nil {
			t.Fatal(err)
		}
	}
	apply(t, nodes, "after=join")
	waitFor(t, 10*time.Second, "the cluster-CA non-voter to replicate", func() bool { return good.fsm.len() == 2 })

	// The leader keeps trying the intruders for a while; none of it may
	// reach them, and the failure must be logged as what it is.
	waitFor(t, 10*time.Second, "the TLS rejections to be logged", func() bool {
		var cluster string
		for _, tn := range nodes {
			cluster += tn.logs.String()
		}
		return strings.Contains(cluster, "not from the cluster CA") && // the foreign node's server certificate
			strings.Contains(foreign.logs.String(), "rejected raft connection: TLS handshake failed") && // the leader's client certificate at the foreign node
			strings.Contains(cluster, "raft TLS handshake with peer failed") // the plain node does not speak TLS
	})
	for _, tn := range append([]*testNode{foreign}, nodes...) {
		if line := firstLine(tn.logs.String(), "TLS handshake"); line != "" {
			t.Logf("%s logged: %s", tn.cfg.NodeID, line)
		}
	}
	time.Sleep(4 * leader.node.Timings().HeartbeatTimeout)
	for _, tn := range []*testNode{foreign, plain} {
		if n := tn.fsm.len(); n != 0 || tn.node.HasExistingState() {
			t.Errorf("%s received raft data through TLS it should not pass: %d keys", tn.cfg.NodeID, n)
		}
		if _, id := tn.node.Leader(); id != "" {
			t.Errorf("%s learnt of leader %s", tn.cfg.NodeID, id)
		}
	}

	// A plain-TCP client cannot talk raft to a TLS server either: a raw
	// connection gets no answer and is dropped.
	conn, err := net.DialTimeout("tcp", leader.node.Address(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	conn.Write([]byte{0, 0, 0, 0, 0, 0, 0, 0}) // not a TLS ClientHello
	buf := make([]byte, 64)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			break // closed by the server: good
		}
		if n > 0 && buf[0] != 0x15 { // 0x15: a TLS alert record is all it may send
			t.Fatalf("TLS raft server answered a plaintext client with %x", buf[:n])
		}
	}

	// The cluster carries on.
	for _, id := range []string{"x1", "x2"} {
		if err := onLeader(nodes, 10*time.Second, func(n *Node) error { return n.RemoveServer(ctxTimeout(t, 10*time.Second), id) }); err != nil {
			t.Fatal(err)
		}
	}
	apply(t, nodes, "still=ok")
	waitFor(t, 10*time.Second, "the good non-voter to keep replicating", func() bool { return good.fsm.len() == 3 })
}

func firstLine(logs, substr string) string {
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, substr) {
			return l
		}
	}
	return ""
}
