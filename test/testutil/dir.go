package testutil

import (
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"
)

// TempDir returns a fresh directory that is removed after the test, like
// t.TempDir, but whose ancestors a non-root PostgreSQL OS user can traverse:
// t.TempDir's parents are 0700 root when tests run as root, and the
// postmaster (run as postgres.os_user) could not reach its data directory.
// The directory itself is chmod 0755; pgctl sets tighter modes on what it
// creates inside.
func TempDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	// Open every ancestor below the system temp dir for traversal.
	root := filepath.Clean(os.TempDir())
	for d := dir; d != root && d != "/" && d != "."; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatalf("making %s traversable: %v", d, err)
		}
	}
	return dir
}

// IsRoot reports whether the test runs as root.
func IsRoot() bool { return os.Geteuid() == 0 }

// PostgresOSUser is the OS user tests run PostgreSQL as when they run as
// root: "postgres", which Debian's postgresql-common creates.
const PostgresOSUser = "postgres"

// ChownToPostgres gives path to PostgresOSUser when running as root, so a
// postmaster running as that user can write there. It is a no-op otherwise.
func ChownToPostgres(t testing.TB, path string) {
	t.Helper()
	if !IsRoot() {
		return
	}
	u, err := user.Lookup(PostgresOSUser)
	if err != nil {
		t.Fatalf("looking up OS user %q: %v", PostgresOSUser, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(path, uid, gid); err != nil {
		t.Fatalf("chown %s: %v", path, err)
	}
}
