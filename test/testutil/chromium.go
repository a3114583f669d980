package testutil

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"html"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// chromiumNames are the names Debian, Ubuntu and Google give the browser.
var chromiumNames = []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"}

// Chromium returns the path of a Chromium (or Chrome) binary, or skips the
// test saying what to install. scripts/deps.sh installs Debian's chromium,
// so in CI the browser tests run.
func Chromium(t testing.TB) string {
	t.Helper()
	p, err := LookChromium()
	if err != nil {
		t.Skip(err.Error())
	}
	return p
}

// LookChromium finds the browser: $PGBATTERY_CHROMIUM, else the first of
// chromiumNames on $PATH.
func LookChromium() (string, error) {
	if p := os.Getenv("PGBATTERY_CHROMIUM"); p != "" {
		return p, nil
	}
	for _, name := range chromiumNames {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("no Chromium found (looked for " + strings.Join(chromiumNames, ", ") +
		"): install it with `apt-get install chromium` (make deps does) or set PGBATTERY_CHROMIUM")
}

// Page is one headless Chromium run against a URL.
type Page struct {
	Bin    string // from Chromium
	URL    string
	Width  int // window size; 1280x800 when zero
	Height int
	// Budget is the virtual time the page runs before Chromium dumps or
	// shoots it: timers run fast, and the clock stops while network
	// requests are pending, so a page polling once a second sees a few
	// answers whatever the machine's load. 3 s when zero.
	Budget time.Duration
	// Profile is the browser's user data directory, kept between runs (a
	// test can store something in the page's local storage in one run and
	// load the page in the next). Empty: a fresh one per run.
	Profile string
}

// DumpDOM loads the page and returns its DOM (as serialized HTML) once the
// budget has run out.
func (p Page) DumpDOM(t testing.TB) (string, error) {
	t.Helper()
	out, err := p.run(t, "--dump-dom")
	return string(out), err
}

// Screenshot loads the page and writes a PNG of its window to file.
func (p Page) Screenshot(t testing.TB, file string) error {
	t.Helper()
	abs, err := filepath.Abs(file)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o755); err != nil {
		return fmt.Errorf("creating the screenshot's directory: %w", err)
	}
	os.Remove(abs)
	if _, err := p.run(t, "--screenshot="+abs, "--hide-scrollbars"); err != nil {
		return err
	}
	if fi, err := os.Stat(abs); err != nil || fi.Size() == 0 {
		return fmt.Errorf("chromium wrote no screenshot to %s", abs)
	}
	return nil
}

func (p Page) run(t testing.TB, extra ...string) ([]byte, error) {
	t.Helper()
	w, h := p.Width, p.Height
	if w == 0 || h == 0 {
		w, h = 1280, 800
	}
	budget := p.Budget
	if budget == 0 {
		budget = 3 * time.Second
	}
	// A profile of its own: no state (local storage, a running browser's
	// lock) shared with another run.
	profile := p.Profile
	if profile == "" {
		dir, err := os.MkdirTemp("", "pgbattery-chromium-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		profile = dir
	}
	args := []string{
		"--headless", "--disable-gpu", "--no-sandbox",
		"--user-data-dir=" + profile,
		"--no-first-run", "--no-default-browser-check", "--disable-extensions",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--mute-audio", "--force-color-profile=srgb",
		"--window-size=" + strconv.Itoa(w) + "," + strconv.Itoa(h),
		"--virtual-time-budget=" + strconv.FormatInt(budget.Milliseconds(), 10),
	}
	args = append(args, extra...)
	args = append(args, p.URL)

	// Bounded in real time too: the virtual clock stops while a request
	// hangs, so a page waiting on a dead server would otherwise never end.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, p.Bin, args...)
	// The browser forks a zygote, renderers and a GPU process: stop them all.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	if cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // leftovers of the group, if any
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("chromium did not finish with %s within 90 s; its stderr:\n%s", p.URL, tail(stderr.String(), 20))
	}
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("chromium on %s exited %d; its stderr:\n%s", p.URL, ee.ExitCode(), tail(stderr.String(), 20))
		}
		return nil, fmt.Errorf("running chromium: %w", err)
	}
	t.Logf("chromium %s: %s in %s", strings.Join(extra, " "), p.URL, time.Since(start).Round(time.Millisecond))
	return stdout.Bytes(), nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

var (
	tagRE  = regexp.MustCompile(`<[a-zA-Z][a-zA-Z0-9-]*\b[^>]*>`)
	attrRE = regexp.MustCompile(`([a-zA-Z_:][-a-zA-Z0-9_:.]*)(?:="([^"]*)")?`)
	anyTag = regexp.MustCompile(`<[^>]*>`)
	spaces = regexp.MustCompile(`\s+`)
)

// Elements returns the attributes of every element in dom (HTML as
// Chromium serializes it: attribute values in double quotes) whose
// attribute attr has the given value, or any value when value is "".
func Elements(dom, attr, value string) []map[string]string {
	var out []map[string]string
	for _, tag := range tagRE.FindAllString(dom, -1) {
		name := strings.IndexAny(tag, " \t\n>")
		attrs := map[string]string{}
		for _, m := range attrRE.FindAllStringSubmatch(tag[name:], -1) {
			attrs[m[1]] = html.UnescapeString(m[2])
		}
		if v, ok := attrs[attr]; ok && (value == "" || v == value) {
			out = append(out, attrs)
		}
	}
	return out
}

// Text is dom's text: tags dropped, entities decoded, white space collapsed.
func Text(dom string) string {
	return strings.TrimSpace(spaces.ReplaceAllString(html.UnescapeString(anyTag.ReplaceAllString(dom, " ")), " "))
}
