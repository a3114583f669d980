// Package version holds the build identity of pgbattery. The linker sets
// GitCommit (and may override Version) through -ldflags -X; see GNUmakefile.
package version

import (
	"fmt"
	"runtime"
	"strings"
)

var (
	// Version is the semantic version of this build.
	Version = "0.1.0"
	// Prerelease marks a build that is not a release ("dev" until the first tag).
	Prerelease = "dev"
	// GitCommit is the commit the binary was built from, set at link time.
	GitCommit = ""
)

// SupportedPostgresMajors lists the PostgreSQL major versions pgbattery is
// tested against. pgctl refuses any other major.
var SupportedPostgresMajors = []int{13, 14, 15, 16, 17}

// Full returns the human version string, e.g. "v0.1.0-dev (abc1234)".
func Full() string {
	v := "v" + Version
	if Prerelease != "" {
		v += "-" + Prerelease
	}
	if GitCommit != "" {
		v += " (" + GitCommit + ")"
	}
	return v
}

// Short is the version without the commit, as carried in gossip tags.
func Short() string {
	if Prerelease != "" {
		return Version + "-" + Prerelease
	}
	return Version
}

// Info is the multi-line text printed by `pgbattery version`.
func Info() string {
	majors := make([]string, len(SupportedPostgresMajors))
	for i, m := range SupportedPostgresMajors {
		majors[i] = fmt.Sprint(m)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "pgbattery %s\n", Full())
	fmt.Fprintf(&b, "Go: %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(&b, "Supported PostgreSQL majors: %s\n", strings.Join(majors, ", "))
	return b.String()
}
