package sitegen

import (
	"context"
	"errors"
	"fmt"
	"html"
	"image"
	"image/png"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/cli"

	"github.com/pgbattery/pgbattery/command"
)

// repoRoot is the repository root, seen from this package's directory.
const repoRoot = "../.."

var (
	buildOnce sync.Once
	built     *Result
	buildErr  error
	buildDir  string
)

func TestMain(m *testing.M) {
	// Child mode of TestBuildWithoutNetwork: build the site and exit.
	if out := os.Getenv("SITEGEN_TEST_CHILD_OUT"); out != "" {
		if _, err := Build(Options{Root: repoRoot, Out: out}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// site builds the site once for the package's tests.
func site(t *testing.T) *Result {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "sitegen-test-")
		if buildErr != nil {
			return
		}
		built, buildErr = Build(Options{Root: repoRoot, Out: buildDir})
	})
	if buildErr != nil {
		t.Fatalf("building the site: %v", buildErr)
	}
	return built
}

func readPage(t *testing.T, res *Result, slug string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(res.Out, slug+".html"))
	if err != nil {
		t.Fatalf("reading %s.html: %v", slug, err)
	}
	return string(data)
}

// Every internal link and anchor of the built site resolves.
func TestLinksAndAnchorsResolve(t *testing.T) {
	res := site(t)
	problems, err := CheckLinks(res.Out)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("broken link: %s", p)
	}
	// The check must be able to fail: a page with a broken link and anchor.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "a.html"), []byte(`<a href="b.html">b</a> <a href="a.html#nope">x</a> <h2 id="yes"></h2><a href="#yes">ok</a>`), 0o644)
	bad, err := CheckLinks(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(bad) != 2 {
		t.Errorf("CheckLinks on a page with two broken links found %d: %q", len(bad), bad)
	}
}

