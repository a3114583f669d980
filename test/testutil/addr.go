// Package testutil hands out what tests share across packages: loopback
// addresses and temp directories that the PostgreSQL OS user can reach.
//
// Every test node gets its own 127.0.0.N address, reserved through an
// flock(2) on a file under the system temp dir, so test binaries of several
// packages (go test runs them in parallel) never collide. A node on its own
// address can use the default ports; the lock dies with the process, so a
// crashed test leaks nothing.
package testutil

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
)

// First and last host numbers handed out. 127.0.0.1 is left to whatever the
// machine already runs there (a local PostgreSQL on 5432, say).
const (
	firstHost = 2
	lastHost  = 254
)

var lockDir = filepath.Join(os.TempDir(), "pgbattery-test-addrs")

// The file descriptors holding our locks, so a test can release its address
// and a later test in the same binary can take it again.
var (
	heldMu sync.Mutex
	held   = map[int]*os.File{}
)

// Addr reserves a loopback address for the rest of the test and returns it,
// e.g. "127.0.0.7". The reservation is released by t.Cleanup.
func Addr(t testing.TB) string {
	t.Helper()
	return Addrs(t, 1)[0]
}

// Addrs reserves n distinct loopback addresses.
func Addrs(t testing.TB, n int) []string {
	t.Helper()
	out := make([]string, 0, n)
	for len(out) < n {
		host, err := reserve()
		if err != nil {
			t.Fatalf("reserving a loopback address: %v", err)
		}
		h := host
		t.Cleanup(func() { release(h) })
		out = append(out, fmt.Sprintf("127.0.0.%d", host))
	}
	return out
}

func reserve() (int, error) {
	if err := os.MkdirAll(lockDir, 0o777); err != nil {
		return 0, err
	}
	// Shared by every user that runs tests (root in CI, an ordinary user,
	// the postgres user in the unprivileged tests): world-writable and
	// sticky like /tmp, whatever the umask made of it.
	if fi, err := os.Stat(lockDir); err == nil && fi.Mode().Perm() != 0o777 {
		os.Chmod(lockDir, 0o777|os.ModeSticky)
	}
	heldMu.Lock()
	defer heldMu.Unlock()
	for h := firstHost; h <= lastHost; h++ {
		if _, mine := held[h]; mine {
			continue
		}
		f, err := os.OpenFile(filepath.Join(lockDir, fmt.Sprintf("%d.lock", h)), os.O_CREATE|os.O_RDWR, 0o666)
		if err != nil {
			if os.IsPermission(err) {
				// Another user's lock file we may not open: that user's
				// tests own this address.
				continue
			}
			return 0, err
		}
		f.Chmod(0o666)
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			continue
		}
		if !addressFree(h) {
			// Something outside our allocator listens there; skip it for
			// the life of this process rather than fight over it.
			held[h] = f
			continue
		}
		held[h] = f
		return h, nil
	}
	return 0, fmt.Errorf("all of 127.0.0.%d-%d are in use", firstHost, lastHost)
}

// addressFree checks that nothing already listens on the ports our nodes use
// by default on that address (a stale process from a killed test run).
func addressFree(h int) bool {
	ip := fmt.Sprintf("127.0.0.%d", h)
	for _, port := range []int{5432, 5433, 8300, 8301, 8432} {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(port)))
		if err != nil {
			return false
		}
		l.Close()
	}
	return true
}

func release(h int) {
	heldMu.Lock()
	defer heldMu.Unlock()
	if f, ok := held[h]; ok {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
		delete(held, h)
	}
}
