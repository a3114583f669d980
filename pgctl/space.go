package pgctl

import (
	"fmt"
	"path/filepath"
	"syscall"
)

// FreeSpace is the space left to PostgreSQL for its data and its WAL: the
// smaller of what statfs reports available (to unprivileged users, as the
// server runs) on the file systems of PGDATA and of pg_wal, which may be a
// link to another one.
func (i *Instance) FreeSpace() (uint64, error) {
	free := ^uint64(0)
	for _, dir := range []string{i.cfg.DataDir, filepath.Join(i.cfg.DataDir, "pg_wal")} {
		var fs syscall.Statfs_t
		if err := syscall.Statfs(dir, &fs); err != nil {
			return 0, fmt.Errorf("reading the free space of %s: %w", dir, err)
		}
		free = min(free, fs.Bavail*uint64(fs.Bsize))
	}
	return free, nil
}
