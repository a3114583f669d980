package pgctl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pgbattery/pgbattery/agent/version"
)

// Binaries is a located set of PostgreSQL server binaries of one major
// version.
type Binaries struct {
	// Dir holds postgres, initdb, pg_basebackup, pg_rewind, pg_controldata.
	Dir string
	// Major is the major version, e.g. 15.
	Major int
	// Version is the full version string reported by `postgres --version`,
	// e.g. "15.18".
	Version string
}

// Path returns the full path of the named binary, e.g. Path("initdb").
func (b *Binaries) Path(name string) string { return filepath.Join(b.Dir, name) }

// requiredBinaries are the programs pgctl runs. All ship in Debian's
// postgresql-N package (and the PGDG RPMs' postgresqlN-server).
var requiredBinaries = []string{"postgres", "initdb", "pg_basebackup", "pg_rewind", "pg_controldata"}

// defaultSearchGlob is where Debian and Ubuntu install server binaries.
const defaultSearchGlob = "/usr/lib/postgresql/*/bin"

// FindBinaries locates the PostgreSQL server binaries: binDir when set (and
// then nothing else), else `pg_config --bindir` from PATH, else the newest
// /usr/lib/postgresql/*/bin. It refuses a major version that pgbattery does
// not support (agent/version.SupportedPostgresMajors).
func FindBinaries(ctx context.Context, binDir string) (*Binaries, error) {
	return findBinaries(ctx, binDir, defaultSearchGlob)
}

func findBinaries(ctx context.Context, binDir, searchGlob string) (*Binaries, error) {
	if binDir != "" {
		if !filepath.IsAbs(binDir) {
			return nil, fmt.Errorf("postgres bin_dir %q must be an absolute path", binDir)
		}
		if err := hasServerBinary(binDir); err != nil {
			return nil, fmt.Errorf("postgres bin_dir %s: %w; point bin_dir at the directory holding the PostgreSQL server binaries (e.g. /usr/lib/postgresql/%d/bin) or install them (%s)",
				binDir, err, newestSupported(), installHint())
		}
		return inspectBinaries(ctx, binDir)
	}

	var looked []string
	if pgConfig, err := exec.LookPath("pg_config"); err == nil {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		out, err := exec.CommandContext(cctx, pgConfig, "--bindir").Output()
		cancel()
		if err == nil {
			dir := strings.TrimSpace(string(out))
			looked = append(looked, fmt.Sprintf("%s (from %s --bindir)", dir, pgConfig))
			// Debian's pg_config comes with libpq-dev and may point at a
			// directory without the server: fall through to the search then.
			if dir != "" && hasServerBinary(dir) == nil {
				return inspectBinaries(ctx, dir)
			}
		}
	}

	looked = append(looked, searchGlob)
	if dir := newestInGlob(searchGlob); dir != "" {
		return inspectBinaries(ctx, dir)
	}
	return nil, fmt.Errorf("no PostgreSQL server binaries found (looked in %s); install them (%s) or set postgres.bin_dir",
		strings.Join(looked, ", "), installHint())
}

// hasServerBinary checks that dir holds an executable postgres.
func hasServerBinary(dir string) error {
	fi, err := os.Stat(filepath.Join(dir, "postgres"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return errors.New("no postgres binary there")
		}
		return err
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return errors.New("postgres there is not an executable file")
	}
	return nil
}

// newestInGlob returns the directory with the highest version number among
// the glob's matches that holds a postgres binary.
func newestInGlob(glob string) string {
	matches, _ := filepath.Glob(glob)
	type cand struct {
		dir string
		ver float64
	}
	var cands []cand
	for _, m := range matches {
		if hasServerBinary(m) != nil {
			continue
		}
		// /usr/lib/postgresql/15/bin: the version is the parent's name.
		v, err := strconv.ParseFloat(filepath.Base(filepath.Dir(m)), 64)
		if err != nil {
			continue
		}
		cands = append(cands, cand{m, v})
	}
	if len(cands) == 0 {
		return ""
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].ver > cands[j].ver })
	return cands[0].dir
}

var versionRe = regexp.MustCompile(`\(PostgreSQL\) ((\d+)(?:\.\d+)?\S*)`)

// parsePostgresVersion reads `postgres --version` output, e.g.
// "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)".
func parsePostgresVersion(out string) (major int, full string, err error) {
	m := versionRe.FindStringSubmatch(out)
	if m == nil {
		return 0, "", fmt.Errorf("unrecognised version output %q", strings.TrimSpace(out))
	}
	major, err = strconv.Atoi(m[2])
	if err != nil {
		return 0, "", fmt.Errorf("unrecognised version output %q", strings.TrimSpace(out))
	}
	return major, m[1], nil
}

func inspectBinaries(ctx context.Context, dir string) (*Binaries, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(cctx, filepath.Join(dir, "postgres"), "--version")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("running %s --version: %w: %s", filepath.Join(dir, "postgres"), err, strings.TrimSpace(stderr.String()))
	}
	major, full, err := parsePostgresVersion(string(out))
	if err != nil {
		return nil, fmt.Errorf("reading the version of %s: %w", filepath.Join(dir, "postgres"), err)
	}
	if !majorSupported(major) {
		return nil, fmt.Errorf("PostgreSQL %s in %s is not supported: pgbattery supports majors %s; install one (%s) and set postgres.bin_dir",
			full, dir, supportedList(), installHint())
	}
	for _, name := range requiredBinaries {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			return nil, fmt.Errorf("PostgreSQL %s in %s lacks %s; install the full server package (e.g. apt-get install postgresql-%d)", full, dir, name, major)
		}
	}
	return &Binaries{Dir: dir, Major: major, Version: full}, nil
}

func majorSupported(major int) bool {
	for _, m := range version.SupportedPostgresMajors {
		if m == major {
			return true
		}
	}
	return false
}

func supportedList() string {
	s := make([]string, len(version.SupportedPostgresMajors))
	for i, m := range version.SupportedPostgresMajors {
		s[i] = strconv.Itoa(m)
	}
	return strings.Join(s, ", ")
}

func newestSupported() int {
	n := 0
	for _, m := range version.SupportedPostgresMajors {
		n = max(n, m)
	}
	return n
}

func installHint() string {
	return fmt.Sprintf("e.g. apt-get install postgresql-15, or postgresql-N for N in %s", supportedList())
}
