package pgctl

import (
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// DefaultOSUser is the OS user PostgreSQL runs as when the agent is root.
const DefaultOSUser = "postgres"

// osUser is the identity PostgreSQL binaries run as. When the agent is not
// root it is the agent's own identity and asRoot is false: no credential
// switch, no chown.
type osUser struct {
	name   string
	uid    int
	gid    int
	asRoot bool
}

// resolveOSUser decides who runs PostgreSQL. PostgreSQL refuses to run as
// root, so a root agent switches to the configured user; an unprivileged
// agent can only run PostgreSQL as itself and ignores the setting.
func resolveOSUser(name string) (osUser, error) {
	if os.Geteuid() != 0 {
		u := osUser{uid: os.Geteuid(), gid: os.Getegid()}
		if cur, err := user.Current(); err == nil {
			u.name = cur.Username
		}
		return u, nil
	}
	if name == "" {
		name = DefaultOSUser
	}
	u, err := user.Lookup(name)
	if err != nil {
		return osUser{}, fmt.Errorf("looking up postgres.os_user %q: %w (create it, e.g. useradd --system %s, or set postgres.os_user)", name, err, name)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return osUser{}, fmt.Errorf("OS user %q has non-numeric uid %q", name, u.Uid)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return osUser{}, fmt.Errorf("OS user %q has non-numeric gid %q", name, u.Gid)
	}
	if uid == 0 {
		return osUser{}, fmt.Errorf("postgres.os_user %q is root; PostgreSQL refuses to run as root: use an unprivileged user such as %q", name, DefaultOSUser)
	}
	return osUser{name: name, uid: uid, gid: gid, asRoot: true}, nil
}

// credential returns the SysProcAttr credential for a child, or nil when no
// switch is needed. Supplementary groups are cleared: the child gets exactly
// the user's primary group and nothing of root's.
func (u osUser) credential() *syscall.Credential {
	if !u.asRoot {
		return nil
	}
	return &syscall.Credential{Uid: uint32(u.uid), Gid: uint32(u.gid), Groups: []uint32{}}
}

// chown gives path to the OS user when running as root; otherwise it is a
// no-op (the files already belong to the agent's user).
func (u osUser) chown(path string) error {
	if !u.asRoot {
		return nil
	}
	if err := os.Lchown(path, u.uid, u.gid); err != nil {
		return fmt.Errorf("chown %s to %s: %w", path, u.name, err)
	}
	return nil
}

// chownTree chowns every file under root (used after we copied or wrote
// files as root inside a data directory).
func (u osUser) chownTree(root string) error {
	if !u.asRoot {
		return nil
	}
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return u.chown(p)
	})
}

// mkdir creates dir (and parents) with mode and gives it to the OS user.
// An existing directory gets the mode and owner too.
func (u osUser) mkdir(dir string, mode os.FileMode) error {
	if err := os.MkdirAll(dir, mode); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	if err := os.Chmod(dir, mode); err != nil {
		return fmt.Errorf("chmod %s: %w", dir, err)
	}
	return u.chown(dir)
}

// writeFile writes data to path atomically (temp file + rename), with mode,
// owned by the OS user.
func (u osUser) writeFile(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Chmod(tmp.Name(), mode); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := u.chown(tmp.Name()); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// checkTraversable verifies, when running as root, that the OS user can
// reach dir: every ancestor must grant it search (x) permission. PostgreSQL
// would otherwise fail with a terse "permission denied" at start.
func (u osUser) checkTraversable(dir string) error {
	if !u.asRoot {
		return nil
	}
	dir = filepath.Clean(dir)
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("checking %s: %w", d, err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if ok {
			mode := fi.Mode().Perm()
			canSearch := mode&0o001 != 0 ||
				(int(st.Uid) == u.uid && mode&0o100 != 0) ||
				(int(st.Gid) == u.gid && mode&0o010 != 0)
			if !canSearch {
				return fmt.Errorf("OS user %s cannot reach %s: directory %s has mode %#o and owner %d:%d; make it traversable (chmod o+x %s) or move the data directory",
					u.name, dir, d, mode, st.Uid, st.Gid, d)
			}
		}
		if d == "/" || d == "." {
			return nil
		}
	}
}
