package gossip

import (
	"context"
	"encoding/base64"
	"fmt"
	"maps"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-metrics"
	"github.com/pgbattery/pgbattery/test/testutil"
)

func TestNormalizeJoinAddr(t *testing.T) {
	good := map[string]string{
		"127.0.0.5":        "127.0.0.5:8301",
		"127.0.0.5:9000":   "127.0.0.5:9000",
		" node1.example ":  "node1.example:8301",
		"node1:8302":       "node1:8302",
		"::1":              "[::1]:8301",
		"[::1]":            "[::1]:8301",
		"[fe80::1]:8400":   "[fe80::1]:8400",
		"[2001:db8::7]":    "[2001:db8::7]:8301",
		"localhost:65535":  "localhost:65535",
		"10.1.2.3:1":       "10.1.2.3:1",
		"2001:db8::1":      "[2001:db8::1]:8301",
		"[2001:db8::1]:80": "[2001:db8::1]:80",
	}
	for in, want := range good {
		got, err := NormalizeJoinAddr(in)
		if err != nil || got != want {
			t.Errorf("NormalizeJoinAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "  ", ":8301", "host:0", "host:99999", "host:http", "[::1", "a b", "http://x"} {
		if got, err := NormalizeJoinAddr(in); err == nil {
			t.Errorf("NormalizeJoinAddr(%q) = %q, want an error", in, got)
		}
	}
}

func TestKeys(t *testing.T) {
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := DecodeKey(k)
	if err != nil || len(raw) != 32 {
		t.Fatalf("DecodeKey(GenerateKey()) = %d bytes, %v", len(raw), err)
	}
	if _, err := DecodeKey("not base64!"); err == nil || !strings.Contains(err.Error(), "base64") {
		t.Errorf("bad base64: %v", err)
	}
	if _, err := DecodeKey(base64.StdEncoding.EncodeToString(make([]byte, 20))); err == nil || !strings.Contains(err.Error(), "20 bytes") {
		t.Errorf("20-byte key: %v", err)
	}
}

func TestConfigAndTimingValidation(t *testing.T) {
	addr := "127.0.0.1" // never bound: every case fails before binding
	bad := []struct {
		cfg  Config
		want string
	}{
		{Config{BindAddr: addr}, "node name is required"},
		{Config{NodeName: "a"}, "bind address is required"},
		{Config{NodeName: "a", BindAddr: "localhost"}, "not an IP address"},
		{Config{NodeName: "a", BindAddr: addr, BindPort: 70000}, "out of range"},
		{Config{NodeName: "a", BindAddr: addr, EncryptKey: make([]byte, 7)}, "7 bytes"},
		{Config{NodeName: "a", BindAddr: addr, Profile: "fast"}, `unknown gossip profile "fast"`},
		{Config{NodeName: "a", BindAddr: addr, Timing: Timing{ProbeTimeout: time.Second}}, "must be shorter than probe_interval"},
		{Config{NodeName: "a", BindAddr: addr, Timing: Timing{SuspicionMult: -1}}, "suspicion_mult"},
		{Config{NodeName: "a", BindAddr: addr, Tags: map[string]string{"x": strings.Repeat("y", 600)}}, "over the gossip limit of 512"},
		{Config{NodeName: "bad name", BindAddr: addr}, "node name"},
	}
	for _, c := range bad {
		g, err := New(c.cfg)
		if err == nil {
			g.Shutdown()
			t.Errorf("New(%+v) succeeded, want error containing %q", c.cfg, c.want)
			continue
		}
		if !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(c.want)) {
			t.Errorf("New(%+v) = %v, want error containing %q", c.cfg, err, c.want)
		}
	}
	for _, p := range []string{"", ProfileLocal, ProfileLAN, ProfileWAN} {
		tm, err := ProfileTiming(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := tm.Validate(); err != nil {
			t.Errorf("profile %q: %v", p, err)
		}
	}
	lan, _ := ProfileTiming(ProfileLAN)
	got := Timing{ProbeInterval: 300 * time.Millisecond}.merged(lan)
	if got.ProbeInterval != 300*time.Millisecond || got.ProbeTimeout != lan.ProbeTimeout || got.SuspicionMult != lan.SuspicionMult {
		t.Errorf("override merged into %+v", got)
	}
	if d := lan.SuspicionTimeout(3); d != time.Duration(lan.SuspicionMult)*lan.ProbeInterval {
		t.Errorf("SuspicionTimeout(3) = %s", d)
	}
	if d := lan.SuspicionTimeout(100); d != 2*time.Duration(lan.SuspicionMult)*lan.ProbeInterval {
		t.Errorf("SuspicionTimeout(100) = %s", d)
	}
}

func TestEncodedTagSizeMatchesSerf(t *testing.T) {
	// Find the largest value serf accepts and check our limit agrees.
	addr := testutil.Addr(t)
	g := newTestGossip(t, "sizer", addr, nil)
	for n := 400; n < 520; n++ {
		tags := map[string]string{"k": strings.Repeat("v", n)}
		size, err := EncodedTagSize(tags)
		if err != nil {
			t.Fatal(err)
		}
		serfErr := g.serf.SetTags(tags)
		ourErr := CheckTags(tags)
		if (serfErr != nil) != (ourErr != nil) {
			t.Fatalf("value of %d bytes (encoded %d): serf says %v, we say %v", n, size, serfErr, ourErr)
		}
	}
}

// newTestGossip starts an in-process member with the local profile.
func newTestGossip(t testing.TB, name, addr string, mod func(*Config)) *Gossip {
	t.Helper()
	// Registered first, so it runs last: stray library goroutines must not
	// log through t after the test is over.
	w := &testWriter{t: t}
	t.Cleanup(func() { w.done.Store(true) })
	cfg := Config{
		NodeName: name,
		BindAddr: addr,
		Profile:  ProfileLocal,
		Logger:   hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Warn, Output: w}),
	}
	if mod != nil {
		mod(&cfg)
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	t.Cleanup(func() { g.Shutdown() })
	return g
}

type testWriter struct {
	t    testing.TB
	done atomic.Bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	if w.done.Load() {
		return len(p), nil
	}
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestTagUpdatesAreCoalescedButRoleIsNot(t *testing.T) {
	addrs := testutil.Addrs(t, 2)
	a := newTestGossip(t, "a", addrs[0], func(c *Config) {
		c.TagInterval = 2 * time.Second
		c.Tags = map[string]string{TagRole: RoleReplica}
	})
	b := newTestGossip(t, "b", addrs[1], nil)
	if _, err := b.Join([]string{addrs[0]}, true); err != nil {
		t.Fatal(err)
	}
	seen := func() map[string]string {
		for _, m := range b.Members() {
			if m.Name == "a" {
				return m.Tags
			}
		}
		return nil
	}
	waitFor(t, "b to see a", 5*time.Second, func() bool { return seen() != nil })
	// The first LSN change goes out (none was sent for a while); the
	// next ones within TagInterval are held back and coalesced.
	start := time.Now()
	for i := 1; i <= 20; i++ {
		if err := a.UpdateTags(map[string]string{TagLSN: fmt.Sprintf("%x", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if got := a.Tags()[TagLSN]; got != "14" {
		t.Errorf("a.Tags()[lsn] = %q, want the latest value 14", got)
	}
	time.Sleep(300 * time.Millisecond)
	if got := seen()[TagLSN]; got == "14" && time.Since(start) < time.Second {
		t.Errorf("b saw the 20th LSN update at once; updates were not coalesced")
	}
	// A role change goes out at once and carries the pending LSN along.
	if err := a.UpdateTags(map[string]string{TagRole: RolePrimary}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b to see the role change", time.Second, func() bool {
		tags := seen()
		return tags[TagRole] == RolePrimary && tags[TagLSN] == "14"
	})
	if time.Since(start) >= 2*time.Second {
		t.Errorf("role change took %s, longer than the coalescing interval", time.Since(start))
	}
	// A coalesced change is eventually published by the timer.
	if err := a.UpdateTags(map[string]string{TagLSN: "ff"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the coalesced LSN update", 5*time.Second, func() bool { return seen()[TagLSN] == "ff" })
	// Deleting a key with UpdateTags.
	if err := a.UpdateTags(map[string]string{TagLSN: "", TagPG: PGCrashed}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "lsn deleted and pg crashed", 5*time.Second, func() bool {
		tags := seen()
		_, has := tags[TagLSN]
		return !has && tags[TagPG] == PGCrashed
	})
	if err := a.SetTags(map[string]string{"big": strings.Repeat("z", 600)}); err == nil || !strings.Contains(err.Error(), "512") {
		t.Errorf("oversized SetTags: %v", err)
	}
	if !maps.Equal(a.Tags(), map[string]string{TagRole: RolePrimary, TagPG: PGCrashed}) {
		t.Errorf("a refused SetTags changed the tags to %v", a.Tags())
	}
}

func TestSlowConsumerDropsEventsWithoutBlockingGossip(t *testing.T) {
	addrs := testutil.Addrs(t, 4)
	a := newTestGossip(t, "a", addrs[0], func(c *Config) { c.EventBuffer = 1 })
	for i, addr := range addrs[1:] {
		o := newTestGossip(t, fmt.Sprintf("o%d", i), addr, nil)
		if _, err := o.Join([]string{addrs[0]}, true); err != nil {
			t.Fatal(err)
		}
	}
	// Nobody reads a.Events(): gossip must go on and count the drops.
	waitFor(t, "a to see 4 members", 5*time.Second, func() bool { return a.NumAlive() == 4 })
	waitFor(t, "dropped events", 5*time.Second, func() bool { return a.Dropped() >= 2 })
	ev := <-a.Events()
	if ev.Type != EventJoin || ev.At.IsZero() {
		t.Errorf("first event %+v, want a Join with a timestamp", ev)
	}
}

func TestRetryJoinAndForceLeave(t *testing.T) {
	addrs := testutil.Addrs(t, 3)
	sink := metrics.NewInmemSink(time.Minute, time.Minute)
	m, err := metrics.New(metrics.DefaultConfig("test"), sink)
	if err != nil {
		t.Fatal(err)
	}
	a := newTestGossip(t, "a", addrs[0], func(c *Config) { c.Metrics = m; c.Primary = "b" })

	// Nobody listens on addrs[1] yet: a bounded retry gives up.
	errCh := a.RetryJoin(context.Background(), []string{addrs[1]}, 20*time.Millisecond, 3)
	select {
	case err := <-errCh:
		if err == nil || !strings.Contains(err.Error(), "after 3 attempts") {
			t.Errorf("bounded retry-join: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("bounded retry-join did not give up")
	}
	// An unbounded retry succeeds once b is up.
	errCh = a.RetryJoin(context.Background(), []string{addrs[1] + ":8301"}, 50*time.Millisecond, 0)
	time.Sleep(200 * time.Millisecond)
	b := newTestGossip(t, "b", addrs[1], nil)
	select {
	case err := <-errCh:
		if err != nil {
			t.Fatalf("retry-join: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("retry-join did not succeed")
	}
	waitFor(t, "a to see b", 5*time.Second, func() bool { return a.NumAlive() == 2 })

	// b dies without leaving: a sees Suspect then Failed; force-leave
	// turns it into Leave.
	var got []EventType
	collect := func(until EventType) {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case ev := <-a.Events():
				if ev.Node != "b" {
					continue
				}
				got = append(got, ev.Type)
				if ev.Type == until {
					return
				}
			case <-timeout:
				t.Fatalf("no %s for b; got %v", until, got)
			}
		}
	}
	collect(EventJoin)
	b.Shutdown()
	collect(EventFailed)
	if err := a.ForceLeave("nobody"); err == nil {
		t.Error("force-leave of an unknown node succeeded")
	}
	if err := a.ForceLeave("b"); err != nil {
		t.Fatal(err)
	}
	collect(EventLeave)
	want := []EventType{EventJoin, EventSuspect, EventFailed, EventLeave}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("events for b: %v, want %v", got, want)
	}
	for _, mem := range a.Members() {
		if mem.Name == "b" && mem.Status != StatusLeft {
			t.Errorf("b is %s after force-leave", mem.Status)
		}
	}
	// Our metrics went to the Metrics instance we passed in.
	found := false
	for _, iv := range sink.Data() {
		for k := range iv.Counters {
			if strings.Contains(k, "gossip.event.failed") {
				found = true
			}
		}
	}
	if !found {
		t.Error("no gossip.event.failed counter in the configured metrics sink")
	}

	// Joining a closed port names the address.
	_, err = a.Join([]string{net.JoinHostPort(addrs[2], "1")}, true)
	if err == nil || !strings.Contains(err.Error(), addrs[2]) {
		t.Errorf("join to a closed port: %v", err)
	}
	if err := a.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-a.Events(); ok {
		// Drain: Shutdown closes the channel after the last event.
		for range a.Events() {
		}
	}
}
