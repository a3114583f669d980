package agent

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgbattery/pgbattery/agent/config"
	"github.com/pgbattery/pgbattery/agent/fsm"
	"github.com/pgbattery/pgbattery/gateway"
	"github.com/pgbattery/pgbattery/gossip"
	"github.com/pgbattery/pgbattery/test/testutil"
)

// TestQualifyingStandbys is the read-only port's filter: alive, not
// suspected, a running replica, streaming from the current primary in a
// fresh reading, and within the lag bound.
func TestQualifyingStandbys(t *testing.T) {
	now := time.Now()
	st := &fsm.State{Primary: "p", Epoch: 7, Members: map[string]*fsm.Member{}}
	for _, n := range []string{"p", "a", "b", "c", "d", "e", "f", "g"} {
		st.Members[n] = &fsm.Member{Name: n, Addrs: map[string]string{"postgres": n + ":5433"}}
	}
	delete(st.Members["g"].Addrs, "postgres")
	replica := map[string]string{gossip.TagRole: gossip.RoleReplica, gossip.TagPG: gossip.PGRunning}
	members := []gossip.Member{
		{Name: "p", Status: gossip.StatusAlive, Tags: map[string]string{gossip.TagRole: gossip.RolePrimary, gossip.TagPG: gossip.PGRunning}},
		{Name: "b", Status: gossip.StatusAlive, Tags: replica}, // within the bound
		{Name: "a", Status: gossip.StatusAlive, Tags: replica}, // caught up
		{Name: "c", Status: gossip.StatusAlive, Tags: replica}, // lags too much
		{Name: "d", Status: gossip.StatusAlive, Tags: replica}, // not streaming from p
		{Name: "e", Status: gossip.StatusSuspect, Tags: replica},
		{Name: "f", Status: gossip.StatusAlive, Tags: map[string]string{gossip.TagRole: gossip.RoleReplica, gossip.TagPG: gossip.PGStarting}},
		{Name: "g", Status: gossip.StatusAlive, Tags: replica}, // no address known
		{Name: "h", Status: gossip.StatusAlive, Tags: replica}, // not a member of the state
	}
	const maxLag = 1 << 20
	reading := &lagReading{at: now.Add(-time.Second), primary: "p", epoch: 7, flush: 100 << 20,
		replay: map[string]uint64{"a": 100 << 20, "b": 99 << 20, "c": 99<<20 - 1, "e": 100 << 20,
			"f": 100 << 20, "g": 100 << 20, "h": 100 << 20}}
	names := func(ts []gateway.Target) []string {
		var out []string
		for _, tg := range ts {
			if tg.Epoch != 7 || tg.Addr != tg.Node+":5433" {
				t.Errorf("target %+v: want epoch 7 and the member's postgres address", tg)
			}
			out = append(out, tg.Node)
		}
		return out
	}

	got := names(qualifyingStandbys(st, members, nil, reading, maxLag, now))
	if want := []string{"a", "b"}; !slices.Equal(got, want) {
		t.Errorf("qualifying standbys %v, want %v (sorted)", got, want)
	}

	// A standby ahead of the reading's flush position (its report is newer)
	// has no lag.
	ahead := *reading
	ahead.replay = map[string]uint64{"c": 101 << 20}
	if got := names(qualifyingStandbys(st, members, nil, &ahead, maxLag, now)); !slices.Equal(got, []string{"c"}) {
		t.Errorf("standby ahead of the flush reading: got %v, want [c]", got)
	}

	// Suspicion by this node's gossip excludes.
	if got := names(qualifyingStandbys(st, members, map[string]bool{"a": true}, reading, maxLag, now)); !slices.Equal(got, []string{"b"}) {
		t.Errorf("with a suspected: got %v, want [b]", got)
	}
	// A bound of 0 takes only the caught-up one; a negative bound takes
	// every streaming one.
	if got := names(qualifyingStandbys(st, members, nil, reading, 0, now)); !slices.Equal(got, []string{"a"}) {
		t.Errorf("max lag 0: got %v, want [a]", got)
	}
	if got := names(qualifyingStandbys(st, members, nil, reading, -1, now)); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("no bound: got %v, want [a b c]", got)
	}

	// No usable reading: nobody qualifies, the gateway uses the primary.
	for name, r := range map[string]*lagReading{
		"none":          nil,
		"stale":         {at: now.Add(-lagStaleAfter - time.Second), primary: "p", epoch: 7, flush: reading.flush, replay: reading.replay},
		"old primary":   {at: now, primary: "x", epoch: 7, flush: reading.flush, replay: reading.replay},
		"old epoch":     {at: now, primary: "p", epoch: 6, flush: reading.flush, replay: reading.replay},
		"no standbys":   {at: now, primary: "p", epoch: 7, flush: reading.flush},
		"all too far":   {at: now, primary: "p", epoch: 7, flush: 200 << 20, replay: reading.replay},
		"primary empty": nil,
	} {
		s := st
		if name == "primary empty" {
			cp := *st
			cp.Primary = ""
			s = &cp
			r = reading
		}
		if got := qualifyingStandbys(s, members, nil, r, maxLag, now); len(got) != 0 {
			t.Errorf("%s: got %v, want none", name, names(got))
		}
	}
}

// TestGatewayTLSClientCA: with tls.gateway.client_cert the gateway's TLS
// configuration verifies offered client certificates against the client
// CA (the gateway itself refuses clients without one, with a PostgreSQL
// error); without it no certificate is asked for.
func TestGatewayTLSClientCA(t *testing.T) {
	dir := t.TempDir()
	ca := testutil.NewCA(t, "gateway client CA")
	certFile, keyFile := ca.Issue(t, "gw").WriteFiles(t, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	caFile := ca.WriteFile(t, filepath.Join(dir, "ca.pem"))

	cfg := &config.RuntimeConfig{}
	cfg.TLS.Gateway = config.TLSGatewayConfig{CertFile: certFile, KeyFile: keyFile, ClientCert: "off"}
	fn, err := gatewayTLS(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if tc := fn(); tc.ClientAuth != tls.NoClientCert || tc.ClientCAs != nil {
		t.Errorf("client_cert off: ClientAuth %v, CAs %v; want none asked for", tc.ClientAuth, tc.ClientCAs)
	}

	cfg.TLS.Gateway.ClientCert, cfg.TLS.Gateway.ClientCAFile = "verify-full", caFile
	if fn, err = gatewayTLS(cfg); err != nil {
		t.Fatal(err)
	}
	if tc := fn(); tc.ClientAuth != tls.VerifyClientCertIfGiven || tc.ClientCAs == nil {
		t.Errorf("client_cert verify-full: ClientAuth %v, CAs %v; want verified against the CA", tc.ClientAuth, tc.ClientCAs)
	}

	os.WriteFile(caFile, []byte("not a certificate"), 0o600)
	if _, err := gatewayTLS(cfg); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("a client CA file without a certificate: %v", err)
	}
}
