package e2e

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgbattery/pgbattery/agent/api"
	"github.com/pgbattery/pgbattery/test/testutil"
)

// uiScreenshotEnv names the PNG that TestUIFailover writes of the page after
// the failover (make ui-screenshot sets it to docs/img/ui.png).
const uiScreenshotEnv = "PGBATTERY_UI_SCREENSHOT"

// TestUIFailover loads the web UI of a real 3-node cluster in headless
// Chromium, checks that the page shows the nodes, the primary and the
// epoch, kills the primary node and checks that the page shows the new
// primary and the failover in its history.
func TestUIFailover(t *testing.T) {
	var bin string
	if os.Getenv(uiScreenshotEnv) != "" {
		// Asked for a screenshot: a missing browser is a failure, not a skip.
		var err error
		if bin, err = testutil.LookChromium(); err != nil {
			t.Fatal(err)
		}
	} else {
		bin = testutil.Chromium(t)
	}
	c := startFaultCluster(t, 3, false)
	primary := c.settle(t)
	// The page is served by a node that survives the failover.
	viewer := c.others(primary)[0]
	page := testutil.Page{Bin: bin, URL: "http://" + viewer.httpAddr() + "/ui/"}

	st, ok := clusterStatus(viewer)
	if !ok {
		t.Fatalf("no status from %s", viewer.name)
	}
	dom := waitForDOM(t, page, 2*time.Minute, func(dom string) string {
		for _, p := range c.nodes {
			want := "replica"
			if p == primary {
				want = "primary"
			}
			if why := nodeShown(dom, p.name, want); why != "" {
				return why
			}
		}
		if got := shownValue(dom, "epoch"); got != strconv.FormatUint(st.Epoch, 10) {
			return fmt.Sprintf("epoch shown %q, want %d", got, st.Epoch)
		}
		if got := shownValue(dom, "primary"); got != primary.name {
			return fmt.Sprintf("primary shown %q, want %s", got, primary.name)
		}
		return ""
	})
	if b := testutil.Elements(dom, "id", "banner"); len(b) != 1 || !hasAttr(b[0], "hidden") {
		t.Errorf("the page shows a banner while every agent answers: %s", testutil.Text(dom))
	}

	killNode(t, primary)
	newPrimary := c.waitNewPrimary(t, primary, 3*time.Minute)
	t.Logf("killed primary %s (epoch %d); new primary %s", primary.name, st.Epoch, newPrimary.name)

	waitForDOM(t, page, 2*time.Minute, func(dom string) string {
		if why := nodeShown(dom, newPrimary.name, "primary"); why != "" {
			return why
		}
		if got := shownValue(dom, "primary"); got != newPrimary.name {
			return fmt.Sprintf("primary shown %q, want %s", got, newPrimary.name)
		}
		if got, _ := strconv.ParseUint(shownValue(dom, "epoch"), 10, 64); got <= st.Epoch {
			return fmt.Sprintf("epoch shown %d, want more than %d", got, st.Epoch)
		}
		for _, e := range testutil.Elements(dom, "data-kind", "failover") {
			if e["data-from"] == primary.name && e["data-to"] == newPrimary.name {
				return ""
			}
		}
		return fmt.Sprintf("no failover %s → %s in the history shown", primary.name, newPrimary.name)
	})

	if out := os.Getenv(uiScreenshotEnv); out != "" {
		// The picture is of the cluster after the failover: the new primary
		// writable, the other survivor streaming from it, the old primary
		// still dead.
		waitFor(t, 2*time.Minute, "the new primary writable and the other standby streaming from it", func() bool {
			var st api.ClusterStatus
			if viewer.get("/v1/status", &st) != 200 || !st.Writable || st.Primary != newPrimary.name {
				return false
			}
			for _, m := range st.Members {
				switch {
				case m.Name == newPrimary.name && !(m.Running && m.Writable):
					return false
				case m.Name != newPrimary.name && m.Name != primary.name && (m.Upstream != newPrimary.name || m.LagBytes == nil):
					return false
				}
			}
			return true
		})
		if err := page.Screenshot(t, out); err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		t.Logf("screenshot of the UI after the failover: %s", out)
	}
}

// waitForDOM loads the page until check finds nothing missing (returns ""),
// and returns that DOM. Each load runs the page for a few seconds of
// virtual time, so it has polled the agent more than once.
func waitForDOM(t *testing.T, page testutil.Page, timeout time.Duration, check func(dom string) string) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	why := "never loaded"
	var dom string
	for attempt := 1; ; attempt++ {
		var err error
		dom, err = page.DumpDOM(t)
		if err != nil {
			why = err.Error()
		} else if why = check(dom); why == "" {
			return dom
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %d loads of %s in %s, the page still does not show what it should: %s\npage text: %s",
				attempt, page.URL, timeout, why, testutil.Text(dom))
		}
		t.Logf("load %d: %s; trying again", attempt, why)
		time.Sleep(time.Second)
	}
}

// nodeShown checks the page's card of a node: present once, with the role.
func nodeShown(dom, name, role string) string {
	cards := testutil.Elements(dom, "data-node", name)
	if len(cards) != 1 {
		return fmt.Sprintf("%d cards for node %s, want 1", len(cards), name)
	}
	if got := cards[0]["data-role"]; got != role {
		return fmt.Sprintf("node %s shown as %q, want %q", name, got, role)
	}
	if !strings.Contains(testutil.Text(dom), name) {
		return "the name " + name + " is not on the page"
	}
	return ""
}

// shownValue is the data-value of the summary element with the id.
func shownValue(dom, id string) string {
	el := testutil.Elements(dom, "id", id)
	if len(el) != 1 {
		return ""
	}
	return el[0]["data-value"]
}

func hasAttr(m map[string]string, k string) bool {
	_, ok := m[k]
	return ok
}
