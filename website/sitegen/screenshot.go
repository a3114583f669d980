package sitegen

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// FindBrowser returns the path of a headless-capable Chromium, or "".
func FindBrowser() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// Screenshot renders the HTML file page with a headless Chromium into a
// PNG of width×height pixels. The browser gets a throw-away profile, no
// GPU and no sandbox (it may run as root), and at most a minute.
func Screenshot(ctx context.Context, browser, page, out string, width, height int) error {
	abs, err := filepath.Abs(page)
	if err != nil {
		return err
	}
	absOut, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	profile, err := os.MkdirTemp("", "sitegen-chromium-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(profile)
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, browser,
		"--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
		"--no-first-run", "--disable-extensions", "--user-data-dir="+profile,
		fmt.Sprintf("--window-size=%d,%d", width, height),
		"--screenshot="+absOut, "file://"+abs)
	msg, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s --screenshot: %v\n%s", browser, err, strings.TrimSpace(string(msg)))
	}
	if fi, err := os.Stat(absOut); err != nil || fi.Size() == 0 {
		return fmt.Errorf("%s wrote no screenshot to %s: %s", browser, absOut, strings.TrimSpace(string(msg)))
	}
	return nil
}
