package pgctl

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// Credentials name a PostgreSQL role and its password. Its String method
// redacts the password, so a Credentials value printed by mistake (%v, a
// log field) does not leak it.
type Credentials struct {
	User     string
	Password string
}

// String renders the role name only.
func (c Credentials) String() string { return c.User + ":<redacted>" }

// GoString redacts too, for %#v.
func (c Credentials) GoString() string {
	return "pgctl.Credentials{User:" + fmt.Sprintf("%q", c.User) + ", Password:<redacted>}"
}

// GenerateSecret returns a fresh random secret: 32 bytes from crypto/rand,
// base64url without padding (43 characters from [A-Za-z0-9_-]), so it needs
// no quoting in a passfile, conninfo or configuration file.
func GenerateSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generating a secret: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

var secretNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// LoadOrCreateSecret returns the secret stored in dir/name, creating it
// (0600, in a 0700 dir) with GenerateSecret when it does not exist. A
// secret file readable by group or others is refused: it may have leaked.
func LoadOrCreateSecret(dir, name string) (string, error) {
	s, err := LoadSecret(dir, name)
	if err == nil {
		return s, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	s, err = GenerateSecret()
	if err != nil {
		return "", err
	}
	if err := StoreSecret(dir, name, s); err != nil {
		if errors.Is(err, fs.ErrExist) {
			// Lost a race with another creator: theirs wins.
			return LoadSecret(dir, name)
		}
		return "", err
	}
	return s, nil
}

// LoadSecret reads dir/name. It fails with an error wrapping fs.ErrNotExist
// when there is none.
func LoadSecret(dir, name string) (string, error) {
	if !secretNameRe.MatchString(name) {
		return "", fmt.Errorf("invalid secret name %q", name)
	}
	path := filepath.Join(dir, name)
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("loading secret %s: %w", path, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("secret file %s has mode %#o: it must be readable by its owner only (chmod 600 %s, and rotate the secret if others could read it)",
			path, fi.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("loading secret %s: %w", path, err)
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", fmt.Errorf("secret file %s is empty", path)
	}
	return s, nil
}

// StoreSecret writes value to dir/name with mode 0600, creating dir with
// mode 0700. It never overwrites: an existing file is an error wrapping
// fs.ErrExist.
func StoreSecret(dir, name, value string) error {
	if !secretNameRe.MatchString(name) {
		return fmt.Errorf("invalid secret name %q", name)
	}
	if value == "" || strings.ContainsAny(value, "\r\n") {
		return fmt.Errorf("storing secret %s: value must be one non-empty line", name)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating secrets dir %s: %w", dir, err)
	}
	path := filepath.Join(dir, name)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("storing secret %s: %w", path, err)
	}
	if _, err := f.WriteString(value + "\n"); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("storing secret %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("storing secret %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("storing secret %s: %w", path, err)
	}
	return nil
}