// Every page the site promises exists and has a title.
func TestPages(t *testing.T) {
	res := site(t)
	want := []string{"index", "getting-started", "deployment", "concepts", "architecture", "failure-detection",
		"sessions", "configuration", "cli", "api", "metrics", "operations", "benchmarks"}
	have := map[string]*Page{}
	for _, p := range res.Pages {
		have[p.Slug] = p
	}
	for _, w := range want {
		p := have[w]
		if p == nil {
			t.Errorf("no page %s.html", w)
			continue
		}
		body := readPage(t, res, w)
		if !strings.Contains(body, "<title>"+html.EscapeString(p.Title)) || p.Title == "" {
			t.Errorf("%s.html: title %q missing", w, p.Title)
		}
		if strings.Contains(body, "{{") {
			t.Errorf("%s.html: an unexpanded directive is left: %s", w, snippet(body, "{{"))
		}
	}
	// Every docs/*.md is a page (new documents appear without a code change).
	docs, _ := filepath.Glob(filepath.Join(repoRoot, "docs", "*.md"))
	for _, d := range docs {
		rel := "docs/" + filepath.Base(d)
		found := false
		for _, p := range res.Pages {
			found = found || p.Source == rel || contains(p.Owns, rel)
		}
		if !found {
			t.Errorf("%s is not on the site", rel)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func snippet(s, at string) string {
	i := strings.Index(s, at)
	if i < 0 {
		return ""
	}
	return s[max(0, i-60):min(len(s), i+60)]
}

// Every configuration key of agent/config's structs is in the
// configuration reference, with a description from docs/config.md.
func TestConfigReferenceComplete(t *testing.T) {
	res := site(t)
	page := readPage(t, res, "configuration")
	var n int
	for _, cb := range walkConfig() {
		for _, k := range cb.Keys {
			n++
			if !strings.Contains(page, fmt.Sprintf(`<tr id="%s">`, html.EscapeString(k.Path))) {
				t.Errorf("config key %s has no row in configuration.html", k.Path)
			}
		}
	}
	if n < 50 || len(res.ConfigKeys) != n {
		t.Fatalf("walked %d keys, the page lists %d: the struct walk is broken", n, len(res.ConfigKeys))
	}
	for _, k := range res.ConfigKeys {
		if strings.TrimSpace(k.Description) == "" {
			t.Errorf("config key %s: no description (add it to docs/config.md)", k.Path)
		}
	}
	for _, p := range res.Problems {
		t.Errorf("%s", p)
	}
	// Spot checks that the right description landed on the right key.
	for path, want := range map[string]string{
		"failover.hold_down": "How long the controller waits",
		"ports.gateway":      "gateway clients connect to",
		"node_name":          "unique in the cluster",
	} {
		for _, k := range res.ConfigKeys {
			if k.Path == path && !strings.Contains(k.Description, want) {
				t.Errorf("%s: description %q does not contain %q", path, k.Description, want)
			}
		}
	}
}

// The documentation check itself: a key without a description, and a
// documented key that does not exist, are reported.
func TestConfigDocsGapsReported(t *testing.T) {
	doc := ParseMarkdown("## Top-level keys\n\n### `node_name`\nstring, default: x. The name.\n\n### `no_such_key`\nint. Gone.\n\n"+
		"## `ports`\n\n| key | default | meaning |\n|---|---|---|\n| `gateway` | `5432` | The gateway. |\n", "docs/config.md")
	keys, _, _, problems := ConfigKeys(doc)
	var undocumented, stale bool
	for _, p := range problems {
		undocumented = undocumented || strings.Contains(p, "config key data_dir: no description")
		stale = stale || strings.Contains(p, "no_such_key: described in docs/config.md but not a key")
	}
	if !undocumented || !stale {
		t.Errorf("problems %q: want data_dir undocumented and no_such_key stale", problems)
	}
	for _, k := range keys {
		switch k.Path {
		case "node_name":
			if k.Type != "string" || k.Default != "x" || k.Description != "The name." {
				t.Errorf("node_name parsed as %+v", k)
			}
		case "ports.gateway":
			if k.Type != "int" || k.Default != "`5432`" || k.Description != "The gateway." {
				t.Errorf("ports.gateway parsed as %+v", k)
			}
		}
	}
}

// Every command of the CLI registry is in the CLI reference with its help.
func TestCLIReferenceComplete(t *testing.T) {
	res := site(t)
	page := readPage(t, res, "cli")
	cmds := command.Commands(&cli.BasicUi{Reader: strings.NewReader(""), Writer: io.Discard, ErrorWriter: io.Discard})
	if len(cmds) < 10 {
		t.Fatalf("the command registry has only %d commands", len(cmds))
	}
	for name, f := range cmds {
		c, err := f()
		if err != nil {
			t.Fatalf("command %s: %v", name, err)
		}
		if !strings.Contains(page, fmt.Sprintf(`id="%s"`, CommandID(name))) {
			t.Errorf("command %q has no section in cli.html", name)
		}
		help := strings.TrimSpace(c.Help())
		if help == "" {
			t.Errorf("command %q has no help text", name)
			continue
		}
		if !strings.Contains(page, html.EscapeString(help)) {
			t.Errorf("cli.html does not show the help of %q as the binary prints it", name)
		}
	}
	if len(res.Commands) != len(cmds) {
		t.Errorf("the page lists %d commands, the registry has %d", len(res.Commands), len(cmds))
	}
}

// Every metric the agent's catalogue defines, and every metric name written
// as a literal in the code, is on the metrics page.
func TestMetricsDocumented(t *testing.T) {
	res := site(t)
	page := readPage(t, res, "metrics")
	if len(res.Metrics) == 0 {
		t.Fatal("no metrics from the agent's catalogue")
	}
	for _, m := range res.Metrics {
		if !strings.Contains(page, "<code>"+m.Name+"</code>") {
			t.Errorf("catalogue metric %s is not on metrics.html", m.Name)
		}
	}
	found, err := sourceMetricNames(repoRoot, func(rel string) bool {
		return rel == "website" || rel == "test" || strings.HasPrefix(rel, "website/") || strings.HasPrefix(rel, "test/")
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(found) < 5 {
		t.Fatalf("found only %d metric names in the code: the scan is broken", len(found))
	}
	for name, where := range found {
		if !strings.Contains(page, "<code>"+name+"</code>") {
			t.Errorf("metric %s (%s) is not described on metrics.html", name, where)
		}
	}
}

// The site is built with no network: run the build in a network namespace
// with no interfaces, and check that no page loads anything from elsewhere.
func TestBuildWithoutNetwork(t *testing.T) {
	res := site(t)
	external := regexp.MustCompile(`(?i)(<script|src="(https?:)?//|<link[^>]+href="(https?:)?//|@import|url\((https?:)?//)`)
	for _, p := range res.Pages {
		if m := external.FindString(readPage(t, res, p.Slug)); m != "" {
			t.Errorf("%s.html loads something from outside the site: %s", p.Slug, m)
		}
	}
	css, err := os.ReadFile(filepath.Join(res.Out, "style.css"))
	if err != nil {
		t.Fatal(err)
	}
	if external.Match(css) {
		t.Errorf("style.css loads something from outside the site")
	}

	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("unshare(1) not installed: cannot build inside a network namespace")
	}
	args := []string{"--net"}
	if os.Geteuid() != 0 {
		args = []string{"--user", "--map-root-user", "--net"}
	}
	if out, err := exec.Command(unshare, append(args, "true")...).CombinedOutput(); err != nil {
		t.Skipf("cannot create a network namespace here (%v: %s)", err, strings.TrimSpace(string(out)))
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, unshare, append(args, exe, "-test.run=^$")...)
	cmd.Env = append(os.Environ(), "SITEGEN_TEST_CHILD_OUT="+out)
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building without network: %v\n%s", err, msg)
	}
	// The namespace really had no network: nothing but loopback, and that down.
	if msg, err := exec.Command(unshare, append(args, "sh", "-c", "cat /proc/net/dev")...).CombinedOutput(); err == nil {
		for _, l := range strings.Split(string(msg), "\n")[2:] {
			if name, _, ok := strings.Cut(strings.TrimSpace(l), ":"); ok && name != "lo" {
				t.Fatalf("the namespace has interface %s", name)
			}
		}
	}
	index, err := os.ReadFile(filepath.Join(out, "index.html"))
	if err != nil || !strings.Contains(string(index), "make demo") {
		t.Fatalf("the offline build has no usable index.html (%v)", err)
	}
}

// With Chromium installed, render the landing page headless and check the
// picture: the right size, the dark top bar from style.css, and content.
// `make website-screenshot` writes the same picture to docs/img/website.png.
func TestLandingPageScreenshot(t *testing.T) {
	res := site(t)
	browser := FindBrowser()
	if browser == "" {
		t.Skip("no chromium installed (scripts/deps.sh installs it)")
	}
	index, err := filepath.Abs(filepath.Join(res.Out, "index.html"))
	if err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(t.TempDir(), "website.png")
	if err := Screenshot(context.Background(), browser, index, shot, 1280, 800); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("decoding the screenshot: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 1280 || b.Dy() != 800 {
		t.Fatalf("screenshot is %dx%d, want 1280x800", b.Dx(), b.Dy())
	}
	// The top bar is --navy (#152033) where no text is.
	if r, g, b := rgb(img, 640, 5); r != 0x15 || g != 0x20 || b != 0x33 {
		t.Errorf("top bar pixel is #%02x%02x%02x, want #152033: style.css not applied?", r, g, b)
	}
	// The side navigation is --soft (#f5f7fa); the page has many colours
	// (text, buttons, cards), so it is not a blank page.
	if r, g, b := rgb(img, 200, 780); r != 0xf5 || g != 0xf7 || b != 0xfa {
		t.Errorf("side navigation pixel is #%02x%02x%02x, want #f5f7fa", r, g, b)
	}
	colours := map[[3]uint8]bool{}
	for y := 0; y < 800; y += 4 {
		for x := 0; x < 1280; x += 4 {
			r, g, b := rgb(img, x, y)
			colours[[3]uint8{r, g, b}] = true
		}
	}
	if len(colours) < 50 {
		t.Errorf("the screenshot has only %d colours: nothing rendered?", len(colours))
	}
}

func rgb(img image.Image, x, y int) (uint8, uint8, uint8) {
	r, g, b, _ := img.At(x, y).RGBA()
	return uint8(r >> 8), uint8(g >> 8), uint8(b >> 8)
}

func TestSplitArgs(t *testing.T) {
	got, err := splitArgs(`include "docs/a b.md" "7. The \"promises\""`)
	if err != nil || len(got) != 3 || got[1] != "docs/a b.md" || got[2] != `7. The "promises"` {
		t.Errorf("splitArgs = %q, %v", got, err)
	}
	if _, err := splitArgs(`include "unterminated`); err == nil {
		t.Error("an unterminated quote is accepted")
	}
}

func TestUnknownDirectiveFails(t *testing.T) {
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "go.mod"), []byte("module x\n"), 0o644)
	os.MkdirAll(filepath.Join(root, "website", "content"), 0o755)
	for _, p := range knownPages() {
		if strings.HasPrefix(p.Source, "website/") {
			os.WriteFile(filepath.Join(root, p.Source), []byte("# T\n\nok\n"), 0o644)
		}
	}
	os.WriteFile(filepath.Join(root, "website/content/cli.md"), []byte("# T\n\n{{nosuch}}\n"), 0o644)
	_, err := Build(Options{Root: root, Out: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), `unknown directive "nosuch"`) {
		t.Errorf("Build with an unknown directive: %v", err)
	}
	os.WriteFile(filepath.Join(root, "website/content/cli.md"), []byte("# T\n\n{{include \"website/content/index.md\" \"No such heading\"}}\n"), 0o644)
	_, err = Build(Options{Root: root, Out: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "no heading starting with") {
		t.Errorf("Build with an include of a missing section: %v", err)
	}
	if _, err := Build(Options{Root: t.TempDir(), Out: t.TempDir()}); err == nil || errors.Is(err, nil) {
		t.Errorf("Build outside a repository did not fail")
	}
}

// Every test or benchmark the README and the site's pages name as evidence
// exists, so a claim cannot outlive the test that shows it.
func TestNamedTestsExist(t *testing.T) {
	defined := map[string]bool{}
	reFunc := regexp.MustCompile(`(?m)^func ((?:Test|Benchmark|Fuzz)[A-Za-z0-9_]+)\(`)
	err := filepath.WalkDir(repoRoot, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && strings.HasPrefix(d.Name(), ".") && p != repoRoot {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, "_test.go") {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range reFunc.FindAllStringSubmatch(string(data), -1) {
			defined[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	files := []string{filepath.Join(repoRoot, "README.md")}
	content, _ := filepath.Glob(filepath.Join(repoRoot, "website", "content", "*.md"))
	files = append(files, content...)
	reNamed := regexp.MustCompile("`((?:Test|Benchmark)[A-Z][A-Za-z0-9_]*)(?:/[a-z0-9-]+)?`")
	n := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range reNamed.FindAllStringSubmatch(string(data), -1) {
			n++
			if !defined[m[1]] {
				t.Errorf("%s names %s, which no _test.go file defines", filepath.Base(f), m[1])
			}
		}
	}
	if n < 10 {
		t.Errorf("found only %d named tests in the README and the site: the scan is broken", n)
	}
}

func TestResolveLink(t *testing.T) {
	arch := &Page{Slug: "architecture", Source: "docs/ARCHITECTURE.md"}
	cfg := &Page{Slug: "configuration", Source: "website/content/configuration.md", Owns: []string{"docs/config.md"}}
	concepts := &Page{Slug: "concepts", Source: "website/content/concepts.md"}
	b := &builder{opts: Options{Root: repoRoot, RepoURL: "https://example.com/r"}, owner: map[string]*Page{
		arch.Source: arch, cfg.Source: cfg, "docs/config.md": cfg, concepts.Source: concepts,
	}, result: &Result{}}
	b.cur = concepts
	for _, tc := range []struct{ src, href, want string }{
		{"docs/ARCHITECTURE.md", "config.md", "configuration.html"},
		{"docs/ARCHITECTURE.md", "config.md#flags", "configuration.html#flags"},
		{"docs/ARCHITECTURE.md", "#7-the-promises", "architecture.html#7-the-promises"}, // included on another page
		{"website/content/concepts.md", "#x", "#x"},
		{"website/content/concepts.md", "architecture.html#y", "architecture.html#y"},
		{"website/content/concepts.md", "../../docs/ARCHITECTURE.md", "architecture.html"},
		{"README.md", "CHANGELOG.md", "https://example.com/r/blob/main/CHANGELOG.md"},
		{"README.md", "docs/", "https://example.com/r/tree/main/docs"},
		{"README.md", "docs/no-such.md", "docs/no-such.md"}, // left for the link check to report
		{"README.md", "https://go.dev/", "https://go.dev/"},
		{"docs/api.md", "../../outside.md", "../../outside.md"},
	} {
		if got := b.resolveLink(tc.src, tc.href); got != tc.want {
			t.Errorf("resolveLink(%q, %q) = %q, want %q", tc.src, tc.href, got, tc.want)
		}
	}
}
